"""What the Python benchmarks (Tools/bench/fuse, requests, dpkg, stall) share: the machine-wide test lock, waiting
for a mount, a serve instance, a sandbox's status row and the daemon's FUSE request counts."""
import collections
import fcntl
import json
import os
import signal
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


def sandbox_row(binary, mountpoint, image, sandbox):
    """The sandbox's row of `status MOUNTPOINT --json` (its hidden mount is "mount_path")."""
    out = subprocess.check_output([binary, "status", mountpoint, "--json"], text=True)
    for row in json.loads(out)["sandboxes"]:
        if row["image"] == image and row["sandbox"] == sandbox:
            return row
    raise RuntimeError(f"status shows no sandbox {image}/{sandbox}")


class Serve:
    """`imgsandbox serve --foreground` of one images folder, its output in `log_path` (appended to with
    `append`); `env` is added to this process's environment. `wait_mounted()` returns once the mount is live;
    `stop()` gives serve's exit status, also of one that exited early."""

    def __init__(self, binary, images, mountpoint, log_path, engine="overlay", cow="256M", env=None, append=False):
        self.binary, self.mountpoint = binary, mountpoint
        os.makedirs(mountpoint, exist_ok=True)
        self.log = open(log_path, "a" if append else "w")
        self.proc = subprocess.Popen([binary, "serve", "--foreground", "--engine", engine, "--cow-size", cow,
                                      images, mountpoint], stdout=self.log, stderr=self.log,
                                     env={**os.environ, **(env or {})})

    def wait_mounted(self):
        """Returns once the mount is live; raises if serve exits first."""
        wait_for(lambda: is_mounted(self.mountpoint) or self.proc.poll() is not None, f"serve on {self.mountpoint}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"serve exited with {self.proc.returncode}; see {self.log.name}")

    @property
    def pid(self):
        return self.proc.pid

    def request_counts(self):
        """The FUSE requests this daemon received per operation; {} from a daemon without them."""
        return request_counts(self.binary, self.mountpoint) or {}

    def stop(self):
        """SIGTERM and wait; returns serve's exit status (None if it did not stop within 120 s). Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log(f"bench: serve {self.proc.pid} did not stop; left running")
        self.log.close()
        return self.proc.returncode
