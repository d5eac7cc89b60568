"""Nothing acknowledged is lost: faults between the daemon and the store, a full cache disk, kill -9 of the daemon.

A fault proxy (faultproxy.py) sits between bucketfs and moto_server (and fake-gcs-server for the store-fault
and kill -9 tests, which run on gs:// too). Every test checks the same promise: every
byte a writer was told is written (close/fsync returned) is in the bucket or in the recovery folder, and every
write that did not make it was reported to its writer. Counts and times are bounded (seeded random plans, a few
dozen files); the table of faults injected, files written, bytes lost and writers told is printed at the end.
"""
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import BIN, daemon_pid, is_mounted, run
from faultproxy import FaultProxy

SELECTED = os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3,gs").split(",")

TABLE = collections.Counter()
FAULTS = collections.Counter()


@pytest.fixture(params=["s3"])
def backend(request):
    """s3 for every test here; the store-fault test runs on gs too."""
    if request.param not in SELECTED:
        pytest.skip(f"{request.param} backend not selected")
    return request.param


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    yield
    width = max([len(k) for k in FAULTS] + [24])
    lines = ["", "durability under faults (Tests/integration/test_durability.py)",
             f"{'fault injected':<{width}} count"]
    lines += [f"{kind:<{width}} {FAULTS[kind]}" for kind in sorted(FAULTS)]
    lines += [f"{'files written':<{width}} {TABLE['files']}",
              f"{'bytes acknowledged':<{width}} {TABLE['acked_bytes']}",
              f"{'bytes lost':<{width}} {TABLE['lost_bytes']}",
              f"{'writers told of a failure':<{width}} {TABLE['told']}",
              f"{'failures not told':<{width}} {TABLE['untold']}",
              f"{'unflushed bytes lost at kill -9 (not acknowledged; 0 once StagingJournal is wired)':<{width}} "
              f"{TABLE['unflushed_lost']}", ""]
    sys.__stdout__.write("\n".join(lines) + "\n")
    sys.__stdout__.flush()


@pytest.fixture
def proxy(backend, request, monkeypatch):
    """The proxy in front of the backend's server; the daemon finds it through the endpoint variable."""
    if backend == "gs":
        p = FaultProxy(request.getfixturevalue("fake_gcs").port)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", p.endpoint)
    else:
        p = FaultProxy(request.getfixturevalue("moto").port)
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.endpoint)
    yield p
    for kind, n in p.injected.items():
        FAULTS[f"{kind} ({backend})"] += n
    p.stop()


def daemon_state(path, body):
    """A request for the daemon's own records (`.bucketfs/`): in the path on S3 and in GCS uploads' query,
    in the JSON part of a GCS multipart upload."""
    return ".bucketfs/" in urllib.parse.unquote(path) or b'.bucketfs/' in body[:2048]


def recovered_copies(mount):
    """key -> list of saved contents in the mount's recovery folder."""
    folder = mount.cache / "recovery"
    copies = collections.defaultdict(list)
    if folder.exists():
        for entry in folder.glob("*.json"):
            info = json.loads(entry.read_text())
            data = info.get("data")
            if data and os.path.exists(data):
                copies[info["key"]].append(open(data, "rb").read())
    return copies


def account(mount, written):
    """written: key -> (bytes, what write_file said). Adds to the table; returns (lost bytes, failures nobody was told of)."""
    copies = recovered_copies(mount)
    lost = untold = 0
    for key, (data, told) in written.items():
        in_bucket = mount.bucket.get(key) == data
        kept = data in copies.get(key, [])
        TABLE["files"] += 1
        TABLE["told"] += told is not None
        if told is None:
            TABLE["acked_bytes"] += len(data)
            if not in_bucket:
                lost += len(data)
                untold += 1
        elif told == "close" and not (in_bucket or kept):
            lost += len(data)    # accepted by write(2), then neither uploaded nor kept
    TABLE["lost_bytes"] += lost
    TABLE["untold"] += untold
    return lost, untold


def write_file(path, data):
    """Writes and closes. Returns None when both succeeded, "write" when a write was refused (the bytes were
    never accepted), "close" when the writes were accepted but close reported a failure (then the data must be
    kept: in the bucket or in the recovery folder)."""
    f = open(path, "wb")
    try:
        f.write(data)
        f.flush()
    except OSError:
        try:
            f.close()
        except OSError:
            pass
        return "write"
    try:
        f.close()
    except OSError:
        return "close"
    return None


# MARK: conditional writes


def test_a_store_that_ignores_conditional_writes_is_found_at_mount(proxy, make_mount):
    m = make_mount()
    proxy.plan = lambda method, path, headers: (
        "strip" if "If-None-Match" in headers or "If-Match" in headers else "pass")
    refused = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), check=False)
    assert refused.returncode != 0 and not is_mounted(m.path)
    assert "ignores conditional writes" in refused.stderr and "lock_mode=best_effort" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert proxy.injected["strip"] >= 2    # the probe's conditional writes went through, unconditioned

    m.options = ["-o", "lock_mode=best_effort"]
    m.mount()
    logs = "".join(p.read_text() for p in (m.cache / "logs").glob("*.log"))
    assert logs.count("the store ignores conditional writes") == 1, logs
    m.unmount()
    assert not [k for k in m.bucket.all_keys() if "probe-" in k], "the probe cleans up"


def test_an_honest_store_mounts_without_warning(proxy, make_mount):
    m = make_mount()
    m.mount()
    logs = "".join(p.read_text() for p in (m.cache / "logs").glob("*.log"))
    assert "conditional writes" not in logs
    assert not [k for k in m.bucket.all_keys() if "probe-" in k]
    m.unmount()


# MARK: recover push is conditional


def test_recover_push_does_not_overwrite_a_newer_object(moto, make_mount):
    m = make_mount()
    m.mount()
    m.unmount()
    folder = m.cache / "recovery"
    folder.mkdir(parents=True, exist_ok=True)
    client, bucket = m.bucket.client, m.bucket.name

    def save(name, key, data, base):
        (folder / f"{name}.data").write_bytes(data)
        info = {"store": m.bucket.url, "key": key, "reason": "test", "saved": name,
                "data": str(folder / f"{name}.data"), "endpoint_url": moto.endpoint}
        if base is not None:
            info["base"] = base
        (folder / f"{name}.json").write_text(json.dumps(info))

    def push(name, *extra):
        return run(BIN, "recover", "push", name, *extra, "--cache-dir", str(m.cache), check=False)

    m.bucket.put("doc", b"v1")
    v1 = client.head_object(Bucket=bucket, Key="doc")["ETag"].strip('"')
    save("a-based-on-v1", "doc", b"ours, based on v1", f"version:{v1}")
    assert push("a-based-on-v1").returncode == 0
    assert m.bucket.get("doc") == b"ours, based on v1"

    save("b-stale", "doc", b"stale copy", f"version:{v1}")
    refused = push("b-stale")
    assert refused.returncode != 0 and "changed" in refused.stderr
    assert m.bucket.get("doc") == b"ours, based on v1" and (folder / "b-stale.data").exists()
    assert push("b-stale", "--force").returncode == 0
    assert m.bucket.get("doc") == b"stale copy"

    save("c-new", "fresh", b"new file", "absent")
    assert push("c-new").returncode == 0 and m.bucket.get("fresh") == b"new file"
    save("d-new-taken", "fresh", b"another new file", "absent")
    assert push("d-new-taken").returncode != 0 and m.bucket.get("fresh") == b"new file"
    save("e-no-base", "doc", b"unknown base", None)
    assert push("e-no-base").returncode != 0 and m.bucket.get("doc") == b"stale copy"


# MARK: store faults


@pytest.mark.parametrize("backend", ["s3", "gs"], indirect=True)
def test_store_faults_lose_nothing_acknowledged(backend, proxy, make_mount):
    rng = random.Random(1212)
    # The same faults on both stores; each store's own way of saying "slow down".
    kinds = ["500", "503", "slowdown" if backend == "s3" else "429", "reset", "drop", "stall"]
    budget = {"stall": 3}

    def plan(method, path, headers, body):
        if method not in ("PUT", "POST") or daemon_state(path, body) or rng.random() > 0.3:
            return "pass"
        kind = rng.choice(kinds)
        if budget.get(kind, 1 << 30) <= 0:
            return "pass"
        budget[kind] = budget.get(kind, 1 << 30) - 1
        return kind

    m = make_mount()
    m.mount()
    proxy.plan_takes_body = True
    proxy.plan = plan
    written = {}
    started = time.monotonic()
    for i in range(40):
        data = rng.randbytes(rng.choice([0, 1, 700, 40_000, 300_000]))
        written[f"f{i:02}"] = (data, write_file(m / f"f{i:02}", data))
    # Rewrites of existing files: conditional on the version read.
    for i in range(0, 40, 4):
        data = rng.randbytes(5_000)
        written[f"f{i:02}"] = (data, write_file(m / f"f{i:02}", data))
    proxy.plan = lambda *a: "pass"
    m.unmount()    # what is still dirty goes up now
    assert time.monotonic() - started < 120
    lost, untold = account(m, written)
    assert sum(proxy.injected.values()) >= 10, proxy.injected
    assert lost == 0 and untold == 0, (lost, untold, proxy.injected)


# MARK: a full cache disk


def test_a_full_cache_disk_is_reported_to_the_writer(proxy, make_mount, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    m = make_mount()
    m.cache.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(m.cache))
    try:
        m.options = ["-o", "part_size_mib=0"]
        m.mount()
        rng = random.Random(7)
        written = {}
        for i, size in enumerate([10_000, 5 << 20, 20_000, 4 << 20, 1_000]):
            data = rng.randbytes(size)
            written[f"g{i}"] = (data, write_file(m / f"g{i}", data))
        FAULTS["ENOSPC (3 MiB cache)"] += sum(1 for _, told in written.values() if told)
        assert written["g1"][1] and written["g3"][1], "a file larger than the cache disk fails, and says so"
        m.unmount()
        lost, untold = account(m, written)
        assert lost == 0 and untold == 0
        assert m.bucket.get("g0") == written["g0"][0] and m.bucket.get("g4") == written["g4"][0]
    finally:
        m.force_cleanup()
        subprocess.run(["umount", "-l", str(m.cache)], capture_output=True)


# MARK: kill -9 of the daemon

WRITER = """
import os, sys
root, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import random
rng = random.Random(seed)
for i in range(count):
    data = rng.randbytes(rng.choice([100, 50_000, 400_000]))
    try:
        with open(os.path.join(root, f"k{i:03}"), "wb") as f:
            f.write(data)
    except OSError as e:
        print(f"failed {i} {e.errno}", flush=True)
        break
    print(f"acked {i}", flush=True)
"""


@pytest.mark.parametrize("backend", ["s3", "gs"], indirect=True)
def test_kill_9_mid_upload_loses_nothing_acknowledged(backend, proxy, make_mount):
    m = make_mount()
    m.mount()
    rng = random.Random(99)
    for round_ in range(3):
        seed = 1000 + round_
        # Each round in a folder of its own, so a round never sees the last one's files.
        (m / f"r{round_}").mkdir()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(m / f"r{round_}"), "200", str(seed)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 1.5))
        os.kill(daemon_pid(m.path), signal.SIGKILL)
        FAULTS[f"kill -9 of the daemon ({backend})"] += 1
        out, _ = writer.communicate(timeout=60)
        m.force_cleanup()
        m.mount()
        # The writer's data, drawn again from its seed in the same order.
        data_rng = random.Random(seed)
        datas = [data_rng.randbytes(data_rng.choice([100, 50_000, 400_000])) for _ in range(200)]
        acked = [int(line.split()[1]) for line in out.splitlines() if line.startswith("acked")]
        told = [line for line in out.splitlines() if line.startswith("failed")]
        assert acked, "the writer got some files through before the kill"
        TABLE["files"] += len(acked) + len(told)
        TABLE["told"] += len(told)
        for i in acked:
            TABLE["acked_bytes"] += len(datas[i])
            if m.bucket.get(f"r{round_}/k{i:03}") != datas[i]:
                TABLE["lost_bytes"] += len(datas[i])
                TABLE["untold"] += 1
        assert all(m.bucket.get(f"r{round_}/k{i:03}") == datas[i] for i in acked), "an acknowledged file was lost"
    m.unmount()


def test_kill_9_with_unflushed_writes_keeps_them(proxy, make_mount):
    m = make_mount()
    m.mount()
    m.bucket.put("existing", b"before")
    time.sleep(0.1)
    new_data, old_data = os.urandom(300_000), os.urandom(200_000)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "a = open(sys.argv[1] + '/new', 'wb'); a.write(open(sys.argv[2], 'rb').read()); a.flush()\n"
        "b = open(sys.argv[1] + '/existing', 'r+b'); b.write(open(sys.argv[3], 'rb').read()); b.flush()\n"
        "print('written', flush=True); time.sleep(120)\n"), str(m.path),
        _tmpfile(m, "new.src", new_data), _tmpfile(m, "old.src", old_data)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    os.kill(daemon_pid(m.path), signal.SIGKILL)
    FAULTS["kill -9 of the daemon"] += 1
    writer.kill()
    writer.wait()
    m.force_cleanup()
    m.mount()    # the next mount finds both staged files: uploaded conditionally or kept for recovery
    copies = recovered_copies(m)
    for key, data in (("new", new_data), ("existing", old_data)):
        TABLE["files"] += 1
        kept = m.bucket.get(key) == data or data in copies.get(key, [])
        if not kept:
            TABLE["unflushed_lost"] += len(data)
        assert kept, f"{key}: the unflushed writes were lost"
    logs = "".join(p.read_text() for p in (m.cache / "logs").glob("*.log"))
    assert logs.count("stopped") >= 2, "one log line per recovered file"
    m.unmount()


def _tmpfile(mount, name, data):
    path = mount.cache.parent / name
    path.write_bytes(data)
    return str(path)
