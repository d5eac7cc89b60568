#!/usr/bin/env bash
# bench/write-path.sh — sequential write of WRITE_MIB (256) MiB until in the bucket, bucketfs against the best
# direct upload on the same S3 server, interleaved round by round (WRITE_ROUNDS, 3) so that each ratio compares
# figures measured within the same minute on shared cores:
#   - direct_put: one boto3 put_object of the file (what the issue calls "one PUT");
#   - direct_multipart: boto3 upload_file, 8 MiB parts, 10 threads;
#   - bucketfs: dd bs=1M into a fresh mount's file, timed until dd exits (close = the upload completed),
#     with the daemon's CPU seconds (utime+stime, /proc/PID/stat) for that file and its VmHWM.
# Starts its own SeaweedFS on WRITE_PORT..+3 (19620) unless WRITE_S3_URL names a running server.
#
#   BUCKETFS_BIN=.build/release/bucketfs bench/write-path.sh
#   WRITE_S3_URL=http://127.0.0.1:19000 WRITE_ROUNDS=5 bench/write-path.sh            (on a running moto)
#   WRITE_OPTIONS="-o parts_in_flight=8" bench/write-path.sh                          (other mount options)
#
# Prints "round N name MiB/s [cpu_s] load1" lines, then per round "ratio N bucketfs/best_direct".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/lib.sh"
bench_binary write-path
WORK=${WRITE_WORK:-/tmp/bucketfs-write-path}
MIB=${WRITE_MIB:-256}
ROUNDS=${WRITE_ROUNDS:-3}
PORT=${WRITE_PORT:-19620}
S3_URL=${WRITE_S3_URL:-}
BUCKET=write-path
MNT=$WORK/mnt
mkdir -p "$WORK" "$MNT"
cleanup() {
    mountpoint -q "$MNT" && "$BIN" unmount "$MNT" >/dev/null 2>&1 || true
    [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true
}
trap cleanup EXIT
[ -n "$S3_URL" ] || bench_seaweed "$WORK/seaweed" "$PORT"
SOURCE_FILE=$WORK/source-$MIB
[ -s "$SOURCE_FILE" ] || head -c "$((MIB << 20))" /dev/urandom > "$SOURCE_FILE"

# A small boto3 server: reads "put KEY" / "multipart KEY" lines, answers the seconds each took.
cat > "$WORK/direct.py" <<'PY'
import sys, time, boto3, botocore.config
from boto3.s3.transfer import TransferConfig
url, bucket, source = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test", config=botocore.config.Config(max_pool_connections=16))
deadline = time.monotonic() + 60
while True:
    try:
        s3.create_bucket(Bucket=bucket); break
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        break
    except Exception:
        if time.monotonic() > deadline: raise
        time.sleep(0.5)
print("ready", flush=True)
config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=10)
for line in sys.stdin:
    kind, key = line.split()
    t0 = time.monotonic()
    if kind == "put":
        with open(source, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f)
    else:
        s3.upload_file(source, bucket, key, Config=config)
    print(f"{time.monotonic() - t0:.3f}", flush=True)
PY
coproc DIRECT { python3 -u "$WORK/direct.py" "$S3_URL" "$BUCKET" "$SOURCE_FILE"; }
read -r ready <&"${DIRECT[0]}"
[ "$ready" = ready ] || { echo "write-path: direct client did not start" >&2; exit 1; }
direct() { echo "$1 $2" >&"${DIRECT[1]}"; local s; read -r s <&"${DIRECT[0]}"; echo "$s"; }
rate() { python3 -c "import sys; print(f'{$MIB / float(sys.argv[1]):.1f}')" "$1"; }

daemon_pid() {
    local real; real=$(realpath "$1")
    for d in /proc/[0-9]*; do
        { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qx -- "--foreground" || continue
        { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qx -- "$real" && { basename "$d"; return; }
    done
}
"$BIN" mount "s3://$BUCKET/" "$MNT" --endpoint-url "$S3_URL" --cache-dir "$WORK/cache" ${WRITE_OPTIONS:-} >&2
PID=$(daemon_pid "$MNT")
[ -n "$PID" ] || { echo "write-path: daemon pid not found" >&2; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
    put=$(direct put "direct/put-$round")
    echo "round $round direct_put $(rate "$put") $(load)"
    c0=$(daemon_cpu "$PID"); t0=$(now)
    dd if="$SOURCE_FILE" of="$MNT/bfs-$round" bs=1M status=none
    t1=$(now)
    bfs=$(span "$t0" "$t1")
    echo "round $round bucketfs $(rate "$bfs") $(cpu_since "$PID" "$c0") $(load)"
    mp=$(direct multipart "direct/mp-$round")
    echo "round $round direct_multipart $(rate "$mp") $(load)"
    python3 -c "import sys; b, p, m = map(float, sys.argv[1:]); print(f'ratio $round {min(p, m) / b:.2f}')" \
        "$bfs" "$put" "$mp"
    rm -f "$MNT/bfs-$round"
done
echo "vmhwm $(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$PID/status") MiB"
echo "# $(date -u +%FT%TZ) uptime: $(uptime)"
