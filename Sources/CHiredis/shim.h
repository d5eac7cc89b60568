#ifndef BUCKETFS_CHIREDIS_SHIM_H
#define BUCKETFS_CHIREDIS_SHIM_H
// hiredis 0.14 (Debian 12): synchronous API only. redisCommand is variadic, so Swift uses redisCommandArgv.
#include <hiredis/hiredis.h>
#endif
