#!/usr/bin/env bash
# bench/fuse-options.sh — each FUSE_INIT choice of FuseTuning (Sources/FuseBridge/FuseTuning.swift) on and off,
# measured in one run on a file:// mount and on an S3 server (SeaweedFS by default), through BUCKETFS_FUSE_TUNING.
#
#   bench/fuse-options.sh                     file:// and SeaweedFS (started here on FUSE_BENCH_PORT..+3, 19600)
#   FUSE_BENCH_BACKENDS="file" bench/fuse-options.sh
#   FUSE_BENCH_S3_URL=http://127.0.0.1:19000 bench/fuse-options.sh    an S3 server already running (moto)
#   FUSE_BENCH_VARIANTS="default writeback" FUSE_BENCH_ROUNDS=3 bench/fuse-options.sh
#   BUCKETFS_BIN=.build/release/bucketfs bench/fuse-options.sh
#
# Prints "backend variant figure value unit load" lines (load: 1-minute load average at the figure: the cores
# are shared). Needs root (drop_caches, read_ahead_kb). Figures: dd write/read of FUSE_BENCH_MIB (256) with
# bs=1M (write time includes close, i.e. the upload); 4 processes creating 250 × 4 KiB files each in one
# directory; 4 processes each stat-ing all 1,000 after a remount; 4 parallel `ls -l` after a remount.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/lib.sh"
bench_binary fuse-options
WORK=${FUSE_BENCH_WORK:-/tmp/fuse-options}
MIB=${FUSE_BENCH_MIB:-256}
ROUNDS=${FUSE_BENCH_ROUNDS:-1}
PORT=${FUSE_BENCH_PORT:-19600}
BACKENDS=(${FUSE_BENCH_BACKENDS:-file s3})
VARIANTS=(${FUSE_BENCH_VARIANTS:-default max_write_128k read_ahead_128k no_parallel_dirops background_12 splice writeback})
mkdir -p "$WORK"
MNT=$WORK/mnt

tuning() {
    case $1 in
        default) echo "" ;;
        max_write_128k) echo "max_write=131072" ;;
        read_ahead_128k) echo "read_ahead_kb=0" ;;
        no_parallel_dirops) echo "parallel_dirops=0" ;;
        background_12) echo "max_background=12,congestion_threshold=9" ;;
        splice) echo "splice_read=1,splice_write=1,splice_move=1" ;;
        writeback) echo "writeback_cache=1" ;;
        *) echo "fuse-options: unknown variant $1" >&2; exit 1 ;;
    esac
}

S3_URL=${FUSE_BENCH_S3_URL:-}
cleanup() {
    mountpoint -q "$MNT" && "$BIN" unmount "$MNT" >/dev/null 2>&1 || true
    [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true
}
trap cleanup EXIT
if [[ " ${BACKENDS[*]} " == *" s3 "* ]] && [ -z "$S3_URL" ]; then
    bench_seaweed "$WORK/seaweed" "$PORT"
fi
s3() {
    python3 - "$S3_URL" "$@" <<'PY'
import sys, time, boto3
url, action, bucket = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
deadline = time.monotonic() + 60
while True:
    try:
        s3.create_bucket(Bucket=bucket)
        break
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
PY
}

SOURCE_FILE=$WORK/source-$MIB
[ -s "$SOURCE_FILE" ] || head -c "$((MIB << 20))" /dev/urandom > "$SOURCE_FILE"
emit() { echo "$BACKEND $VARIANT $1 $2 $3 $(load)"; }
rate() { python3 -c "import sys; print(f'{float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$@"; }

mount_it() {
    mkdir -p "$MNT"
    BUCKETFS_FUSE_TUNING=$(tuning "$VARIANT") "$BIN" mount "$SRC" "$MNT" --cache-dir "$WORK/cache" $EXTRA >&2
}
# The cache dir goes too: its block cache would serve the re-read from local disk.
remount() { "$BIN" unmount "$MNT" >&2; rm -rf "$WORK/cache"; mount_it; }

one_variant() {
    local t0 t1
    mount_it
    rm -rf "$MNT/big" "$MNT/many"
    t0=$(now); dd if="$SOURCE_FILE" of="$MNT/big" bs=1M status=none; t1=$(now)
    emit dd_write_1M "$(rate "$MIB" "$t0" "$t1")" MiB/s
    remount; drop
    t0=$(now); dd if="$MNT/big" of=/dev/null bs=1M status=none; t1=$(now)
    emit dd_read_1M "$(rate "$MIB" "$t0" "$t1")" MiB/s
    cmp -s "$SOURCE_FILE" "$MNT/big" || emit dd_content_ok n bool
    mkdir -p "$MNT/many"
    # (Each `wait` names its jobs: a bare one would also wait for the SeaweedFS started above, forever.)
    t0=$(now); jobs_=()
    for p in 0 1 2 3; do
        python3 -c "
import os, sys
block = os.urandom(4096)
for i in range(250):
    with open(f'{sys.argv[1]}/f{sys.argv[2]}-{i:04d}', 'wb') as f:
        f.write(block)" "$MNT/many" "$p" & jobs_+=($!)
    done
    wait "${jobs_[@]}"; t1=$(now)
    emit create_4x250_parallel "$(rate 1000 "$t0" "$t1")" files/s
    remount; drop
    t0=$(now); jobs_=()
    for p in 0 1 2 3; do
        python3 -c "
import os, sys
names = sorted(os.listdir(sys.argv[1]))
k = int(sys.argv[2]) * len(names) // 4
for n in names[k:] + names[:k]:
    os.stat(os.path.join(sys.argv[1], n))" "$MNT/many" "$p" & jobs_+=($!)
    done
    wait "${jobs_[@]}"; t1=$(now)
    emit stat_1000_4procs_cold "$(span "$t0" "$t1")" s
    remount; drop
    t0=$(now); jobs_=()
    for p in 0 1 2 3; do ls -l "$MNT/many" > /dev/null & jobs_+=($!); done
    wait "${jobs_[@]}"; t1=$(now)
    emit ls_l_1000_4procs_cold "$(span "$t0" "$t1")" s
    rm -rf "$MNT/many" "$MNT/big"
    "$BIN" unmount "$MNT" >&2
    coherence
}

# Close-to-open across mounts: mount A (the variant) reads a file, mount B (defaults) rewrites it longer, and A
# opens it again after its attribute timeout (1 s here): A must see B's whole content.
coherence() {
    local b=$WORK/mnt-b seen
    mkdir -p "$b" "$MNT"
    BUCKETFS_FUSE_TUNING=$(tuning "$VARIANT") "$BIN" mount "$SRC" "$MNT" --cache-dir "$WORK/cache" $EXTRA \
        -o metadata_ttl=1,negative_ttl=1 >&2
    "$BIN" mount "$SRC" "$b" --cache-dir "$WORK/cache-b" $EXTRA -o metadata_ttl=1,negative_ttl=1 >&2
    printf 1234 > "$MNT/coherence"
    cat "$MNT/coherence" > /dev/null
    printf 12345678 > "$b/coherence"
    sleep 2.5
    seen=$(cat "$MNT/coherence")
    emit close_to_open_seen "$seen" "(want:12345678)"
    rm -f "$b/coherence"
    "$BIN" unmount "$b" >&2; "$BIN" unmount "$MNT" >&2; rm -rf "$WORK/cache" "$WORK/cache-b"
}

echo "# $(date -u +%FT%TZ) bucketfs $BIN, $MIB MiB, rounds $ROUNDS; uptime: $(uptime)"
echo "# backend variant figure value unit load1"
for round in $(seq 1 "$ROUNDS"); do
    for BACKEND in "${BACKENDS[@]}"; do
        case $BACKEND in
            file) rm -rf "$WORK/bucket"; mkdir -p "$WORK/bucket"; SRC="file://$WORK/bucket/"; EXTRA="" ;;
            s3) bucket="fuse-options-$round"; s3 create "$bucket"; SRC="s3://$bucket/"
                EXTRA="--endpoint-url $S3_URL" ;;
        esac
        for VARIANT in "${VARIANTS[@]}"; do one_variant; done
    done
done
