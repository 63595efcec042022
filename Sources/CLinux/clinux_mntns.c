#define _GNU_SOURCE
#include "clinux_mntns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
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
