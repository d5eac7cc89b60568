"""Nothing secret leaks, no one else gets in: secrets stay off the process list, out of logs and `.bucketfs/`;
Redis with a password, an ACL user and TLS; bad option values are one line, never a crash or a hang.
"""
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import BIN, FileBucket, Mount, daemon_pid, is_mounted, run, sh
from servers import RedisServer

PASSWORD = "Zq9-hunter2-secret"


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory):
    """redis-server on loopback with `requirepass` and an ACL user `alice`."""
    server = RedisServer(tmp_path_factory.mktemp("redis-secure"), password=PASSWORD,
                         users={"alice": f"{PASSWORD}-alice"})
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


# -- files and directories no one else can read or prepare ----------------------------------------------------------

def mode(path):
    return os.lstat(path).st_mode & 0o7777


def test_cache_logs_and_staging_are_private(tmp_path):
    m = Mount(tmp_path, "m")
    logs = m.cache / "logs"
    logs.mkdir(parents=True)
    os.chmod(m.cache, 0o755)
    os.chmod(logs, 0o755)
    # A log an older version left world-readable.
    old_log = logs / ("mount-" + str(m.path).replace("%", "%25").replace("/", "%2F") + ".log")
    old_log.write_text("")
    os.chmod(old_log, 0o644)
    try:
        m.mount()
        sh(f"head -c 100000 /dev/urandom > {m.path}/f && printf x | dd of={m.path}/f bs=1 seek=10 conv=notrunc 2>/dev/null")
        assert mode(m.cache) == 0o700 and mode(logs) == 0o700
        assert mode(old_log) == 0o600
        for directory, _, files in os.walk(m.cache):
            for name in files:
                assert mode(os.path.join(directory, name)) & 0o077 == 0, os.path.join(directory, name)
    finally:
        m.force_cleanup()


@pytest.mark.parametrize("sub", ["staging", "recovery"])
def test_staging_or_recovery_planted_as_a_link_is_refused(tmp_path, sub):
    m = Mount(tmp_path, "m")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    m.cache.mkdir(mode=0o700)
    (m.cache / sub).symlink_to(elsewhere)
    try:
        result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), check=False)
        assert result.returncode != 0 and not is_mounted(m.path)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"refusing {m.cache / sub}: not a directory" in lines[0], result.stderr
        assert list(elsewhere.iterdir()) == []
    finally:
        m.force_cleanup()


def test_an_older_versions_open_staging_and_recovery_are_closed(tmp_path):
    m = Mount(tmp_path, "m")
    m.cache.mkdir(mode=0o700)
    for sub in ("staging", "recovery"):
        (m.cache / sub).mkdir()
        os.chmod(m.cache / sub, 0o755)
    try:
        m.mount()
        assert mode(m.cache / "staging") == 0o700 and mode(m.cache / "recovery") == 0o700
    finally:
        m.force_cleanup()


@pytest.fixture
def plain_user():
    """An ordinary user made for the test, removed after."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a user needs root and useradd")
    name = f"bfsx{os.getpid() % 100000}"
    run("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--user-group", name)
    entry = pwd.getpwnam(name)
    home = pathlib.Path(tempfile.mkdtemp(prefix="bucketfs-user-", dir="/tmp"))
    os.chmod(home, 0o755)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o666)
    user = {"name": name, "uid": entry.pw_uid, "gid": entry.pw_gid, "home": home}
    yield user
    os.chmod("/dev/fuse", fuse_mode)
    for path in home.glob("*-mnt"):
        if is_mounted(path):
            subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    time.sleep(0.2)
    subprocess.run(["userdel", name], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(f"/tmp/bucketfs-{entry.pw_uid}", ignore_errors=True)


def user_run(user, *args, check=True, env=()):
    """As the user, without XDG_RUNTIME_DIR: the runtime directory is /tmp/bucketfs-<uid>."""
    base = ["env", "-i", f"PATH={os.path.dirname(BIN)}:/usr/local/bin:/usr/bin:/bin", f"HOME={user['home']}",
            f"USER={user['name']}", *env]
    return run("runuser", "-u", user["name"], "--", *base, *args, check=check)


def user_owned(user, *names):
    paths = [user["home"] / n for n in names]
    for path in paths:
        path.mkdir(exist_ok=True)
        os.chown(path, user["uid"], user["gid"])
    return paths


def test_runtime_dir_in_tmp_made_by_someone_else_is_refused(plain_user):
    bucket, mnt, cache = user_owned(plain_user, "bucket", "a-mnt", "cache")
    planted = pathlib.Path(f"/tmp/bucketfs-{plain_user['uid']}")
    shutil.rmtree(planted, ignore_errors=True)
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)    # made by root, open to all: anyone could plant links in it
    try:
        result = user_run(plain_user, BIN, "mount", f"file://{bucket}/", str(mnt), "--cache-dir", str(cache),
                          check=False)
        assert result.returncode != 0 and not is_mounted(mnt)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(planted) in lines[0] and "refusing" in lines[0], result.stderr
        # The default lock directory (file strategy) is refused the same way.
        result = user_run(plain_user, BIN, "mount", f"file://{bucket}/", str(mnt), "--cache-dir", str(cache),
                          "--lock-strategy", "file", check=False)
        assert result.returncode != 0 and str(planted) in result.stderr, result.stderr
    finally:
        shutil.rmtree(planted, ignore_errors=True)
    # Made by the user's own mount: 0700, and the mount works.
    user_run(plain_user, BIN, "mount", f"file://{bucket}/", str(mnt), "--cache-dir", str(cache),
             "--lock-strategy", "file")
    try:
        assert is_mounted(mnt)
        assert mode(planted) == 0o700 and os.stat(planted).st_uid == plain_user["uid"]
        user_run(plain_user, "flock", "-n", f"{mnt}/f", "true")
        assert mode(planted / "locks") == 0o700
    finally:
        user_run(plain_user, BIN, "unmount", str(mnt), check=False)


# -- the control directory under allow_other ------------------------------------------------------------------------

@pytest.mark.parametrize("widen", [False, True], ids=["default", "control_dir_mode=0444"])
def test_control_directory_is_the_owners_alone_under_allow_other(tmp_path, plain_user, widen):
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:
        if str(parent).startswith("/tmp/pytest-of"):
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
    options = ["--allow-other"] + (["-o", "control_dir_mode=0444"] if widen else [])
    m = Mount(tmp_path, "m", options=options)
    try:
        m.mount()
        (m.path / "shared.txt").write_text("for everyone\n")
        os.chmod(m.path / "shared.txt", 0o644)
        control = m.path / ".bucketfs"
        # The user reaches the mount (allow_other) and ordinary files in it ...
        assert user_run(plain_user, "cat", f"{m.path}/shared.txt").stdout == "for everyone\n"
        listing = user_run(plain_user, "ls", str(control), check=False)
        reading = user_run(plain_user, "cat", f"{control}/config.json", check=False)
        if widen:
            assert listing.returncode == 0 and "config.json" in listing.stdout, listing.stderr
            assert reading.returncode == 0 and json.loads(reading.stdout)["mount"]["control_dir_mode"] == "0444"
            assert mode(control) == 0o555 and mode(control / "config.json") == 0o444
        else:
            # ... but not the control directory: EACCES, and root (the owner) still reads it.
            assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
            assert reading.returncode != 0 and "Permission denied" in reading.stderr, reading
            assert mode(control) == 0o500 and mode(control / "config.json") == 0o400
            assert os.stat(control).st_uid == os.getuid()
            assert json.loads((control / "config.json").read_text())["mount"]["allow_other"] is True
    finally:
        m.force_cleanup()
