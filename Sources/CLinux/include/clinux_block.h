#ifndef CLINUX_BLOCK_H
#define CLINUX_BLOCK_H
// Block-device side of CLinux: ioctl request numbers and flags from the kernel headers (never hard-coded
// in Swift), struct dm_ioctl buffer handling, struct loop_config, and the few GNU-only calls LinuxBlock needs.

#include <stddef.h>
#include <stdint.h>
#include <spawn.h>

// MARK: ioctl request numbers (defined in clinux_block.c from the kernel macros)

/// LOOP_CTL_GET_FREE on /dev/loop-control: returns the index of a free (possibly new) loop device.
extern const unsigned long clinux_LOOP_CTL_GET_FREE;
/// LOOP_CLR_FD: detaches the backing file (or marks the device autoclear while still open).
extern const unsigned long clinux_LOOP_CLR_FD;
/// LOOP_SET_CAPACITY: re-reads the backing file's (or device's) size after it grew.
extern const unsigned long clinux_LOOP_SET_CAPACITY;
/// Loop flag: the device refuses writes.
extern const uint32_t clinux_LO_FLAGS_READ_ONLY;
/// Loop flag: the kernel detaches the device when its last opener closes it.
extern const uint32_t clinux_LO_FLAGS_AUTOCLEAR;
/// LOOP_MAJOR from <linux/major.h>: fallback when sysfs does not say a loop device's number.
extern const uint32_t clinux_LOOP_MAJOR;

/// BLKGETSIZE64: block device size in bytes (uint64_t out).
extern const unsigned long clinux_BLKGETSIZE64;
/// BLKSSZGET: logical block (sector) size in bytes (int out).
extern const unsigned long clinux_BLKSSZGET;

/// EXT4_IOC_RESIZE_FS: online grow of a mounted ext4 to a new block count (uint64_t in). Not in the uapi
/// headers, so built here from the same _IOW macro fs/ext4/ext4.h uses.
extern const unsigned long clinux_EXT4_IOC_RESIZE_FS;

/// CAP_SYS_RESOURCE from <linux/capability.h>: ext4 online resize needs it (root here may lack it).
extern const int clinux_CAP_SYS_RESOURCE;

/// Device-mapper control ioctls (<linux/dm-ioctl.h>).
extern const unsigned long clinux_DM_VERSION;
extern const unsigned long clinux_DM_DEV_CREATE;
extern const unsigned long clinux_DM_DEV_REMOVE;
extern const unsigned long clinux_DM_DEV_SUSPEND;
extern const unsigned long clinux_DM_TABLE_LOAD;
extern const unsigned long clinux_DM_TABLE_STATUS;
extern const unsigned long clinux_DM_LIST_DEVICES;
/// dm_ioctl.flags bits.
extern const uint32_t clinux_DM_READONLY_FLAG;
extern const uint32_t clinux_DM_SUSPEND_FLAG;
extern const uint32_t clinux_DM_BUFFER_FULL_FLAG;
/// DM_TABLE_STATUS with this flag returns the table lines instead of the status lines.
extern const uint32_t clinux_DM_STATUS_TABLE_FLAG;
/// sizeof(struct dm_ioctl): the smallest buffer a dm ioctl accepts.
extern const size_t clinux_DM_IOCTL_SIZE;

/// umount2 flags (MNT_DETACH, UMOUNT_NOFOLLOW are not all visible to Swift).
extern const int clinux_MNT_DETACH;
extern const int clinux_UMOUNT_NOFOLLOW;

// MARK: calls Swift cannot make directly

/// ioctl(fd, request, arg) with a pointer argument (Swift cannot call the variadic ioctl portably).
int clinux_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(fd, request) with no argument (LOOP_CTL_GET_FREE, LOOP_CLR_FD).
int clinux_ioctl_none(int fd, unsigned long request);
/// major(dev) from <sys/sysmacros.h>.
uint32_t clinux_major(uint64_t dev);
/// minor(dev) from <sys/sysmacros.h>.
uint32_t clinux_minor(uint64_t dev);
/// makedev(major, minor) from <sys/sysmacros.h>.
uint64_t clinux_makedev(uint32_t major, uint32_t minor);
/// strerrorname_np (GNU): "EBUSY" for EBUSY, NULL when unknown.
const char *clinux_errno_name(int err);
/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from birth, so concurrent spawns never inherit them.
int clinux_pipe_cloexec(int fds[2]);
/// mkostemp(template, O_CLOEXEC) (GNU): a scratch file no concurrent spawn inherits.
int clinux_mkstemp_cloexec(char *template);
/// The process environment (environ), for posix_spawnp.
char **clinux_environ(void);
/// posix_spawn_file_actions_addclosefrom_np (a GNU extension Swift's Glibc does not show).
int clinux_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

// MARK: loop

/// LOOP_CONFIGURE on `loop_fd` with `backing_fd`: offset and size limit in bytes (0 = to the end), `flags`
/// (clinux_LO_FLAGS_*), `label` copied into lo_file_name (truncated to 63 bytes, NUL-terminated).
/// Returns the ioctl result (-1 with errno on failure).
int clinux_loop_configure(int loop_fd, int backing_fd, uint64_t offset, uint64_t size_limit, uint32_t flags,
                          const char *label);
/// LOOP_GET_STATUS64 on `loop_fd`: copies lo_file_name (NUL-terminated) into `name` of `name_size` bytes and
/// stores lo_flags in `*flags`. Returns 0 or -1 with errno.
int clinux_loop_get_status(int loop_fd, char *name, size_t name_size, uint32_t *flags);

// MARK: device-mapper (struct dm_ioctl buffers)

/// Zeroes `buf` and fills its dm_ioctl header as clinux_dm_ioctl does (see there), without the ioctl; lets tests
/// build answers. Returns 0, or -1 with errno EINVAL / ENAMETOOLONG.
int clinux_dm_init(void *buf, size_t buf_size, const char *name, const char *uuid, uint32_t flags,
                   uint32_t target_count, const void *payload, size_t payload_size);
/// Fills the dm_ioctl header at the start of `buf` (`buf_size` bytes, at least clinux_DM_IOCTL_SIZE, 8-aligned):
/// version 4.0.0, data_size = buf_size, data_start = sizeof(struct dm_ioctl), `name` and `uuid` (either may be
/// NULL; longer than the kernel's fields → returns -1 with errno ENAMETOOLONG), `flags`, `target_count`, and
/// copies `payload` (payload_size bytes, e.g. a table built with clinux_dm_table_append) after the header.
/// Then runs ioctl(fd, request, buf). Returns the ioctl result (-1 with errno). EINVAL if it does not fit.
int clinux_dm_ioctl(int fd, unsigned long request, void *buf, size_t buf_size, const char *name, const char *uuid,
                    uint32_t flags, uint32_t target_count, const void *payload, size_t payload_size);
/// dm_ioctl.flags of an answer (check clinux_DM_BUFFER_FULL_FLAG).
uint32_t clinux_dm_result_flags(const void *buf);
/// dm_ioctl.dev of an answer (the device number of the named device).
uint64_t clinux_dm_result_dev(const void *buf);
/// dm_ioctl.version of an answer, as major*1000000 + minor*1000 + patch.
uint32_t clinux_dm_result_version(const void *buf);

/// Appends one struct dm_target_spec + NUL-terminated `params` (padded to 8 bytes) at offset `used` of
/// `table` (`table_size` bytes), with spec.next set for DM_TABLE_LOAD (bytes from this spec to the next).
/// Returns the new used size, or 0 if it does not fit or `type` is longer than 15 bytes.
size_t clinux_dm_table_append(void *table, size_t table_size, size_t used, uint64_t start, uint64_t length,
                              const char *type, const char *params);

/// Walks the targets of a DM_TABLE_STATUS answer in `buf` (`buf_size` bytes). Start with *index = 0 and
/// *cursor = 0. On success fills start/length, copies the target type (NUL-terminated) into `type`
/// (`type_size` bytes, >= 17), points *params at the NUL-terminated status text inside `buf`, advances
/// *index and *cursor, and returns 1. Returns 0 when no target is left, -1 if the answer is malformed.
int clinux_dm_status_next(const void *buf, size_t buf_size, uint32_t *index, uint32_t *cursor,
                          uint64_t *start, uint64_t *length, char *type, size_t type_size, const char **params);

/// Walks the devices of a DM_LIST_DEVICES answer in `buf`. Start with *cursor = 0 (and *done = 0). On success
/// fills *dev, points *name at the NUL-terminated name inside `buf`, advances, and returns 1. Returns 0 when
/// no device is left (or the list is empty), -1 if the answer is malformed.
int clinux_dm_list_next(const void *buf, size_t buf_size, uint32_t *cursor, int *done, uint64_t *dev,
                        const char **name);

#endif
