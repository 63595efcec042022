#ifndef CLINUX_NS_H
#define CLINUX_NS_H
// What `imgsandbox run` needs and Swift cannot import: openat2 (glibc 2.36 does not wrap it), variadic
// prctl/ioctl, capset, and _GNU_SOURCE names (posix_spawn's setsid flag, memfd_create, pty calls).

#include <stdint.h>
#include <signal.h>
#include <sys/types.h>

/// openat2 resolve flags (<linux/openat2.h>).
extern const uint64_t clinux_RESOLVE_IN_ROOT;
extern const uint64_t clinux_RESOLVE_NO_SYMLINKS;
extern const uint64_t clinux_RESOLVE_NO_MAGICLINKS;
extern const uint64_t clinux_RESOLVE_NO_XDEV;
/// PER_LINUX32 (<sys/personality.h>): uname(2) reports the 32-bit machine (armv7l for armhf).
extern const unsigned long clinux_PER_LINUX32;
/// POSIX_SPAWN_SETSID (glibc >= 2.26, _GNU_SOURCE).
extern const short clinux_POSIX_SPAWN_SETSID;
/// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap, else CAP_LAST_CAP).
int clinux_cap_last_cap(void);

/// openat2(2) with a struct open_how built from the arguments.
int clinux_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
/// personality(2).
int clinux_personality(unsigned long persona);
/// For a process that is about to exec a container runtime as root: adds `inheritable` (bit N =
/// capability N) to the inheritable set, then drops every capability not in `bounding` from the bounding
/// set. Root's execve then grants the runtime its bounding set plus `inheritable` (what it needs for
/// setup, e.g. CAP_SYS_ADMIN), while everything it starts keeps the narrowed bounding set for good.
/// Returns 0 or -1 with errno.
int clinux_narrow_capabilities(uint64_t bounding, uint64_t inheritable);
/// The calling thread's permitted capabilities (bit N = capability N); 0 if capget fails.
uint64_t clinux_permitted_capabilities(void);
/// memfd_create(name, MFD_CLOEXEC) holding `length` bytes of `data`, its offset back at 0; -1 with errno.
int clinux_memfd_with(const char *name, const void *data, size_t length);
/// posix_openpt(O_RDWR|O_NOCTTY|O_CLOEXEC) + grantpt + unlockpt; the slave's path in `name`.
/// Returns the master fd or -1 with errno.
int clinux_open_pty(char *name, size_t name_size);
/// Copies the window size of terminal `from` to terminal `to` (TIOCGWINSZ, TIOCSWINSZ).
int clinux_copy_window_size(int from, int to);
/// signalfd(-1, mask, SFD_CLOEXEC): the signals in `mask` (blocked by the caller) become readable.
int clinux_signalfd(const sigset_t *mask);
/// Reads one signal from a signalfd: its number, or -1 with errno.
int clinux_read_signal(int fd);

#endif
