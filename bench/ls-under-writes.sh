#!/usr/bin/env bash
# bench/ls-under-writes.sh — `ls -l` of a directory another tool wrote (MIXED_FILES objects of 100 bytes, put by
# boto3, so each needs a HEAD) on a fresh mount, alone and while MIXED_WRITERS (4) writers stream MIXED_MIB (256) MiB
# files into the same mount: what uploads cost a reader of the same mount. Each round mounts afresh (empty cache_dir),
# so the HEADs are asked every time. Interleaved over MIXED_ROUNDS (3) rounds; with BUCKETFS_BIN_B set, each round
# runs that binary too (A/B on the same server and minute).
# Starts its own SeaweedFS on MIXED_PORT..+3 (19630) unless MIXED_S3_URL names a running server. Needs root.
#
#   BUCKETFS_BIN=/tmp/bucketfs-old BUCKETFS_BIN_B=.build/release/bucketfs bench/ls-under-writes.sh
#
# Prints "round N BINARY alone_s during_s writers_MiB/s load1" lines.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/lib.sh"
bench_binary ls-under-writes
BINS=("$BIN")
if [ -n "${BUCKETFS_BIN_B:-}" ]; then BINS+=("$(cd "$(dirname "$BUCKETFS_BIN_B")" && pwd)/$(basename "$BUCKETFS_BIN_B")"); fi
WORK=${MIXED_WORK:-/tmp/bucketfs-ls-under-writes}
FILES=${MIXED_FILES:-1000}
WRITERS=${MIXED_WRITERS:-4}
MIB=${MIXED_MIB:-256}
PORT=${MIXED_PORT:-19630}
S3_URL=${MIXED_S3_URL:-}
BUCKET=ls-under-writes
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() {
    mountpoint -q "$MNT" && "${BINS[0]}" unmount "$MNT" >/dev/null 2>&1 || true
    [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true
}
trap cleanup EXIT
[ -n "$S3_URL" ] || bench_seaweed "$WORK/seaweed" "$PORT"
SOURCE_FILE=$WORK/source-$MIB
[ -s "$SOURCE_FILE" ] || head -c "$((MIB << 20))" /dev/urandom > "$SOURCE_FILE"

bench_create_bucket "$S3_URL" "$BUCKET" >&2
python3 - "$S3_URL" "$BUCKET" "$FILES" <<'PY' >&2
import sys, concurrent.futures, boto3, botocore.config
url, bucket, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test", config=botocore.config.Config(max_pool_connections=32))
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"theirs/f{i:05d}", Body=b"x" * 100), range(n)))
PY

mount_fresh() {
    rm -rf "$WORK/cache"
    "$1" mount "s3://$BUCKET/" "$MNT" --endpoint-url "$S3_URL" --cache-dir "$WORK/cache" >/dev/null
}
timed_ls() {
    local t0; t0=$(now)
    [ "$(ls -l "$MNT/theirs" | wc -l)" -eq $((FILES + 1)) ] || { echo "ls-under-writes: short listing" >&2; exit 1; }
    span "$t0" "$(now)"
}
for round in $(seq "${MIXED_ROUNDS:-3}"); do
    for bin in "${BINS[@]}"; do
        mount_fresh "$bin"
        alone=$(timed_ls)
        "$bin" unmount "$MNT" >/dev/null
        mount_fresh "$bin"
        mkdir -p "$MNT/ours"
        t0=$(now)
        pids=()
        for w in $(seq "$WRITERS"); do
            dd if="$SOURCE_FILE" of="$MNT/ours/w$w" bs=1M status=none &
            pids+=($!)
        done
        sleep 2  # the writers are streaming parts by now (8 MiB each: a few hundred ms at this rate)
        during=$(timed_ls)
        wait "${pids[@]}"
        writers=$(python3 -c "import sys; print(f'{$WRITERS * $MIB / (float(sys.argv[2]) - float(sys.argv[1])):.1f}')" "$t0" "$(now)")
        rm -rf "$MNT/ours"
        "$bin" unmount "$MNT" >/dev/null
        echo "round $round $bin $alone $during $writers $(load)"
    done
done
