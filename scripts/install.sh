#!/usr/bin/env bash
# Installs bucketfs on Debian 12 and mounts the default local-directory bucket (no cloud account needed).
#   BUCKETFS_BUCKET_DIR  backing directory  (default /var/lib/bucketfs/default, or ~/.local/share/bucketfs/default)
#   BUCKETFS_MOUNTPOINT  mount point        (default /mnt/bucketfs, or ~/bucketfs)
#   BUCKETFS_SKIP_MOUNT=1  install only, mount nothing (image builds: no /dev/fuse there)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_system_packages fuse3 libfuse3-dev pkg-config libcurl4-openssl-dev libssl-dev libhiredis-dev libpq-dev
require_swift

echo "==> building bucketfs (release)"
swift build -c release --product bucketfs

if [ "$(id -u)" = 0 ]; then
    bindir=/usr/local/bin
    bucket=${BUCKETFS_BUCKET_DIR:-/var/lib/bucketfs/default}
    mountpoint=${BUCKETFS_MOUNTPOINT:-/mnt/bucketfs}
else
    bindir=$HOME/.local/bin
    bucket=${BUCKETFS_BUCKET_DIR:-$HOME/.local/share/bucketfs/default}
    mountpoint=${BUCKETFS_MOUNTPOINT:-$HOME/bucketfs}
fi
mkdir -p "$bindir" "$bucket" "$mountpoint"
install -m 0755 .build/release/bucketfs "$bindir/bucketfs"
echo "==> installed $bindir/bucketfs ($("$bindir/bucketfs" --version))"
case ":$PATH:" in *":$bindir:"*) ;; *) echo "    note: $bindir is not on your PATH" ;; esac
install_completions "$bindir/bucketfs"
if [ "$(id -u)" = 0 ]; then
    install_mount_helpers "$bindir/bucketfs"
    install_systemd_unit "$bindir/bucketfs"
else
    echo "==> not root: mount.bucketfs and bucketfs@.service not installed (run as root for mount -t bucketfs)"
fi

if [ "${BUCKETFS_SKIP_MOUNT:-0}" = 1 ]; then
    echo "==> BUCKETFS_SKIP_MOUNT=1: nothing mounted. Mount with: bucketfs mount file://$bucket/ $mountpoint"
    exit 0
fi
if grep -q " $mountpoint fuse.bucketfs " /proc/self/mountinfo; then
    echo "==> $mountpoint is already a bucketfs mount"
else
    "$bindir/bucketfs" mount "file://$bucket/" "$mountpoint"
fi
echo
echo "bucketfs is mounted at $mountpoint (objects stored in $bucket)."
echo "Try:      ls -l $mountpoint; echo hello > $mountpoint/hello.txt; ls -l $bucket"
echo "Unmount:  bucketfs unmount $mountpoint"
