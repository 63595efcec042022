// libseccomp (Debian's libseccomp-dev): its action and architecture macros do not import into Swift.
#include <seccomp.h>

static inline uint32_t cseccomp_action_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }
static inline uint32_t cseccomp_action_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t cseccomp_arch_x86(void) { return SCMP_ARCH_X86; }
static inline uint32_t cseccomp_arch_x32(void) { return SCMP_ARCH_X32; }
static inline uint32_t cseccomp_arch_arm(void) { return SCMP_ARCH_ARM; }

/// A rule: `action` for `syscall` when its argument `arg` has every bit of `flags` set.
static inline int cseccomp_rule_flags_set(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned arg, uint64_t flags) {
    struct scmp_arg_cmp compare = SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, flags, flags);
    return seccomp_rule_add_array(ctx, action, syscall, 1, &compare);
}
