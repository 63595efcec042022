#ifndef CLINUX_MNTNS_H
#define CLINUX_MNTNS_H
// Looking into another mount namespace. Every unshare(CLONE_NEWNS) copies the whole mount table, the
// daemon's hidden mounts included; with private propagation our later unmounts never reach the copy,
// which keeps the filesystem and its device busy (the log of a release that answers EBUSY names it).
// setns(CLONE_NEWNS) needs a single-threaded caller, so each call forks a child that enters the namespace
// and uses raw system calls only.

#include <stdint.h>
#include <sys/types.h>

/// The mountinfo of the mount namespace `ns_fd` (an open /proc/PID/ns/mnt) as seen from that namespace's
/// root (a chrooted process's own /proc/PID/mountinfo hides every mount outside its root): an fd of a
/// memory file holding it, positioned at its start, or -1 with errno (fork, setns or the read failed; the
/// child's errno is passed back). `proc_fd`: an open directory of the host's procfs ("/proc").
int clinux_mountinfo_in(int ns_fd, int proc_fd);

#endif
