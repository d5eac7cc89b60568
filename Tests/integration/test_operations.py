"""Day-to-day operation: fstab and mount(8), users other than root, systemd, `bucketfs status`, logs.

Every test mounts for real. Tests that install the mount helper, create a user or read /etc/fuse.conf need root
and skip with the reason otherwise.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BIN, ROOT, FileBucket, Mount, daemon_pid, is_mounted, listdir, run, sh

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (installs into /sbin, creates users)")


def mount_type(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                return fields[fields.index("-") + 1]
    return None


def wait_for_exit(pid, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.05)
    return False


def wait_until(predicate, seconds=10, interval=0.2):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@pytest.fixture
def mounts():
    """Mount objects made by a test, cleaned up (lazily detached, daemon killed) even when it fails."""
    made = []
    yield made
    for m in made:
        m.force_cleanup()


@pytest.fixture
def mount_helper():
    """/sbin/mount.bucketfs for the binary under test, installed by the install script's own step, which also makes
    mount.fuse3 (fuse.bucketfs lines; mount(8) clears PATH) find that binary as `bucketfs`. Restored after."""
    if not IS_ROOT:
        pytest.skip("installing /sbin/mount.bucketfs needs root")
    touched = [pathlib.Path("/sbin/mount.bucketfs"), pathlib.Path("/usr/local/sbin/bucketfs")]
    saved = {p: (os.readlink(p) if p.is_symlink() else p.read_bytes()) if os.path.lexists(p) else None
             for p in touched}
    sh(f'source scripts/lib.sh && install_mount_helpers "{BIN}" /sbin', cwd=ROOT)
    try:
        assert f"bucketfs={BIN}\n" in touched[0].read_text() and os.access(touched[0], os.X_OK)
        found = run("env", "-i", "/bin/sh", "-c", "command -v bucketfs").stdout.strip()
        assert os.path.realpath(found) == os.path.realpath(BIN)
        yield dict(os.environ)
    finally:
        for path, old in saved.items():
            if os.path.lexists(path):
                path.unlink()
            if isinstance(old, str):
                path.symlink_to(old)
            elif old is not None:
                path.write_bytes(old)
                path.chmod(0o755)


# -- mount(8) and fstab ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fstype", ["fuse.bucketfs", "bucketfs"])
def test_fstab_line_mounts_and_umount_flushes(fstype, tmp_path, mount_helper, mounts):
    m = Mount(tmp_path, "fstab")
    mounts.append(m)
    config = tmp_path / "bucketfs.yaml"
    config.write_text("mount:\n  uid: 4321\n  gid: 4322\n  metadata_ttl: 0\n")
    m.bucket.put("before.txt", b"in the bucket before the mount\n")
    fstab = tmp_path / "fstab"
    options = f"rw,nosuid,nodev,noauto,_netdev,x-systemd.automount,config={config},cache_dir={m.cache}"
    fstab.write_text(f"# test fstab\n{m.source} {m.path} {fstype} {options} 0 0\n")

    run("mount", "-T", str(fstab), str(m.path), env=mount_helper)
    assert is_mounted(m.path)
    assert mount_type(m.path) == "fuse.bucketfs"
    pid = daemon_pid(m.path)
    assert pid, "no daemon serves the mount"

    # The config file named by config= was read; the mount(8) options were accepted.
    assert (m.path / "before.txt").read_bytes() == b"in the bucket before the mount\n"
    assert run("stat", "-c", "%u:%g", str(m.path / "before.txt")).stdout.strip() == "4321:4322"
    data = os.urandom(300_000)
    (m.path / "dir").mkdir()
    (m.path / "dir" / "written.bin").write_bytes(data)
    assert (m.path / "dir" / "written.bin").read_bytes() == data
    assert listdir(m.path) == ["before.txt", "dir"]

    run("umount", str(m.path))
    assert not is_mounted(m.path)
    assert wait_for_exit(pid), "daemon still running after umount"
    assert m.bucket.get("dir/written.bin") == data


@needs_root
def test_mount_bucketfs_passes_options_and_fake_mounts_nothing(tmp_path, mount_helper, mounts):
    m = Mount(tmp_path, "helper")
    mounts.append(m)
    # mount -f: everything but the mount.
    run("mount", "-f", "-t", "bucketfs", m.source, str(m.path), "-o", f"cache_dir={m.cache}", env=mount_helper)
    assert not is_mounted(m.path)
    # An option bucketfs does not know fails the mount with bucketfs's own line.
    bad = run("mount", "-t", "bucketfs", m.source, str(m.path), "-o", f"bogus=1,cache_dir={m.cache}",
              env=mount_helper, check=False)
    assert bad.returncode != 0
    assert 'unknown mount option "bogus"' in bad.stderr
    assert not is_mounted(m.path)
    run("mount", "-t", "bucketfs", m.source, str(m.path), "-o", f"ro,cache_dir={m.cache}", env=mount_helper)
    assert mount_type(m.path) == "fuse.bucketfs"
    write = run("sh", "-c", f"echo x > {m.path}/nope", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    m.unmount()


# -- users other than root ------------------------------------------------------------------------------------------

@pytest.fixture
def user():
    """An ordinary user made for the test (removed after), with a private directory it owns."""
    if not IS_ROOT or not shutil.which("useradd"):
        pytest.skip("creating a user needs root and useradd")
    name = f"bfs{os.getpid() % 100000}"
    run("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--user-group", name)
    import pwd
    entry = pwd.getpwnam(name)
    home = pathlib.Path(tempfile.mkdtemp(prefix="bucketfs-user-", dir="/tmp"))
    os.chmod(home, 0o755)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    mountpoint = home / "mnt"
    # udev makes /dev/fuse crw-rw-rw- on a standard system; some containers hand it over as 0600, and libfuse
    # opens it before it asks fusermount3 to mount. Give it the standard mode for the test.
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o666)
    yield {"name": name, "uid": entry.pw_uid, "gid": entry.pw_gid, "home": home}
    os.chmod("/dev/fuse", fuse_mode)
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    time.sleep(0.2)
    subprocess.run(["userdel", name], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def as_user(user, *args, check=True):
    env = ["env", "-i", f"PATH={os.path.dirname(BIN)}:/usr/local/bin:/usr/bin:/bin", f"HOME={user['home']}",
           f"USER={user['name']}", f"XDG_RUNTIME_DIR={user['home']}/run"]
    return run("runuser", "-u", user["name"], "--", *env, *args, check=check)


def user_dirs(user):
    paths = {k: user["home"] / k for k in ("bucket", "mnt", "cache", "run")}
    for path in paths.values():
        path.mkdir(exist_ok=True)
        os.chown(path, user["uid"], user["gid"])
    return paths


def test_ordinary_user_mounts_writes_reads_and_unmounts_with_fusermount3(user):
    dirs = user_dirs(user)
    (dirs["bucket"] / "from-root.txt").write_text("put there by root\n")
    os.chown(dirs["bucket"] / "from-root.txt", 0, 0)
    source = f"file://{dirs['bucket']}/"
    as_user(user, BIN, "mount", source, str(dirs["mnt"]), "--cache-dir", str(dirs["cache"]))
    assert mount_type(dirs["mnt"]) == "fuse.bucketfs"
    pid = daemon_pid(dirs["mnt"])
    assert pid and os.stat(f"/proc/{pid}").st_uid == user["uid"], "the daemon runs as the user"

    mnt = dirs["mnt"]
    as_user(user, "sh", "-c", f"printf 'hello from a user\\n' > {mnt}/mine.txt && mkdir {mnt}/sub")
    assert as_user(user, "cat", f"{mnt}/mine.txt").stdout == "hello from a user\n"
    # Objects without owner metadata show the mounting user, not root.
    owners = as_user(user, "stat", "-c", "%n %u %g", f"{mnt}/from-root.txt", f"{mnt}/mine.txt").stdout.split("\n")
    assert owners[0] == f"{mnt}/from-root.txt {user['uid']} {user['gid']}"
    assert owners[1] == f"{mnt}/mine.txt {user['uid']} {user['gid']}"

    status = json.loads(as_user(user, BIN, "status", "--json").stdout)
    assert [(s["mountpoint"], s["pid"]) for s in status] == [(str(mnt), pid)]

    as_user(user, "fusermount3", "-u", str(mnt))
    assert not is_mounted(mnt)
    assert wait_for_exit(pid)
    assert (dirs["bucket"] / "mine.txt").read_text() == "hello from a user\n"


def test_allow_other_without_user_allow_other_is_refused_in_one_line(user):
    with open("/etc/fuse.conf") as f:
        if any(line.split("#")[0].strip() == "user_allow_other" for line in f):
            pytest.skip("/etc/fuse.conf allows allow_other here (user_allow_other is set)")
    dirs = user_dirs(user)
    result = as_user(user, BIN, "mount", f"file://{dirs['bucket']}/", str(dirs["mnt"]), "--cache-dir",
                     str(dirs["cache"]), "-o", "allow_other", check=False)
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert "user_allow_other" in lines[0] and "/etc/fuse.conf" in lines[0], lines[0]
    assert not is_mounted(dirs["mnt"])


# -- systemd ---------------------------------------------------------------------------------------------------------

def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd); the unit was not verified")
    units = tmp_path / "units"
    sh(f'source scripts/lib.sh && install_systemd_unit "{BIN}" "{units}"', cwd=ROOT)
    unit = units / "bucketfs@.service"
    text = unit.read_text()
    assert f"\nExecStart={BIN} mount --foreground " in text
    for line in ("Type=notify", "Restart=on-failure"):
        assert f"\n{line}\n" in text
    # An instance, as `systemctl enable bucketfs@mnt-alice` makes one.
    (units / "bucketfs@mnt-alice.service").symlink_to("bucketfs@.service")
    for name in ("bucketfs@.service", "bucketfs@mnt-alice.service"):
        result = run("systemd-analyze", "verify", "--man=no", str(units / name), check=False)
        assert result.returncode == 0, result.stderr
        complaints = [l for l in result.stderr.splitlines() if "bucketfs@" in l]
        assert not complaints, result.stderr


def notify_socket(tmp_path, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"@bucketfs-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    sock.settimeout(30)
    return sock, name


def receive_until(sock, key):
    """Datagrams until one has the line `key`; returns that one's lines as a dict."""
    while True:
        message = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in message.splitlines() if "=" in line)
        if key in fields:
            return fields


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_foreground_daemon_notifies_ready_and_stopping(tmp_path, abstract, mounts):
    m = Mount(tmp_path, "notify")
    mounts.append(m)
    sock, name = notify_socket(tmp_path, abstract)
    log = open(tmp_path / "stderr.log", "w+")
    # As systemd runs a service: NOTIFY_SOCKET, INVOCATION_ID (lines for the journal, without timestamps).
    env = dict(os.environ, NOTIFY_SOCKET=name, INVOCATION_ID="0123456789abcdef0123456789abcdef")
    daemon = subprocess.Popen([BIN, "mount", "--foreground", m.source, str(m.path), "--cache-dir", str(m.cache)],
                              env=env, stdout=log, stderr=log)
    try:
        ready = receive_until(sock, "READY")
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(daemon.pid)
        # Ready means mounted: no waiting.
        assert mount_type(m.path) == "fuse.bucketfs"
        (m.path / "f.txt").write_text("served\n")
        assert (m.path / "f.txt").read_text() == "served\n"

        daemon.send_signal(signal.SIGTERM)
        assert receive_until(sock, "STOPPING")["STOPPING"] == "1"
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        sock.close()
    assert not is_mounted(m.path)
    assert m.bucket.get("f.txt") == b"served\n"
    log.seek(0)
    lines = log.read().splitlines()
    assert any(re.match(r"^<6>info bucketfs: mounted mountpoint=\S+ pid=\d+ source=", l) for l in lines), lines


# -- bucketfs status -------------------------------------------------------------------------------------------------

def test_status_lists_the_mount_with_pid_source_and_pending_uploads(tmp_path, mounts):
    m = Mount(tmp_path, "status")
    mounts.append(m)
    m.mount()
    pid = daemon_pid(m.path)
    mountpoint = os.path.realpath(m.path)

    table = run(BIN, "status").stdout.splitlines()
    assert table[0].split() == ["MOUNTPOINT", "SOURCE", "PID", "UPTIME", "PENDING", "LOCKS"]
    row = [line.split() for line in table[1:] if line.split()[0] == mountpoint]
    assert len(row) == 1 and row[0][1] == m.source and row[0][2] == str(pid), table

    def entry():
        entries = json.loads(run(BIN, "status", str(m.path), "--json").stdout)
        assert len(entries) == 1
        return entries[0]

    first = entry()
    assert (first["mountpoint"], first["source"], first["pid"]) == (mountpoint, m.source, pid)
    assert first["mounted"] is True and first["uptime_seconds"] >= 0 and first["held_locks"] == []

    # A file written and still open is pending; once closed (uploaded), it is not. The daemon refreshes every 2 s.
    # The writer is a process of its own: a descriptor of ours would be closed (flushed) by every fork-exec.
    writer = subprocess.Popen(
        ["python3", "-c", "import sys; f = open(sys.argv[1], 'wb'); f.write(b'x' * 100000); print('written', flush=True);"
         " sys.stdin.readline(); f.close()", str(m.path / "open.bin")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "written\n"
        assert wait_until(lambda: entry()["pending_uploads"] == 1, seconds=8), entry()
        assert m.bucket.get("open.bin") is None
        writer.stdin.write("close\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
    finally:
        writer.kill()
    assert wait_until(lambda: entry()["pending_uploads"] == 0, seconds=8), entry()
    assert m.bucket.get("open.bin") == b"x" * 100_000

    m.unmount()
    gone = run(BIN, "status", str(m.path), check=False)
    assert gone.returncode != 0 and "no live bucketfs mount" in gone.stderr
    assert all(e["mountpoint"] != mountpoint for e in json.loads(run(BIN, "status", "--json").stdout))


def test_status_leaves_out_a_killed_daemon(tmp_path, mounts):
    m = Mount(tmp_path, "killed")
    mounts.append(m)
    m.mount()
    pid = daemon_pid(m.path)
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid)
    assert all(e["pid"] != pid for e in json.loads(run(BIN, "status", "--json").stdout))


# -- logs ------------------------------------------------------------------------------------------------------------

def test_failed_store_request_is_one_line_without_secrets(tmp_path, moto, mounts):
    bucket = moto.new_bucket()
    m = Mount(tmp_path, "s3log", bucket=bucket)
    mounts.append(m)
    secret, token = "s3cr3t-never-in-a-log-7f3a", "t0ken-never-in-a-log-91c2"
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=token)
    run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), "-o", "debug,metadata_ttl=60", env=env)
    assert is_mounted(m.path)
    (m.path / "lost.txt").write_text("first\n")
    # The bucket goes away under the mount: the next upload of the file fails (404 NoSuchBucket).
    for key in bucket.all_keys():    # lost.txt and the mount's session record
        moto.client.delete_object(Bucket=bucket.name, Key=key)
    moto.client.delete_bucket(Bucket=bucket.name)
    # (A shell's `>` ignores close()'s answer; Python reports it.)
    write = run("python3", "-c", "import sys; f = open(sys.argv[1], 'w'); f.write('data'); f.close()", str(m.path / "lost.txt"),
                check=False)
    assert write.returncode != 0 and "Input/output error" in write.stderr, write.stderr
    logs = "".join(p.read_text() for p in (m.cache / "logs").glob("*.log"))
    # (The mount's conditional-write probe logs its expected 412s at debug level; they are about other keys.)
    failed = [l for l in logs.splitlines()
              if "store request failed" in l and "operation=PutObject" in l and "key=lost.txt" in l]
    assert failed, logs
    line = failed[0]
    for part in ("warning bucketfs.s3:", "key=lost.txt", "status=404", "retries=0", "code=NoSuchBucket",
                 f"bucket={bucket.name}"):
        assert part in line, line
    assert secret not in logs and token not in logs
