#!/usr/bin/env bash
# Builds bucketfs_<version>_<arch>.deb for Debian 12 machines that should not build Swift:
#   /usr/bin/bucketfs            the release binary, RUNPATH /usr/lib/bucketfs (nothing of the toolchain's)
#   /usr/lib/bucketfs/           the Swift runtime libraries it links (Debian has no Swift runtime package)
#   /sbin/mount.bucketfs         mount(8)'s helper (fstab lines of type bucketfs; fuse.bucketfs needs only fuse3)
#   /lib/systemd/system/bucketfs@.service, shell completions (bash, zsh, fish), man pages made from --help,
#   and README + docs/ under /usr/share/doc/bucketfs.
# Usage: scripts/package-deb.sh [OUTDIR]     (default .build/deb); the last line printed is the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# The build's own libraries (as scripts/install.sh), patchelf (the rpath) and help2man (man pages).
install_system_packages fuse3 libfuse3-dev pkg-config libcurl4-openssl-dev libssl-dev libhiredis-dev libpq-dev \
    patchelf help2man
require_swift

outdir=$(mkdir -p "${1:-.build/deb}" && cd "${1:-.build/deb}" && pwd)
version=$(sed -n 's/^ *public static let version = "\(.*\)"$/\1/p' Sources/BucketfsCLI/BucketfsCommand.swift)
[ -n "$version" ] || { echo "package-deb.sh: no version string in BucketfsCommand.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)
# What the binary and the Swift libraries link besides the Swift runtime (checked against readelf below).
depends="fuse3, libfuse3-3, libcurl4, libssl3, libhiredis0.14, libpq5, libc6, libstdc++6, libgcc-s1"

echo "==> building bucketfs $version (release)"
swift build -c release --product bucketfs
built=$(swift build -c release --show-bin-path)/bucketfs
[ "$("$built" --version)" = "$version" ] || { echo "package-deb.sh: $built --version is not $version" >&2; exit 1; }
toolchain_libs=$(dirname "$(ldd "$built" | awk '$1 == "libswiftCore.so" { print $3 }')")

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/bucketfs" "$root/sbin" "$root/lib/systemd/system" \
    "$root/usr/share/man/man1" "$root/usr/share/man/man8" "$root/usr/share/doc/bucketfs/docs" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"

echo "==> binary and the Swift runtime from $toolchain_libs"
install -m 0755 "$built" "$root/usr/bin/bucketfs"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/bucketfs"
# Every library ldd resolves inside the toolchain (the Swift libraries find each other through RUNPATH $ORIGIN).
ldd "$built" | awk -v dir="$toolchain_libs/" 'index($3, dir) == 1 { print $3 }' | while read -r lib; do
    install -m 0644 "$lib" "$root/usr/lib/bucketfs/"
done
patchelf --set-rpath /usr/lib/bucketfs "$root/usr/bin/bucketfs"

# Each library linked from outside the package must come from a package in Depends.
shipped=" $(cd "$root/usr/lib/bucketfs" && echo *) "
for object in "$root/usr/bin/bucketfs" "$root"/usr/lib/bucketfs/*; do
    readelf -d "$object" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
done | sort -u | while read -r soname; do
    case $shipped in *" $soname "*) continue ;; esac
    path=$(LD_LIBRARY_PATH="$root/usr/lib/bucketfs" ldd "$root/usr/bin/bucketfs" \
        | awk -v n="$soname" '$1 == n { print $3 }')
    [ "$soname" = ld-linux-x86-64.so.2 ] && path=/lib64/ld-linux-x86-64.so.2
    # merged /usr: ldd says /lib/..., dpkg knows /usr/lib/... (or the other way round)
    owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "/usr$path" 2>/dev/null \
        || dpkg -S "$(readlink -f "$path")" 2>/dev/null) \
        || { echo "package-deb.sh: no Debian package owns $soname ($path)" >&2; exit 1; }
    package=${owner%%:*}
    case ", $depends," in *", $package,"*) ;; *)
        echo "package-deb.sh: $soname comes from $package, which is not in Depends ($depends)" >&2; exit 1 ;;
    esac
done
run_staged() { env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$root/usr/lib/bucketfs" "$root/usr/bin/bucketfs" "$@"; }
if LD_LIBRARY_PATH="$root/usr/lib/bucketfs" ldd "$root/usr/bin/bucketfs" | grep -E "not found|$toolchain_libs"; then
    echo "package-deb.sh: the packaged binary still needs the toolchain" >&2; exit 1
fi

echo "==> mount helper, systemd unit, completions"
sed 's|^bucketfs=/usr/local/bin/bucketfs$|bucketfs=/usr/bin/bucketfs|' mount-helpers/mount.bucketfs \
    > "$root/sbin/mount.bucketfs"
chmod 0755 "$root/sbin/mount.bucketfs"
sed 's|/usr/local/bin/bucketfs |/usr/bin/bucketfs |' mount-helpers/systemd/bucketfs@.service \
    > "$root/lib/systemd/system/bucketfs@.service"
run_staged --generate-completion-script bash > "$root/usr/share/bash-completion/completions/bucketfs"
run_staged --generate-completion-script zsh > "$root/usr/share/zsh/vendor-completions/_bucketfs"
run_staged --generate-completion-script fish > "$root/usr/share/fish/vendor_completions.d/bucketfs.fish"

echo "==> man pages from --help"
# bucketfs(1), and bucketfs-SUB(1) for each subcommand (as git does), through a wrapper help2man can run.
wrappers=$stage/wrappers
mkdir -p "$wrappers"
subcommands=$(run_staged --help | sed -n '/^SUBCOMMANDS:/,/^$/p' | awk 'NR > 1 && /^  [a-z]/ { print $1 }')
for name in bucketfs $(printf 'bucketfs-%s ' $subcommands); do
    sub=${name#bucketfs}; sub=${sub#-}
    printf '#!/bin/sh\nexec env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH=%s %s %s "$@"\n' \
        "$root/usr/lib/bucketfs" "$root/usr/bin/bucketfs" "$sub" > "$wrappers/$name"
    chmod 0755 "$wrappers/$name"
    summary=$("$wrappers/$name" --help | sed -n 's/^OVERVIEW: //p' | sed 's/\.$//')
    help2man --no-info --no-discard-stderr --section 1 --version-string "$version" --name "$summary" \
        "$wrappers/$name" > "$root/usr/share/man/man1/$name.1"
done
cat > "$root/usr/share/man/man8/mount.bucketfs.8" <<EOF
.TH MOUNT.BUCKETFS 8 "" "bucketfs $version" "System Administration"
.SH NAME
mount.bucketfs \- mount(8) helper for bucketfs
.SH SYNOPSIS
.B mount \-t bucketfs
.I SOURCE DIR
.RB [ \-o
.IR OPTIONS ]
.SH DESCRIPTION
Run by mount(8) for \fBmount \-t bucketfs\fR and /etc/fstab lines of type \fBbucketfs\fR; it runs
\fBbucketfs mount\fR \fISOURCE DIR\fR \fB\-o\fR \fIOPTIONS\fR, which returns once the mount is ready.
Options mount(8) adds (rw, nosuid, nodev, noauto, _netdev, x\-systemd.*, defaults) are accepted and ignored.
Lines of type \fBfuse.bucketfs\fR go through mount.fuse3(8) instead.
.SH EXAMPLE
.nf
s3://team\-data/alice/  /mnt/alice  bucketfs  _netdev,config=/etc/bucketfs/alice.yaml  0 0
.fi
.SH SEE ALSO
bucketfs(1), bucketfs\-mount(1), fstab(5), mount(8)
EOF
gzip -9n "$root"/usr/share/man/man1/*.1 "$root"/usr/share/man/man8/*.8

echo "==> docs"
install -m 0644 README.md "$root/usr/share/doc/bucketfs/"
install -m 0644 docs/* "$root/usr/share/doc/bucketfs/docs/"
install -m 0644 mount-helpers/README.md "$root/usr/share/doc/bucketfs/README.mount-helpers.md"

# systemd learns of the unit (and forgets it) at once; nothing is enabled, the unit is a template.
for script in postinst postrm; do
    printf '#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n' \
        > "$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done
cat > "$root/DEBIAN/control" <<EOF
Package: bucketfs
Version: $version
Architecture: $arch
Maintainer: ${BUCKETFS_MAINTAINER:-bucketfs developers <bucketfs@localhost>}
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: utils
Priority: optional
Description: mount an S3, GCS or local-directory bucket prefix as a directory
 bucketfs is a FUSE daemon: reads, writes and listings become object-store
 calls, a file's content reaches the store when it is closed or fsynced, and
 flock/fcntl locks exclude every other mount of the same bucket. The Swift
 runtime it needs is in /usr/lib/bucketfs.
EOF

deb="$outdir/bucketfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
echo "==> built $(du -h "$deb" | cut -f1) package"
echo "$deb"
