"""The foundation's real-mount suite on file://: ordinary programs against a mounted directory."""
import errno
import json
import os
import random
import stat

import pytest

from conftest import BIN, is_mounted, listdir, run, sh


def assert_tree_in_bucket(src, bucket, prefix):
    files = [p for p in src.rglob("*") if p.is_file()]
    for p in files:
        assert bucket.get(prefix + str(p.relative_to(src))) == p.read_bytes(), p
    assert len([k for k in bucket.keys() if k.startswith(prefix)]) == len(files)


def make_tree(root, files=300):
    """A tree of nested directories with files of varied sizes (some empty, some a few hundred KiB)."""
    rng = random.Random(42)
    for i in range(files):
        d = root / f"dir{i % 7}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.choice([0, 1, 100, 4096, 70000, 300000])
        (d / f"file{i}.bin").write_bytes(rng.randbytes(size))
    (root / "top.txt").write_text("top level\n")


def test_cp_a_tree_then_diff(mnt, tmp_path):
    src = tmp_path / "tree"
    make_tree(src)
    sh(f"cp -a {src} {mnt.path}/tree")
    sh(f"diff -r {src} {mnt.path}/tree")
    # The data is in the bucket too, byte for byte.
    assert_tree_in_bucket(src, mnt.bucket, "tree/")
    # And it survives a remount (read back from the store, not from the kernel's cache).
    mnt.remount()
    sh(f"diff -r {src} {mnt.path}/tree")


def test_ls_l_shows_sizes_and_kinds(mnt):
    mnt.bucket.put("d/five", b"12345")
    out = run("ls", "-l", str(mnt / "d")).stdout
    line = next(l for l in out.splitlines() if l.endswith(" five"))
    assert line.startswith("-rw-r--r--") and " 5 " in line
    root = run("ls", "-l", str(mnt.path)).stdout
    assert any(l.startswith("d") and l.endswith(" d") for l in root.splitlines())


def test_mv_file_and_directory(mnt):
    (mnt / "a.txt").write_text("A")
    sh(f"mkdir -p {mnt.path}/dir/inner && echo deep > {mnt.path}/dir/inner/f && echo top > {mnt.path}/dir/g")
    run("mv", str(mnt / "a.txt"), str(mnt / "b.txt"))
    assert not mnt.bucket.exists("a.txt")
    assert mnt.bucket.get("b.txt") == b"A"
    run("mv", str(mnt / "dir"), str(mnt / "moved"))
    assert not os.path.exists(mnt / "dir")
    assert (mnt / "moved" / "inner" / "f").read_text() == "deep\n"
    assert mnt.bucket.get("moved/g") == b"top\n"
    assert not mnt.bucket.exists("dir")


def test_rm_r_and_mkdir_p(mnt):
    sh(f"mkdir -p {mnt.path}/x/y/z && touch {mnt.path}/x/y/z/f {mnt.path}/x/f2")
    assert mnt.bucket.get("x/y/z/f") == b""
    run("rm", "-r", str(mnt / "x"))
    assert not os.path.exists(mnt / "x")
    assert not mnt.bucket.exists("x")
    assert listdir(mnt.path) == []


def test_append_with_shell_redirect(mnt):
    sh(f"echo one > {mnt.path}/log && echo two >> {mnt.path}/log && echo three >> {mnt.path}/log")
    assert (mnt / "log").read_text() == "one\ntwo\nthree\n"
    assert mnt.bucket.get("log") == b"one\ntwo\nthree\n"


def test_truncate_shrinks_and_grows(mnt):
    (mnt / "t").write_bytes(b"0123456789")
    run("truncate", "-s", "4", str(mnt / "t"))
    assert mnt.bucket.get("t") == b"0123"
    run("truncate", "-s", "6", str(mnt / "t"))
    assert (mnt / "t").read_bytes() == b"0123\0\0"
    assert os.stat(mnt / "t").st_size == 6


def test_chmod_and_touch_kept_across_remount(mnt):
    (mnt / "f").write_text("x")
    os.mkdir(mnt / "d")
    run("chmod", "600", str(mnt / "f"))
    run("chmod", "750", str(mnt / "d"))
    run("touch", "-d", "2020-01-02 03:04:05 UTC", str(mnt / "f"))
    mnt.remount()
    st = os.stat(mnt / "f")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert int(st.st_mtime) == 1577934245
    assert stat.S_IMODE(os.stat(mnt / "d").st_mode) == 0o750
    # ls -l after remount (fed by the listing) shows the same.
    assert run("ls", "-l", str(mnt.path)).stdout.splitlines()[-1].startswith("-rw-------")


def test_symlink_and_readlink(mnt):
    (mnt / "target.txt").write_text("pointed at\n")
    run("ln", "-s", "target.txt", str(mnt / "link"))
    assert run("readlink", str(mnt / "link")).stdout == "target.txt\n"
    assert (mnt / "link").read_text() == "pointed at\n"
    mnt.remount()
    assert os.readlink(mnt / "link") == "target.txt"
    assert stat.S_ISLNK(os.lstat(mnt / "link").st_mode)


def test_hard_link_refused(mnt):
    (mnt / "f").write_text("x")
    with pytest.raises(OSError) as e:
        os.link(mnt / "f", mnt / "g")
    assert e.value.errno == errno.EPERM


def test_64_mib_dd_and_cmp(mnt, tmp_path):
    src = tmp_path / "big"
    sh(f"head -c 67108864 /dev/urandom > {src}")
    sh(f"dd if={src} of={mnt.path}/big bs=1M status=none")
    sh(f"cmp {src} {mnt.path}/big")
    assert mnt.bucket.get("big") == src.read_bytes()
    mnt.remount()
    sh(f"cmp {src} {mnt.path}/big")


def test_read_only_mount_refuses_changes(make_mount):
    m = make_mount(options=["-o", "ro"])
    m.bucket.put("existing", b"old")
    m.mount()
    assert (m / "existing").read_text() == "old"
    for action in (lambda: (m / "new").write_text("x"),
                   lambda: open(m / "existing", "a"),
                   lambda: os.mkdir(m / "d"),
                   lambda: os.unlink(m / "existing"),
                   lambda: os.chmod(m / "existing", 0o600)):
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == errno.EROFS
    assert m.bucket.get("existing") == b"old"


def test_enoent_and_enotempty(mnt):
    with pytest.raises(OSError) as e:
        os.stat(mnt / "missing")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        open(mnt / "missing")
    assert e.value.errno == errno.ENOENT
    os.makedirs(mnt / "full" / "child")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "full")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(mnt / "full" / "child")
    os.rmdir(mnt / "full")
    assert not mnt.bucket.exists("full")


def test_data_in_bucket_after_close(mnt):
    f = open(mnt / "pending.txt", "w")
    f.write("written")
    f.flush()  # to the kernel; bucketfs uploads on close
    f.close()
    assert mnt.bucket.get("pending.txt") == b"written"
    meta = mnt.bucket.metadata("pending.txt")
    assert meta["mode"] == str(0o100644) and meta["uid"] == str(os.getuid())


def test_new_file_visible_in_mount_before_close(mnt):
    with open(mnt / "new.txt", "w") as f:
        f.write("x")
        f.flush()
        assert "new.txt" in os.listdir(mnt.path)
        assert mnt.bucket.get("new.txt") is None
    assert mnt.bucket.get("new.txt") == b"x"


def test_changes_in_the_store_seen_after_ttl(mnt):
    (mnt / "f").write_text("v1")
    assert (mnt / "f").read_text() == "v1"
    mnt.bucket.put("f", b"version 2")
    import time
    time.sleep(1.5)  # the default metadata TTL is 1 s
    assert (mnt / "f").read_text() == "version 2"


def test_unmount_idle(mnt):
    mnt.unmount()
    assert not is_mounted(mnt.path)


def test_unmount_after_writes(mnt):
    sh(f"for i in $(seq 1 20); do echo $i > {mnt.path}/f$i; done")
    mnt.unmount()
    assert mnt.bucket.keys() == sorted(f"f{i}" for i in range(1, 21))
    assert mnt.bucket.get("f7") == b"7\n"


def test_sigterm_unmounts_after_flushing_open_files(mnt):
    from conftest import daemon_pid
    import signal
    import subprocess
    import time
    # A writer keeps the file open while the daemon is told to stop.
    writer = subprocess.Popen(["bash", "-c", f"exec 3>{mnt.path}/open.txt; echo kept >&3; sleep 30"])
    time.sleep(0.5)
    pid = daemon_pid(mnt.path)
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.1)
    writer.kill()
    writer.wait()
    assert not os.path.exists(f"/proc/{pid}")
    assert mnt.bucket.get("open.txt") == b"kept\n"
    assert not is_mounted(mnt.path)


def test_memory_source_mounts(make_mount):
    m = make_mount(source="memory://itest")
    m.mount()
    (m / "a").write_text("in memory")
    assert (m / "a").read_text() == "in memory"
    assert m.bucket.keys() == []


def test_unlinked_file_stays_readable_through_open_descriptor(mnt):
    # Written behind the mount, so the kernel has no cached pages and reads must reach the daemon.
    mnt.bucket.put("tmpfile", b"still here" * 1000)
    with open(mnt / "tmpfile", "rb") as f:
        os.unlink(mnt / "tmpfile")
        assert not mnt.bucket.exists("tmpfile")
        assert f.read() == b"still here" * 1000
    assert not os.path.exists(mnt / "tmpfile")


def test_names_that_differ_only_in_unicode_normalisation_are_two_files(mnt):
    # Precomposed (NFC) and decomposed (NFD, as macOS writes names) are two names to Linux and to the bucket.
    # Before, the second write went to the first file (its object overwritten) and `ls` showed one name.
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    (mnt / nfc).write_text("composed")
    (mnt / nfd).write_text("decomposed")
    assert sorted(n for n in os.listdir(mnt.path) if n.startswith("caf")) == sorted([nfc, nfd])
    assert (mnt / nfc).read_text() == "composed"
    assert (mnt / nfd).read_text() == "decomposed"
    assert mnt.bucket.get(nfc) == b"composed"
    assert mnt.bucket.get(nfd) == b"decomposed"
    os.unlink(mnt / nfd)
    assert (mnt / nfc).read_text() == "composed"
    assert not mnt.bucket.exists(nfd)
