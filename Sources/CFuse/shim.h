#ifndef CFUSE_SHIM_H
#define CFUSE_SHIM_H
// libfuse3 low-level API for Swift. Only what does not import cleanly is wrapped here:
// the versioned-symbol macros, FUSE_ARGS_INIT / FUSE_BUFVEC_INIT, and the fuse_file_info bitfields.
// Builds against 3.14 (Debian 12) and 3.17+ (Tools/libfuse): what only 3.17 has (passthrough, the
// tmpfile operation) is wrapped below and reports "unavailable" on older headers.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>

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

#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
#define CFUSE_HAS_PASSTHROUGH 1
#else
#define CFUSE_HAS_PASSTHROUGH 0
#endif

/// Whether this libfuse knows the io_uring session option (3.18+; it works only when libfuse was built with
/// liburing, else the session falls back to /dev/fuse reads and logs why).
static inline int cfuse_uring_api(void) {
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 18)
    return 1;
#else
    return 0;
#endif
}

/// Whether this libfuse has the passthrough API (the kernel must still offer it at init).
static inline int cfuse_passthrough_api(void) { return CFUSE_HAS_PASSTHROUGH; }

/// Asks for FUSE_CAP_PASSTHROUGH when the kernel offers it, with the backing files' stacking depth
/// (0: a plain filesystem such as ext4; 1: a stacked one such as overlayfs). Returns 1 when wanted.
static inline int cfuse_conn_want_passthrough(struct fuse_conn_info *conn, unsigned stack_depth) {
#if CFUSE_HAS_PASSTHROUGH
    if (!(conn->capable & FUSE_CAP_PASSTHROUGH)) {
        return 0;
    }
    conn->want |= FUSE_CAP_PASSTHROUGH;
    conn->max_backing_stack_depth = stack_depth;
    return 1;
#else
    (void)conn;
    (void)stack_depth;
    return 0;
#endif
}

/// Registers `fd` as a backing file: a positive backing id, or -errno (-ENOSYS without the API).
static inline int cfuse_passthrough_open(fuse_req_t req, int fd) {
#if CFUSE_HAS_PASSTHROUGH
    int id = fuse_passthrough_open(req, fd);
    return id > 0 ? id : -(errno ? errno : EIO);
#else
    (void)req;
    (void)fd;
    return -ENOSYS;
#endif
}

/// Drops a backing id (the kernel keeps the backing file while a FUSE file still uses it). Takes the
/// session, not a request: a release may come after its request's reply (which frees the request).
/// The ioctl is libfuse's fuse_passthrough_close without the request (FUSE_DEV_IOC_BACKING_CLOSE).
static inline int cfuse_passthrough_close(struct fuse_session *se, int backing_id) {
#if CFUSE_HAS_PASSTHROUGH
    uint32_t id = (uint32_t)backing_id;
    return ioctl(fuse_session_fd(se), _IOW(229, 2, uint32_t), &id) == 0 ? 0 : -errno;
#else
    (void)se;
    (void)backing_id;
    return -ENOSYS;
#endif
}

/// Makes an open/create reply a passthrough one (FOPEN_PASSTHROUGH; libfuse sets it for id > 0).
static inline void cfuse_fi_set_backing_id(struct fuse_file_info *fi, int backing_id) {
#if CFUSE_HAS_PASSTHROUGH
    fi->backing_id = backing_id;
#else
    (void)fi;
    (void)backing_id;
#endif
}

typedef void (*cfuse_tmpfile_fn)(fuse_req_t req, fuse_ino_t parent, mode_t mode, struct fuse_file_info *fi);

/// Installs the tmpfile operation (O_TMPFILE, libfuse 3.17+). Returns 0 where libfuse has none.
static inline int cfuse_ops_set_tmpfile(struct fuse_lowlevel_ops *ops, cfuse_tmpfile_fn fn) {
#if CFUSE_HAS_PASSTHROUGH
    ops->tmpfile = fn;
    return 1;
#else
    (void)ops;
    (void)fn;
    return 0;
#endif
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
