#ifndef CLINUX_NS_H
#define CLINUX_NS_H
// Namespaces and the new mount API for `imgsandbox run`: raw system calls glibc 2.36 does not wrap
// (openat2, clone with namespace flags) or Swift cannot see (<linux/mount.h>, _GNU_SOURCE constants).

#include <stdint.h>
#include <sys/types.h>

/// CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWPID (<sched.h> with _GNU_SOURCE).
extern const int clinux_CLONE_NEWNS;
extern const int clinux_CLONE_NEWUTS;
extern const int clinux_CLONE_NEWPID;
/// openat2 resolve flags (<linux/openat2.h>).
extern const uint64_t clinux_RESOLVE_IN_ROOT;
extern const uint64_t clinux_RESOLVE_NO_SYMLINKS;
extern const uint64_t clinux_RESOLVE_NO_MAGICLINKS;
extern const uint64_t clinux_RESOLVE_NO_XDEV;
/// open_tree / move_mount / fsmount flags and mount attributes (<linux/mount.h>).
extern const unsigned int clinux_OPEN_TREE_CLONE;
extern const unsigned int clinux_OPEN_TREE_CLOEXEC;
extern const unsigned int clinux_MOVE_MOUNT_F_EMPTY_PATH;
extern const unsigned int clinux_MOVE_MOUNT_T_EMPTY_PATH;
extern const unsigned int clinux_MOUNT_ATTR_RDONLY;
extern const unsigned int clinux_MOUNT_ATTR_NOSUID;
extern const unsigned int clinux_MOUNT_ATTR_NODEV;
extern const unsigned int clinux_MOUNT_ATTR_NOEXEC;
/// MS_REC | MS_PRIVATE for mount(2) on "/" in a new mount namespace.
extern const unsigned long clinux_MS_REC_PRIVATE;
/// PER_LINUX32 (<sys/personality.h>): uname(2) reports the 32-bit machine (armv7l for armhf).
extern const unsigned long clinux_PER_LINUX32;

/// clone(2) without a new stack (fork semantics: returns 0 in the child, the child's pid in the parent)
/// into the namespaces `flags` names; SIGCHLD is the exit signal. Bypasses glibc's fork handlers, so
/// only call it while the process has a single thread.
pid_t clinux_clone_into(int flags);
/// openat2(2) with a struct open_how built from the arguments.
int clinux_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
/// open_tree(2).
int clinux_open_tree(int dirfd, const char *path, unsigned int flags);
/// move_mount(2).
int clinux_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags);
/// fsopen(2) + fsconfig(2) string options ("key=value" pairs in `options`, comma separated, a key
/// without '=' is a flag) + FSCONFIG_CMD_CREATE + fsmount(2) with `attributes` (clinux_MOUNT_ATTR_*).
/// Returns the detached mount's fd (close-on-exec) or -1 with errno.
int clinux_new_mount(const char *fstype, const char *options, unsigned int attributes);
/// mount_setattr(2) on the mount at fd (AT_EMPTY_PATH), setting `set` attributes.
int clinux_mount_setattr_fd(int fd, unsigned int set);
/// personality(2).
int clinux_personality(unsigned long persona);
/// sethostname(2).
int clinux_sethostname(const char *name, size_t length);
/// mount(2) with a NULL source and type (propagation changes).
int clinux_mount_propagation(const char *target, unsigned long flags);

#endif
