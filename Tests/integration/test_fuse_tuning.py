"""What FUSE_INIT negotiated, where it shows: request sizes in the daemon's FUSE operation counters
(`.bucketfs/metrics`), the queue depth in fusectl, the read-ahead in the mount's bdi (FuseTuning.swift)."""
import os
import re
import subprocess
import time

import pytest

from conftest import BIN, Mount, run

MIB = 1 << 20


def fuse_calls(mount, op, more_than=None):
    """The daemon's count of `op` calls. The kernel keeps the size of `.bucketfs/metrics` for the attribute
    timeout, so a read can end before a line added since: poll (with a deadline) until the count moved."""
    deadline = time.monotonic() + 30
    while True:
        text = (mount / ".bucketfs/metrics").read_text()
        found = re.search(r'^bucketfs_fuse_operations_total\{op="%s"\} (\d+)' % op, text, re.M)
        count = int(found.group(1)) if found else 0
        if more_than is None or count > more_than or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def bdi(mount):
    """`major:minor` of the mount: the name of its bdi and its fusectl directory's minor."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[2] for line in f if line.split()[4] == os.path.realpath(mount.path)][-1]


@pytest.fixture
def mounted(tmp_path):
    m = Mount(tmp_path, "tuning")
    m.mount()
    yield m
    m.force_cleanup()


def test_one_mebibyte_write_arrives_as_one_write_call(mounted):
    before = fuse_calls(mounted, "write")
    fd = os.open(mounted / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, os.urandom(MIB)) == MIB
    finally:
        os.close(fd)
    # 128 KiB requests (the kernel's default without max_write/max_pages) would make it 8.
    assert fuse_calls(mounted, "write", more_than=before) - before == 1
    assert (mounted / "big").stat().st_size == MIB


@pytest.mark.skipif(os.geteuid() != 0, reason="read_ahead_kb is writable by root only")
def test_read_ahead_gives_one_mebibyte_read_calls(mounted):
    data = os.urandom(4 * MIB)
    (mounted / "four").write_bytes(data)
    mounted.remount()    # no page of it cached
    assert open(f"/sys/class/bdi/{bdi(mounted)}/read_ahead_kb").read().strip() == "1024"
    before = fuse_calls(mounted, "read")
    with open(mounted / "four", "rb", buffering=0) as f:
        assert f.read(4 * MIB) == data
    # 128 KiB read-ahead would take 32 requests; 1 MiB ones take 4 (and a few more if a window is split).
    assert fuse_calls(mounted, "read", more_than=before) - before <= 8


@pytest.mark.skipif(os.geteuid() != 0, reason="fusectl needs root")
def test_queue_depth_is_negotiated(mounted):
    connections = "/sys/fs/fuse/connections"
    if not os.listdir(connections):
        subprocess.run(["mount", "-t", "fusectl", "none", connections], check=False, capture_output=True)
    directory = f"{connections}/{bdi(mounted).split(':')[1]}"
    if not os.path.isdir(directory):
        pytest.skip("fusectl is not mounted")
    assert open(f"{directory}/max_background").read().strip() == "64"
    assert open(f"{directory}/congestion_threshold").read().strip() == "48"


def test_bad_tuning_is_one_line_and_no_mount(tmp_path):
    m = Mount(tmp_path, "bad")
    env = dict(os.environ, BUCKETFS_FUSE_TUNING="max_write=12")
    result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), check=False, env=env)
    assert result.returncode != 0
    assert "BUCKETFS_FUSE_TUNING: max_write must be in" in result.stderr
    m.force_cleanup()
