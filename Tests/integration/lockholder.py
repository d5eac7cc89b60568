"""A process holding a flock on a path of a mount, and polling with a deadline: shared by the lock tests."""
import os
import signal
import subprocess
import time


class Holder:
    """`flock PATH -c 'sleep'` in a session of its own; `kill` ends flock and its command (which inherits the
    locked descriptor), as a crash of the holding program would."""

    def __init__(self, path, flock_args, seconds):
        ready = f"/tmp/bucketfs-held-{os.getpid()}-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(["flock", *flock_args, str(path), "-c", f"touch {ready}; sleep {seconds}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        wait_for(lambda: os.path.exists(ready) or self.proc.poll() is not None, 20)
        assert self.proc.poll() is None, self.proc.stderr.read()
        os.unlink(ready)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self):
        return self.proc.wait(timeout=10)


def hold(path, *flock_args, seconds=30):
    """A process holding a flock on `path` until killed; returns once it holds the lock."""
    return Holder(path, flock_args, seconds)


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
