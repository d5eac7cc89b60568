"""Nothing secret leaks, no one else gets in: secrets stay off the process list, out of logs and `.bucketfs/`;
Redis with a password, an ACL user and TLS; bad option values are one line, never a crash or a hang.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, FileBucket, Mount, daemon_pid, is_mounted, run, sh

PASSWORD = "Zq9-hunter2-secret"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SecureRedis:
    """redis-server on loopback with `requirepass`, an ACL user `alice`, and optionally a TLS port."""

    def __init__(self, directory, tls=None):
        self.port = free_port()
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(directory), "--requirepass", PASSWORD,
                "--user", "alice", "on", f">{PASSWORD}-alice", "~*", "&*", "+@all"]
        self.tls_port = None
        if tls:
            self.tls_port = free_port()
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"],
                     "--tls-ca-cert-file", tls["ca"], "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for port in filter(None, [self.port, self.tls_port]):
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start: {self.process.stdout.read()}")
                    time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory):
    server = SecureRedis(tmp_path_factory.mktemp("redis-secure"))
    yield server
    server.stop()


def all_cmdlines():
    """Every process's argv, as any local user can read it."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read()
            except OSError:
                pass
    return found


def assert_no_secret_on_process_list(secret):
    leaks = {pid: argv for pid, argv in all_cmdlines().items() if secret.encode() in argv}
    assert not leaks, f"secret on the process list: {leaks}"


def test_redis_password_is_never_on_the_process_list_in_logs_or_in_config_json(tmp_path, secure_redis):
    url = f"redis://:{PASSWORD}@127.0.0.1:{secure_redis.port}/0"
    m = Mount(tmp_path, "m", options=["--lock-strategy", "redis", "--redis-url", url,
                                      "-o", f"records_url={url},redis_url={url}"])
    try:
        m.mount()
        pid = daemon_pid(m.path)
        assert pid, "the daemon is found by --foreground and its mount point in argv"
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--foreground" in argv and str(m.path).encode() in argv
        # The daemon really uses the password: a lock goes through Redis, the session record is in it.
        sh(f"flock -n {m.path}/locked -c 'echo held > {m.path}/out'")
        assert (m.path / "out").read_text() == "held\n"
        assert_no_secret_on_process_list(PASSWORD)
        config = (m.path / ".bucketfs" / "config.json").read_text()
        assert PASSWORD not in config and str(secure_redis.port) in config, config
        printed = run(BIN, "config", "print", m.source, "--redis-url", url).stdout
        assert PASSWORD not in printed and str(secure_redis.port) in printed
    finally:
        m.force_cleanup()
    logs = "".join(p.read_text() for p in (m.cache / "logs").glob("*.log"))
    assert logs and PASSWORD not in logs, logs


def test_foreground_daemon_overwrites_the_password_in_its_own_argv(tmp_path, secure_redis):
    url = f"redis://:{PASSWORD}@127.0.0.1:{secure_redis.port}/0"
    m = Mount(tmp_path, "fg")
    log = open(tmp_path / "stderr.log", "w+")
    daemon = subprocess.Popen([BIN, "mount", m.source, str(m.path), "--foreground", "--cache-dir", str(m.cache),
                               "--lock-strategy", "redis", "--redis-url", url], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(m.path):
            assert daemon.poll() is None, (tmp_path / "stderr.log").read_text()
            assert time.monotonic() < deadline, "no mount"
            time.sleep(0.05)
        sh(f"flock -n {m.path}/locked true")
        argv = pathlib.Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in argv, argv
        assert f"127.0.0.1:{secure_redis.port}".encode() in argv, argv
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        m.force_cleanup()
    assert PASSWORD not in (tmp_path / "stderr.log").read_text()


def test_wrong_redis_password_is_one_line_without_the_password(tmp_path, secure_redis):
    wrong = "not-the-Zq9-password"
    m = Mount(tmp_path, "m")
    result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), "--lock-strategy", "redis",
                 "--redis-url", f"redis://:{wrong}@127.0.0.1:{secure_redis.port}/0", check=False)
    assert result.returncode != 0 and not is_mounted(m.path)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AUTH" in lines[0], result.stderr
    assert wrong not in result.stderr


def test_redis_acl_user_takes_locks(tmp_path, secure_redis):
    url = f"redis://alice:{PASSWORD}-alice@127.0.0.1:{secure_redis.port}/0"
    m = Mount(tmp_path, "m", options=["--lock-strategy", "redis", "--redis-url", url])
    try:
        m.mount()
        sh(f"flock -n {m.path}/f -c 'echo acl > {m.path}/f'")
        keys = run("redis-cli", "-p", str(secure_redis.port), "--user", "alice", "--pass", f"{PASSWORD}-alice",
                   "--no-auth-warning", "ping").stdout
        assert "PONG" in keys
    finally:
        m.force_cleanup()
    # The same user with the default user's password is refused, in one line naming the user, not the password.
    bad = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), "--lock-strategy", "redis",
              "--redis-url", f"redis://alice:{PASSWORD}@127.0.0.1:{secure_redis.port}/0", check=False)
    assert bad.returncode != 0 and PASSWORD not in bad.stderr, bad.stderr


@pytest.mark.parametrize("option", ["metadata_ttl=inf", "uid=4294967296", "rename_parallelism=100000",
                                    "read_ahead_mib=9223372036854775807", "negative_ttl=nan"])
def test_out_of_range_option_is_one_line_naming_key_and_range(tmp_path, option):
    m = Mount(tmp_path, "m")
    result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), "-o", option, check=False,
                 timeout=30)
    assert result.returncode != 0 and not is_mounted(m.path)
    lines = result.stderr.strip().splitlines()
    key = option.split("=")[0]
    assert len(lines) == 1 and key in lines[0] and " to " in lines[0], result.stderr
