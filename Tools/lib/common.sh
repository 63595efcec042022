# Shared by the Tools scripts (source it): timing, the machine-wide test lock, the kernel modules the suites need.

# Nanoseconds since the epoch.
now() { date +%s%N; }

# The median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Everything a test or benchmark run inside the VM may load (Tools/lib/kernel-modules, one list).
load_modules() {
    local m
    for m in $(cat "$(dirname "${BASH_SOURCE[0]}")/kernel-modules"); do modprobe "$m" 2>/dev/null || true; done
}

# The machine-wide lock of everything that makes loop, zram or dm devices or FUSE mounts, or boots the
# VM (integration suites, benchmarks, Tools/vm-test): a benchmark's figures and a VM boot need the
# 2-core machine to themselves. /run/lock (a root-owned tmpfs; /var/lock links to it) so that it holds
# across worktrees and clones; IMGSANDBOX_ITEST_LOCK names another file. Taken on fd 9 until the script
# exits; it exports IMGSANDBOX_ITEST_LOCKED so that the scripts it runs work under its hold instead of
# waiting for it. Tools/bench/run fuse takes the same lock.
itest_lock() {
    [ -z "${IMGSANDBOX_ITEST_LOCKED:-}" ] || return 0
    local lock=${IMGSANDBOX_ITEST_LOCK:-/run/lock/imgsandbox-itest.lock}
    exec 9>"$lock"
    if ! flock -n 9; then
        echo "$(basename "$0"): waiting for $lock (another test or benchmark run holds it)" >&2
        flock 9
    fi
    export IMGSANDBOX_ITEST_LOCKED=$lock
}

# Seconds since the previous call (the first call starts the clock), for per-phase timings.
phase_start=
phase() {
    local t
    t=$(date +%s)
    [ -z "$phase_start" ] || echo "$(basename "$0"): $1 took $((t - phase_start)) s"
    phase_start=$t
}

# `-h`/`--help` as the first argument: print the script's header comment (its usage) and exit 0. Every
# Tools script does this; they exit 2 on a usage error, 1 on a failure.
help_on_request() {
    case "${2:-}" in
        -h|--help) sed -n '2,/^[^#]/p' "$1" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    esac
}
