"""What a container gives bucketfs, made with namespaces and capability sets (no container engine is needed).

A "container" here is `unshare` (new mount and pid namespaces, optionally a user namespace as rootless Podman
makes) whose /dev is a fresh tmpfs holding only null, zero, full, random, urandom and tty, plus /dev/fuse when the
container is given `--device /dev/fuse`; then `capsh --drop` leaves only the capabilities a container engine
grants: Docker's default set, with CAP_SYS_ADMIN only when given `--cap-add SYS_ADMIN`. With both, bucketfs mounts
and works; without one, it prints one line naming the missing flag and exits non-zero with nothing mounted.
Every test checks inside the container that the conditions really held (/dev listing, CapBnd). Needs root.
"""
import os
import shlex
import subprocess

import pytest

from conftest import BIN, FileBucket, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, bind mounts over /dev)")

# Docker's default capability set (the moby profile); Podman's default is a subset of it.
DOCKER_DEFAULT = ["cap_chown", "cap_dac_override", "cap_fowner", "cap_fsetid", "cap_kill", "cap_setgid",
                  "cap_setuid", "cap_setpcap", "cap_net_bind_service", "cap_net_raw", "cap_sys_chroot",
                  "cap_mknod", "cap_audit_write", "cap_setfcap"]
CAP_SYS_ADMIN = 21
DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]


def all_capabilities():
    """The names of the capabilities this kernel has, from capsh."""
    text = run("capsh", "--print").stdout
    line = next(l for l in text.splitlines() if l.startswith("Bounding set ="))
    return line.split("=", 1)[1].split(",")


def container(script, device=True, keep=tuple(DOCKER_DEFAULT) + ("cap_sys_admin",), userns=False):
    """Runs `script` (sh) as root in a container-like sandbox; returns the CompletedProcess."""
    drop = ",".join(c for c in all_capabilities() if c not in keep)
    names = DEVICES + (["fuse"] if device else [])
    setup = [
        "set -e",
        "dev=$(mktemp -d)",
        'mount -t tmpfs -o mode=0755 container-dev "$dev"',
        *[f'touch "$dev/{n}" && mount --bind /dev/{n} "$dev/{n}"' for n in names],
        'mount --move "$dev" /dev && rmdir "$dev"',
        f"exec capsh --drop={drop} -- -c {shlex.quote(script)}",
    ]
    unshare = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"]
    if userns:
        unshare[1:1] = ["--user", "--map-root-user"]
    return subprocess.run(unshare + ["sh", "-c", "\n".join(setup)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BIN": BIN})


def conditions(stdout):
    """The /dev listing and the bounding set the script printed first (see PROBE)."""
    lines = stdout.splitlines()
    return lines[0].split(), int(lines[1].split()[1], 16)


# Printed first by every script: what /dev holds and the bounding set, as the container's processes see them.
PROBE = 'ls /dev | tr "\\n" " "; echo; grep CapBnd /proc/self/status\n'


@pytest.fixture
def setup(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    bucket.put("from-host.txt", b"put there before the container started\n")
    mp, cache = tmp_path / "mnt", tmp_path / "cache"
    mp.mkdir()
    return bucket, mp, cache


def works_script(bucket, mp, cache):
    return PROBE + f"""set -e
"$BIN" mount {bucket.url} {mp} --cache-dir {cache}
grep -c ' {mp} .* - fuse.bucketfs ' /proc/self/mountinfo
cat {mp}/from-host.txt
echo "written in the container" > {mp}/in-container.txt
mkdir {mp}/dir && cp {mp}/from-host.txt {mp}/dir/copy.txt
ls {mp}/dir
"$BIN" unmount {mp}
echo unmounted
"""


@pytest.mark.parametrize("name, keep, userns", [
    ("docker --device /dev/fuse --cap-add SYS_ADMIN", tuple(DOCKER_DEFAULT) + ("cap_sys_admin",), False),
    ("bounding set of CAP_SYS_ADMIN alone", ("cap_sys_admin",), False),
    ("rootless podman: user namespace", tuple(DOCKER_DEFAULT) + ("cap_sys_admin",), True),
])
def test_mounts_with_device_and_sys_admin(setup, name, keep, userns):
    bucket, mp, cache = setup
    if userns and run("unshare", "--user", "--map-root-user", "true", check=False).returncode != 0:
        pytest.skip("user namespaces are disabled on this kernel")
    result = container(works_script(bucket, mp, cache), keep=keep, userns=userns)
    assert result.returncode == 0, result.stderr
    devices, bounding = conditions(result.stdout)
    assert sorted(devices) == sorted(DEVICES + ["fuse"])
    assert bounding & (1 << CAP_SYS_ADMIN)
    if keep == ("cap_sys_admin",):
        assert bounding == 1 << CAP_SYS_ADMIN
    said = result.stdout.splitlines()[2:]
    assert said[0].startswith(f"bucketfs: mounted {bucket.url} at {mp} "), said
    assert said[1:] == ["1", "put there before the container started", "copy.txt", "unmounted"]
    # Through the mount in the container, into the bucket on the host; the mount itself stayed in there.
    assert bucket.get("in-container.txt") == b"written in the container\n"
    assert bucket.get("dir/copy.txt") == b"put there before the container started\n"
    assert not any(f" {mp} " in line for line in open("/proc/self/mountinfo"))


def fails_script(bucket, mp, cache, *flags):
    return PROBE + f"""
"$BIN" mount {bucket.url} {mp} --cache-dir {cache} {' '.join(flags)}
echo "exit $?"
grep -c ' {mp} .* - fuse.bucketfs ' /proc/self/mountinfo || true
"""


@pytest.mark.parametrize("device, sys_admin, says, not_says", [
    (False, True, "--device /dev/fuse", "--cap-add"),
    (True, False, "--cap-add SYS_ADMIN", "--device"),
    (False, False, "--device /dev/fuse --cap-add SYS_ADMIN", None),
])
@pytest.mark.parametrize("mode", [(), ("--foreground",)], ids=["background", "foreground"])
def test_missing_device_or_capability_is_one_line_naming_the_flag(setup, device, sys_admin, says, not_says, mode):
    bucket, mp, cache = setup
    keep = tuple(DOCKER_DEFAULT) + (("cap_sys_admin",) if sys_admin else ())
    result = container(fails_script(bucket, mp, cache, *mode), device=device, keep=keep)
    assert result.returncode == 0, result.stderr
    devices, bounding = conditions(result.stdout)
    assert ("fuse" in devices) == device
    assert bool(bounding & (1 << CAP_SYS_ADMIN)) == sys_admin
    status, mounted = result.stdout.splitlines()[2:]
    assert status != "exit 0" and mounted == "0", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert says in lines[0] and (not_says is None or not_says not in lines[0]), lines[0]
    assert not os.path.exists(cache / "logs"), "a daemon was started"
