#!/usr/bin/env bash
# bench/rm-rf.sh — what `rm -rf` of a directory of N (1,000) 4 KiB files costs: wall time, the daemon's store
# requests by kind and the FUSE operations the kernel sent (both from MOUNT/.bucketfs/metrics, the cost of reading
# that file itself taken off), and the daemon's CPU seconds. Several builds (and s3fs) in interleaved rounds on one
# S3 server, so that a shared machine's load moves them alike.
#
#   bench/rm-rf.sh                                           this tree's release build, 3 rounds, own SeaweedFS
#   RMRF_BINS="new=.build/release/bucketfs old=/tmp/wt-old/.build/release/bucketfs" RMRF_S3FS=1 bench/rm-rf.sh
#   RMRF_S3_URL=http://127.0.0.1:19800 RMRF_ROUNDS=5 RMRF_MODE=fresh bench/rm-rf.sh
#
# RMRF_MODE=fsbench (default): before the rm, the steps of the shared harness's fsbench.sh that touch the files
# (create, ls -l cold and warm, remount keeping cache_dir, ls -l, stat, cat, a file and a directory renamed
# beside them), so that the files' attributes have aged out as they have there; RMRF_MODE=fresh: rm right after
# the create. Prints one line per target and round: "target round seconds cpu_s store{...} fuse{...} load1"; in
# fsbench mode first a line "target round rename seconds store{...} ..." for the rename of the directory of 100.
# RMRF_SERVER_LOG=FILE: the S3 server's request log (moto_server's stderr), whose lines written during the rm (and
# the rename) are counted as server{DELETE=,GET=,HEAD=,LIST=,POST=,PUT=} for every target, s3fs included (a
# CopyObject counts as a PUT, DeleteObjects as a POST: moto logs no headers). Needs root (drop_caches) and, with
# RMRF_S3FS=1, s3fs.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/lib.sh"
WORK=${RMRF_WORK:-/tmp/bucketfs-rmrf}
N=${RMRF_N:-1000}
ROUNDS=${RMRF_ROUNDS:-3}
MODE=${RMRF_MODE:-fsbench}
PORT=${RMRF_PORT:-19800}
BUCKET=${RMRF_BUCKET:-rmrf}
HELPER=${PEERS_BENCH:-$ROOT/../shared/bench}/fsbench_helper.py
[ -f "$HELPER" ] || { echo "rm-rf: no fsbench_helper.py (set PEERS_BENCH)" >&2; exit 1; }
read -r -a BINS <<< "${RMRF_BINS:-this=$ROOT/.build/release/bucketfs}"
MNT=$WORK/mnt
S3_URL=${RMRF_S3_URL:-}
mkdir -p "$WORK" "$MNT"
cleanup() {
    mountpoint -q "$MNT" && fusermount3 -u "$MNT" 2>/dev/null || true
    [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true
}
trap cleanup EXIT
if [ -z "$S3_URL" ]; then
    bench_seaweed "$WORK/seaweed" "$PORT"
fi
bench_create_bucket "$S3_URL" "$BUCKET" >&2
echo "test:test" > "$WORK/s3fs.passwd"; chmod 600 "$WORK/s3fs.passwd"

PID=
daemon_pid() {
    local real; real=$(realpath "$MNT")
    for d in /proc/[0-9]*; do
        { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qx -- "$real" || continue
        { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qE -- "^(--foreground|-f)$" && { basename "$d"; return; }
    done
}
CUR=
mount_it() {  # mount_it BIN|s3fs [keep]
    CUR=$1
    [ "${2:-}" = keep ] || rm -rf "$WORK/cache"
    if [ "$1" = s3fs ]; then
        s3fs "$BUCKET" "$MNT" -f -o "url=$S3_URL,use_path_request_style,passwd_file=$WORK/s3fs.passwd" \
            -o endpoint=us-east-1 >> "$WORK/s3fs.log" 2>&1 &
        local deadline=$((SECONDS + 30))
        until mountpoint -q "$MNT"; do [ $SECONDS -lt $deadline ] || exit 1; sleep 0.1; done
    else
        "$1" mount "s3://$BUCKET/" "$MNT" --endpoint-url "$S3_URL" --cache-dir "$WORK/cache" >&2
    fi
    PID=$(daemon_pid)
    [ -n "$PID" ] || { echo "rm-rf: daemon pid not found" >&2; exit 1; }
}
unmount_it() {
    if [ "$CUR" = s3fs ]; then fusermount3 -u "$MNT"; else "$CUR" unmount "$MNT" >&2; fi
    while kill -0 "$PID" 2>/dev/null; do sleep 0.05; done
}
# metrics FILE: the daemon's counters of store and FUSE operations, "name{op} value" lines (none for s3fs).
metrics() {
    if [ -f "$MNT/.bucketfs/metrics" ]; then
        grep -E '^bucketfs_(store|fuse)_operation(s_total|_duration_seconds_sum)' "$MNT/.bucketfs/metrics" > "$1"
    else
        : > "$1"
    fi
}
# delta BEFORE AFTER AGAIN PREFIX: AFTER - BEFORE - (AGAIN - AFTER) (the reading's own cost), non-zero ones.
delta() {
    python3 - "$@" <<'PY'
import re, sys
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r'(\w+)\{op="(\w+)"\} (\S+)', line)
        if m and m.group(1) == sys.argv[4]:
            out[m.group(2)] = float(m.group(3))
    return out
b, a, c = (read(p) for p in sys.argv[1:4])
d = {k: a.get(k, 0) - b.get(k, 0) - (c.get(k, 0) - a.get(k, 0)) for k in set(a) | set(b)}
if sys.argv[4].endswith("_sum"):  # seconds
    print("{" + ",".join(f"{k}={v:.3f}" for k, v in sorted(d.items()) if v >= 0.0005) + "}")
else:
    print("{" + ",".join(f"{k}={v:.0f}" for k, v in sorted(d.items()) if round(v) != 0) + "}")
PY
}

# server_mark: lines in the server's log so far; server_count MARK: its request lines since, by kind.
server_mark() { if [ -n "${RMRF_SERVER_LOG:-}" ]; then wc -l < "$RMRF_SERVER_LOG"; else echo 0; fi; }
server_count() {
    [ -n "${RMRF_SERVER_LOG:-}" ] || return 0
    sleep 0.3  # the log line is written after the reply
    tail -n +"$(($1 + 1))" "$RMRF_SERVER_LOG" | python3 -c '
import re, sys, collections
c = collections.Counter()
for line in sys.stdin:
    m = re.search(r"\"(GET|PUT|HEAD|POST|DELETE) (\S+)", line)
    if not m: continue
    method, target = m.groups()
    if method == "GET" and re.search(r"[?&](list-type|prefix|delimiter)=", target): method = "LIST"
    c[method] += 1
print(" server{" + ",".join(f"{k}={v}" for k, v in sorted(c.items())) + "}", end="")'
}

run_one() {  # run_one LABEL BIN ROUND
    local label=$1 bin=$2 round=$3 W rc
    mount_it "$bin"
    W="$MNT/r$round-$label-$$"
    mkdir "$W"
    python3 "$HELPER" create "$W/many" "$N" 4096 300 > /dev/null
    if [ "$MODE" = fsbench ]; then
        drop; ls -l "$W/many" > /dev/null; ls -l "$W/many" > /dev/null
        unmount_it; mount_it "$bin" keep; drop
        ls -l "$W/many" > /dev/null
        python3 "$HELPER" stat "$W/many/f00000" 1000 > /dev/null
        drop; python3 "$HELPER" cat "$W/many" "$N" 4096 300 > /dev/null
        head -c 4096 /dev/urandom > "$W/ren_src"; python3 "$HELPER" rename "$W/ren_src" "$W/ren_dst" > /dev/null
        python3 "$HELPER" create "$W/rdir" 100 4096 300 > /dev/null
        local seconds mark
        metrics "$WORK/m0"; mark=$(server_mark)
        seconds=$(python3 "$HELPER" rename "$W/rdir" "$W/rdir2")
        metrics "$WORK/m1"; metrics "$WORK/m2"
        echo "$label $round rename $seconds store$(delta "$WORK/m0" "$WORK/m1" "$WORK/m2" \
            bucketfs_store_operations_total) fuse$(delta "$WORK/m0" "$WORK/m1" "$WORK/m2" \
            bucketfs_fuse_operations_total)$(server_count "$mark") $(load)"
    fi
    metrics "$WORK/m0"
    local ticks t0 t1 cpu mark
    mark=$(server_mark)
    ticks=$(daemon_cpu "$PID")
    t0=$(now)
    rm -rf "$W/many"; rc=$?
    t1=$(now)
    cpu=$(cpu_since "$PID" "$ticks")
    metrics "$WORK/m1"; metrics "$WORK/m2"
    [ $rc -eq 0 ] && [ ! -e "$W/many" ] || { echo "rm-rf: $label: rm -rf failed" >&2; exit 1; }
    echo "$label $round $(span "$t0" "$t1") ${cpu} store$(delta "$WORK/m0" "$WORK/m1" "$WORK/m2" \
        bucketfs_store_operations_total) fuse$(delta "$WORK/m0" "$WORK/m1" "$WORK/m2" \
        bucketfs_fuse_operations_total) fuse_s$(delta "$WORK/m0" "$WORK/m1" "$WORK/m2" \
        bucketfs_fuse_operation_duration_seconds_sum) store_s$(delta "$WORK/m0" "$WORK/m1" "$WORK/m2" \
        bucketfs_store_operation_duration_seconds_sum)$(server_count "$mark") $(load)"
    rm -rf "$W"
    unmount_it
}

for round in $(seq 1 "$ROUNDS"); do
    for entry in "${BINS[@]}"; do
        label=${entry%%=*}; bin=${entry#*=}
        bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
        run_one "$label" "$bin" "$round"
    done
    if [ -n "${RMRF_S3FS:-}" ]; then run_one s3fs s3fs "$round"; fi
done
