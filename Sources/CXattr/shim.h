#ifndef BUCKETFS_CXATTR_SHIM_H
#define BUCKETFS_CXATTR_SHIM_H
// Extended attributes (glibc); Swift's Glibc module does not include this header.
#include <sys/xattr.h>
#endif
