"""Real programs on the mount, run as a user runs them, on file:// and s3:// (moto).

Each test asserts what the program produced (history, content, modes, times, kinds), not only its exit code.
Where a program keeps an attribute, the expected value is what the same program leaves on the local disk from
the same input: the mount must keep everything a local filesystem keeps (bar hard links).
"""
import errno
import hashlib
import os
import socket
import stat
import subprocess
import tempfile
import threading
import shutil

import pytest

from conftest import BACKENDS, listdir, run, sh

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (ownership, mknod)")


@pytest.fixture(params=[b for b in BACKENDS if b in ("file", "s3")])
def backend(request):
    """These programs run on file:// and s3:// only (GCS shares the filesystem layer they exercise)."""
    return request.param


# Known to fail: test name -> why. Remove an entry when it is fixed (xfail is not strict).
KNOWN_BUGS = {
}


@pytest.fixture(autouse=True)
def known_bug(request):
    reason = KNOWN_BUGS.get(request.node.name)
    if reason:
        request.node.add_marker(pytest.mark.xfail(strict=False, reason="issue 11: " + reason))


# --- trees and their comparison -------------------------------------------------------------------------------

T0 = 1_600_000_000_123_456_789  # an mtime with nanoseconds, well in the past


def build_tree(root):
    """Directories of modes 0750/0700/0711/2775/0755, files of modes 0640/0600/0755/0444, symlinks (to a file, to
    a directory, dangling), owners other than root (as root), and a distinct mtime with nanoseconds on every entry
    (set last, deepest first, so that creating children does not move a directory's mtime)."""
    dirs = {"": 0o755, "a": 0o750, "a/deep": 0o700, "b": 0o711, "shared": 0o2775, "c": 0o755, "c/empty": 0o750}
    files = {"a/one.txt": (0o640, b"one\n"), "a/deep/two.bin": (0o600, os.urandom(70_000)),
             "b/run.sh": (0o755, b"#!/bin/sh\necho hi\n"), "c/ro.txt": (0o444, b"read only\n"),
             "top.txt": (0o644, b"top\n"), "shared/empty.dat": (0o640, b"")}
    links = {"link-file": "a/one.txt", "c/link-dir": "../a", "dangling": "nowhere/x"}
    owners = {"a/one.txt": (1234, 2345), "b": (1234, 2345), "shared/empty.dat": (0, 2345)}
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for f, (_, data) in files.items():
        (root / f).write_bytes(data)
    for name, target in links.items():
        os.symlink(target, root / name)
    for f, (mode, _) in files.items():
        os.chmod(root / f, mode)
    if IS_ROOT:
        for p, (uid, gid) in owners.items():
            os.lchown(root / p, uid, gid)
    for d, mode in dirs.items():
        os.chmod(root / d, mode)  # after chown, which clears setgid
    every = list(files) + list(links) + list(dirs)
    for i, p in enumerate(sorted(every, key=lambda p: -(p.count("/") + (p != "")))):  # deepest first, root last
        t = T0 + i * 1_000_000_007
        os.utime(root / p, ns=(t, t), follow_symlinks=False)
    return root


def describe(path):
    """What a program may be expected to keep of one entry."""
    st = os.lstat(path)
    entry = {"type": stat.filemode(st.st_mode)[0], "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid,
             "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}
    if stat.S_ISLNK(st.st_mode):
        entry["target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        entry["size"] = st.st_size
        with open(path, "rb") as f:
            entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
    return entry


def tree(root):
    """relative path -> describe(), the root itself as "." (a mount root's .bucketfs/ left out)."""
    root = str(root)
    out = {".": describe(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".bucketfs"]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = describe(p)
    return out


def differences(expected, got, fields=None, skip_root=False):
    """Readable list of (path, field, expected, got) where two tree() results differ."""
    diffs = []
    for path in sorted(set(expected) | set(got)):
        if skip_root and path == ".":
            continue
        if path not in got or path not in expected:
            diffs.append((path, "exists", path in expected, path in got))
            continue
        for field in sorted(set(expected[path]) | set(got[path])):
            if fields and field not in fields:
                continue
            if expected[path].get(field) != got[path].get(field):
                diffs.append((path, field, expected[path].get(field), got[path].get(field)))
    return diffs


def assert_same_tree(expected_root, got_root, fields=None, skip_root=False):
    diffs = differences(tree(expected_root), tree(got_root), fields, skip_root)
    assert not diffs, "\n".join(f"{p}: {f}: expected {e!r}, got {g!r}" for p, f, e, g in diffs)


def test_tree_builder_sets_what_the_tests_compare(tmp_path):
    """The comparison is not vacuous: the source tree has the modes, owners and nanosecond times it claims."""
    t = tree(build_tree(tmp_path / "src"))
    assert t["a"]["mode"] == "0o750" and t["a/deep"]["mode"] == "0o700" and t["shared"]["mode"] == "0o2775"
    assert t["c/ro.txt"]["mode"] == "0o444" and t["link-file"]["type"] == "l"
    assert len({e["mtime_ns"] for e in t.values()}) == len(t)
    assert all(e["mtime_ns"] % 1_000_000_000 for e in t.values())
    if IS_ROOT:
        assert (t["b"]["uid"], t["b"]["gid"]) == (1234, 2345)


# --- git ------------------------------------------------------------------------------------------------------

@pytest.fixture
def git(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="A U Thor",
               GIT_AUTHOR_EMAIL="a@example.com", GIT_COMMITTER_NAME="C O Mitter", GIT_COMMITTER_EMAIL="c@example.com")

    def git(cwd, *args):
        result = run("git", "-c", "init.defaultBranch=main", *args, cwd=cwd, env=env, timeout=300)
        return result.stdout

    return git


def test_git_init_add_commit_log_status_mv(mnt, git):
    repo = mnt / "repo"
    git(mnt.path, "init", "-q", str(repo))
    (repo / "a.txt").write_text("alpha\n")
    (repo / "dir").mkdir()
    (repo / "dir" / "b.txt").write_text("beta\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(repo / "run.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    assert git(repo, "log", "--format=%s") == "first\n"
    assert git(repo, "status", "--porcelain") == ""
    assert "100755" in git(repo, "ls-files", "-s", "run.sh")

    git(repo, "mv", "a.txt", "dir/a-moved.txt")
    assert git(repo, "status", "--porcelain") == "R  a.txt -> dir/a-moved.txt\n"
    git(repo, "commit", "-q", "-m", "move")
    assert git(repo, "show", "--name-status", "--format=", "HEAD") == "R100\ta.txt\tdir/a-moved.txt\n"
    assert not (repo / "a.txt").exists() and (repo / "dir" / "a-moved.txt").read_text() == "alpha\n"

    (repo / "dir" / "b.txt").write_text("beta 2\n")
    assert git(repo, "status", "--porcelain") == " M dir/b.txt\n"
    git(repo, "commit", "-q", "-am", "edit")
    assert git(repo, "log", "--format=%s") == "edit\nmove\nfirst\n"
    assert git(repo, "status", "--porcelain") == ""
    git(repo, "fsck", "--strict", "--no-progress")

    mnt.remount()
    assert git(repo, "log", "--format=%s") == "edit\nmove\nfirst\n"
    assert git(repo, "status", "--porcelain") == ""
    git(repo, "config", "user.useconfigonly", "true")  # config.lock: created, chmodded, renamed
    assert "useconfigonly = true" in (repo / ".git" / "config").read_text()


def make_source_repo(path, git, files=300):
    """A local repository of `files` files in nested directories, three commits."""
    path.mkdir()
    git(path, "init", "-q")
    for i in range(files):
        d = path / f"pkg{i % 10}" / f"mod{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"# file {i}\n" + "x = %d\n" % i * (i % 50 + 1))
    os.chmod(path / "pkg0" / "mod0" / "f0.py", 0o755)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    for n in ("two", "three"):
        for i in range(0, files, 7):
            (path / f"pkg{i % 10}" / f"mod{i % 4}" / f"f{i}.py").write_text(f"# {n} {i}\n")
        git(path, "commit", "-q", "-am", n)
    return path


def worktree_files(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = (open(p, "rb").read(), os.stat(p).st_mode & 0o111 != 0)
    return out


@pytest.mark.parametrize("how", ["path", "file-url"])
def test_git_clone_fsck_gc(mnt, git, tmp_path, how):
    """A local path clone copies .git (hard links fail across filesystems); a file:// clone goes through the pack
    protocol (index-pack writes a temporary pack, chmods it 0444 and renames it)."""
    src = make_source_repo(tmp_path / "src", git)
    clone = mnt / "clone"
    git(mnt.path, "clone", "-q", *(["--no-local", f"file://{src}"] if how == "file-url" else [str(src)]), str(clone))
    git(clone, "fsck", "--full", "--strict", "--no-progress")
    assert git(clone, "rev-parse", "HEAD") == git(src, "rev-parse", "HEAD")
    assert git(clone, "log", "--format=%s") == "three\ntwo\none\n"
    assert git(clone, "status", "--porcelain") == ""
    assert worktree_files(clone) == worktree_files(src)

    (clone / "new.txt").write_text("new\n")
    git(clone, "add", "new.txt")
    git(clone, "commit", "-q", "-m", "four")
    git(clone, "gc", "-q", "--prune=now")
    counts = dict(line.split(": ") for line in git(clone, "count-objects", "-v").splitlines())
    assert counts["count"] == "0" and counts["packs"] == "1", counts
    git(clone, "fsck", "--full", "--strict", "--no-progress")
    assert git(clone, "log", "--format=%s") == "four\nthree\ntwo\none\n"
    assert git(clone, "status", "--porcelain") == ""

    mnt.remount()
    git(clone, "fsck", "--full", "--strict", "--no-progress")
    assert git(clone, "status", "--porcelain") == ""


# --- tar, rsync, cp -a ---------------------------------------------------------------------------------------

def test_tar_x_keeps_modes_mtimes_owners_symlinks_and_tar_c_reads_cleanly(mnt, tmp_path):
    src = build_tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar"
    # pax format keeps nanosecond mtimes; the archive's members are tree/...
    run("tar", "--format=posix", "-cf", str(archive), "-C", str(tmp_path), "tree")
    local = tmp_path / "local"
    local.mkdir()
    run("tar", "-xpf", str(archive), "-C", str(local))
    (mnt / "x").mkdir()
    result = run("tar", "-xpf", str(archive), "-C", str(mnt / "x"))
    assert result.stderr == ""
    # What tar restores on the local disk equals the source (sanity), and the mount must hold the same.
    assert_same_tree(src, local / "tree")
    assert_same_tree(local / "tree", mnt / "x" / "tree")

    out = run("tar", "--format=posix", "-cf", str(tmp_path / "back.tar"), "-C", str(mnt / "x"), "tree")
    assert out.returncode == 0 and out.stderr == ""
    members = [sorted(run("tar", "-tf", str(a)).stdout.splitlines()) for a in (archive, tmp_path / "back.tar")]
    assert members[0] == members[1]

    mnt.remount()
    assert_same_tree(local / "tree", mnt / "x" / "tree")
    out = run("tar", "-cf", "/dev/null", "-C", str(mnt / "x"), "tree")
    assert out.stderr == ""


@pytest.mark.parametrize("target", ["subdir", "root"])
def test_rsync_a_then_dry_run_itemizes_nothing(mnt, tmp_path, target):
    src = build_tree(tmp_path / "src")
    dst = str(mnt / "dst") if target == "subdir" else str(mnt.path)
    run("rsync", "-a", f"{src}/", f"{dst}/")
    again = run("rsync", "-ai", "--dry-run", f"{src}/", f"{dst}/")
    assert again.stdout == "", "rsync would transfer again:\n" + again.stdout
    mnt.remount()
    again = run("rsync", "-ai", "--dry-run", f"{src}/", f"{dst}/")
    assert again.stdout == "", "after a remount rsync would transfer again:\n" + again.stdout
    assert_same_tree(src, dst, skip_root=(target == "root"))


def test_cp_a_round_trip_keeps_stat(mnt, tmp_path):
    src = build_tree(tmp_path / "src")
    local = tmp_path / "local"
    run("cp", "-a", str(src), str(local))
    assert_same_tree(src, local)  # sanity: cp -a keeps all of it locally
    run("cp", "-a", str(src), str(mnt / "copy"))
    assert_same_tree(src, mnt / "copy")
    run("cp", "-a", str(mnt / "copy"), str(tmp_path / "back"))
    assert_same_tree(src, tmp_path / "back")
    mnt.remount()
    assert_same_tree(src, mnt / "copy")


def test_cp_a_within_the_mount_keeps_directory_modes(mnt, tmp_path):
    run("cp", "-a", str(build_tree(tmp_path / "src")), str(mnt / "one"))
    run("cp", "-a", str(mnt / "one"), str(mnt / "two"))
    assert_same_tree(tmp_path / "src", mnt / "two")


def ls_ln(path):
    """name -> (mode string, uid, gid, mtime in seconds) as `ls -ln` prints them."""
    out = run("ls", "-ln", "--time-style=+%s", str(path)).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        fields = line.split(None, 6)
        rows[fields[6].split(" -> ")[0]] = (fields[0].rstrip("+."), fields[2], fields[3], fields[5])
    return rows


def test_ls_l_after_remount_shows_kept_modes_and_times(mnt, tmp_path):
    src = build_tree(tmp_path / "src")
    run("cp", "-a", str(src), str(mnt / "copy"))
    mnt.remount()
    for d in ("", "a", "c", "shared"):
        expected, got = ls_ln(src / d), ls_ln(mnt / "copy" / d)
        assert got == expected, f"ls -ln {d or '.'}: expected {expected}, got {got}"


def test_mv_directory_keeps_file_times_to_the_nanosecond(mnt):
    d = mnt / "dir1"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}").write_text(str(i))
        os.utime(d / f"f{i}", ns=(T0 + i, T0 + i * 1_000_001))
    before = {n: os.stat(d / n).st_mtime_ns for n in os.listdir(d)}
    assert before["f3"] == T0 + 3_000_003
    run("mv", str(d), str(mnt / "dir2"))
    assert {n: os.stat(mnt / "dir2" / n).st_mtime_ns for n in os.listdir(mnt / "dir2")} == before
    mnt.remount()
    assert {n: os.stat(mnt / "dir2" / n).st_mtime_ns for n in os.listdir(mnt / "dir2")} == before


# --- Python's standard library ---------------------------------------------------------------------------------

def test_python_shutil_copytree_copy2_replace_tempfile(mnt, tmp_path):
    src = build_tree(tmp_path / "src")
    shutil.copytree(src, mnt / "tree", symlinks=True)
    # copytree copies data, then copystat: modes and nanosecond times, not owners.
    assert_same_tree(src, mnt / "tree", fields={"type", "mode", "mtime_ns", "size", "sha256", "target"})

    shutil.copy2(src / "a" / "one.txt", mnt / "one-copy.txt")
    assert os.stat(mnt / "one-copy.txt").st_mtime_ns == os.stat(src / "a" / "one.txt").st_mtime_ns
    assert stat.S_IMODE(os.stat(mnt / "one-copy.txt").st_mode) == 0o640

    # The write-a-temporary-then-replace pattern of editors and package managers.
    target = mnt / "config.json"
    target.write_text("old")
    ino_target_before = os.stat(target).st_ino
    with tempfile.NamedTemporaryFile("w", dir=mnt.path, delete=False, prefix=".config-") as tmp:
        tmp.write("new")
        tmp.flush()
        os.fsync(tmp.fileno())
    ino_tmp = os.stat(tmp.name).st_ino
    os.replace(tmp.name, target)
    assert target.read_text() == "new" and not os.path.lexists(tmp.name)
    assert os.stat(target).st_ino == ino_tmp != ino_target_before
    assert [n for n in listdir(mnt.path) if n.startswith(".config-")] == []

    fd, name = tempfile.mkstemp(dir=mnt.path)
    assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    os.write(fd, b"data")
    os.close(fd)
    assert open(name, "rb").read() == b"data"
    os.unlink(name)
    with tempfile.TemporaryFile(dir=mnt.path) as f:  # O_TMPFILE, or create + unlink while open
        f.write(b"x" * 100_000)
        f.seek(0)
        assert f.read() == b"x" * 100_000
    with tempfile.TemporaryDirectory(dir=mnt.path) as tdir:
        os.makedirs(os.path.join(tdir, "a", "b"))
        open(os.path.join(tdir, "a", "b", "c"), "w").close()
        os.chmod(os.path.join(tdir, "a"), 0o500)  # cleanup must cope, as it does locally
    assert not os.path.exists(tdir)
    mnt.remount()
    assert target.read_text() == "new"
    assert_same_tree(src, mnt / "tree", fields={"type", "mode", "mtime_ns", "size", "sha256", "target"})


# --- sqlite3 ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite3_transactions(mnt, journal):
    db = str(mnt / "app.db")

    def sql(script):
        return run("sqlite3", "-bail", db, script).stdout.strip()

    assert sql(f"PRAGMA journal_mode={journal};") == journal
    sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
        "BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)"
        " INSERT INTO t(v) SELECT hex(randomblob(64)) FROM c; COMMIT;")
    assert sql("SELECT count(*) FROM t;") == "5000"
    assert sql("BEGIN; INSERT INTO t(v) VALUES ('rolled back'); DELETE FROM t WHERE id <= 100; ROLLBACK;"
               "SELECT count(*) FROM t;") == "5000"
    sql("BEGIN; DELETE FROM t WHERE id % 2 = 0; UPDATE t SET v = 'odd' WHERE id % 5 = 0; COMMIT;")
    assert sql("SELECT count(*), sum(v = 'odd') FROM t;") == "2500|500"
    assert sql("PRAGMA integrity_check;") == "ok"
    mnt.remount()
    assert sql("SELECT count(*), sum(v = 'odd'), min(id), max(id) FROM t;") == "2500|500|1|4999"
    assert sql("PRAGMA integrity_check;") == "ok"
    assert not os.path.exists(db + "-journal")


# --- special files ----------------------------------------------------------------------------------------------

def test_mkfifo_passes_data_from_a_writer_to_a_reader(mnt, tmp_path):
    fifo = mnt / "pipe"
    os.mkfifo(fifo, 0o640)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_IMODE(os.lstat(fifo).st_mode) == 0o640
    data = os.urandom(1 << 20)  # more than a pipe buffer: reader and writer must really meet
    (tmp_path / "sent").write_bytes(data)
    reader = subprocess.Popen(["dd", f"if={fifo}", f"of={tmp_path / 'received'}", "bs=64k", "status=none"])
    writer = subprocess.Popen(["dd", f"if={tmp_path / 'sent'}", f"of={fifo}", "bs=64k", "status=none"])
    try:
        writer.wait(timeout=30)
        reader.wait(timeout=30)
    except subprocess.TimeoutExpired:
        reader.kill()
        writer.kill()
        reader.wait()
        writer.wait()
        pytest.fail("writer and reader did not meet through the FIFO within 30 s", pytrace=False)
    assert writer.returncode == 0 and reader.returncode == 0
    out = (tmp_path / "received").read_bytes()
    assert len(out) == len(data) and out == data
    mnt.remount()
    st = os.lstat(fifo)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640


@needs_root
def test_mknod_character_device_as_root(mnt):
    dev = mnt / "null-again"
    os.mknod(dev, stat.S_IFCHR | 0o640, os.makedev(1, 3))  # 0640: the same under umask 022 or 027
    for _ in range(2):
        st = os.lstat(dev)
        assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
        assert run("stat", "-c", "%F %t:%T", str(dev)).stdout == "character special file 1:3\n"
        mnt.remount()


def test_unix_socket_bound_in_the_mount(mnt):
    cwd = os.getcwd()
    os.chdir(mnt.path)  # sun_path is short: bind by a relative name
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("agent.sock")
        server.listen(1)
        assert stat.S_ISSOCK(os.lstat("agent.sock").st_mode)

        def echo():
            conn, _ = server.accept()
            conn.sendall(conn.recv(100).upper())
            conn.close()

        thread = threading.Thread(target=echo)
        thread.start()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(30)
        client.connect("agent.sock")
        client.sendall(b"hello")
        assert client.recv(100) == b"HELLO"
        client.close()
        thread.join(30)
    finally:
        server.close()
        os.chdir(cwd)
    assert run("stat", "-c", "%F", str(mnt / "agent.sock")).stdout == "socket\n"
    mnt.remount()
    assert stat.S_ISSOCK(os.lstat(mnt / "agent.sock").st_mode)


# --- directory times ------------------------------------------------------------------------------------------

def test_directory_mtime_changes_when_entries_are_added_or_removed(mnt):
    d = mnt / "d"
    d.mkdir()
    changes = [("create", lambda: (d / "f").write_text("x")), ("rename", lambda: os.rename(d / "f", d / "g")),
               ("unlink", lambda: os.unlink(d / "g")), ("mkdir", lambda: os.mkdir(d / "sub")),
               ("rmdir", lambda: os.rmdir(d / "sub")), ("symlink", lambda: os.symlink("t", d / "l"))]
    stale = []
    for name, change in changes:
        os.utime(d, ns=(T0, T0))
        assert os.stat(d).st_mtime_ns == T0
        change()
        st = os.stat(d)
        if st.st_mtime_ns == T0 or st.st_ctime_ns <= T0:
            stale.append(name)
    assert stale == [], f"directory mtime/ctime unchanged by: {stale}"


def test_touch_d_on_a_directory_survives_a_remount(mnt):
    (mnt / "d" / "inner").mkdir(parents=True)
    (mnt / "d" / "file").write_text("x")
    run("touch", "-d", "2001-02-03 04:05:06.123456789 UTC", str(mnt / "d"), str(mnt / "d" / "inner"))
    expected = 981173106_123456789
    assert os.stat(mnt / "d").st_mtime_ns == expected
    mnt.remount()
    assert os.stat(mnt / "d").st_mtime_ns == expected
    assert os.stat(mnt / "d" / "inner").st_mtime_ns == expected
    assert ls_ln(mnt / "d")["inner"][3] == "981173106"


# --- names and rename -----------------------------------------------------------------------------------------

def test_non_utf8_name_is_refused_or_round_trips_exactly(mnt):
    root = os.fsencode(str(mnt.path))
    names = [b"bad-\xff", b"bad-\xfe"]  # two names that one lossy decoding would merge
    for name in names:
        try:
            fd = os.open(root + b"/" + name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as error:
            assert error.errno == errno.EILSEQ, f"{name!r}: {errno.errorcode.get(error.errno)}"
            assert name not in os.listdir(root)
            continue
        os.write(fd, name)
        os.close(fd)
    for attempt in ("before", "after remount"):
        listed = set(os.listdir(root))
        altered = {n for n in listed if n.startswith(b"bad-") and n not in names}
        assert not altered, f"{attempt}: names came back altered: {altered}"
        for name in names:
            if name in listed:
                assert open(root + b"/" + name, "rb").read() == name, attempt
        if attempt == "before":
            mnt.remount()


@pytest.mark.parametrize("source_state", ["closed", "open-and-written"])
def test_rename_over_an_existing_file(mnt, source_state):
    src, dst = mnt / "src.txt", mnt / "dst.txt"
    dst.write_text("old target")
    os.stat(dst)
    f = open(src, "w")
    f.write("source")
    if source_state == "closed":
        f.close()
    ino = os.stat(src).st_ino
    os.rename(src, dst)
    with pytest.raises(FileNotFoundError):
        os.lstat(src)
    assert os.stat(dst).st_ino == ino
    if not f.closed:
        f.write(" and more")
        f.close()
    content = "source" if source_state == "closed" else "source and more"
    assert dst.read_text() == content
    assert "src.txt" not in listdir(mnt.path)
    mnt.remount()
    assert not os.path.lexists(src) and dst.read_text() == content
