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
import shutil
import sys
import time

import pytest

from conftest import BIN, FileBucket, Mount, daemon_pid, run, sh
from servers import RedisServer, free_port

# (strategy, backend): the object strategy on every store, Redis and lock files on the local backend.
SCENARIOS = [("object", "file"), ("object", "s3"), ("object", "gs"), ("redis", "file"), ("file", "file")]
BACKENDS = os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3,gs").split(",")
LEASE = 4
# The object strategy on SeaweedFS too (a real S3 server, whose conditional writes are its own), for the key
# scenarios only: exclusion, sharing, conversion, F_GETLK, the counter with readers, fencing tokens.
ON_SEAWEED = {
    "test_flock_excludes_other_mount", "test_shared_flocks_coexist_across_mounts_and_exclusive_waits_for_all",
    "test_flock_conversion_both_ways_across_mounts", "test_lockf_ranges_getlk_and_other_mount",
    "test_counter_under_contention_loses_no_increment",
    "test_lock_run_exports_a_growing_fencing_token_and_a_stale_holder_is_refused",
}


def pytest_generate_tests(metafunc):
    if "pair" not in metafunc.fixturenames:
        return
    scenarios = [s for s in SCENARIOS if s[1] in BACKENDS]
    if metafunc.function.__name__ in ON_SEAWEED and ("s3" in BACKENDS or "seaweed" in BACKENDS):
        scenarios.append(("object", "seaweed"))
    metafunc.parametrize("pair", scenarios, ids=[f"{s[0]}-{s[1]}" for s in scenarios], indirect=True)


class Pair:
    """Mounts A and B of one bucket with one strategy, plus the options `bucketfs lock` needs for it."""

    def __init__(self, tmp, strategy, bucket, lock_options):
        self.strategy = strategy
        # `bucketfs lock` needs the store's own options too (SeaweedFS: its endpoint).
        self.lock_options = list(getattr(bucket, "mount_options", [])) + lock_options
        self.a = Mount(tmp, "a", bucket=bucket, options=lock_options)
        self.b = Mount(tmp, "b", bucket=bucket, options=lock_options)
        self.bucket = bucket

    def mount(self):
        self.a.mount()
        self.b.mount()


@pytest.fixture
def pair(request, tmp_path):
    strategy, backend = request.param  # parametrized by pytest_generate_tests
    if backend == "s3":
        bucket = request.getfixturevalue("moto").new_bucket()
    elif backend == "seaweed":
        bucket = request.getfixturevalue("seaweed").new_bucket()
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


def test_shared_flocks_coexist_across_mounts_and_exclusive_waits_for_all(pair):
    a, b = make_lockfile(pair)
    on_a = hold(a, "-s")
    on_b = hold(b, "-s")
    try:
        assert run("flock", "-n", "-s", str(a), "true", check=False).returncode == 0
        assert run("flock", "-n", "-s", str(b), "true", check=False).returncode == 0
        assert run("flock", "-n", "-x", str(a), "true", check=False).returncode == 1
        assert run("flock", "-n", "-x", str(b), "true", check=False).returncode == 1
        # A blocking exclusive request on A waits for every sharer, on both mounts.
        waiter = subprocess.Popen(["flock", "-x", str(a), "-c", "date +%s.%N"], stdout=subprocess.PIPE, text=True)
        on_a.kill()
        on_a.wait()
        time.sleep(1.0)
        assert waiter.poll() is None, "exclusive granted while B still shared the file"
        released = time.time()
        on_b.kill()
        on_b.wait()
        out, _ = waiter.communicate(timeout=30)
        assert waiter.returncode == 0 and float(out) >= released
    finally:
        on_a.kill()
        on_b.kill()
    assert wait_for(lambda: run("flock", "-n", str(b), "true", check=False).returncode == 0, 10)


LOCKER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
ops = {"sh": fcntl.LOCK_SH, "ex": fcntl.LOCK_EX, "shnb": fcntl.LOCK_SH | fcntl.LOCK_NB,
       "exnb": fcntl.LOCK_EX | fcntl.LOCK_NB, "un": fcntl.LOCK_UN}
print("ready", flush=True)
for line in sys.stdin:
    try:
        fcntl.flock(fd, ops[line.strip()])
        print("ok", flush=True)
    except BlockingIOError:
        print("busy", flush=True)
"""


class Locker:
    """A process holding one open file description of `path`, converting its flock on command."""

    def __init__(self, path):
        self.proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def __call__(self, op):
        self.proc.stdin.write(op + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_flock_conversion_both_ways_across_mounts(pair):
    a, b = make_lockfile(pair)
    on_a, on_b = Locker(a), Locker(b)
    try:
        assert on_a("sh") == "ok"
        assert on_b("shnb") == "ok"
        assert on_a("exnb") == "busy", "upgraded while B shared the file"
        assert on_b("un") == "ok"
        assert on_a("exnb") == "ok", "upgrade once the other sharer left"
        assert on_b("shnb") == "busy"
        assert on_a("sh") == "ok"  # downgrade: readers elsewhere get in
        assert on_b("shnb") == "ok"
        assert on_b("exnb") == "busy"
        assert on_a("un") == "ok"
        assert on_b("exnb") == "ok", "B upgrades once A is gone"
        assert run("flock", "-n", "-s", str(a), "true", check=False).returncode == 1
    finally:
        on_a.close()
        on_b.close()


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
        # Across mounts the whole file is held by A, and F_GETLK on B says so: A's write lock over the whole
        # file, pid 0 (another host's process).
        assert run(sys.executable, "-c", TRY_LOCKF, str(b), "0", "50").stdout.strip() == "refused"
        kind, start, length, pid = run(sys.executable, "-c", GETLK, str(b), "0", "50").stdout.split()
        assert (int(kind), int(start), int(length), int(pid)) == (fcntl.F_WRLCK, 0, 0, 0)
        # SIGKILL of the holder: its locks go with it, here and for B.
        holder.kill()
        holder.wait()
        assert wait_for(lambda: run(sys.executable, "-c", TRY_LOCKF, str(b), "104", "2").stdout.strip() == "granted", 10)
    finally:
        holder.kill()


READ_RANGE_HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_SH, int(sys.argv[3]), int(sys.argv[2]))
open(sys.argv[4], "w").close()
time.sleep(60)
"""

GETLK_READ = GETLK.replace("fcntl.F_WRLCK, 0, int", "fcntl.F_RDLCK, 0, int")


def test_lockf_read_and_write_ranges_across_mounts(pair, tmp_path):
    a, b = make_lockfile(pair, content=b"x" * 400)
    ready_a, ready_b = tmp_path / "ready-a", tmp_path / "ready-b"
    reader_a = subprocess.Popen([sys.executable, "-c", READ_RANGE_HOLDER, str(a), "0", "100", str(ready_a)])
    reader_b = None
    try:
        assert wait_for(ready_a.exists, 20)
        # Read locks on overlapping ranges of two mounts coexist.
        reader_b = subprocess.Popen([sys.executable, "-c", READ_RANGE_HOLDER, str(b), "50", "100", str(ready_b)])
        assert wait_for(lambda: ready_b.exists() or reader_b.poll() is not None, 20) and reader_b.poll() is None
        # A write lock waits for the other mount's reader, even on a range nobody reads.
        assert run(sys.executable, "-c", TRY_LOCKF, str(b), "300", "10").stdout.strip() == "refused"
        assert run(sys.executable, "-c", TRY_LOCKF, str(a), "300", "10").stdout.strip() == "refused"
        # F_GETLK on B, for a range B's own reader does not cover, reports A's read lock (pid 0, whole file);
        # a read query finds nothing in the way.
        kind, start, length, pid = run(sys.executable, "-c", GETLK, str(b), "300", "10").stdout.split()
        assert (int(kind), int(start), int(length), int(pid)) == (fcntl.F_RDLCK, 0, 0, 0)
        assert run(sys.executable, "-c", GETLK_READ, str(b), "300", "10").stdout.split()[0] == str(fcntl.F_UNLCK)
        # Within B, F_GETLK still names B's own reader precisely.
        kind, start, length, pid = run(sys.executable, "-c", GETLK, str(b), "60", "1").stdout.split()
        assert (int(kind), int(start), int(length), int(pid)) == (fcntl.F_RDLCK, 50, 100, reader_b.pid)
        reader_a.kill()
        reader_a.wait()
        assert wait_for(lambda: run(sys.executable, "-c", TRY_LOCKF, str(b), "300", "10").stdout.strip()
                        == "granted", 10)
        assert run(sys.executable, "-c", TRY_LOCKF, str(a), "300", "10").stdout.strip() == "refused"
    finally:
        reader_a.kill()
        if reader_b:
            reader_b.kill()


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


HAMMER = r"""
import fcntl, os, sys, time
path, stop, progress = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_RDWR)
rounds = 0
while not os.path.exists(stop):
    fcntl.flock(fd, fcntl.LOCK_EX)
    time.sleep(0.01)
    fcntl.flock(fd, fcntl.LOCK_UN)
    rounds += 1
    if rounds == 20:
        open(progress, "w").close()
print(rounds)
"""


def test_busy_mount_does_not_starve_a_waiter_on_the_other_mount(pair, tmp_path):
    """Three processes on A take the lock back to back, so A always has a local waiter to hand the lease to;
    a blocking flock on B is still served while they go on (A gives the lease back after its slice)."""
    a, b = make_lockfile(pair)
    stop = tmp_path / "stop"
    progress = [tmp_path / f"progress-{n}" for n in range(3)]
    hammers = [subprocess.Popen([sys.executable, "-c", HAMMER, str(a), str(stop), str(p)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for p in progress]
    try:
        assert wait_for(lambda: all(p.exists() for p in progress), 60), "A's processes never got going"
        waiter = subprocess.Popen(["flock", "-x", str(b), "-c", f"test ! -e {stop} && echo served"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            out, _ = waiter.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            waiter.kill()
            raise AssertionError("B's flock was starved by A's processes for 60 s")
        assert waiter.returncode == 0 and out.strip() == "served", "B served only after A stopped"
        assert all(h.poll() is None for h in hammers), "A's processes were still at it"
    finally:
        stop.touch()
        for h in hammers:
            out, err = h.communicate(timeout=60)
            assert h.returncode == 0, err
            assert int(out) >= 20


COUNTER = 'n=$(cat "$0"); echo $((n + 1)) > "$0"'


READER = r"""
import fcntl, os, sys
path, done = sys.argv[1], sys.argv[2]
last, reads = 0, 0
while not os.path.exists(done) or reads < 5:
    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        value = int(f.read())  # never a torn or empty write under the lock
        fcntl.flock(f, fcntl.LOCK_UN)
    assert value >= last, f"went back from {last} to {value}"
    last, reads = value, reads + 1
print(reads)
"""


def test_counter_under_contention_loses_no_increment(pair, tmp_path):
    rounds, workers = 50, 4
    a, b = make_lockfile(pair, name="counter", content=b"0\n")
    done = tmp_path / "writers-done"
    script = f'for i in $(seq {rounds}); do flock "$0" bash -c {COUNTER!r} "$0" || exit 1; done'
    procs = [subprocess.Popen(["bash", "-c", script, str(path)], stderr=subprocess.PIPE, text=True)
             for path in [a] * workers + [b] * workers]
    # Shared readers on both mounts, mixed in: each read sees a whole, never decreasing value.
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), str(done)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for path in (a, a, b, b)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    done.touch()
    for r in readers:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        assert int(out) >= 5
    assert int(a.read_text()) == rounds * workers * 2
    assert int(b.read_text()) == rounds * workers * 2


def test_stress_ng_lock_stressors_on_both_mounts(pair):
    if not shutil.which("stress-ng"):
        pytest.skip("stress-ng is not installed (apt-get install stress-ng)")
    procs = []
    for mount in (pair.a, pair.b):
        work = mount / f"stress-{mount.path.name}"
        work.mkdir(exist_ok=True)
        procs.append(subprocess.Popen(
            ["stress-ng", "--flock", "2", "--lockf", "2", "--fcntl", "2", "--timeout", "8s", "--metrics-brief",
             "--temp-path", str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out
        assert "successful run completed" in out and "unsuccessful" not in out, out
        assert not [line for line in out.splitlines() if "fail" in line.lower()], out
        for stressor in ("flock", "lockf", "fcntl"):
            assert stressor in out, out


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


GUARDED_WRITE = r"""
import json, os, sys, time
# A write guarded by the fencing token: refused if a newer holder has written already.
path, value = sys.argv[1], sys.argv[2]
token = int(os.environ["BUCKETFS_LOCK_TOKEN"])
if len(sys.argv) > 3:
    while not os.path.exists(sys.argv[3]):  # a stale holder, paused until told to go on
        time.sleep(0.05)
try:
    current = json.load(open(path))
except FileNotFoundError:
    current = {"token": 0}
if current["token"] > token:
    print(f"refused: token {token} < {current['token']}")
    sys.exit(3)
json.dump({"token": token, "value": value}, open(path + ".tmp", "w"))
os.rename(path + ".tmp", path)
print(f"wrote with token {token}")
"""


def test_lock_run_exports_a_growing_fencing_token_and_a_stale_holder_is_refused(pair, tmp_path):
    source, options = pair.a.source, pair.lock_options
    tokens = [int(run(BIN, "lock", "run", source, "job", "--wait", "10", *options, "--",
                      "sh", "-c", "echo $BUCKETFS_LOCK_TOKEN").stdout) for _ in range(3)]
    assert tokens == sorted(set(tokens)), tokens
    # A lock taken through the mount shows its token in .bucketfs/locks/<path>.json, greater still.
    a, _ = make_lockfile(pair, name="job")
    holder = hold(a)
    try:
        document = json.loads((pair.a / ".bucketfs" / "locks" / "job.json").read_text())
        assert document["lease"]["token"] > tokens[-1]
        mounted = document["lease"]["token"]
    finally:
        holder.kill()
        holder.wait()
    if pair.strategy == "file":
        return  # a lock file's flock never lapses: no stale holder to make
    # A holder whose lease lapses (its bucketfs is stopped past the lease) finds a newer holder's write.
    data, go = tmp_path / "data.json", tmp_path / "go"
    stale = subprocess.Popen([BIN, "lock", "run", source, "job", "--wait", "10", *options, "--",
                              sys.executable, "-c", GUARDED_WRITE, str(data), "stale", str(go)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: json.loads(run(BIN, "lock", "list", source, *options).stdout) != [], 20)
    os.kill(stale.pid, signal.SIGSTOP)  # no more renewals: the lease runs out
    try:
        newer = run(BIN, "lock", "run", source, "job", "--wait", str(LEASE * 4), *options, "--",
                    sys.executable, "-c", GUARDED_WRITE, str(data), "newer")
        assert "wrote" in newer.stdout
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    go.touch()
    out, err = stale.communicate(timeout=60)
    assert "refused" in out, out + err
    assert stale.returncode == 1, (out, err)  # lock run: the lease was lost while the command ran
    written = json.loads(data.read_text())
    assert written["value"] == "newer" and written["token"] > mounted


def test_lock_list_shows_the_mounts_holder(pair):
    a, _ = make_lockfile(pair)
    holder = hold(a)
    try:
        records = json.loads(run(BIN, "lock", "list", pair.a.source, *pair.lock_options).stdout)
        assert [r["resource"] for r in records] == ["lockfile"]
        assert records[0]["pid"] == daemon_pid(pair.a.path)
    finally:
        holder.kill()


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
