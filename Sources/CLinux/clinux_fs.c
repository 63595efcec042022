#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include "clinux_fs.h"

const int clinux_O_PATH = O_PATH;
const int clinux_O_TMPFILE = O_TMPFILE;
const int clinux_AT_EMPTY_PATH = AT_EMPTY_PATH;
const long clinux_UTIME_NOW = UTIME_NOW;
const long clinux_UTIME_OMIT = UTIME_OMIT;
const unsigned int clinux_RENAME_NOREPLACE = RENAME_NOREPLACE;
const unsigned int clinux_RENAME_EXCHANGE = RENAME_EXCHANGE;
const int clinux_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int clinux_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int clinux_SEEK_DATA = SEEK_DATA;
const int clinux_SEEK_HOLE = SEEK_HOLE;
const int clinux_MAX_HANDLE_SZ = MAX_HANDLE_SZ;

int clinux_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int clinux_name_to_handle_at(int dirfd, const char *path, void *buf, size_t bufsize, int *mount_id, int flags) {
    if (bufsize < sizeof(struct file_handle)) {
        errno = EINVAL;
        return -1;
    }
    struct file_handle *fh = buf;
    fh->handle_bytes = (unsigned int)(bufsize - sizeof(struct file_handle));
    if (name_to_handle_at(dirfd, path, fh, mount_id, flags) != 0) {
        return -1;
    }
    return (int)(sizeof(struct file_handle) + fh->handle_bytes);
}

int clinux_open_by_handle_at(int mount_fd, const void *handle, int flags) {
    // open_by_handle_at does not modify the handle; the cast only drops const for the glibc prototype.
    return open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
}

int clinux_setfsuid(uid_t uid) { return setfsuid(uid); }
int clinux_setfsgid(gid_t gid) { return setfsgid(gid); }

ssize_t clinux_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags) {
    return copy_file_range(fd_in, (off_t *)off_in, fd_out, (off_t *)off_out, len, flags);
}

int clinux_fallocate(int fd, int mode, int64_t offset, int64_t len) {
    return fallocate(fd, mode, (off_t)offset, (off_t)len);
}


ssize_t clinux_getxattr(const char *path, const char *name, void *value, size_t size) {
    return getxattr(path, name, value, size);
}
ssize_t clinux_listxattr(const char *path, char *list, size_t size) { return listxattr(path, list, size); }
int clinux_setxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
    return setxattr(path, name, value, size, flags);
}
int clinux_removexattr(const char *path, const char *name) { return removexattr(path, name); }
ssize_t clinux_lgetxattr(const char *path, const char *name, void *value, size_t size) {
    return lgetxattr(path, name, value, size);
}
ssize_t clinux_llistxattr(const char *path, char *list, size_t size) { return llistxattr(path, list, size); }
int clinux_lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
    return lsetxattr(path, name, value, size, flags);
}
int clinux_lremovexattr(const char *path, const char *name) { return lremovexattr(path, name); }

int clinux_fifreeze(int fd) { return ioctl(fd, FIFREEZE, 0); }
int clinux_fithaw(int fd) { return ioctl(fd, FITHAW, 0); }

int clinux_fitrim(int fd, uint64_t *trimmed) {
    struct fstrim_range range = { .start = 0, .len = UINT64_MAX, .minlen = 0 };
    int rc = ioctl(fd, FITRIM, &range);
    if (rc == 0 && trimmed) *trimmed = range.len;
    return rc;
}

int clinux_syncfs(int fd) { return syncfs(fd); }
