#ifndef CLINUX_H
#define CLINUX_H
// What Swift cannot import from the kernel and glibc headers: ioctl request numbers, struct dm_ioctl
// handling, and _GNU_SOURCE-only calls. Every item is prefixed clinux_.
#include "clinux_block.h"
#include "clinux_fs.h"
#include "clinux_creds.h"
#include "clinux_ns.h"
#include "clinux_mntns.h"
#include "clinux_mnt.h"
// glibc's fanotify calls, which Swift's Glibc module leaves out: tests hold a daemon's open of a file with a
// permission event to order what it does.
#include <sys/fanotify.h>
#endif
