#ifndef CLINUX_FS_H
#define CLINUX_FS_H
// Filesystem side of CLinux: the _GNU_SOURCE-only calls and constants the FUSE passthrough needs.
// Swift's Glibc module does not see them; each is defined in clinux_fs.c with _GNU_SOURCE set.

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <malloc.h> // malloc_trim: give freed node memory back after the kernel forgets a big tree

/// O_PATH: an fd that names an inode without opening it for I/O.
extern const int clinux_O_PATH;
/// O_TMPFILE (includes O_DIRECTORY).
extern const int clinux_O_TMPFILE;
/// AT_EMPTY_PATH: operate on the dirfd itself when the path is "".
extern const int clinux_AT_EMPTY_PATH;
/// Special tv_nsec values for utimensat/futimens.
extern const long clinux_UTIME_NOW;
extern const long clinux_UTIME_OMIT;
/// renameat2 flags.
extern const unsigned int clinux_RENAME_NOREPLACE;
extern const unsigned int clinux_RENAME_EXCHANGE;
/// fallocate modes.
extern const int clinux_FALLOC_FL_KEEP_SIZE;
extern const int clinux_FALLOC_FL_PUNCH_HOLE;
/// lseek whence values for sparse files.
extern const int clinux_SEEK_DATA;
extern const int clinux_SEEK_HOLE;
/// MAX_HANDLE_SZ: the largest f_handle a filesystem returns.
extern const int clinux_MAX_HANDLE_SZ;

/// renameat2(2).
int clinux_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

/// name_to_handle_at(2) into `buf` (at least `bufsize` bytes, laid out as struct file_handle).
/// Returns the total length of the struct written (header + handle bytes) or -1 with errno set.
int clinux_name_to_handle_at(int dirfd, const char *path, void *buf, size_t bufsize, int *mount_id, int flags);

/// open_by_handle_at(2) with a struct file_handle produced by clinux_name_to_handle_at.
int clinux_open_by_handle_at(int mount_fd, const void *handle, int flags);

/// setfsuid(2)/setfsgid(2): per-thread filesystem identity; return the previous id.
int clinux_setfsuid(uid_t uid);
int clinux_setfsgid(gid_t gid);

/// copy_file_range(2).
ssize_t clinux_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags);

/// fallocate(2).
int clinux_fallocate(int fd, int mode, int64_t offset, int64_t len);

/// FIFREEZE / FITHAW on a file or directory of the filesystem (macros Swift cannot import).
int clinux_fifreeze(int fd);
int clinux_fithaw(int fd);
/// FITRIM over the whole filesystem; *trimmed gets the bytes the filesystem discarded.
int clinux_fitrim(int fd, uint64_t *trimmed);
/// syncfs(2), hidden from Swift behind _GNU_SOURCE.
int clinux_syncfs(int fd);


/// Extended attributes by path (sys/xattr.h is outside Swift's Glibc module).
ssize_t clinux_getxattr(const char *path, const char *name, void *value, size_t size);
ssize_t clinux_listxattr(const char *path, char *list, size_t size);
int clinux_setxattr(const char *path, const char *name, const void *value, size_t size, int flags);
int clinux_removexattr(const char *path, const char *name);
/// The same without following a final symlink (diff and save read and write a symlink's own xattrs).
ssize_t clinux_lgetxattr(const char *path, const char *name, void *value, size_t size);
ssize_t clinux_llistxattr(const char *path, char *list, size_t size);
int clinux_lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags);
int clinux_lremovexattr(const char *path, const char *name);

#endif
