#ifndef BUCKETFS_CFUSE_SHIM_H
#define BUCKETFS_CFUSE_SHIM_H
// libfuse 3.12+ API: fuse_loop_cfg_* and the multithreaded loop.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

// fuse_session_loop_mt may be a macro (to a versioned symbol), which Swift cannot call.
static inline int cfuse_session_loop_mt(struct fuse_session *se, struct fuse_loop_config *config) {
    return fuse_session_loop_mt(se, config);
}
#endif
