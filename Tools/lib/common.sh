# Shared by the Tools scripts (source it): timing, the VM lock, the kernel modules the suites need.

# Nanoseconds since the epoch.
now() { date +%s%N; }

# The median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Everything a test or benchmark run inside the VM may load (Tools/lib/kernel-modules, one list).
load_modules() {
    local m
    for m in $(cat "$(dirname "${BASH_SOURCE[0]}")/kernel-modules"); do modprobe "$m" 2>/dev/null || true; done
}

# One VM at a time (the machine has 2 cores): takes ROOT/.build/vm.lock on fd 9 until the script exits.
# Tools/bench takes the same lock.
vm_lock() {
    mkdir -p "$1/.build"
    exec 9>"$1/.build/vm.lock"
    flock 9
}
