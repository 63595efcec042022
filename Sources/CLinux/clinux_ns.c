#define _GNU_SOURCE
#include "clinux_ns.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <unistd.h>

const int clinux_CLONE_NEWNS = CLONE_NEWNS;
const int clinux_CLONE_NEWUTS = CLONE_NEWUTS;
const int clinux_CLONE_NEWPID = CLONE_NEWPID;
const uint64_t clinux_RESOLVE_IN_ROOT = RESOLVE_IN_ROOT;
const uint64_t clinux_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
const uint64_t clinux_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
const uint64_t clinux_RESOLVE_NO_XDEV = RESOLVE_NO_XDEV;
const unsigned int clinux_OPEN_TREE_CLONE = OPEN_TREE_CLONE;
const unsigned int clinux_OPEN_TREE_CLOEXEC = OPEN_TREE_CLOEXEC;
const unsigned int clinux_MOVE_MOUNT_F_EMPTY_PATH = MOVE_MOUNT_F_EMPTY_PATH;
const unsigned int clinux_MOVE_MOUNT_T_EMPTY_PATH = MOVE_MOUNT_T_EMPTY_PATH;
const unsigned int clinux_MOUNT_ATTR_RDONLY = MOUNT_ATTR_RDONLY;
const unsigned int clinux_MOUNT_ATTR_NOSUID = MOUNT_ATTR_NOSUID;
const unsigned int clinux_MOUNT_ATTR_NODEV = MOUNT_ATTR_NODEV;
const unsigned int clinux_MOUNT_ATTR_NOEXEC = MOUNT_ATTR_NOEXEC;
const unsigned long clinux_MS_REC_PRIVATE = MS_REC | MS_PRIVATE;
const unsigned long clinux_PER_LINUX32 = PER_LINUX32;

pid_t clinux_clone_into(int flags) {
    return (pid_t)syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

int clinux_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int clinux_open_tree(int dirfd, const char *path, unsigned int flags) {
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

int clinux_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags) {
    return (int)syscall(SYS_move_mount, from_dirfd, from_path, to_dirfd, to_path, flags);
}

int clinux_new_mount(const char *fstype, const char *options, unsigned int attributes) {
    int fs = (int)syscall(SYS_fsopen, fstype, FSOPEN_CLOEXEC);
    if (fs < 0) return -1;
    char *copy = strdup(options ? options : "");
    if (!copy) { close(fs); errno = ENOMEM; return -1; }
    int rc = 0;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item && rc == 0; item = strtok_r(NULL, ",", &save)) {
        char *value = strchr(item, '=');
        if (value) {
            *value++ = 0;
            rc = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, item, value, 0);
        } else {
            rc = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, item, NULL, 0);
        }
    }
    free(copy);
    if (rc == 0) rc = (int)syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
    int mnt = rc == 0 ? (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attributes) : -1;
    int saved = errno;
    close(fs);
    errno = saved;
    return mnt;
}

int clinux_mount_setattr_fd(int fd, unsigned int set) {
    struct mount_attr attr = {.attr_set = set};
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr);
}

int clinux_personality(unsigned long persona) { return personality(persona); }

int clinux_sethostname(const char *name, size_t length) { return sethostname(name, length); }

int clinux_mount_propagation(const char *target, unsigned long flags) { return mount(NULL, target, NULL, flags, NULL); }
