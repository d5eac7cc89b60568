#!/usr/bin/env bash
# bench/write-path.sh — sequential write of WRITE_MIB (256) MiB until in the bucket, bucketfs against the best
# direct upload on the same S3 server, interleaved round by round (WRITE_ROUNDS, 3) so that each ratio compares
# figures measured within the same minute on shared cores:
#   - direct_put: one boto3 put_object of the file (what the issue calls "one PUT");
#   - direct_multipart: boto3 upload_file, 8 MiB parts, 10 threads;
#   - bucketfs: 1 MiB write()s (as dd bs=1M) into a fresh mount's file, timed until close returns (close = the
#     upload completed), with the daemon's CPU seconds (utime+stime, /proc/PID/stat) for that file and its VmHWM;
#     `tail` is the time from the last write() returning to close() returning (the last part + completion), and
#     the daemon's metrics (metrics_addr) give the FUSE WRITE requests (so their mean size), the parts, their mean
#     seconds and the completion's; `weed_cpu` is SeaweedFS's CPU seconds for the same file (own server, or
#     WRITE_WEED_PID).
# Starts its own SeaweedFS on WRITE_PORT..+3 (19620) unless WRITE_S3_URL names a running server.
#
#   BUCKETFS_BIN=.build/release/bucketfs bench/write-path.sh
#   WRITE_S3_URL=http://127.0.0.1:19000 WRITE_ROUNDS=5 bench/write-path.sh            (on a running moto)
#   WRITE_OPTIONS="-o parts_in_flight=8" bench/write-path.sh                          (other mount options)
#   WRITE_S3FS=1 bench/write-path.sh          (s3fs on the same bucket too, each round: the same writer, its CPU)
#
# Prints "round N name MiB/s [cpu_s] load1" lines (bucketfs: then tail, writes, parts, ... and weed_cpu), then per
# round "ratio N bucketfs/best_direct".
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
    mountpoint -q "$WORK/s3fs" && fusermount3 -u "$WORK/s3fs" 2>/dev/null || true
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
METRICS=127.0.0.1:${WRITE_METRICS_PORT:-$((PORT + 6))}
WEED=${WRITE_WEED_PID:-$WEED_PID}
[ -z "$WEED" ] || WEED=$(pgrep -P "$WEED" -x weed || echo "$WEED")  # the pyenv shim's child is the server
weed_cpu() { [ -n "$WEED" ] && daemon_cpu "$WEED" || echo 0; }
# writer FILE: 1 MiB writes of the source, then close; prints "seconds_to_close tail_seconds".
writer() {
    python3 - "$SOURCE_FILE" "$1" <<'PY'
import os, sys, time
src = open(sys.argv[1], "rb").read()
t0 = time.monotonic()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
view = memoryview(src)
for off in range(0, len(src), 1 << 20):
    os.write(fd, view[off:off + (1 << 20)])
t1 = time.monotonic()
os.close(fd)
t2 = time.monotonic()
print(f"{t2 - t0:.3f} {t2 - t1:.3f}")
PY
}
# scrape: the daemon's counters this script reads, one "name value" a line.
scrape() {
    curl -s "http://$METRICS/metrics" | python3 -c '
import re, sys
want = {("bucketfs_fuse_operations_total", "write"): "writes",
        ("bucketfs_store_operations_total", "upload_part"): "parts",
        ("bucketfs_store_operation_duration_seconds_sum", "upload_part"): "part_s",
        ("bucketfs_store_operation_duration_seconds_sum", "complete_multipart_upload"): "complete_s",
        ("bucketfs_store_operation_duration_seconds_sum", "create_multipart_upload"): "create_s"}
got = {v: 0.0 for v in want.values()}
for line in sys.stdin:
    m = re.match(r"(\w+)\{[^}]*op=\"(\w+)\"[^}]*\} ([0-9.e+-]+)", line)
    if m and (m[1], m[2]) in want: got[want[(m[1], m[2])]] += float(m[3])
print(" ".join(f"{k}={v:g}" for k, v in got.items()))'
}
# deltas "a=1 b=2" "a=3 b=5": the bucketfs figures of one file.
cat > "$WORK/deltas.py" <<'PY'
import sys
a, b = (dict(kv.split("=") for kv in arg.split()) for arg in sys.argv[1:3])
d = {k: float(b[k]) - float(a.get(k, 0)) for k in b}
n, w = d["parts"] or 1, d["writes"] or 1
print(f"writes {w:g} ({int(sys.argv[3]) * 1024 / w:.0f} KiB each) parts {d['parts']:g} part_mean_s "
      f"{d['part_s'] / n:.3f} create_s {d['create_s']:.3f} complete_s {d['complete_s']:.3f}")
PY
deltas() { python3 "$WORK/deltas.py" "$1" "$2" "$MIB"; }
"$BIN" mount "s3://$BUCKET/" "$MNT" --endpoint-url "$S3_URL" --cache-dir "$WORK/cache" --metrics-addr "$METRICS" \
    ${WRITE_OPTIONS:-} >&2
PID=$(daemon_pid "$MNT")
[ -n "$PID" ] || { echo "write-path: daemon pid not found" >&2; exit 1; }
S3FS_PID=
if [ -n "${WRITE_S3FS:-}" ]; then
    mkdir -p "$WORK/s3fs"
    echo "test:test" > "$WORK/s3fs.passwd"; chmod 600 "$WORK/s3fs.passwd"
    s3fs "$BUCKET" "$WORK/s3fs" -f -o "url=$S3_URL,use_path_request_style,passwd_file=$WORK/s3fs.passwd,endpoint=us-east-1" \
        >> "$WORK/s3fs.log" 2>&1 &
    S3FS_PID=$!
    for _ in $(seq 1 100); do mountpoint -q "$WORK/s3fs" && break; sleep 0.1; done
fi
for round in $(seq 1 "$ROUNDS"); do
    w0=$(weed_cpu)
    put=$(direct put "direct/put-$round")
    [ -n "$WEED" ] && wcpu=$(cpu_since "$WEED" "$w0") || wcpu=-
    echo "round $round direct_put $(rate "$put") $(load) weed_cpu $wcpu"
    m0=$(scrape); w0=$(weed_cpu); c0=$(daemon_cpu "$PID")
    read -r bfs tail < <(writer "$MNT/bfs-$round")
    cpu=$(cpu_since "$PID" "$c0"); [ -n "$WEED" ] && wcpu=$(cpu_since "$WEED" "$w0") || wcpu=-
    echo "round $round bucketfs $(rate "$bfs") $cpu $(load) tail $tail $(deltas "$m0" "$(scrape)") weed_cpu $wcpu"
    if [ -n "$S3FS_PID" ]; then
        w0=$(weed_cpu); c0=$(daemon_cpu "$S3FS_PID")
        read -r sfs stail < <(writer "$WORK/s3fs/s3fs-$round")
        [ -n "$WEED" ] && wcpu=$(cpu_since "$WEED" "$w0") || wcpu=-
        echo "round $round s3fs $(rate "$sfs") $(cpu_since "$S3FS_PID" "$c0") $(load) tail $stail weed_cpu $wcpu" \
            "bucketfs/s3fs $(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$sfs" "$bfs")"
        rm -f "$WORK/s3fs/s3fs-$round"
    fi
    mp=$(direct multipart "direct/mp-$round")
    echo "round $round direct_multipart $(rate "$mp") $(load)"
    python3 -c "import sys; b, p, m = map(float, sys.argv[1:]); print(f'ratio $round {min(p, m) / b:.2f}')" \
        "$bfs" "$put" "$mp"
    rm -f "$MNT/bfs-$round"
done
echo "vmhwm $(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$PID/status") MiB"
echo "# $(date -u +%FT%TZ) uptime: $(uptime)"
