"""The mount's event stream (`events/<mount id>/<seq>.json`): what happened to a mount, read with `ls`/`cat`
through `.bucketfs/events/` and with `bucketfs events`."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, Mount, daemon_pid, run


def wait_for(check, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    return check()


def stream_events(bucket, stream):
    """The stream's events straight from the bucket, oldest first."""
    keys = sorted(k for k in bucket.all_keys() if k.startswith(f".bucketfs/events/{stream}/")) \
        if hasattr(bucket, "all_keys") else sorted(
            f".bucketfs/events/{stream}/{n}" for n in os.listdir(bucket.directory / ".bucketfs/events" / stream))
    return [json.loads(bucket.get(k)) for k in keys]


def only_stream(m):
    streams = os.listdir(m / ".bucketfs/events")
    assert len(streams) == 1, streams
    return streams[0]


def test_mounted_and_unmounted_are_events(make_mount, backend):
    if backend != "file":
        pytest.skip("events are records: the same on every store")
    m = make_mount()
    m.mount()
    stream = only_stream(m)
    session = os.listdir(m / ".bucketfs/sessions")[0][:-len(".json")]
    assert stream == session, "a mount's stream is named by its mount id"
    first = json.loads((m / ".bucketfs/events" / stream / "0000000000.json").read_text())
    assert first["type"] == "mounted" and first["sequence"] == 0 and first["stream"] == stream
    assert first["data"]["mount_point"] == str(m.path) and first["data"]["pid"] == daemon_pid(m.path)
    tail = run(BIN, "events", "tail", m.source).stdout.splitlines()
    assert len(tail) == 1 and tail[0].split("\t")[1:4] == [stream, "0", "mounted"], tail
    m.unmount()
    events = stream_events(m.bucket, stream)
    assert [e["type"] for e in events] == ["mounted", "unmounted"]
    assert events[1]["data"]["status"] == "unmounted"
    assert run(BIN, "events", "count", m.source).stdout.splitlines() == ["mounted\t1", "unmounted\t1"]
    assert run(BIN, "events", "count", m.source, stream, "--type", "mounted").stdout.strip() == "1"
    listed = run(BIN, "events", "list", m.source).stdout
    assert stream in listed and "2 events" in listed and "unmounted" in listed
    as_json = [json.loads(line) for line in run(BIN, "events", "list", m.source, stream, "--json").stdout.splitlines()]
    assert as_json == events


def test_events_tail_follow_shows_a_new_mount(make_mount, backend):
    if backend != "file":
        pytest.skip("events are records: the same on every store")
    a = make_mount("a")
    a.mount()
    follower = subprocess.Popen([BIN, "events", "tail", a.source, "--follow", "--interval", "0.1"],
                                stdout=subprocess.PIPE, text=True)
    try:
        first = follower.stdout.readline()
        assert "\tmounted\t" in first, first
        b = make_mount("b", bucket=a.bucket)
        b.mount()
        second = follower.stdout.readline()   # blocks until the follower prints B's event
        assert "\tmounted\t" in second and second.split("\t")[1] != first.split("\t")[1], (first, second)
        assert str(b.path) in second
    finally:
        follower.kill()
        follower.wait()


def test_lost_lock_is_an_event(tmp_path):
    from servers import RedisServer
    from test_locks import hold
    server = RedisServer(tmp_path)
    m = Mount(tmp_path, "lost", options=["--lock-strategy", "redis", "--redis-url", server.url,
                                         "--lock-lease-seconds", "3"])
    try:
        m.mount()
        (m / "f").write_text("x")
        holder = hold(m / "f")
        stream = only_stream(m)
        server.stop()
        lost = wait_for(lambda: [e for e in stream_events(m.bucket, stream) if e["type"] == "lock_lost"], 20)
        assert lost and lost[0]["data"]["resource"].endswith("f"), stream_events(m.bucket, stream)
        assert lost[0]["data"]["token"] >= 1 and lost[0]["data"]["error"]
        holder.kill()
    finally:
        server.stop()
        m.force_cleanup()


def test_upload_interrupted_by_a_crash_is_an_event_at_the_next_mount(make_mount, backend):
    if backend != "s3":
        pytest.skip("streamed multipart uploads are checked on s3")
    m = make_mount()
    m.mount()
    crashed = only_stream(m)
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'wb'); "
                               "f.write(b'x' * (20 << 20)); f.flush(); time.sleep(120)", str(m / "big")])
    assert wait_for(lambda: any(k.startswith(".bucketfs/uploads/") for k in m.bucket.all_keys()), 60)
    os.kill(daemon_pid(m.path), signal.SIGKILL)
    writer.kill()
    writer.wait()
    m.force_cleanup()
    m.mount()
    stream = [s for s in os.listdir(m / ".bucketfs/events") if s != crashed]
    assert len(stream) == 1, stream
    events = stream_events(m.bucket, stream[0])
    recovered = [e for e in events if e["type"] == "upload_recovered"]
    assert len(recovered) == 1 and recovered[0]["data"]["key"] == "big", events
    listing = run(BIN, "recover", "list", "--cache-dir", str(m.cache)).stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == [recovered[0]["data"]["recovery_id"]]
    # The crashed mount's stream ends without "unmounted": that is how a crash reads.
    assert [e["type"] for e in stream_events(m.bucket, crashed)] == ["mounted"]


def test_failed_upload_is_an_event_naming_its_recovery_id(make_mount, backend):
    if backend != "file":
        pytest.skip("one store is enough for the event")
    m = make_mount()
    m.mount()
    m.bucket.put("doc.txt", b"original")
    f = open(m / "doc.txt", "r+")
    f.write("ours")
    f.flush()
    m.bucket.put("doc.txt", b"theirs, written meanwhile")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno in (errno.ESTALE, errno.EIO)
    failed = [line for line in run(BIN, "events", "tail", m.source, "--type", "upload_failed").stdout.splitlines()]
    assert len(failed) == 1, failed
    data = json.loads(failed[0].split("\t")[4])
    listing = run(BIN, "recover", "list", "--cache-dir", str(m.cache)).stdout.splitlines()
    assert data["key"] == "doc.txt" and data["conflict"] is True
    assert [line.split("\t")[0] for line in listing] == [data["recovery_id"]]


def test_staged_file_of_a_killed_daemon_is_kept_and_an_event(make_mount, backend):
    if backend != "file":
        pytest.skip("staging recovery is the same on every store")
    m = make_mount()
    m.mount()
    crashed = only_stream(m)
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'w'); "
                               "f.write('kept across a crash'); f.flush(); print('written', flush=True); "
                               "time.sleep(120)", str(m / "notes.txt")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    os.kill(daemon_pid(m.path), signal.SIGKILL)
    writer.kill()
    writer.wait()
    m.force_cleanup()
    m.mount()
    # Still open for writing at the crash: it may be cut off, so it is kept in the recovery folder, not published.
    assert m.bucket.get("notes.txt") is None
    stream = [s for s in os.listdir(m / ".bucketfs/events") if s != crashed][0]
    kept = [e["data"] for e in stream_events(m.bucket, stream) if e["type"] == "upload_recovered"]
    assert [(d["key"], d["action"]) for d in kept] == [("notes.txt", "kept")], kept
    assert open(kept[0]["recovery_path"], "rb").read() == b"kept across a crash"
    tail = run(BIN, "events", "tail", m.source, "--type", "upload_recovered").stdout.splitlines()
    assert len(tail) == 1 and "notes.txt" in tail[0]
