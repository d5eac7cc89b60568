"""What stat and readlink report on a real mount beyond mode, owner and times: a directory's st_nlink
(2 + its subdirectories), symlink targets up to PATH_MAX - 1 bytes, and st_blocks of a sparse file."""
import os
import time

import pytest

from conftest import FileBucket


def wait_for(predicate, what, deadline=10.0):
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, what
        time.sleep(0.05)


def test_directory_nlink_is_two_plus_its_subdirectories(mnt):
    a, d = mnt.path / "a", mnt.path / "d"
    a.mkdir()
    d.mkdir()
    (a / "b").mkdir()
    (a / "c").mkdir()
    (a / "f").write_text("a file does not count")
    os.symlink("b", a / "l")
    assert os.stat(a).st_nlink == 4
    (a / "c").rmdir()
    assert os.stat(a).st_nlink == 3
    os.rename(a / "b", d / "b")  # its ".." moves: pjdfstest rename/24
    assert (os.stat(a).st_nlink, os.stat(d).st_nlink) == (2, 3)
    assert os.stat(d / "b" / "..").st_ino == os.stat(d).st_ino

    # After a remount the count comes with the directory's first listing; before it, 2 (never 0 or 1).
    mnt.remount()
    assert os.stat(d).st_nlink >= 2
    assert sorted(os.listdir(d)) == ["b"]
    wait_for(lambda: os.stat(d).st_nlink == 3, "nlink counted by the listing")


def test_symlink_target_up_to_path_max(mnt):
    # PATH_MAX - 1 bytes (pjdfstest symlink/03), far over S3's 2 KB of metadata and an ext4 xattr block.
    target = "/".join(["é" * 100] * 19) + "/" + "x" * (4095 - 19 * 201)
    assert len(target.encode()) == 4095
    os.symlink(target, mnt.path / "long")
    assert os.readlink(mnt.path / "long") == target
    assert os.lstat(mnt.path / "long").st_size == 4095
    os.symlink("short/target", mnt.path / "short")
    mnt.remount()
    assert os.readlink(mnt.path / "long") == target
    assert os.lstat(mnt.path / "long").st_size == 4095
    assert os.readlink(mnt.path / "short") == "short/target"
    assert mnt.bucket.get("long") == target.encode()  # the object's body holds the target
    assert mnt.bucket.get("short") == b""


def test_sparse_file_takes_no_local_space_for_its_holes(mnt):
    path = mnt.path / "sparse"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"head", 0)
        os.ftruncate(fd, 8 << 30)
        st = os.fstat(fd)
        assert st.st_size == 8 << 30
        assert st.st_blocks < 1024, "8 GiB of holes in the staged copy take no disk"
        assert os.pread(fd, 4, 4 << 30) == b"\0" * 4
        os.ftruncate(fd, 1 << 20)  # (a write up there would upload 8 GiB of zeros to S3 and GCS)
        os.pwrite(fd, b"tail", (1 << 20) - 4)  # past the end of what was written
        assert os.fstat(fd).st_blocks < 256
    finally:
        os.close(fd)
    assert os.stat(path).st_size == 1 << 20
    assert mnt.bucket.get("sparse") == b"head" + b"\0" * ((1 << 20) - 8) + b"tail"


def test_truncate_up_on_file_backend_stays_sparse_in_the_bucket(mnt):
    if not isinstance(mnt.bucket, FileBucket):
        pytest.skip("an S3 or GCS object has no holes: a 10 GiB truncate uploads 10 GiB there")
    (mnt.path / "big").touch()
    started = time.monotonic()
    os.truncate(mnt.path / "big", 10 << 30)
    took = time.monotonic() - started
    backing = os.stat(mnt.bucket.directory / "big")
    assert backing.st_size == 10 << 30
    assert backing.st_blocks < 1024, f"the bucket's copy is sparse ({took:.1f} s)"
    with open(mnt.path / "big", "rb") as f:
        f.seek((10 << 30) - 3)
        assert f.read() == b"\0\0\0"
