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
import shutil
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
    assert result.returncode == 0, result.stdout + result.stderr
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
    assert result.returncode == 0, result.stdout + result.stderr
    devices, bounding = conditions(result.stdout)
    assert ("fuse" in devices) == device
    assert bool(bounding & (1 << CAP_SYS_ADMIN)) == sys_admin
    status, mounted = result.stdout.splitlines()[2:]
    assert status != "exit 0" and mounted == "0", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert says in lines[0] and (not_says is None or not_says not in lines[0]), lines[0]
    assert not os.path.exists(cache / "logs"), "a daemon was started"


def test_mount_table_over_a_page(setup):
    """A container host's or Kubernetes node's mount table is often over 4 KiB, and /proc hands it over a page per
    read(): bucketfs must see mounts past the first page (unmount, status, already-a-mount)."""
    bucket, mp, cache = setup
    script = f"""set -e
for i in $(seq 1 80); do mkdir -p {cache}-filler/$i; mount -t tmpfs filler {cache}-filler/$i; done
test "$(wc -c < /proc/self/mountinfo)" -gt 8192
"$BIN" mount {bucket.url} {mp} --cache-dir {cache} >/dev/null
"$BIN" status | grep -c '^{mp} ' || true
"$BIN" mount {bucket.url} {mp} --cache-dir {cache} 2>&1 || true
"$BIN" unmount {mp}
echo unmounted
"""
    # A pid namespace too: a daemon left running ends with it, and its mount namespace with it.
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
                             "sh", "-c", script],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "BIN": BIN})
    assert result.returncode == 0, result.stdout + result.stderr
    status, again, done = result.stdout.splitlines()
    assert status == "1" and done == "unmounted"
    assert again == f"Error: mount point {mp} is already a mount (fuse.bucketfs)"


# -- Podman: the same conditions made by a container engine -----------------------------------------------------------
# The container's root is the host's own, as an overlay (`--rootfs /:O`): no image to build, the binary under test is
# there, and the container still gets only what the flags give (Podman's default capabilities, its own /dev, a
# device cgroup). runc with cgroupfs where it is installed: crun refuses hybrid cgroup v1/v2 hosts such as CI's.

def podman_command():
    command = ["podman"]
    if shutil.which("runc"):
        command += ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
    # rlimits no higher than ours: podman's default (1048576 open files) fails without CAP_SYS_RESOURCE.
    return command + ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def podman():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/test.sh installs it)")
    probe = subprocess.run(podman_command() + ["--rootfs", "/:O", "true"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()}")
    return podman_command()


def in_podman(podman, flags, tmp_path, script):
    return subprocess.run(podman + flags + ["-v", f"{tmp_path}:{tmp_path}", "-e", f"BIN={BIN}", "--rootfs", "/:O",
                                            "sh", "-c", script], capture_output=True, text=True, timeout=120)


def test_podman_device_and_cap_add_sys_admin_mount(podman, setup, tmp_path):
    bucket, mp, cache = setup
    result = in_podman(podman, ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"], tmp_path,
                       works_script(bucket, mp, cache))
    assert result.returncode == 0, result.stdout + result.stderr
    devices, bounding = conditions(result.stdout)
    assert "fuse" in devices and bounding & (1 << CAP_SYS_ADMIN)
    assert result.stdout.splitlines()[3:] == ["1", "put there before the container started", "copy.txt", "unmounted"]
    assert bucket.get("in-container.txt") == b"written in the container\n"


@pytest.mark.parametrize("flags, says, not_says", [
    (["--cap-add", "SYS_ADMIN"], ("/dev/fuse is missing: ", "--device /dev/fuse"), "--cap-add"),
    (["--device", "/dev/fuse"], ("CAP_SYS_ADMIN is missing", "--cap-add SYS_ADMIN"), "--device"),
    ([], ("--device /dev/fuse --cap-add SYS_ADMIN",), None),
    # The node bind-mounted in, without --device: the device cgroup refuses to open it.
    (["-v", "/dev/fuse:/dev/fuse", "--cap-add", "SYS_ADMIN"], ("/dev/fuse cannot be opened", "--device /dev/fuse"),
     "--cap-add"),
], ids=["no-device", "no-cap-add", "neither", "bind-mounted-node"])
def test_podman_without_a_flag_says_which(podman, setup, tmp_path, flags, says, not_says):
    bucket, mp, cache = setup
    result = in_podman(podman, flags, tmp_path, fails_script(bucket, mp, cache))
    assert result.returncode == 0, result.stdout + result.stderr
    status, mounted = result.stdout.splitlines()[2:]
    assert status != "exit 0" and mounted == "0", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert all(s in lines[0] for s in says) and (not_says is None or not_says not in lines[0]), lines[0]


def test_deb_in_a_clean_debian_container(podman, setup, tmp_path):
    """The .deb on a Debian 12 with no toolchain: a root filesystem made by debootstrap (opt-in, minutes to make):
    debootstrap --variant=minbase --include=fuse3,libfuse3-3,libcurl4,libssl3,libhiredis0.14,libpq5 bookworm DIR
    then BUCKETFS_TEST_ROOTFS=DIR with BUCKETFS_DEB (scripts/test.sh sets it in CI)."""
    rootfs, deb = os.environ.get("BUCKETFS_TEST_ROOTFS"), os.environ.get("BUCKETFS_DEB")
    if not rootfs or not deb:
        pytest.skip("needs BUCKETFS_TEST_ROOTFS (a debootstrap root filesystem) and BUCKETFS_DEB")
    bucket, mp, cache = setup
    script = f"""set -e
test ! -e /opt/swift && ! command -v swift
dpkg -i /deb/{os.path.basename(deb)} >/dev/null
""" + works_script(bucket, mp, cache).replace('"$BIN"', "bucketfs")
    flags = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN", "-v", f"{os.path.dirname(deb)}:/deb:ro",
             "-v", f"{tmp_path}:{tmp_path}", "--rootfs", f"{rootfs}:O"]
    result = subprocess.run(podman + flags + ["sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[3:] == ["1", "put there before the container started", "copy.txt", "unmounted"]
    assert bucket.get("in-container.txt") == b"written in the container\n"
