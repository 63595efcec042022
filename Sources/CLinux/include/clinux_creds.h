#ifndef CLINUX_CREDS_H
#define CLINUX_CREDS_H
// Per-thread credentials for the FUSE passthrough, which acts for one caller on one worker thread.
// glibc's setgroups(3) changes every thread of the process (its setxid broadcast); these raw system
// calls change only the calling thread.

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// setgroups(2) for the calling thread only. Returns 0 or -1 with errno set.
int clinux_setgroups_thread(size_t count, const gid_t *groups);

/// Adds the capabilities in `mask` (bit n = capability n, below 64) to the calling thread's effective
/// set; they must be in its permitted set. Returns 0 or -1 with errno set.
int clinux_raise_effective_caps(uint64_t mask);

/// Capability numbers (clinux_raise_effective_caps, CapEff bits).
extern const int clinux_CAP_DAC_OVERRIDE;
extern const int clinux_CAP_DAC_READ_SEARCH;
extern const int clinux_CAP_FSETID;
extern const int clinux_CAP_SYS_ADMIN;

#endif
