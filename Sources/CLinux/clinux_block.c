// Block-device side of CLinux: see clinux_block.h. _GNU_SOURCE for strerrorname_np, pipe2 and environ.
#define _GNU_SOURCE
#include <stddef.h>
#include "clinux_block.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <linux/capability.h>
#include <linux/dm-ioctl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/major.h>

extern char **environ;

const unsigned long clinux_LOOP_CTL_GET_FREE = LOOP_CTL_GET_FREE;
const unsigned long clinux_LOOP_CLR_FD = LOOP_CLR_FD;
const unsigned long clinux_LOOP_SET_CAPACITY = LOOP_SET_CAPACITY;
const uint32_t clinux_LO_FLAGS_READ_ONLY = LO_FLAGS_READ_ONLY;
const uint32_t clinux_LO_FLAGS_AUTOCLEAR = LO_FLAGS_AUTOCLEAR;
const uint32_t clinux_LOOP_MAJOR = LOOP_MAJOR;

const unsigned long clinux_BLKGETSIZE64 = BLKGETSIZE64;
const unsigned long clinux_BLKSSZGET = BLKSSZGET;

// fs/ext4/ext4.h: #define EXT4_IOC_RESIZE_FS _IOW('f', 16, __u64)
const unsigned long clinux_EXT4_IOC_RESIZE_FS = _IOW('f', 16, uint64_t);

const int clinux_CAP_SYS_RESOURCE = CAP_SYS_RESOURCE;

const unsigned long clinux_DM_VERSION = DM_VERSION;
const unsigned long clinux_DM_DEV_CREATE = DM_DEV_CREATE;
const unsigned long clinux_DM_DEV_REMOVE = DM_DEV_REMOVE;
const unsigned long clinux_DM_DEV_SUSPEND = DM_DEV_SUSPEND;
const unsigned long clinux_DM_TABLE_LOAD = DM_TABLE_LOAD;
const unsigned long clinux_DM_TABLE_STATUS = DM_TABLE_STATUS;
const unsigned long clinux_DM_LIST_DEVICES = DM_LIST_DEVICES;
const uint32_t clinux_DM_READONLY_FLAG = DM_READONLY_FLAG;
const uint32_t clinux_DM_SUSPEND_FLAG = DM_SUSPEND_FLAG;
const uint32_t clinux_DM_BUFFER_FULL_FLAG = DM_BUFFER_FULL_FLAG;
const uint32_t clinux_DM_STATUS_TABLE_FLAG = DM_STATUS_TABLE_FLAG;
const size_t clinux_DM_IOCTL_SIZE = sizeof(struct dm_ioctl);

const int clinux_MNT_DETACH = MNT_DETACH;
const int clinux_UMOUNT_NOFOLLOW = UMOUNT_NOFOLLOW;

int clinux_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int clinux_ioctl_none(int fd, unsigned long request) { return ioctl(fd, request, 0); }
uint32_t clinux_major(uint64_t dev) { return major(dev); }
uint32_t clinux_minor(uint64_t dev) { return minor(dev); }
uint64_t clinux_makedev(uint32_t major, uint32_t minor) { return makedev(major, minor); }
const char *clinux_errno_name(int err) { return strerrorname_np(err); }
int clinux_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int clinux_mkstemp_cloexec(char *template) { return mkostemp(template, O_CLOEXEC); }
char **clinux_environ(void) { return environ; }
int clinux_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

// MARK: loop

int clinux_loop_configure(int loop_fd, int backing_fd, uint64_t offset, uint64_t size_limit, uint32_t flags,
                          const char *label) {
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = (uint32_t)backing_fd;
    config.info.lo_offset = offset;
    config.info.lo_sizelimit = size_limit;
    config.info.lo_flags = flags;
    if (label != NULL) {
        // strncpy into LO_NAME_SIZE-1 keeps the last byte NUL (memset above).
        strncpy((char *)config.info.lo_file_name, label, LO_NAME_SIZE - 1);
    }
    return ioctl(loop_fd, LOOP_CONFIGURE, &config);
}

int clinux_loop_get_status(int loop_fd, char *name, size_t name_size, uint32_t *flags) {
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    if (ioctl(loop_fd, LOOP_GET_STATUS64, &info) != 0) return -1;
    if (name != NULL && name_size > 0) {
        size_t n = strnlen((const char *)info.lo_file_name, LO_NAME_SIZE);
        if (n >= name_size) n = name_size - 1;
        memcpy(name, info.lo_file_name, n);
        name[n] = '\0';
    }
    if (flags != NULL) *flags = info.lo_flags;
    return 0;
}

// MARK: device-mapper

int clinux_dm_init(void *buf, size_t buf_size, const char *name, const char *uuid, uint32_t flags,
                   uint32_t target_count, const void *payload, size_t payload_size) {
    struct dm_ioctl *io = buf;
    if (buf == NULL || buf_size < sizeof *io || buf_size > UINT32_MAX ||
        payload_size > buf_size - sizeof *io) {
        errno = EINVAL;
        return -1;
    }
    if ((name != NULL && strlen(name) >= DM_NAME_LEN) || (uuid != NULL && strlen(uuid) >= DM_UUID_LEN)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memset(buf, 0, buf_size);
    io->version[0] = 4;
    io->version[1] = 0;
    io->version[2] = 0;
    io->data_size = (uint32_t)buf_size;
    io->data_start = sizeof *io;
    io->target_count = target_count;
    io->flags = flags;
    if (name != NULL) strcpy(io->name, name);
    if (uuid != NULL) strcpy(io->uuid, uuid);
    if (payload != NULL && payload_size > 0) memcpy((char *)buf + sizeof *io, payload, payload_size);
    return 0;
}

int clinux_dm_ioctl(int fd, unsigned long request, void *buf, size_t buf_size, const char *name, const char *uuid,
                    uint32_t flags, uint32_t target_count, const void *payload, size_t payload_size) {
    if (clinux_dm_init(buf, buf_size, name, uuid, flags, target_count, payload, payload_size) != 0) return -1;
    return ioctl(fd, request, buf);
}

uint32_t clinux_dm_result_flags(const void *buf) { return ((const struct dm_ioctl *)buf)->flags; }
uint64_t clinux_dm_result_dev(const void *buf) { return ((const struct dm_ioctl *)buf)->dev; }
uint32_t clinux_dm_result_version(const void *buf) {
    const struct dm_ioctl *io = buf;
    return io->version[0] * 1000000u + io->version[1] * 1000u + io->version[2];
}

size_t clinux_dm_table_append(void *table, size_t table_size, size_t used, uint64_t start, uint64_t length,
                              const char *type, const char *params) {
    if (table == NULL || type == NULL || strlen(type) >= DM_MAX_TYPE_NAME || used % 8 != 0) return 0;
    if (params == NULL) params = "";
    size_t params_size = strlen(params) + 1;
    size_t spec_size = (sizeof(struct dm_target_spec) + params_size + 7) & ~(size_t)7;
    if (used > table_size || spec_size > table_size - used || spec_size > UINT32_MAX) return 0;
    char *at = (char *)table + used;
    memset(at, 0, spec_size);
    struct dm_target_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.sector_start = start;
    spec.length = length;
    spec.next = (uint32_t)spec_size;  // DM_TABLE_LOAD: relative to this spec
    strcpy(spec.target_type, type);
    memcpy(at, &spec, sizeof spec);
    memcpy(at + sizeof spec, params, params_size);
    return used + spec_size;
}

// The answer's valid bytes: the header's data_size, never beyond what we allocated.
static size_t dm_answer_end(const struct dm_ioctl *io, size_t buf_size) {
    size_t end = io->data_size;
    return end < buf_size ? end : buf_size;
}

int clinux_dm_status_next(const void *buf, size_t buf_size, uint32_t *index, uint32_t *cursor,
                          uint64_t *start, uint64_t *length, char *type, size_t type_size, const char **params) {
    if (buf == NULL || buf_size < sizeof(struct dm_ioctl) || type == NULL || type_size <= DM_MAX_TYPE_NAME) {
        return -1;
    }
    const struct dm_ioctl *io = buf;
    if (*index >= io->target_count) return 0;
    size_t end = dm_answer_end(io, buf_size);
    // DM_TABLE_STATUS: spec.next counts from the first spec, which sits at data_start.
    size_t at = (size_t)io->data_start + *cursor;
    if (io->data_start < sizeof(struct dm_ioctl) || at < io->data_start || at % 8 != 0 ||
        at + sizeof(struct dm_target_spec) >= end) {
        return -1;
    }
    struct dm_target_spec spec;
    memcpy(&spec, (const char *)buf + at, sizeof spec);
    const char *text = (const char *)buf + at + sizeof spec;
    if (memchr(text, '\0', end - (at + sizeof spec)) == NULL) return -1;
    *start = spec.sector_start;
    *length = spec.length;
    memcpy(type, spec.target_type, DM_MAX_TYPE_NAME);
    type[DM_MAX_TYPE_NAME] = '\0';
    *params = text;
    *index += 1;
    if (*index < io->target_count && spec.next <= *cursor) return -1;  // must move forward
    *cursor = spec.next;
    return 1;
}

int clinux_dm_list_next(const void *buf, size_t buf_size, uint32_t *cursor, int *done, uint64_t *dev,
                        const char **name) {
    if (buf == NULL || buf_size < sizeof(struct dm_ioctl)) return -1;
    if (*done) return 0;
    const struct dm_ioctl *io = buf;
    size_t end = dm_answer_end(io, buf_size);
    size_t at = (size_t)io->data_start + *cursor;
    if (io->data_start < sizeof(struct dm_ioctl) || at < io->data_start ||
        at + offsetof(struct dm_name_list, name) > end) {
        // An answer with no room for even one entry holds no devices.
        if (*cursor == 0 && at >= end) { *done = 1; return 0; }
        return -1;
    }
    struct dm_name_list entry;
    memcpy(&entry, (const char *)buf + at, offsetof(struct dm_name_list, name));
    if (*cursor == 0 && entry.dev == 0) { *done = 1; return 0; }  // the kernel's "no devices" marker
    const char *text = (const char *)buf + at + offsetof(struct dm_name_list, name);
    if (memchr(text, '\0', end - (at + offsetof(struct dm_name_list, name))) == NULL) return -1;
    *dev = entry.dev;
    *name = text;
    if (entry.next == 0) {
        *done = 1;
    } else {
        if ((uint64_t)*cursor + entry.next > UINT32_MAX) return -1;
        *cursor += entry.next;  // DM_LIST_DEVICES: relative to this entry
    }
    return 1;
}
