"""The CLI's answers to bad input: one line on stderr, a non-zero exit, nothing mounted."""
import os
import subprocess

import pytest

from conftest import BIN, is_mounted, run


def mount_fails(*args, expect, cwd=None):
    result = run(BIN, "mount", *args, check=False, cwd=cwd)
    assert result.returncode != 0, result.stdout
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def dirs(tmp_path):
    backing = tmp_path / "bucket"
    mountpoint = tmp_path / "mnt"
    backing.mkdir()
    mountpoint.mkdir()
    return backing, mountpoint


def test_unknown_source_scheme(dirs):
    _, mp = dirs
    mount_fails("ftp://host/x", str(mp), expect='unknown source scheme "ftp"')
    assert not is_mounted(mp)


def test_missing_backing_directory(dirs, tmp_path):
    _, mp = dirs
    mount_fails(f"file://{tmp_path}/nope/", str(mp), expect=f"{tmp_path}/nope")
    assert not is_mounted(mp)


def test_relative_file_source(dirs):
    _, mp = dirs
    mount_fails("file://relative/dir", str(mp), expect="absolute path")


def test_mount_point_missing(dirs, tmp_path):
    backing, _ = dirs
    mount_fails(f"file://{backing}/", str(tmp_path / "absent"), expect="does not exist")


def test_mount_point_not_a_directory(dirs, tmp_path):
    backing, _ = dirs
    f = tmp_path / "file"
    f.write_text("")
    mount_fails(f"file://{backing}/", str(f), expect="is not a directory")


def test_mount_point_already_a_mount(make_mount):
    m = make_mount()
    m.mount()
    line = mount_fails(m.source, str(m.path), expect="already a mount")
    assert "fuse.bucketfs" in line


def test_unknown_mount_option(dirs):
    backing, mp = dirs
    mount_fails(f"file://{backing}/", str(mp), "-o", "ro,bogus=1", expect='unknown mount option "bogus"')
    assert not is_mounted(mp)


def test_bad_option_value(dirs):
    backing, mp = dirs
    mount_fails(f"file://{backing}/", str(mp), "-o", "file_mode=999", expect="file_mode")


def test_bad_yaml(dirs, tmp_path):
    backing, mp = dirs
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("storage: [unclosed\n")
    mount_fails(f"file://{backing}/", str(mp), "--config", str(cfg), expect="not valid YAML")


def test_unknown_yaml_key(dirs, tmp_path):
    backing, mp = dirs
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  lock:\n    stratgy: redis\n")
    mount_fails(f"file://{backing}/", str(mp), "--config", str(cfg), expect='"storage.lock.stratgy"')


def test_no_dev_fuse(dirs):
    backing, mp = dirs
    # A private mount namespace where /dev is an empty tmpfs: no /dev/fuse.
    result = run("unshare", "-m", "sh", "-c",
                 f'mount -t tmpfs none /dev && exec "$0" mount file://{backing}/ {mp}', BIN, check=False)
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "/dev/fuse" in lines[0], result.stderr


def test_unmount_of_something_else(tmp_path):
    result = run(BIN, "unmount", str(tmp_path), check=False)
    assert result.returncode != 0
    assert result.stderr.strip().endswith(f"not a bucketfs mount: {tmp_path}")


def test_config_print_precedence_and_redaction(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  aws_secret_access_key: hunter2\n  lock:\n    redis_password: pw123\n"
                   "mount:\n  uid: 10\n  metadata_ttl: 3\n  file_mode: '0600'\n")
    out = run(BIN, "config", "print", "file:///srv/x", "--config", str(cfg), "--uid", "20", "-o", "uid=30").stdout
    assert "hunter2" not in out and "pw123" not in out
    assert out.count("<redacted>") == 2
    assert "  uid: 30\n" in out          # -o beats the flag, which beats YAML
    assert "  metadata_ttl: 3.0\n" in out  # from YAML
    assert '  file_mode: "0600"\n' in out
    assert 'source: "file:///srv/x/"' in out


def test_version_and_help():
    assert run(BIN, "--version").stdout.strip()[0].isdigit()
    help_text = run(BIN, "--help").stdout
    assert "bucketfs mount file:///srv/bucket/ /mnt/bucket" in help_text


@pytest.mark.parametrize("args, flag", [
    (["unmount", "/mnt/x", "--timeout=-5"], "--timeout"),
    (["unmount", "/mnt/x", "--timeout", "soon"], "--timeout"),
    (["lock", "run", "--wait", "nan", "file:///srv/x/", "f", "--", "true"], "--wait"),
    (["sessions", "cleanup", "file:///srv/x/", "--max-idle-hours=-1"], "--max-idle-hours"),
    (["uploads", "cleanup", "file:///srv/x/", "--older-than", "1e400"], "--older-than"),
    (["events", "tail", "file:///srv/x/", "--interval", "0"], "--interval"),
    (["checkpoints", "list", "file:///srv/x/", "--limit", "99999999999999999999"], "--limit"),
    (["mount", "file:///srv/x/", "/mnt/x", "--uid", "4294967295"], "--uid"),
])
def test_a_bad_numeric_flag_is_one_line_naming_it(args, flag):
    result = run(BIN, *args, check=False)
    assert result.returncode == 64, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
