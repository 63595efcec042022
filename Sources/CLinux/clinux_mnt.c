#define _GNU_SOURCE
#include "clinux_mnt.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

int clinux_mount_id_of_fd(int fd, uint64_t *mount_id) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &stx) != 0) return -1;
    if (!(stx.stx_mask & STATX_MNT_ID)) { errno = EOPNOTSUPP; return -1; }
    *mount_id = stx.stx_mnt_id;
    return 0;
}
