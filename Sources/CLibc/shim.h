#ifndef BUCKETFS_CLIBC_SHIM_H
#define BUCKETFS_CLIBC_SHIM_H
// glibc headers that Swift's Glibc module leaves out: extended attributes, malloc tuning.
#include <sys/xattr.h>
#include <malloc.h>
#endif
