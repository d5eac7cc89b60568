"""s3:// on moto_server: conflicts, faults and the requests each operation costs, counted by the server."""
import errno
import os
import sys
import re
import subprocess
import time

import pytest

from conftest import BIN, S3Bucket, is_daemon_state, listdir, mount_error, run, sh
from servers import MotoServer

pytestmark = pytest.mark.skipif("s3" not in os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3"),
                                reason="s3 backend not selected")


# Every test here runs on moto ("s3") and on SeaweedFS, a real S3 server ("seaweed").
@pytest.fixture(params=["s3", "seaweed"])
def backend(request):
    return request.param


def recovery_files(m):
    folder = m.cache / "recovery"
    return sorted(folder.iterdir()) if folder.exists() else []


class RequestLog:
    """Requests moto logged (werkzeug access lines) since `mark()`."""

    def __init__(self, path):
        self.path = path
        self.offset = 0

    def mark(self):
        time.sleep(0.2)
        self.offset = os.path.getsize(self.path)

    def since_mark(self, bucket):
        time.sleep(0.2)
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.read().splitlines()
        found = []
        for line in lines:
            m = re.search(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP', line)
            if m and m.group(2).startswith(f"/{bucket}"):
                path = m.group(2)
                kind = m.group(1)
                if kind == "GET" and "list-type=2" in path:
                    kind = "LIST"
                found.append(kind)
        return found


@pytest.fixture
def counted(backend, request):
    if backend != "s3":
        pytest.skip("requests are counted from moto's access log")
    return RequestLog(request.getfixturevalue("moto").log_path)


def test_conflict_keeps_both_versions(mnt):
    mnt.bucket.put("doc.txt", b"original")
    f = open(mnt / "doc.txt", "r+")
    f.write("ours")
    f.flush()
    mnt.bucket.put("doc.txt", b"theirs, written meanwhile")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno in (errno.ESTALE, errno.EIO)
    assert mnt.bucket.get("doc.txt") == b"theirs, written meanwhile"
    saved = [p for p in recovery_files(mnt) if p.suffix == ".data"]
    assert len(saved) == 1 and saved[0].read_bytes() == b"oursinal"
    # The user decides ours wins: list, then push it back.
    listing = run(BIN, "recover", "list", "--cache-dir", str(mnt.cache)).stdout.splitlines()
    assert len(listing) == 1 and f"{mnt.bucket.url}doc.txt" in listing[0] and "8 bytes" in listing[0]
    entry = listing[0].split("\t")[0]
    # Without AWS_ENDPOINT_URL: the entry remembers the endpoint of the mount that saved it.
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    # Theirs is newer than what ours was based on: not overwritten without --force.
    refused = run(BIN, "recover", "push", entry, "--cache-dir", str(mnt.cache), env=env, check=False)
    assert refused.returncode != 0 and "changed" in refused.stderr, refused.stderr
    assert mnt.bucket.get("doc.txt") == b"theirs, written meanwhile"
    run(BIN, "recover", "push", entry, "--force", "--cache-dir", str(mnt.cache), env=env)
    assert mnt.bucket.get("doc.txt") == b"oursinal"
    assert run(BIN, "recover", "list", "--cache-dir", str(mnt.cache)).stdout == ""


def test_multipart_file_read_back(mnt, tmp_path):
    src = tmp_path / "parts"
    sh(f"head -c {20 * 1024 * 1024 + 12345} /dev/urandom > {src}")
    sh(f"dd if={src} of={mnt.path}/parts bs=1M status=none")
    assert mnt.bucket.get("parts") == src.read_bytes()
    # Three full 8 MiB parts would be two and a rest: the ETag of a multipart object ends in -<parts>.
    etag = mnt.bucket.client.head_object(Bucket=mnt.bucket.name, Key="parts")["ETag"]
    assert etag.strip('"').endswith("-3")
    mnt.remount()
    sh(f"cmp {src} {mnt.path}/parts")


def test_append_overwrite_truncate_existing_object(mnt):
    mnt.bucket.put("e", b"0123456789")
    sh(f"echo -n ABC >> {mnt.path}/e")
    assert mnt.bucket.get("e") == b"0123456789ABC"
    sh(f"printf XY | dd of={mnt.path}/e bs=1 seek=4 conv=notrunc status=none")
    assert mnt.bucket.get("e") == b"0123XY6789ABC"
    run("truncate", "-s", "3", str(mnt / "e"))
    assert mnt.bucket.get("e") == b"012"


def test_append_to_a_large_object_copies_its_unchanged_parts(mnt, counted, tmp_path):
    src = tmp_path / "log"
    sh(f"head -c {17 * 1024 * 1024} /dev/urandom > {src}")
    mnt.bucket.put("log", src.read_bytes())
    before = mnt.bucket.client.head_object(Bucket=mnt.bucket.name, Key="log")["ETag"]
    counted.mark()
    sh(f"echo appended >> {mnt.path}/log")
    requests = counted.since_mark(mnt.bucket.name)
    assert mnt.bucket.get("log") == src.read_bytes() + b"appended\n"
    # Two 8 MiB parts copied on the server (UploadPartCopy) and one uploaded: a multipart object of 3 parts,
    # made from a POST (create), three PUTs and a POST (complete) after the reads that staged the file.
    etag = mnt.bucket.client.head_object(Bucket=mnt.bucket.name, Key="log")["ETag"]
    assert etag != before and etag.strip('"').endswith("-3")
    assert requests.count("POST") == 2 and requests.count("PUT") == 3, requests


def test_upload_interrupted_by_a_crash_is_kept_and_aborted_at_next_mount(make_mount):
    import signal
    import subprocess
    from conftest import daemon_pid
    m = make_mount()
    m.mount()
    client, bucket = m.bucket.client, m.bucket.name
    # 20 MiB written and kept open: two 8 MiB parts are streamed as a multipart upload, recorded in .bucketfs/.
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'wb'); "
                               "f.write(b'x' * (20 << 20)); f.flush(); print('written', flush=True); "
                               "time.sleep(120)", str(m / "big")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "written\n"    # all 20 MiB reached the daemon
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if uploads and any(k.startswith(".bucketfs/uploads/") for k in m.bucket.all_keys()):
            break
        time.sleep(0.2)
    assert uploads, "no multipart upload in flight"
    os.kill(daemon_pid(m.path), signal.SIGKILL)
    writer.kill()
    writer.wait()
    m.force_cleanup()
    m.mount()    # the next mount on this host finds the record of the dead daemon
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not any(k.startswith(".bucketfs/uploads/") for k in m.bucket.all_keys())
    assert m.bucket.get("big") is None
    listing = run(BIN, "recover", "list", "--cache-dir", str(m.cache)).stdout.splitlines()
    assert len(listing) == 1 and "big" in listing[0] and f"{20 << 20} bytes" in listing[0], listing
    logs = "".join(p.read_text() for p in (m.cache / "logs").glob("*.log"))
    assert "interrupted upload found and aborted" in logs


def test_request_counts(mnt, counted):
    bucket = mnt.bucket.name
    for i in range(5):
        mnt.bucket.put(f"dir/f{i}", b"x" * (i + 1))
    mnt.remount()
    counted.mark()
    run("ls", "-l", str(mnt / "dir"))
    # Written by another tool: the LIST carries no metadata and this host has not seen these versions, so each
    # entry is asked once — a GET of a small file, whose bytes the next open reads; all five by the first `stat`.
    requests = counted.since_mark(bucket)
    # (LISTs: the lookup of `dir`, implicit, then its listing.)
    assert requests.count("LIST") == 2 and requests.count("HEAD") == 0 and requests.count("GET") == 5, requests
    counted.mark()
    assert (mnt / "dir" / "f3").read_bytes() == b"xxxx"
    assert counted.since_mark(bucket) in ([], ["GET"]), counted.since_mark(bucket)
    # Now known (metadata index): listing them again costs the LIST only.
    mnt.remount()
    counted.mark()
    run("ls", "-l", str(mnt / "dir"))
    assert counted.since_mark(bucket) == ["LIST", "LIST"], counted.since_mark(bucket)
    # Creating a file with open/write/close costs one PUT. Every close uploads (so that it reports a failure),
    # and the shell, touch and dd close a duplicate descriptor before writing: they cost a second request.
    for create, puts in ((f"touch {mnt.path}/dir/new1", 2), (f"echo hello > {mnt.path}/dir/new2", 2),
                         (f"dd if=/dev/zero of={mnt.path}/dir/new3 bs=4k count=1 status=none", 2),
                         (f"python3 -c 'open(\"{mnt.path}/dir/new4\", \"w\").write(\"x\")'", 1)):
        counted.mark()
        sh(create)
        assert counted.since_mark(bucket).count("PUT") == puts, create
    assert mnt.bucket.get("dir/new2") == b"hello\n"
    assert mnt.bucket.get("dir/new1") == b""


def test_store_down_then_back(make_mount, backend, tmp_path):
    if backend != "s3":
        pytest.skip("stops and restarts a moto_server of its own")
    server = MotoServer(tmp_path / "moto-fault.log")
    bucket = S3Bucket(server.client, "fault")
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint)
    m = make_mount(bucket=bucket)
    run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), "-o", "metadata_ttl=0", env=env)
    try:
        f = open(m / "during-outage.txt", "w")
        f.write("must not be lost")
        server.stop()
        with pytest.raises(OSError) as e:
            f.close()
        assert e.value.errno == errno.EIO
        saved = [p for p in recovery_files(m) if p.suffix == ".data"]
        assert [p.read_bytes() for p in saved] == [b"must not be lost"]
        # The server comes back (empty: moto keeps nothing) on the same port; the mount works again.
        server.restart()
        bucket = S3Bucket(server.client, "fault")
        bucket.put("after.txt", b"back")
        assert (m / "after.txt").read_bytes() == b"back"
    finally:
        m.force_cleanup()
        server.stop()


def test_missing_bucket_is_one_line(moto, tmp_path):
    line = mount_error("s3://no-such-bucket-here/", tmp_path)
    assert "no such bucket" in line and "no-such-bucket-here" in line


def test_unreachable_endpoint_is_one_line(moto, tmp_path):
    line = mount_error("s3://whatever/", tmp_path, "--endpoint-url", "http://127.0.0.1:9")
    assert "127.0.0.1:9" in line


def test_wrong_credentials_are_one_line(tmp_path):
    # A moto that checks credentials after its first request (which creates the bucket).
    server = MotoServer(tmp_path / "moto-auth.log", env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="1"))
    try:
        server.client.create_bucket(Bucket="guarded")
        env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID="AKIAWRONG",
                   AWS_SECRET_ACCESS_KEY="wrong")
        line = mount_error("s3://guarded/", tmp_path, env=env)
        assert "unauthorized" in line or "credentials" in line or "InvalidAccessKeyId" in line, line
    finally:
        server.stop()


def test_directory_rename_moves_the_whole_tree(request, backend, mnt):
    sh(f"mkdir -p {mnt.path}/d/sub && echo one > {mnt.path}/d/one && echo two > {mnt.path}/d/sub/two")
    mnt.bucket.put("d/implicit/three", b"three\n")    # a directory that exists only through its key
    os.rename(mnt / "d", mnt / "e")
    assert not os.path.exists(mnt / "d")
    assert sorted(os.listdir(mnt / "e")) == ["implicit", "one", "sub"]
    assert (mnt / "e" / "sub" / "two").read_text() == "two\n"
    assert [k for k in mnt.bucket.all_keys() if k.startswith("d/")] == []
    keys = mnt.bucket.keys()
    assert [k for k in keys if not k.endswith("/.bucketfs-dir")] == ["e/implicit/three", "e/one", "e/sub/two"]
    # Where markers drop metadata (SeaweedFS) the directories' sidecars moved with them.
    sidecars = ["e/.bucketfs-dir", "e/sub/.bucketfs-dir"] if backend == "seaweed" else []
    assert [k for k in keys if k.endswith("/.bucketfs-dir")] == sidecars
    mnt.remount()
    assert listdir(mnt.path) == ["e"]
    assert (mnt / "e" / "implicit" / "three").read_text() == "three\n"


def test_directory_mode_and_mtime_survive_remount(request, backend, mnt):
    os.mkdir(mnt / "d")
    os.chmod(mnt / "d", 0o701)
    os.utime(mnt / "d", (981173106, 981173106))
    os.mkdir(mnt / "d" / "inner", 0o750)
    mnt.remount()
    st = os.stat(mnt / "d")
    assert (oct(st.st_mode & 0o7777), int(st.st_mtime)) == (oct(0o701), 981173106)
    assert oct(os.stat(mnt / "d" / "inner").st_mode & 0o7777) == oct(0o750)
    assert os.listdir(mnt / "d") == ["inner"]


def test_rm_rf_leaves_no_directory_behind(request, backend, mnt):
    sh(f"mkdir -p {mnt.path}/t/a/b && echo x > {mnt.path}/t/a/b/f && echo y > {mnt.path}/t/g")
    mnt.bucket.put("t/implicit/h", b"h")
    sh(f"rm -rf {mnt.path}/t")
    assert listdir(mnt.path) == []
    mnt.remount()
    assert listdir(mnt.path) == []
    assert mnt.bucket.all_keys() == [k for k in mnt.bucket.all_keys() if is_daemon_state(k)]


def test_sidecar_name_is_reserved(request, backend, mnt):
    """`.bucketfs-dir` holds a directory's metadata where markers lose it: never listed, never made by a user."""
    os.mkdir(mnt / "d")
    for make in (lambda p: open(p, "w"), os.mkdir, lambda p: os.symlink("x", p)):
        with pytest.raises(PermissionError):
            make(mnt / "d" / ".bucketfs-dir")
    (mnt / "d" / "f").write_text("f")
    with pytest.raises(PermissionError):
        os.rename(mnt / "d" / "f", mnt / "d" / ".bucketfs-dir")
    assert not os.path.exists(mnt / "d" / ".bucketfs-dir")
    assert os.listdir(mnt / "d") == ["f"]


def test_path_longer_than_a_key_is_enametoolong(request, backend, mnt):
    """S3 keys hold 1,024 bytes: a longer path is refused as too long, before any request fails."""
    deep = mnt.path
    for name in ("0" * 255, "1" * 255, "2" * 255, "3" * 200):    # 968 bytes with the slashes
        deep = deep / name
        os.mkdir(deep)
    for make in (os.mkdir, lambda p: open(p, "w")):
        with pytest.raises(OSError) as raised:
            make(deep / ("x" * 60))    # 1,029 bytes
        assert raised.value.errno == errno.ENAMETOOLONG
    (deep / ("z" * 54)).write_text("fits")    # 1,023 bytes: and a directory's marker, 1,024
    assert (deep / ("z" * 54)).read_text() == "fits"
    (deep / ("z" * 54)).unlink()
    if backend != "seaweed":    # (there a directory's sidecar needs 14 bytes more)
        os.mkdir(deep / ("z" * 54))


def test_stat_of_health_json_reads_no_lock_object(make_mount, counted):
    """health.json is rendered at every stat: it must not LIST the lock objects and GET each one every time (it
    did: 3 LISTs + one GET per lock object, per stat). Its probes are kept 2 s; lock objects are never read."""
    mnt = make_mount(options=["-o", "metadata_ttl=0"])    # the kernel keeps no attributes: every stat asks
    mnt.mount()
    bucket = mnt.bucket.name
    for i in range(5):
        mnt.bucket.put(f".bucketfs/locks/f{i}.lock", b'{"resource": "f", "token": 1}')
    health = mnt / ".bucketfs" / "health.json"
    json_text = health.read_text()
    assert '"status" : "healthy"' in json_text, json_text
    counted.mark()
    for _ in range(20):
        os.stat(health)
    requests = counted.since_mark(bucket)
    assert requests.count("GET") == 0, requests
    assert requests.count("LIST") <= 2, requests    # one probe at most, if its 2 s ran out meanwhile
