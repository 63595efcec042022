// libseccomp (Debian's libseccomp-dev): its action and architecture macros do not import into Swift.
#include <seccomp.h>

static inline uint32_t cseccomp_action_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }
static inline uint32_t cseccomp_action_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t cseccomp_arch_x86(void) { return SCMP_ARCH_X86; }
static inline uint32_t cseccomp_arch_x32(void) { return SCMP_ARCH_X32; }
static inline uint32_t cseccomp_arch_arm(void) { return SCMP_ARCH_ARM; }
