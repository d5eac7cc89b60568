"""PostgreSQL as the records backend (`records_url: postgres://…`) through real mounts and the CLI, on a real
PostgreSQL server the tests start on loopback (servers.py)."""
import json
import os

import pytest

from conftest import BIN, FileBucket, is_mounted, run

pytestmark = pytest.mark.usefixtures("postgres")


@pytest.fixture
def pg_env(monkeypatch, postgres):
    """The password goes to libpq through PGPASSWORD, never on a command line."""
    monkeypatch.setenv("PGPASSWORD", "pg-test-pw")
    return postgres


def put_records(bucket):
    """A checkpoint with its writes, a conversation message and a task context, as another program writes them."""
    cp = {"checkpoint_id": "cp1", "created_at": "2026-11-22T08:00:00.000Z", "data": {"step": 1, "text": "é/ü"},
          "metadata": {"source": "loop"}, "schema_version": 1, "thread_id": "t 1"}
    writes = {"checkpoint_id": "cp1", "schema_version": 1, "thread_id": "t 1", "updated_at": "2026-11-22T08:00:01.000Z",
              "writes": [{"channel": "messages", "task_id": "a", "value": [1, 2]}]}
    message = {"content": "hi", "metadata": {}, "role": "user", "schema_version": 1, "sequence": 0,
               "session_id": "s1", "timestamp": "2026-11-22T08:00:00.000Z"}
    records = {
        ".bucketfs/checkpoints/t%201/cp1.json": json.dumps(cp, indent=2, sort_keys=True).encode() + b"\n",
        ".bucketfs/checkpoints/t%201/cp1.writes.json": json.dumps(writes, sort_keys=True).encode() + b"\n",
        ".bucketfs/conversations/s1/0000000000.json": json.dumps(message).encode(),
        ".bucketfs/tasks/s1.json": b'{"context": {"plan": ["a"]}, "schema_version": 1, "session_id": "s1",'
                                   b' "updated_at": "2026-11-22T08:00:00.000Z"}\n',
    }
    for key, data in records.items():
        bucket.put(key, data)
    return records


def test_bad_records_url_is_one_line_before_mounting(make_mount, backend, pg_env, monkeypatch):
    if backend != "file":
        pytest.skip("the records backend is checked the same way whatever the store")
    db = pg_env.new_database()
    cases = [
        (pg_env.url(db, password=False) + "?bogus=1", None, "bogus"),
        (pg_env.url(db, password=False), "wrong-password", "password authentication failed"),
        (pg_env.url("no_such_database", password=False), None, "does not exist"),
    ]
    for url, password, expected in cases:
        if password:
            monkeypatch.setenv("PGPASSWORD", password)
        m = make_mount(f"bad{len(expected)}")
        result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), "-o", f"records_url={url}",
                     check=False)
        monkeypatch.setenv("PGPASSWORD", "pg-test-pw")
        assert result.returncode != 0, result
        assert not is_mounted(m.path)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "records_url" in lines[0], result.stderr
        assert "wrong-password" not in result.stderr and "pg-test-pw" not in result.stderr


def test_control_directory_shows_postgres_records_as_the_bucket_does(make_mount, backend, pg_env):
    if backend != "file":
        pytest.skip("records come from PostgreSQL whatever the store")
    db = pg_env.new_database()
    url = pg_env.url(db, password=False)
    in_bucket = make_mount("bucket-records")
    records = put_records(in_bucket.bucket)
    copied = run(BIN, "records", "migrate", "--from", in_bucket.source, "--to", url).stdout
    assert f"{len(records)} copied" in copied, copied
    in_bucket.mount()
    in_pg = make_mount("pg-records", options=["-o", f"records_url={url}"])
    in_pg.mount()

    for key, data in records.items():
        path = key[len(".bucketfs/"):]
        assert (in_pg / ".bucketfs" / path).read_bytes() == data, path
        assert (in_bucket / ".bucketfs" / path).read_bytes() == data, path
        assert os.stat(in_pg / ".bucketfs" / path).st_size == len(data)
    for folder in ["checkpoints", "checkpoints/t%201", "conversations/s1", "tasks"]:
        assert os.listdir(in_pg / ".bucketfs" / folder) == os.listdir(in_bucket / ".bucketfs" / folder), folder

    # The PostgreSQL mount's own session is a row there (shown in its control directory), not an object.
    sessions = os.listdir(in_pg / ".bucketfs/sessions")
    assert len(sessions) == 1, sessions
    assert not (in_pg.bucket.directory / ".bucketfs/sessions").exists()
    rows = pg_env.psql(db, "SELECT key FROM bucketfs_records WHERE key LIKE 'sessions/%'").stdout.split()
    assert rows == [f"sessions/{sessions[0]}"]
    shown = json.loads((in_pg / ".bucketfs/sessions" / sessions[0]).read_text())
    assert shown["status"] == "active" and shown["metadata"]["mount_point"] == str(in_pg.path)
    health = json.loads((in_pg / ".bucketfs/health.json").read_text())
    assert health["records"]["reachable"] is True, health
    config = (in_pg / ".bucketfs/config.json").read_text()
    assert "pg-test-pw" not in config

    # Its event stream too: `ls .bucketfs/events/` through the mount, the row's bytes through `cat`.
    assert os.listdir(in_pg / ".bucketfs/events") == [sessions[0][:-len(".json")]]
    event_key = f"events/{sessions[0][:-len('.json')]}/0000000000.json"
    row = pg_env.psql(db, f"SELECT data FROM bucketfs_records WHERE key = '{event_key}'").stdout
    assert (in_pg / ".bucketfs" / event_key).read_text() == row[:-1]    # psql adds a newline to the row
    assert json.loads((in_pg / ".bucketfs" / event_key).read_text())["type"] == "mounted"

    in_pg.unmount()
    types = pg_env.psql(db, "SELECT record->>'type' FROM bucketfs_records_json WHERE key LIKE 'events/%' ORDER BY key")
    assert types.stdout.split() == ["mounted", "unmounted"]
    status = pg_env.psql(db, "SELECT record->>'status' FROM bucketfs_records_json WHERE key LIKE 'sessions/%'")
    assert status.stdout.strip() == "unmounted"
    versions = pg_env.psql(db, "SELECT version FROM bucketfs_schema ORDER BY version").stdout.split()
    assert versions[0] == "1" and len(versions) >= 2, versions


def test_records_migrate_file_to_postgres_and_back(tmp_path, pg_env):
    source = FileBucket(tmp_path / "from")
    records = put_records(source)
    url = pg_env.url(pg_env.new_database(), password=False)
    first = run(BIN, "records", "migrate", "--from", source.url, "--to", url).stdout
    assert f"{len(records)} records: {len(records)} copied, 0 unchanged" in first, first
    again = run(BIN, "records", "migrate", "--from", source.url, "--to", url).stdout
    assert f"0 copied, {len(records)} unchanged" in again, again
    back = FileBucket(tmp_path / "back")
    run(BIN, "records", "migrate", "--from", url, "--to", back.url)
    for key, data in records.items():
        assert back.get(key) == data, key
    # The CLI reads PostgreSQL like any other backend.
    assert run(BIN, "checkpoints", "list", url).stdout.splitlines() == ["t 1"]
    shown = json.loads(run(BIN, "checkpoints", "show", url, "t 1").stdout)
    assert shown["data"] == {"step": 1, "text": "é/ü"}


def test_upload_states_of_an_s3_mount_live_in_postgres(make_mount, backend, pg_env):
    if backend != "s3":
        pytest.skip("streamed multipart uploads are checked on s3")
    import subprocess
    import sys
    import time
    db = pg_env.new_database()
    url = pg_env.url(db, password=False)
    m = make_mount(options=["-o", f"records_url={url}"])
    m.mount()
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'wb'); "
                               "f.write(b'y' * (20 << 20)); f.flush(); time.sleep(60)", str(m / "big")])
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and not lines:
            lines = run(BIN, "uploads", "list", url).stdout.splitlines()
            time.sleep(0.2)
        assert len(lines) == 1 and "\tbig\t" in lines[0], lines
        rows = pg_env.psql(db, "SELECT record->>'key' FROM bucketfs_records_json WHERE key LIKE 'uploads/%'").stdout
        assert rows.split() == ["big"]
        assert not any(k.startswith(".bucketfs/uploads/") for k in m.bucket.all_keys()), "not in the bucket"
        assert os.listdir(m / ".bucketfs/uploads") == [lines[0].split("\t")[0] + ".json"]
    finally:
        writer.kill()
        writer.wait()
