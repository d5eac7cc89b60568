"""The on-disk block cache (CACHE_DIR/blocks) through a real mount on moto and SeaweedFS: a re-read after a
remount of an unchanged object costs no GET (counted by the daemon's own metrics endpoint), and an object changed
by another writer is read fresh, never from the old blocks."""
import os
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import Mount
from servers import free_port

pytestmark = pytest.mark.skipif("s3" not in os.environ.get("BUCKETFS_TEST_BACKENDS", "file,s3"),
                                reason="s3 backend not selected")


@pytest.fixture(params=["s3", "seaweed"])
def backend(request):
    return request.param


class MeteredMount(Mount):
    """A mount serving its metrics on a loopback port; `gets()` is the daemon's count of GETs so far."""

    def __init__(self, tmp, bucket, name="cached", options=()):
        self.port = free_port()
        super().__init__(tmp, name, bucket=bucket, options=["--metrics-addr", f"127.0.0.1:{self.port}", *options])

    def count(self, metric, op):
        """A counter of the daemon's metrics endpoint (not `.bucketfs/metrics`: reading that is FUSE calls too)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        found = re.search(r'^%s\{op="%s"\} (\S+)$' % (metric, op), text, re.M)
        return int(float(found.group(1))) if found else 0

    def gets(self):
        return sum(self.count("bucketfs_store_operations_total", op) for op in ("get", "get_streaming"))

    def fuse_reads(self):
        return self.count("bucketfs_fuse_operations_total", "read")


def wait_for_blocks(m, count):
    """The transfer thread writes a block to disk after handing it to the reader: wait until all are there."""
    folder = m.cache / "blocks"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len([p for p in folder.iterdir() if not p.name.startswith(".")]) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} blocks in {folder}")


def make_bucket(request, backend):
    return request.getfixturevalue("moto" if backend == "s3" else "seaweed").new_bucket()


def test_reread_after_remount_costs_no_get_and_a_changed_object_is_read_fresh(request, backend, tmp_path):
    bucket = make_bucket(request, backend)
    # Below the streaming threshold (ranged read-ahead) and above it (one streaming GET, or ranges: both fill it).
    small, large = os.urandom((3 << 20) + 4321), os.urandom((20 << 20) + 99)
    bucket.put("small.bin", small)
    bucket.put("dir/large.bin", large)
    m = MeteredMount(tmp_path, bucket)
    try:
        m.mount()
        assert (m / "small.bin").read_bytes() == small
        assert (m / "dir" / "large.bin").read_bytes() == large
        assert m.gets() > 0
        wait_for_blocks(m, 4 + 21)
        m.remount()
        assert (m / "small.bin").read_bytes() == small
        assert (m / "dir" / "large.bin").read_bytes() == large
        # 4 KiB reads at random places: local too.
        with open(m / "dir" / "large.bin", "rb") as f:
            for offset in (17 << 20, 5 << 20, 123_456, (20 << 20) + 10):
                f.seek(offset)
                assert f.read(4096) == large[offset:offset + 4096]
        assert m.gets() == 0, "an unchanged object is read from the block cache after a remount"

        # Another writer replaces the large object (same size, one byte differs in the middle of a block).
        changed = bytearray(large)
        changed[(9 << 20) + 5] ^= 0xFF
        bucket.put("dir/large.bin", bytes(changed))
        m.remount()
        assert (m / "dir" / "large.bin").read_bytes() == bytes(changed)
        assert m.gets() > 0, "a changed object is fetched again"
        assert (m / "small.bin").read_bytes() == small
    finally:
        m.force_cleanup()


def test_reopen_keeps_the_page_cache_of_an_unchanged_file_and_another_mounts_write_is_read_fresh(
        request, backend, tmp_path):
    """keep_cache: an open that finds the version whose pages the kernel holds lets it keep them (no FUSE read, no
    GET); one that finds another mount's new version has them dropped (close-to-open across mounts)."""
    bucket = make_bucket(request, backend)
    body = os.urandom((3 << 20) + 777)
    bucket.put("f.bin", body)
    # metadata_ttl=0: every open revalidates the object (a HEAD), so A sees B's write at its next open.
    a = MeteredMount(tmp_path, bucket, name="a", options=["-o", "metadata_ttl=0"])
    b = Mount(tmp_path, "b", bucket=bucket)
    try:
        a.mount()
        b.mount()
        assert (a / "f.bin").read_bytes() == body
        assert a.fuse_reads() > 0 and a.gets() > 0

        def reread(expected):
            """Reopens and reads the file: (FUSE reads, GETs) it cost."""
            reads, gets = a.fuse_reads(), a.gets()
            assert (a / "f.bin").read_bytes() == expected
            return a.fuse_reads() - reads, a.gets() - gets

        # (A drop_caches by another process on this host empties the page cache too: up to 3 tries.)
        costs = [reread(body) for _ in range(3)]
        assert (0, 0) in costs, f"the reopened unchanged file is read from the kernel's page cache: {costs}"

        # B changes one byte and puts the mtime back: same size, same mtime — only the version tells that A's cached
        # pages are old (the kernel drops pages on its own when it sees the mtime or size change).
        before = (a / "f.bin").stat()
        changed = bytearray(body)
        changed[(2 << 20) + 3] ^= 0xFF
        (b / "f.bin").write_bytes(bytes(changed))    # uploaded when B closes it
        os.utime(b / "f.bin", ns=(before.st_atime_ns, before.st_mtime_ns))
        after = (a / "f.bin").stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        reads = reread(bytes(changed))    # "another mount's write is seen after reopen"
        assert reads[0] > 0, reads
        costs = [reread(bytes(changed)) for _ in range(3)]
        assert (0, 0) in costs, f"the new version's pages are kept in turn: {costs}"
    finally:
        a.force_cleanup()
        b.force_cleanup()


def resident_bytes(path):
    """Bytes of the file in the kernel's page cache (fincore, util-linux)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_a_random_read_fills_the_page_cache_with_its_block_and_a_write_after_it_is_read_back(
        request, backend, tmp_path):
    """After a random 4 KiB read the daemon stores the whole 1 MiB block around it in the kernel's page cache, so
    the next reads in that block cost no FUSE read; a write through another descriptor afterwards is what is read."""
    bucket = make_bucket(request, backend)
    body = os.urandom(8 << 20)
    bucket.put("r.bin", body)
    m = MeteredMount(tmp_path, bucket, name="pages")
    block = 5 << 20
    try:
        m.mount()
        path = m / "r.bin"
        with open(path, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)    # the kernel itself reads single pages
            f.seek(block + 4096 * 7)
            assert f.read(4096) == body[block + 4096 * 7:block + 4096 * 8]
            deadline = time.monotonic() + 10
            while resident_bytes(path) < (1 << 20) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert resident_bytes(path) >= 1 << 20, "the whole block is in the page cache"
            reads = m.fuse_reads()
            f.seek(block)
            assert f.read(1 << 20) == body[block:block + (1 << 20)]
            assert m.fuse_reads() == reads, "the block's pages are read from the page cache"
        with open(path, "r+b") as f:
            f.seek(block + 100)
            f.write(b"new" * 1000)
        expected = bytearray(body)
        expected[block + 100:block + 3100] = b"new" * 1000
        with open(path, "rb") as f:
            f.seek(block)
            assert f.read(1 << 20) == bytes(expected[block:block + (1 << 20)])
        assert bucket.get("r.bin") == bytes(expected)
    finally:
        m.force_cleanup()


def test_what_this_mount_wrote_is_read_back_from_the_block_cache_and_another_writers_change_is_not(
        request, backend, tmp_path):
    """The staged copy of a file written here and uploaded becomes the block cache's entry for the version stored:
    read back after a remount (no page cache, no daemon memory) it costs no GET; a new version from elsewhere is
    fetched."""
    bucket = make_bucket(request, backend)
    large, small = os.urandom((20 << 20) + 777), os.urandom(5000)   # a streamed multipart upload, and one PUT
    m = MeteredMount(tmp_path, bucket, name="written")
    try:
        m.mount()
        (m / "large.bin").write_bytes(large)
        (m / "small.bin").write_bytes(small)
        assert bucket.get("large.bin") == large and bucket.get("small.bin") == small
        # The copy is handed over at the release that follows close: wait for both to be in the cache.
        deadline = time.monotonic() + 30
        while len(list((m.cache / "blocks").glob("*.o"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list((m.cache / "blocks").glob("*.o"))) == 2, list((m.cache / "blocks").iterdir())
        m.remount()
        assert (m / "large.bin").read_bytes() == large
        assert (m / "small.bin").read_bytes() == small
        with open(m / "large.bin", "rb") as f:
            f.seek(20 << 20)
            assert f.read() == large[20 << 20:], "the last block ends where the object does"
        assert m.gets() == 0, "what this mount wrote is read back from the block cache"

        changed = bytearray(large)
        changed[(11 << 20) + 1] ^= 0xFF
        bucket.put("large.bin", bytes(changed))
        m.remount()
        assert (m / "large.bin").read_bytes() == bytes(changed)
        assert m.gets() > 0, "another writer's version is fetched, not served from this mount's copy"
    finally:
        m.force_cleanup()


def test_a_file_renamed_while_open_after_another_writers_change_is_read_back_as_stored(request, backend, tmp_path):
    """A file written and uploaded here, replaced by another writer, then renamed while still open: the rename's
    server-side copy holds the other writer's bytes, so this mount's copy must not become the cache's entry for the
    new key's version (it was, and a read after a remount served this mount's old bytes)."""
    bucket = make_bucket(request, backend)
    ours, theirs = os.urandom((3 << 20) + 99), os.urandom((3 << 20) + 99)
    m = MeteredMount(tmp_path, bucket, name="renamed")
    try:
        m.mount()
        with open(m / "f.bin", "wb") as f:
            f.write(ours)
            f.flush()
            os.fsync(f.fileno())
            assert bucket.get("f.bin") == ours
            bucket.put("f.bin", theirs)
            os.rename(m / "f.bin", m / "g.bin")
        assert bucket.get("g.bin") == theirs, "the rename copied what the store had"
        # The staged copy goes (into the cache or not) at the release that follows close: wait for it.
        deadline = time.monotonic() + 30
        while list((m.cache / "staging").glob("staged-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list((m.cache / "staging").glob("staged-*"))
        m.remount()
        assert (m / "g.bin").read_bytes() == theirs
    finally:
        m.force_cleanup()


def test_block_cache_off(request, backend, tmp_path):
    bucket = make_bucket(request, backend)
    body = os.urandom(2 << 20)
    bucket.put("f.bin", body)
    m = Mount(tmp_path, "nocache", bucket=bucket, options=["-o", "block_cache_mib=0"])
    try:
        m.mount()
        assert (m / "f.bin").read_bytes() == body
        folder = m.cache / "blocks"
        assert not folder.exists() or not any(folder.iterdir())
    finally:
        m.force_cleanup()
