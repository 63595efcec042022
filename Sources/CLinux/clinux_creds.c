#define _GNU_SOURCE
#include "clinux_creds.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

const int clinux_CAP_DAC_OVERRIDE = CAP_DAC_OVERRIDE;
const int clinux_CAP_DAC_READ_SEARCH = CAP_DAC_READ_SEARCH;
const int clinux_CAP_FSETID = CAP_FSETID;
const int clinux_CAP_SYS_ADMIN = CAP_SYS_ADMIN;

int clinux_setgroups_thread(size_t count, const gid_t *groups) {
    return (int)syscall(SYS_setgroups, count, groups);
}

int clinux_raise_effective_caps(uint64_t mask) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    data[0].effective |= (uint32_t)mask;
    data[1].effective |= (uint32_t)(mask >> 32);
    return (int)syscall(SYS_capset, &header, data);
}
