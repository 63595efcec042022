#ifndef CLINUX_MNT_H
#define CLINUX_MNT_H
// Which mount an fd is on: the sweep of dead instances unmounts exactly the mount it read in mountinfo.

#include <stdint.h>

/// statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID): the mount id of the mount `fd` is on
/// (the one /proc/self/mountinfo lists first on each line). DONT_SYNC: a dead FUSE mount answers nothing.
/// Returns 0 and sets *mount_id, or -1 with errno.
int clinux_mount_id_of_fd(int fd, uint64_t *mount_id);

#endif
