#define _GNU_SOURCE
#include "clinux_mntns.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

// The child reports one int (a result >= 0, or -errno) through a pipe, then _exits.
static void report(int fd, int value) {
    while (write(fd, &value, sizeof value) < 0 && errno == EINTR) {}
    _exit(0);
}

// Forks; the child enters `ns_fd` and runs `body`, whose return value (>= 0, or -errno) comes back here.
static int in_namespace(int ns_fd, int (*body)(void *), void *context) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
    pid_t child = fork();
    if (child < 0) {
        int saved = errno;
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        errno = saved;
        return -1;
    }
    if (child == 0) {
        close(pipe_fds[0]);
        if (setns(ns_fd, CLONE_NEWNS) != 0) report(pipe_fds[1], -errno);
        report(pipe_fds[1], body(context));
    }
    close(pipe_fds[1]);
    int value = -EPIPE;
    ssize_t got;
    do { got = read(pipe_fds[0], &value, sizeof value); } while (got < 0 && errno == EINTR);
    close(pipe_fds[0]);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
    if (got != sizeof value) value = -EPIPE;
    if (value < 0) {
        errno = -value;
        return -1;
    }
    return value;
}

struct dump_context { int proc_fd; int out_fd; };

static int dump_body(void *raw) {
    struct dump_context *c = raw;
    // thread-self of our procfs: this child's view, which setns has just made the namespace's root.
    int fd = openat(c->proc_fd, "thread-self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    char buffer[16384];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return 0;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(c->out_fd, buffer + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) return -errno;
            done += w;
        }
    }
}

int clinux_mountinfo_in(int ns_fd, int proc_fd) {
    // A memory file, not a pipe: the child writes it all before anyone reads.
    int out = memfd_create("mountinfo", MFD_CLOEXEC);
    if (out < 0) return -1;
    struct dump_context context = {proc_fd, out};
    if (in_namespace(ns_fd, dump_body, &context) < 0 || lseek(out, 0, SEEK_SET) != 0) {
        int saved = errno;
        close(out);
        errno = saved;
        return -1;
    }
    return out;
}

// Writes `value` (>= 0) in decimal at `out` (snprintf is not async-signal-safe).
static void append_number(char *out, int value) {
    char digits[12];
    int count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value > 0);
    while (count > 0) *out++ = digits[--count];
    *out = 0;
}

struct detach_context { int proc_fd; const char *path; uint64_t device; };

static int detach_body(void *raw) {
    struct detach_context *c = raw;
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, c->path, &how, sizeof how);
    if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
    struct statx info;
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &info) != 0) return -errno;
    if (!(info.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) || !(info.stx_attributes & STATX_ATTR_MOUNT_ROOT)) return 0;
    if (makedev(info.stx_dev_major, info.stx_dev_minor) != c->device) return 0;
    // umount2 through the fd's magic link (relative to our procfs, not the namespace's): the mount just
    // checked, not whatever the path names by now.
    char name[32] = "thread-self/fd/";
    append_number(name + 15, fd);
    if (fchdir(c->proc_fd) != 0) return -errno;
    if (umount2(name, MNT_DETACH) != 0) return -errno;
    return 1;
}

int clinux_detach_in(int ns_fd, int proc_fd, const char *path, uint64_t device) {
    struct detach_context context = {proc_fd, path, device};
    return in_namespace(ns_fd, detach_body, &context);
}
