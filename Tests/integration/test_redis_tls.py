"""Redis over TLS (`rediss://`) for the redis lock strategy and the Redis records backend.

One TLS-only redis-server (Debian's redis-server is built with TLS) on 127.0.0.1 with a password and
certificates made here with openssl: a CA, a server certificate it signs for IP 127.0.0.1, and another CA
that signed nothing. The URLs go to the daemon through the environment, so no password is on any argv.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import BIN, FileBucket, Mount, daemon_pid, run
from servers import RedisServer

PASSWORD = "tls-r3dis-pw"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def openssl(directory, *args):
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_certificates(directory):
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(directory, "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=bucketfs test CA")
    openssl(directory, "req", "-x509", *key, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2",
            "-subj", "/CN=another CA")
    openssl(directory, "req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    openssl(directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")


class TLSRedis(RedisServer):
    """TLS only, with a password; `other_ca` signed nothing."""

    def __init__(self, directory):
        make_certificates(directory)
        self.ca = directory / "ca.pem"
        self.other_ca = directory / "other-ca.pem"
        super().__init__(directory, password=PASSWORD, plain=False,
                         tls={"cert": directory / "server.pem", "key": directory / "server.key", "ca": self.ca})

    def url(self, db=0, ca=None):
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.tls_port}/{db}?ca={ca or self.ca}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = TLSRedis(tmp_path_factory.mktemp("tls-redis"))
    yield server
    server.stop()


def env_with(**values):
    env = dict(os.environ)
    env.update({f"BUCKETFS_{k.upper()}": v for k, v in values.items()})
    return env


def mount_with_env(m, env):
    result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), *m.options, env=env)
    return result


def test_flock_excludes_across_mounts_over_rediss_and_records_go_there_too(tls_redis, tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    env = env_with(lock_strategy="redis", redis_url=tls_redis.url(db=1), records_url=tls_redis.url(db=2))
    a = Mount(tmp_path, "a", bucket=bucket)
    b = Mount(tmp_path, "b", bucket=bucket)
    try:
        mount_with_env(a, env)
        mount_with_env(b, env)
        for m in (a, b):
            argv = pathlib.Path(f"/proc/{daemon_pid(m.path)}/cmdline").read_bytes()
            assert PASSWORD.encode() not in argv
        (a / "lockfile").write_bytes(b"")
        holder = subprocess.Popen(["flock", str(a / "lockfile"), "-c", "echo held; read _ || true"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline() == "held\n"
        assert subprocess.run(["flock", "-n", str(b / "lockfile"), "true"]).returncode == 1, "B got A's lock"
        assert "lockfile" in run(BIN, "lock", "list", bucket.url, env=env).stdout
        refused = run(BIN, "lock", "run", "--wait", "0", bucket.url, "lockfile", "--", "true", env=env, check=False)
        assert refused.returncode != 0, refused.stdout
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0
        assert subprocess.run(["flock", "-w", "10", str(b / "lockfile"), "true"]).returncode == 0
        # Both mounts' session records are in Redis database 2, read back over TLS.
        listed = run(BIN, "sessions", "list", tls_redis.url(db=2)).stdout
        assert listed.count("\tactive\t") == 2, listed
        assert run(BIN, "lock", "run", bucket.url, "lockfile", "--", "echo", "ran", env=env).stdout == "ran\n"
        # The Python client takes the same URL (its ca= becomes redis-py's ssl_ca_certs, verified).
        if importlib.util.find_spec("redis"):
            sys.path.insert(0, str(ROOT / "clients/python/src"))
            from bucketfs_records import RedisBackend
            sessions = RedisBackend(tls_redis.url(db=2)).keys("sessions/")
            assert len(sessions) == 2, sessions
            with pytest.raises(Exception, match="certificate verify failed"):
                RedisBackend(tls_redis.url(db=2, ca=tls_redis.other_ca)).keys("sessions/")
    finally:
        for m in (a, b):
            m.force_cleanup()


def test_server_certificate_from_another_ca_is_refused_in_one_line(tls_redis, tmp_path):
    m = Mount(tmp_path, "wrongca")
    env = env_with(lock_strategy="redis", redis_url=tls_redis.url(ca=tls_redis.other_ca))
    try:
        result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), env=env, check=False)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "certificate was refused" in lines[0] and str(tls_redis.other_ca) in lines[0], lines[0]
        assert PASSWORD not in result.stderr
        assert not os.path.ismount(m.path)

        records = run(BIN, "sessions", "list", tls_redis.url(ca=tls_redis.other_ca), check=False)
        assert records.returncode != 0
        assert len(records.stderr.strip().splitlines()) == 1, records.stderr
        assert "certificate was refused" in records.stderr and PASSWORD not in records.stderr
    finally:
        m.force_cleanup()
