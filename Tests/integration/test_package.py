"""The .deb from scripts/package-deb.sh, installed with apt-get as a user would, used through /etc/fstab, removed.

The package is a release build (minutes on 2 cores), so scripts/test.sh builds it only in CI or with
BUCKETFS_TEST_PACKAGE=1 and hands it over as BUCKETFS_DEB; with BUCKETFS_TEST_PACKAGE=1 and no BUCKETFS_DEB this
test builds it. Needs root and dpkg. Whatever happens, the package is purged at the end and the files it
replaced (an earlier scripts/install.sh's mount.bucketfs or completions) and /etc/fstab are put back, so the other
tests, which run BUCKETFS_BIN, never meet it.
"""
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from conftest import BIN, ROOT, FileBucket, daemon_pid, is_mounted, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg") is None,
                                reason="needs root and dpkg (installs a package)")

LIBRARY_DIR = "/usr/lib/bucketfs"


def package_path():
    deb = os.environ.get("BUCKETFS_DEB")
    if not deb and os.environ.get("BUCKETFS_TEST_PACKAGE") == "1":
        deb = run("scripts/package-deb.sh", str(ROOT / ".build" / "deb"), cwd=ROOT, timeout=1800).stdout.split()[-1]
    if not deb:
        pytest.skip("no package: scripts/test.sh builds it when CI=true or BUCKETFS_TEST_PACKAGE=1 (BUCKETFS_DEB)")
    return pathlib.Path(deb)


def installed():
    status = run("dpkg-query", "-W", "-f=${Status}", "bucketfs", check=False).stdout
    return "ok installed" in status or "config-files" in status


def purge():
    if installed():
        run("dpkg", "--purge", "bucketfs", check=False)


def toolchain_library_dir():
    """Where the binary under test finds libswiftCore.so: the toolchain the package must not need."""
    for line in run("ldd", BIN).stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == "libswiftCore.so" and len(fields) > 2 and fields[2].startswith("/"):
            return os.path.dirname(fields[2])
    return None


@pytest.fixture
def package():
    """The .deb and the paths it holds; purges it and restores what it replaced, even when the test fails."""
    deb = package_path()
    if installed():
        if os.environ.get("CI") != "true":
            pytest.skip("a bucketfs package is installed on this machine: the test would replace it")
        purge()    # left by a test run that was killed
    paths = [line.split()[-1][1:].rstrip("/") or "/" for line in run("dpkg-deb", "-c", str(deb)).stdout.splitlines()]
    paths = [p for p in paths if p != "/"]
    existed = {p for p in paths if os.path.lexists(p)}
    replaced = {p: pathlib.Path(p).read_bytes() for p in existed if os.path.isfile(p) and not os.path.islink(p)}
    fstab = pathlib.Path("/etc/fstab")
    fstab_before = fstab.read_bytes() if fstab.exists() else None
    try:
        yield deb, paths, existed
    finally:
        for m in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
            if " fuse.bucketfs " in m and "/pkg-" in m.split()[4]:
                subprocess.run(["fusermount3", "-uz", m.split()[4]], capture_output=True)
        purge()
        for path, data in replaced.items():
            pathlib.Path(path).write_bytes(data)
            os.chmod(path, 0o755 if path.startswith(("/sbin/", "/usr/sbin/", "/usr/bin/")) else 0o644)
        if fstab_before is None:
            fstab.unlink(missing_ok=True)
        else:
            fstab.write_bytes(fstab_before)


def wait_for_exit(pid, seconds=30):
    deadline = time.time() + seconds
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


def test_deb_installs_mounts_through_fstab_and_purges_clean(package, tmp_path):
    deb, paths, existed = package
    version = run(BIN, "--version").stdout.strip()
    assert run("dpkg-deb", "-f", str(deb), "Package").stdout.strip() == "bucketfs"
    assert run("dpkg-deb", "-f", str(deb), "Version").stdout.strip() == version
    depends = {d.strip().split()[0] for d in run("dpkg-deb", "-f", str(deb), "Depends").stdout.split(",")}
    assert {"fuse3", "libfuse3-3", "libcurl4", "libssl3", "libhiredis0.14", "libpq5"} <= depends, depends

    run("apt-get", "install", "-y", f"./{deb.name}", cwd=deb.parent, timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert installed()
    owned = {p for p in run("dpkg", "-L", "bucketfs").stdout.splitlines() if p not in ("/.", "")}
    assert owned == set(paths)
    for path in ["/usr/bin/bucketfs", "/sbin/mount.bucketfs", "/lib/systemd/system/bucketfs@.service",
                 f"{LIBRARY_DIR}/libswiftCore.so", f"{LIBRARY_DIR}/libFoundation.so",
                 "/usr/share/man/man1/bucketfs.1.gz", "/usr/share/man/man1/bucketfs-mount.1.gz",
                 "/usr/share/man/man8/mount.bucketfs.8.gz", "/usr/share/bash-completion/completions/bucketfs",
                 "/usr/share/zsh/vendor-completions/_bucketfs", "/usr/share/doc/bucketfs/README.md",
                 "/usr/share/doc/bucketfs/docs/CONFIGURATION.md"]:
        assert path in owned, path
    assert "bucketfs=/usr/bin/bucketfs\n" in pathlib.Path("/sbin/mount.bucketfs").read_text()
    assert "ExecStart=/usr/bin/bucketfs mount" in pathlib.Path("/lib/systemd/system/bucketfs@.service").read_text()
    assert "USAGE: bucketfs mount" in run("sh", "-c", "zcat /usr/share/man/man1/bucketfs-mount.1.gz").stdout

    # The binary finds its Swift runtime in /usr/lib/bucketfs alone: no RUNPATH into the toolchain, every Swift
    # library resolved there, and it runs with the toolchain hidden (a tmpfs over it, in a mount namespace).
    runpath = run("readelf", "-d", "/usr/bin/bucketfs").stdout
    assert f"Library runpath: [{LIBRARY_DIR}]" in runpath, runpath
    swift_libs = [l.split() for l in run("ldd", "/usr/bin/bucketfs").stdout.splitlines() if "libswift" in l]
    assert swift_libs and all(f[2].startswith(LIBRARY_DIR + "/") for f in swift_libs), swift_libs
    clean_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    assert run("bucketfs", "--version", env=clean_env).stdout.strip() == version
    toolchain = toolchain_library_dir()
    if toolchain:
        hidden = run("unshare", "--mount", "sh", "-c", f"mount -t tmpfs none {toolchain} && ls -A {toolchain} | wc -l"
                     " && exec /usr/bin/bucketfs --version", env=clean_env).stdout.split()
        assert hidden == ["0", version]

    # /etc/fstab lines of both types, mounted by mount(8) with only the mount point; served by /usr/bin/bucketfs.
    bucket = FileBucket(tmp_path / "bucket")
    bucket.put("before.txt", b"in the bucket before the mount\n")
    mounts = {}
    lines = []
    for fstype in ["fuse.bucketfs", "bucketfs"]:
        mp = tmp_path / f"pkg-{fstype}"
        mp.mkdir()
        mounts[fstype] = mp
        lines.append(f"{bucket.url} {mp} {fstype} noauto,_netdev,cache_dir={tmp_path / ('cache-' + fstype)} 0 0\n")
    fstab = pathlib.Path("/etc/fstab")
    original = fstab.read_text() if fstab.exists() else ""
    fstab.write_text(original + ("" if original.endswith("\n") or not original else "\n")
                     + "# test_package.py (removed after the test)\n" + "".join(lines))
    for fstype, mp in mounts.items():
        run("mount", str(mp), env=clean_env)
        assert is_mounted(mp), fstype
        pid = daemon_pid(mp)
        assert pid and os.path.realpath(f"/proc/{pid}/exe") == "/usr/bin/bucketfs", fstype
        assert (mp / "before.txt").read_bytes() == b"in the bucket before the mount\n"
        data = os.urandom(200_000)
        (mp / f"{fstype}.bin").write_bytes(data)
        assert (mp / f"{fstype}.bin").read_bytes() == data
        run("umount", str(mp), env=clean_env)
        assert not is_mounted(mp) and wait_for_exit(pid), fstype
        assert bucket.get(f"{fstype}.bin") == data
    fstab.write_text(original)

    listed = run("dpkg", "-L", "bucketfs").stdout.splitlines()
    run("apt-get", "remove", "--purge", "-y", "bucketfs", timeout=300,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert not installed()
    left = [p for p in listed if p not in ("/.", "") and p not in existed and os.path.lexists(p)]
    assert left == [], left
