"""Records through a real mount: the read-only control directory `.bucketfs/`, the mount's own session record,
and the records CLI."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, FileBucket, run, sh


def read_json(path):
    with open(path) as f:
        return json.load(f)


def session_file(m):
    sessions = os.listdir(m / ".bucketfs/sessions")
    assert len(sessions) == 1, sessions
    return m / ".bucketfs/sessions" / sessions[0]


def test_control_directory_shows_the_live_mount(mnt):
    listing = sh(f"ls -l {mnt / '.bucketfs'}").stdout
    for name in ["config.json", "health.json", "metrics", "sessions", "checkpoints", "uploads", "locks"]:
        assert name in listing, listing
    assert sh(f"ls -la {mnt.path}").stdout.count(".bucketfs") == 1

    path = session_file(mnt)
    first = read_json(path)
    assert first["schema_version"] == 1
    assert first["status"] == "active"
    assert first["session_id"] == first["metadata"]["mount_id"] == path.name[:-len(".json")]
    assert first["metadata"]["mount_point"] == str(mnt.path)
    assert first["metadata"]["source"] == mnt.source
    assert first["created_at"].endswith("Z")

    for n in range(20):
        (mnt / f"f{n}.txt").write_text("x" * n)
    time.sleep(6.5)    # counters are refreshed every 5 s
    later = read_json(path)
    assert later["metrics"]["request_count"] > first["metrics"]["request_count"] + 20, (first, later)
    assert later["updated_at"] > first["updated_at"]
    assert sh(f"cat {path}").stdout == path.read_text()

    health = read_json(mnt / ".bucketfs/health.json")
    assert health["status"] == "healthy", health
    assert health["backend"]["reachable"] and health["lock_strategy"]["reachable"]
    config = read_json(mnt / ".bucketfs/config.json")
    assert config["mount"]["control_dir"] == ".bucketfs"
    assert "testing" not in json.dumps(config["storage"].get("aws_secret_access_key") or "")
    metrics = (mnt / ".bucketfs/metrics").read_text()
    requests = [line for line in metrics.splitlines() if line.startswith("bucketfs_store_requests_total ")]
    assert requests and int(requests[0].split()[1]) > 20, metrics


def test_control_directory_is_read_only(mnt):
    control = mnt / ".bucketfs"
    for action in [lambda: (control / "new.json").write_text("{}"),
                   lambda: open(control / "health.json", "w"),
                   lambda: os.unlink(control / "health.json"),
                   lambda: os.mkdir(control / "dir"),
                   lambda: os.rmdir(control),
                   lambda: os.rename(control / "config.json", mnt / "stolen.json"),
                   lambda: os.chmod(control / "metrics", 0o777)]:
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno in (errno.EROFS, errno.EACCES), caught.value
    assert read_json(control / "health.json")["status"] == "healthy"


def test_session_ended_on_unmount(make_mount):
    m = make_mount()
    m.mount()
    name = session_file(m).name
    m.unmount()
    record = json.loads(m.bucket.get(f".bucketfs/sessions/{name}"))
    assert record["status"] == "unmounted"
    assert record["ended_at"] >= record["created_at"]
    assert record["metrics"]["request_count"] > 0


def test_locks_show_in_both_mounts(make_mount, backend):
    if backend != "file":
        pytest.skip("one backend is enough for the lock view")
    a = make_mount("a")
    a.mount()
    b = make_mount("b", bucket=a.bucket)
    b.mount()
    (a / "job.lock").write_text("")
    # In a session of its own, so that killing the group ends flock and the sleep that inherited the lock.
    holder = subprocess.Popen(["flock", str(b / "job.lock"), "-c", f"touch {b.path}/held; sleep 30"],
                              start_new_session=True)
    try:
        deadline = time.time() + 10
        while not (b / "held").exists() and time.time() < deadline:
            time.sleep(0.05)
        mine = read_json(b / ".bucketfs/locks/job.lock.json")
        assert mine["path"] == "job.lock" and mine["lease"]["token"] >= 1
        assert mine["held"][0]["kind"] == "flock" and mine["held"][0]["mode"] == "exclusive"
        # The other mount sees the lock object in the bucket, and holds nothing itself.
        other = read_json(a / ".bucketfs/locks/job.lock.lock")
        assert other["token"] == mine["lease"]["token"], other
        assert "job.lock.json" not in os.listdir(a / ".bucketfs/locks")
        # A blocked flock on A is listed as waiting there.
        waiter = subprocess.Popen(["flock", str(a / "job.lock"), "-c", "true"])
        time.sleep(1.5)
        waiting = read_json(a / ".bucketfs/locks/job.lock.json")
        assert waiting["waiting"] and not waiting["held"], waiting
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        assert waiter.wait(timeout=20) == 0
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)


def test_sessions_cli(make_mount, backend):
    if backend != "file":
        pytest.skip("the CLI reads records the same way on every backend")
    m = make_mount()
    m.mount()
    name = session_file(m).name[:-len(".json")]
    listed = run(BIN, "sessions", "list", m.source).stdout
    assert name in listed and "active" in listed
    shown = json.loads(run(BIN, "sessions", "show", m.source, name).stdout)
    assert shown["session_id"] == name
    m.unmount()
    assert "unmounted" in run(BIN, "sessions", "list", m.source).stdout
    assert run(BIN, "sessions", "end", m.source, "nobody", check=False).returncode != 0
    removed = run(BIN, "sessions", "cleanup", m.source, "--max-idle-hours", "0").stdout
    assert name in removed
    assert run(BIN, "sessions", "list", m.source).stdout.strip() == ""
    health = json.loads(run(BIN, "health", m.source).stdout)
    assert health["backend"]["reachable"] is True


def test_records_migrate_is_idempotent(tmp_path):
    source = tmp_path / "from"
    (source / ".bucketfs/sessions").mkdir(parents=True)
    (source / ".bucketfs/checkpoints/t1").mkdir(parents=True)
    (source / ".bucketfs/sessions/s1.json").write_text('{"session_id": "s1"}\n')
    (source / ".bucketfs/checkpoints/t1/c1.json").write_text('{"checkpoint_id": "c1"}\n')
    target = tmp_path / "to"
    target.mkdir()
    first = run(BIN, "records", "migrate", "--from", f"file://{source}/", "--to", f"file://{target}/").stdout
    assert "2 copied" in first, first
    assert (target / ".bucketfs/checkpoints/t1/c1.json").read_bytes() == (source / ".bucketfs/checkpoints/t1/c1.json").read_bytes()
    again = run(BIN, "records", "migrate", "--from", f"file://{source}/", "--to", f"file://{target}/").stdout
    assert "0 copied" in again and "2 unchanged" in again, again
    assert run(BIN, "checkpoints", "list", f"file://{target}/", "t1", check=False).returncode in (0, 1)


def test_checkpoints_cli_reads_records_written_by_another_program(tmp_path):
    # A program (here: this test) keeps checkpoints as JSON objects in the bucket; the CLI lists and shows them.
    bucket = FileBucket(tmp_path / "cp-bucket")
    for cp, when, step in [("cp1", "2026-11-22T08:00:00.000Z", 1), ("cp2", "2026-11-22T08:05:00.000Z", 2)]:
        record = {"checkpoint_id": cp, "created_at": when, "data": {"step": step}, "metadata": {},
                  "schema_version": 1, "thread_id": "t1"}
        bucket.put(f".bucketfs/checkpoints/t1/{cp}.json", json.dumps(record).encode())
    assert run(BIN, "checkpoints", "list", bucket.url).stdout.split() == ["t1"]
    listed = [line.split("\t")[0] for line in run(BIN, "checkpoints", "list", bucket.url, "t1").stdout.splitlines()]
    assert listed == ["cp2", "cp1"], "newest first"
    latest = json.loads(run(BIN, "checkpoints", "show", bucket.url, "t1").stdout)
    assert latest["checkpoint_id"] == "cp2" and latest["data"] == {"step": 2}
    assert json.loads(run(BIN, "checkpoints", "show", bucket.url, "t1", "cp1").stdout)["data"] == {"step": 1}
    missing = run(BIN, "checkpoints", "show", bucket.url, "t1", "cp9", check=False)
    assert missing.returncode != 0 and "cp9" in missing.stderr


def test_uploads_cli_lists_and_cleans_up_an_upload_in_flight(make_mount, backend):
    if backend != "s3":
        pytest.skip("streamed multipart uploads are checked on s3")
    m = make_mount()
    m.mount()
    client, name = m.bucket.client, m.bucket.name
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'wb'); "
                               "f.write(b'y' * (20 << 20)); f.flush(); time.sleep(60)", str(m / "big")])
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and not lines:
            lines = run(BIN, "uploads", "list", m.source).stdout.splitlines()
            time.sleep(0.2)
        assert len(lines) == 1 and "\tbig\t" in lines[0], lines
        cleaned = run(BIN, "uploads", "cleanup", m.source, "--older-than", "0").stdout
        assert "aborted" in cleaned and "big" in cleaned
        assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
        assert run(BIN, "uploads", "list", m.source).stdout == ""
    finally:
        writer.kill()
        writer.wait()
