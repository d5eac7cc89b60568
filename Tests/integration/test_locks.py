"""flock/fcntl locks across two mounts of one bucket (two daemons stand for two hosts), per lock strategy.

Each scenario mounts the same bucket twice, A and B, with the strategy under test, and drives them with
flock(1), Python's fcntl and `bucketfs lock run`.
"""
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import BIN, FileBucket, Mount, daemon_pid, run, sh

# (strategy, backend): the object strategy on every store, Redis and lock files on the local backend.
SCENARIOS = [("object", "file"), ("object", "s3"), ("object", "gs"), ("redis", "file"), ("file", "file")]
BACKENDS = os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3,gs").split(",")
LEASE = 4


class RedisServer:
    def __init__(self, directory):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class Pair:
    """Mounts A and B of one bucket with one strategy, plus the options `bucketfs lock` needs for it."""

    def __init__(self, tmp, strategy, bucket, lock_options):
        self.strategy = strategy
        self.lock_options = lock_options
        self.a = Mount(tmp, "a", bucket=bucket, options=lock_options)
        self.b = Mount(tmp, "b", bucket=bucket, options=lock_options)
        self.bucket = bucket

    def mount(self):
        self.a.mount()
        self.b.mount()


@pytest.fixture(params=[s for s in SCENARIOS if s[1] in BACKENDS], ids=lambda s: f"{s[0]}-{s[1]}")
def pair(request, tmp_path):
    strategy, backend = request.param
    if backend == "s3":
        bucket = request.getfixturevalue("moto").new_bucket()
    elif backend == "gs":
        bucket = request.getfixturevalue("fake_gcs").new_bucket()
    else:
        bucket = FileBucket(tmp_path / "bucket")
    options = ["--lock-strategy", strategy, "--lock-lease-seconds", str(LEASE)]
    if strategy == "redis":
        options += ["--redis-url", request.getfixturevalue("redis").url]
    if strategy == "file":
        options += ["-o", f"file_lock_dir={tmp_path / 'locks'}"]
    p = Pair(tmp_path, strategy, bucket, options)
    p.mount()
    yield p
    for m in (p.a, p.b):
        m.force_cleanup()


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


def make_lockfile(pair, name="lockfile", content=b""):
    (pair.a / name).write_bytes(content)
    wait_for(lambda: (pair.b / name).exists(), 5)
    return pair.a / name, pair.b / name


def test_flock_excludes_other_mount(pair):
    a, b = make_lockfile(pair)
    holder = hold(a)
    try:
        assert run("flock", "-n", str(b), "true", check=False).returncode == 1
        started = time.monotonic()
        assert run("flock", "-w", "1", str(b), "true", check=False).returncode == 1
        assert time.monotonic() - started >= 0.9
        # Blocking: waits until A lets go, then gets it.
        waiter = subprocess.Popen(["flock", str(b), "-c", "date +%s.%N"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiter.poll() is None, "blocking flock on B returned while A held the lock"
        released = time.time()
        holder.kill()
        holder.wait()
        out, _ = waiter.communicate(timeout=30)
        assert waiter.returncode == 0
        assert float(out) >= released
    finally:
        holder.kill()
    assert run("flock", "-n", str(b), "true").returncode == 0


def test_shared_flocks_coexist_within_a_mount_and_exclude_the_other(pair):
    a, b = make_lockfile(pair)
    first = hold(a, "-s")
    try:
        assert run("flock", "-n", "-s", str(a), "true", check=False).returncode == 0
        assert run("flock", "-n", "-x", str(a), "true", check=False).returncode == 1
        assert run("flock", "-n", "-s", str(b), "true", check=False).returncode == 1
    finally:
        first.kill()
        first.wait()
    assert wait_for(lambda: run("flock", "-n", str(b), "true", check=False).returncode == 0, 10)


LOCKF_HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 100)  # 10 bytes from 100
open(sys.argv[2], "w").close()
time.sleep(60)
"""

GETLK = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
query = struct.pack("hhqqi", fcntl.F_WRLCK, 0, int(sys.argv[2]), int(sys.argv[3]), 0)
answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
kind, whence, start, length, pid = struct.unpack("hhqqi", answer)
print(kind, start, length, pid)
"""

TRY_LOCKF = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, int(sys.argv[3]), int(sys.argv[2]))
    print("granted")
except BlockingIOError:
    print("refused")
"""


def test_lockf_ranges_getlk_and_other_mount(pair, tmp_path):
    a, b = make_lockfile(pair, content=b"x" * 200)
    ready = tmp_path / "lockf-ready"
    holder = subprocess.Popen([sys.executable, "-c", LOCKF_HOLDER, str(a), str(ready)])
    try:
        assert wait_for(ready.exists, 20)
        # Within mount A: F_GETLK names the holder and its range; a disjoint range is free.
        kind, start, length, pid = run(sys.executable, "-c", GETLK, str(a), "105", "1").stdout.split()
        assert (int(kind), int(start), int(length), int(pid)) == (fcntl.F_WRLCK, 100, 10, holder.pid)
        assert run(sys.executable, "-c", GETLK, str(a), "0", "50").stdout.split()[0] == str(fcntl.F_UNLCK)
        assert run(sys.executable, "-c", TRY_LOCKF, str(a), "0", "50").stdout.strip() == "granted"
        assert run(sys.executable, "-c", TRY_LOCKF, str(a), "104", "2").stdout.strip() == "refused"
        # Across mounts the whole file is held by A.
        assert run(sys.executable, "-c", TRY_LOCKF, str(b), "0", "50").stdout.strip() == "refused"
        # SIGKILL of the holder: its locks go with it, here and for B.
        holder.kill()
        holder.wait()
        assert wait_for(lambda: run(sys.executable, "-c", TRY_LOCKF, str(b), "104", "2").stdout.strip() == "granted", 10)
    finally:
        holder.kill()


def test_blocking_lock_is_interruptible(pair):
    a, b = make_lockfile(pair)
    holder = hold(a)
    try:
        waiter = subprocess.Popen(["flock", str(b), "true"])
        time.sleep(0.5)
        assert waiter.poll() is None
        waiter.send_signal(signal.SIGTERM)
        assert waiter.wait(timeout=10) == -signal.SIGTERM
        # The interrupted request left nothing behind: once A lets go, B locks at once.
        holder.kill()
        holder.wait()
        assert wait_for(lambda: run("flock", "-n", str(b), "true", check=False).returncode == 0, 10)
    finally:
        holder.kill()


def test_daemon_killed_while_holding_frees_the_lock_after_the_lease(pair):
    a, b = make_lockfile(pair)
    holder = hold(a, seconds=120)
    pid = daemon_pid(pair.a.path)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    holder.kill()
    if pair.strategy == "file":
        # A lock file's flock dies with its process: free at once.
        assert wait_for(lambda: run("flock", "-n", str(b), "true", check=False).returncode == 0, 5)
    else:
        got = run("flock", "-w", str(LEASE * 4), str(b), "true", check=False)
        waited = time.monotonic() - killed
        assert got.returncode == 0
        assert waited >= LEASE * 0.8, f"B got the lock {waited:.1f}s after A died, before A's lease ({LEASE}s) ran out"
    pair.a.force_cleanup()


COUNTER = 'n=$(cat "$0"); echo $((n + 1)) > "$0"'


def test_counter_under_contention_loses_no_increment(pair):
    rounds, workers = 50, 4
    a, b = make_lockfile(pair, name="counter", content=b"0\n")
    script = f'for i in $(seq {rounds}); do flock "$0" bash -c {COUNTER!r} "$0" || exit 1; done'
    procs = [subprocess.Popen(["bash", "-c", script, str(path)], stderr=subprocess.PIPE, text=True)
             for path in [a] * workers + [b] * workers]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    assert int(a.read_text()) == rounds * workers * 2
    assert int(b.read_text()) == rounds * workers * 2


def test_lock_run_and_mount_exclude_each_other(pair):
    a, _ = make_lockfile(pair)
    source = pair.a.source
    holder = hold(a)
    try:
        refused = run(BIN, "lock", "run", source, "lockfile", "--wait", "0", *pair.lock_options, "--", "true",
                      check=False)
        assert refused.returncode == 1, refused.stderr
        assert "locked" in refused.stderr
        # Without --wait: the configured retries (3 tries, 1 s apart), then the same answer.
        started = time.monotonic()
        retried = run(BIN, "lock", "run", source, "lockfile", *pair.lock_options, "--", "true", check=False)
        assert retried.returncode == 1 and "locked" in retried.stderr, retried.stderr
        assert time.monotonic() - started >= 1.9
    finally:
        holder.kill()
        holder.wait()
    # Now `lock run` holds it while its command runs: flock on the mount is refused meanwhile.
    probe = f'flock -n {a} true && echo free || echo held'
    out = run(BIN, "lock", "run", source, "/lockfile", "--wait", "10", *pair.lock_options, "--", "bash", "-c", probe)
    assert out.stdout.strip() == "held"
    listed = run(BIN, "lock", "list", source, *pair.lock_options)
    assert json.loads(listed.stdout) == []
    assert run("flock", "-n", str(a), "true").returncode == 0


def test_lock_list_shows_the_mounts_holder(pair):
    a, _ = make_lockfile(pair)
    holder = hold(a)
    try:
        records = json.loads(run(BIN, "lock", "list", pair.a.source, *pair.lock_options).stdout)
        assert [r["resource"] for r in records] == ["lockfile"]
        assert records[0]["pid"] == daemon_pid(pair.a.path)
    finally:
        holder.kill()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_endpoint_counts_lock_traffic(tmp_path):
    port = free_port()
    m = Mount(tmp_path, "metrics", options=["--metrics-addr", f"127.0.0.1:{port}"])
    try:
        m.mount()
        (m / "f").write_text("x")
        run("flock", "-n", str(m / "f"), "true")
        holder = hold(m / "f")
        try:
            assert run("flock", "-n", str(m / "f"), "true", check=False).returncode == 1
            values = scrape(port)
            assert values['bucketfs_locks_held{strategy="object"}'] == 1
        finally:
            holder.kill()
            holder.wait()
        assert wait_for(lambda: scrape(port)['bucketfs_lock_released_total{strategy="object"}'] == 2, 5)
        values = scrape(port)
        assert values['bucketfs_locks_held{strategy="object"}'] == 0
        assert values['bucketfs_lock_acquired_total{strategy="object"}'] == 2
        # The refused flock -n never reached the strategy: the mount itself held the file.
        assert values['bucketfs_lock_acquire_seconds_count{strategy="object"}'] == 2
        assert values['bucketfs_lock_hold_seconds_count{strategy="object"}'] == 2
    finally:
        m.force_cleanup()


def test_metrics_address_in_use_fails_the_mount(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        m = Mount(tmp_path, "busy", options=["--metrics-addr", f"127.0.0.1:{busy.getsockname()[1]}"])
        result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), *m.options, check=False)
        m.force_cleanup()
    assert result.returncode != 0
    assert "cannot serve metrics" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_redis_stopped_means_the_lease_is_reported_lost(tmp_path):
    server = RedisServer(tmp_path)
    port = free_port()
    m = Mount(tmp_path, "lost", options=["--lock-strategy", "redis", "--redis-url", server.url,
                                         "--lock-lease-seconds", "3", "--metrics-addr", f"127.0.0.1:{port}"])
    try:
        m.mount()
        (m / "f").write_text("x")
        holder = hold(m / "f")
        server.stop()
        assert wait_for(lambda: scrape(port).get('bucketfs_lock_lost_total{strategy="redis"}') == 1, 15)
        log = next((m.cache / "logs").iterdir()).read_text()
        assert "lock lost" in log and "f" in log
        holder.kill()
    finally:
        server.stop()
        m.force_cleanup()
