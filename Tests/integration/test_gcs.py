"""gs:// on fake-gcs-server: conflicts, large files (resumable chunks and composed parts), mount-time validation."""
import errno
import http.server
import json
import os
import re
import threading
import time

import pytest

from conftest import BIN, mount_error, run, sh

pytestmark = pytest.mark.skipif("gs" not in os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3,gs"),
                                reason="gs backend not selected")


@pytest.fixture(params=["gs"])
def backend(request):
    return request.param


def recovery_files(m):
    folder = m.cache / "recovery"
    return sorted(folder.iterdir()) if folder.exists() else []


def requests_since(server, offset, bucket):
    """(method, path) of the requests fake-gcs-server logged for `bucket` after byte `offset` of its log."""
    time.sleep(0.2)
    server.log.flush()
    with open(server.log.name) as f:
        f.seek(offset)
        text = f.read()
    found = re.findall(r'\\"(GET|PUT|POST|DELETE|PATCH) (\S+) HTTP', text)
    return [(method, path) for method, path in found if f"/b/{bucket}/" in path]


def log_size(server):
    time.sleep(0.2)
    return os.path.getsize(server.log.name)


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
    listing = run(BIN, "recover", "list", "--cache-dir", str(mnt.cache)).stdout.splitlines()
    assert len(listing) == 1 and f"{mnt.bucket.url}doc.txt" in listing[0]
    refused = run(BIN, "recover", "push", listing[0].split("\t")[0], "--cache-dir", str(mnt.cache), check=False)
    assert refused.returncode != 0 and mnt.bucket.get("doc.txt") == b"theirs, written meanwhile"
    run(BIN, "recover", "push", listing[0].split("\t")[0], "--force", "--cache-dir", str(mnt.cache))
    assert mnt.bucket.get("doc.txt") == b"oursinal"


def test_large_staged_file_goes_up_in_resumable_chunks(make_mount, fake_gcs, tmp_path):
    # Streaming off: the file is staged and uploaded on close as one resumable upload of 8 MiB chunks.
    m = make_mount(options=["-o", "part_size_mib=0"])
    m.mount()
    src = tmp_path / "big"
    sh(f"head -c {40 * 1024 * 1024 + 4321} /dev/urandom > {src}")
    offset = log_size(fake_gcs)
    sh(f"cp {src} {m.path}/big")
    chunks = [p for method, p in requests_since(fake_gcs, offset, m.bucket.name)
              if method == "PUT" and "upload_id=" in p]
    assert len(chunks) == 6, chunks  # five full chunks and the rest
    assert m.bucket.get("big") == src.read_bytes()
    m.remount()
    sh(f"cmp {src} {m.path}/big")


def test_streamed_file_is_composed_from_parts(mnt, fake_gcs, tmp_path):
    src = tmp_path / "parts"
    sh(f"head -c {20 * 1024 * 1024 + 12345} /dev/urandom > {src}")
    offset = log_size(fake_gcs)
    sh(f"dd if={src} of={mnt.path}/parts bs=1M status=none")
    composed = [p for method, p in requests_since(fake_gcs, offset, mnt.bucket.name)
                if method == "POST" and p.split("?")[0].endswith("/compose")]
    assert len(composed) == 1, composed
    assert mnt.bucket.get("parts") == src.read_bytes()
    # (The mount's own records — its session and its event stream — live under .bucketfs/ too.)
    assert [k for k in mnt.bucket.all_keys()
            if not k.startswith((".bucketfs/sessions/", ".bucketfs/events/"))] == ["parts"], \
        "the temporary part objects are gone"
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


def test_posix_attributes_are_gcs_metadata(mnt):
    sh(f"echo hi > {mnt.path}/f && chmod 0600 {mnt.path}/f && ln -s f {mnt.path}/link")
    meta = mnt.bucket.metadata("f")
    assert int(meta["mode"]) & 0o777 == 0o600
    assert "uid" in meta and "mtime" in meta
    assert mnt.bucket.metadata("link")["symlink"] == "f"
    mnt.remount()
    assert os.readlink(mnt / "link") == "f"
    assert os.stat(mnt / "f").st_mode & 0o777 == 0o600


# Mount-time validation: one line, non-zero exit, nothing mounted.

def test_missing_bucket_is_one_line(fake_gcs, tmp_path):
    line = mount_error("gs://no-such-bucket-here/", tmp_path)
    assert "no such bucket" in line and "no-such-bucket-here" in line


def test_unreachable_endpoint_is_one_line(fake_gcs, tmp_path):
    line = mount_error("gs://whatever/", tmp_path, "--endpoint-url", "http://127.0.0.1:9")
    assert "127.0.0.1:9" in line and "cannot reach GCS endpoint" in line


class RefusingTokenEndpoint(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_bad_credentials_are_one_line(fake_gcs, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    server = http.server.HTTPServer(("127.0.0.1", 0), RefusingTokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        creds = tmp_path / "sa.json"
        creds.write_text(json.dumps({"type": "service_account", "client_email": "x@y.iam.gserviceaccount.com",
                                     "private_key": key, "token_uri": f"http://127.0.0.1:{server.server_port}/token"}))
        bucket = fake_gcs.new_bucket()
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        line = mount_error(bucket.url, mnt, "--credentials-file", str(creds), "--endpoint-url", fake_gcs.endpoint)
        assert "unauthorized" in line and "invalid_grant" in line, line
        garbage = tmp_path / "garbage.json"
        garbage.write_text("not json")
        line = mount_error(bucket.url, mnt, "--credentials-file", str(garbage))
        assert "garbage.json" in line, line
    finally:
        server.shutdown()
