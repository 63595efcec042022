// exhaust-devices.so: LD_PRELOAD into `imgsandbox serve` to make the machine look out of loop or zram
// devices, without taking every device from other users of the machine. While the file named by
// IMGSANDBOX_FAULT_FILE holds "loop", LOOP_CTL_GET_FREE fails with ENOSPC (what the kernel answers
// when no loop minor is left); while it holds "zram", opening zram-control/hot_add fails with ENOSPC;
// while it holds "no-zram", the kernel looks as if it had no zram at all (lstat of zram-control: ENOENT).
// Used by Tests/IntegrationTests (HostileInputSuite, CoreSuite) through FaultInjector, built with
//   cc -shared -fPIC -O2 -o exhaust-devices.so exhaust-devices.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOOP_CTL_GET_FREE_REQUEST 0x4C82

// The fault now in force ("loop", "zram" or ""), read on every call so a test can switch it live.
static int fault_is(const char *what) {
    const char *path = getenv("IMGSANDBOX_FAULT_FILE");
    if (!path) return 0;
    static int (*real_open)(const char *, int, ...);
    if (!real_open) real_open = dlsym(RTLD_NEXT, "open");
    int fd = real_open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[16] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 && strncmp(buf, what, strlen(what)) == 0;
}

static int is_hot_add(const char *path) {
    size_t n = path ? strlen(path) : 0, k = strlen("zram-control/hot_add");
    return n >= k && strcmp(path + n - k, "zram-control/hot_add") == 0;
}

int ioctl(int fd, unsigned long request, ...) {
    static int (*real_ioctl)(int, unsigned long, void *);
    if (!real_ioctl) real_ioctl = dlsym(RTLD_NEXT, "ioctl");
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (request == LOOP_CTL_GET_FREE_REQUEST && fault_is("loop")) {
        errno = ENOSPC;
        return -1;
    }
    return real_ioctl(fd, request, arg);
}

#define WRAP_OPEN(name)                                                            \
    int name(const char *path, int flags, ...) {                                   \
        static int (*real)(const char *, int, ...);                                \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                 \
        va_list ap;                                                                \
        va_start(ap, flags);                                                       \
        mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;    \
        va_end(ap);                                                                \
        if (is_hot_add(path) && fault_is("zram")) {                                \
            errno = ENOSPC;                                                        \
            return -1;                                                             \
        }                                                                          \
        return real(path, flags, mode);                                            \
    }
WRAP_OPEN(open)
WRAP_OPEN(open64)

#define WRAP_OPENAT(name)                                                          \
    int name(int dirfd, const char *path, int flags, ...) {                        \
        static int (*real)(int, const char *, int, ...);                           \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                 \
        va_list ap;                                                                \
        va_start(ap, flags);                                                       \
        mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;    \
        va_end(ap);                                                                \
        if (is_hot_add(path) && fault_is("zram")) {                                \
            errno = ENOSPC;                                                        \
            return -1;                                                             \
        }                                                                          \
        return real(dirfd, path, flags, mode);                                     \
    }
WRAP_OPENAT(openat)
WRAP_OPENAT(openat64)

#define WRAP_LSTAT(name, type)                                                     \
    int name(const char *path, type *buf) {                                        \
        static int (*real)(const char *, type *);                                  \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                 \
        if (strstr(path, "/zram-control") && fault_is("no-zram")) {                \
            errno = ENOENT;                                                        \
            return -1;                                                             \
        }                                                                          \
        return real(path, buf);                                                    \
    }
WRAP_LSTAT(lstat, struct stat)
WRAP_LSTAT(lstat64, struct stat64)
