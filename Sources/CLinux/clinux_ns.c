#define _GNU_SOURCE
#include "clinux_ns.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

const uint64_t clinux_RESOLVE_IN_ROOT = RESOLVE_IN_ROOT;
const uint64_t clinux_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
const uint64_t clinux_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
const uint64_t clinux_RESOLVE_NO_XDEV = RESOLVE_NO_XDEV;
const unsigned long clinux_PER_LINUX32 = PER_LINUX32;
const short clinux_POSIX_SPAWN_SETSID = POSIX_SPAWN_SETSID;

int clinux_cap_last_cap(void) {
    FILE *file = fopen("/proc/sys/kernel/cap_last_cap", "re");
    int last = CAP_LAST_CAP;
    if (file) {
        if (fscanf(file, "%d", &last) != 1 || last < 0 || last > 63) last = CAP_LAST_CAP;
        fclose(file);
    }
    return last;
}

int clinux_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int clinux_personality(unsigned long persona) { return personality(persona); }

int clinux_narrow_capabilities(uint64_t bounding, uint64_t inheritable) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    // Only what the process has (root may lack some, e.g. CAP_SYS_RESOURCE in a container).
    data[0].inheritable |= (uint32_t)inheritable & data[0].permitted;
    data[1].inheritable |= (uint32_t)(inheritable >> 32) & data[1].permitted;
    if (syscall(SYS_capset, &header, data) != 0) return -1;
    int last = clinux_cap_last_cap();
    for (int cap = 0; cap <= last; cap++) {
        if (bounding & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return -1;
    }
    return 0;
}

uint64_t clinux_permitted_capabilities(void) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return 0;
    return (uint64_t)data[0].permitted | ((uint64_t)data[1].permitted << 32);
}

int clinux_memfd_with(const char *name, const void *data, size_t length) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -1;
    const char *bytes = data;
    size_t done = 0;
    while (done < length) {
        ssize_t n = write(fd, bytes + done, length - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { int saved = errno; close(fd); errno = saved ? saved : EIO; return -1; }
        done += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) != 0) { int saved = errno; close(fd); errno = saved; return -1; }
    return fd;
}

int clinux_open_pty(char *name, size_t name_size) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, name, name_size) != 0) {
        int saved = errno;
        close(master);
        errno = saved;
        return -1;
    }
    return master;
}

int clinux_copy_window_size(int from, int to) {
    struct winsize size;
    if (ioctl(from, TIOCGWINSZ, &size) != 0) return -1;
    return ioctl(to, TIOCSWINSZ, &size);
}

int clinux_signalfd(const sigset_t *mask) { return signalfd(-1, mask, SFD_CLOEXEC); }

int clinux_read_signal(int fd) {
    struct signalfd_siginfo info;
    ssize_t n;
    do { n = read(fd, &info, sizeof info); } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof info) { if (n >= 0) errno = EIO; return -1; }
    return (int)info.ssi_signo;
}
