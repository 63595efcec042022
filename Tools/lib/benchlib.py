"""What the Python benchmarks (Tools/bench/fuse, requests, dpkg, stall) share: the machine-wide test lock, waiting
for a mount, and the daemon's FUSE request counts."""
import collections
import fcntl
import json
import os
import subprocess
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def itest_lock(who):
    """The machine-wide test lock (Tools/lib/common.sh itest_lock), held until the process exits; nothing
    when the caller already holds it. `who` names the waiter in the line saying it waits."""
    if os.environ.get("IMGSANDBOX_ITEST_LOCKED"):
        return
    path = os.environ.get("IMGSANDBOX_ITEST_LOCK", "/run/lock/imgsandbox-itest.lock")
    held = open(path, "w")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"{who}: waiting for {path} (another test or benchmark run holds it)")
        fcntl.flock(held, fcntl.LOCK_EX)
    itest_lock.held = held  # open (and locked) until the process exits
    os.environ["IMGSANDBOX_ITEST_LOCKED"] = path


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def wait_for(predicate, what, timeout=60.0):
    """Polls for something another process does asynchronously (a mount appearing)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def request_counts(binary, mountpoint):
    """The FUSE requests per opcode the daemon serving `mountpoint` has answered, or None when `status`
    has no row for it."""
    # Without the mountpoint argument: status would stat it, a request of its own.
    out = subprocess.check_output([binary, "status", "--json"], text=True)
    mountpoint = os.path.realpath(mountpoint)
    daemons = [d for d in json.loads(out).get("daemons") or [] if d["mountpoint"] == mountpoint]
    return collections.Counter(daemons[0]["fuse_requests"]) if daemons else None
