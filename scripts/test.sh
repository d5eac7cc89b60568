#!/usr/bin/env bash
# Installs what the tests need, builds, and runs the whole suite: Swift unit tests, then real mounts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# fuse3: mounts; attr: getfattr; util-linux: unshare (the no-/dev/fuse test).
install_system_packages fuse3 libfuse3-dev pkg-config attr util-linux
require_swift
python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install -q pytest

echo "==> building"
swift build --build-tests
echo "==> unit tests"
swift test --skip-build --disable-swift-testing
echo "==> real-mount tests"
BUCKETFS_BIN="$PWD/.build/debug/bucketfs" python3 -m pytest -q Tests/integration "$@"
