#ifndef CFUSE_SHIM_H
#define CFUSE_SHIM_H
// libfuse3 (3.14) low-level API for Swift. Only what does not import cleanly is wrapped here:
// the versioned-symbol macros, FUSE_ARGS_INIT / FUSE_BUFVEC_INIT, and the fuse_file_info bitfields.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>

/// fuse_session_new with an argv built here (fuse_args must own malloc'ed strings libfuse may free).
static inline struct fuse_session *cfuse_session_new(int argc, const char *const *argv,
                                                     const struct fuse_lowlevel_ops *ops, void *userdata) {
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    for (int i = 0; i < argc; i++) {
        if (fuse_opt_add_arg(&args, argv[i]) != 0) {
            fuse_opt_free_args(&args);
            return NULL;
        }
    }
    struct fuse_session *se = fuse_session_new(&args, ops, sizeof(*ops), userdata);
    fuse_opt_free_args(&args);
    return se;
}

/// fuse_session_loop_mt with a loop config: one /dev/fuse clone per worker thread when clone_fd != 0.
static inline int cfuse_session_loop_mt(struct fuse_session *se, int clone_fd, unsigned max_idle, unsigned max_threads) {
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (cfg == NULL) {
        return -1;
    }
    fuse_loop_cfg_set_clone_fd(cfg, clone_fd ? 1 : 0);
    fuse_loop_cfg_set_idle_threads(cfg, max_idle);
    fuse_loop_cfg_set_max_threads(cfg, max_threads);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

/// Sets the reply bits of a fuse_file_info filled in by open/opendir/create.
static inline void cfuse_fi_set_open_flags(struct fuse_file_info *fi, int keep_cache, int direct_io, int cache_readdir) {
    fi->keep_cache = keep_cache ? 1 : 0;
    fi->direct_io = direct_io ? 1 : 0;
    fi->cache_readdir = cache_readdir ? 1 : 0;
}

/// Replies to a read with `size` bytes of `fd` at `off`; libfuse splices when the session allows it.
static inline int cfuse_reply_data_fd(fuse_req_t req, int fd, size_t size, off_t off) {
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = off;
    return fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/// Copies a write request's buffers (memory or a spliced pipe) into `fd` at `off`.
/// Returns the bytes written or -errno.
static inline ssize_t cfuse_write_buf_to_fd(struct fuse_bufvec *in, int fd, off_t off) {
    struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
    out.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = fd;
    out.buf[0].pos = off;
    return fuse_buf_copy(&out, in, (enum fuse_buf_copy_flags)0);
}

/// Copies a write request's buffers into `mem` (at most `size` bytes): for FAT files, served from memory.
/// Returns the bytes copied or -errno.
static inline ssize_t cfuse_write_buf_to_mem(struct fuse_bufvec *in, void *mem, size_t size) {
    struct fuse_bufvec out = FUSE_BUFVEC_INIT(size);
    out.buf[0].mem = mem;
    return fuse_buf_copy(&out, in, (enum fuse_buf_copy_flags)0);
}

#endif
