#!/usr/bin/env bash
# bench/scale.sh — bucketfs at scale on an S3 server (SeaweedFS by default, started here on SCALE_PORT..+3):
#   - `ls -l` and `find` of one directory of SCALE_N (100,000) objects after a fresh mount, beside the time of
#     the same listing done directly (ListObjectsV2 pages of 1,000 with delimiter, boto3, one thread);
#   - the daemon's RSS growth for each (VmRSS before/after, VmHWM, from /proc/<pid>/status), its CPU seconds and
#     the server's (SeaweedFS started here), its store requests by kind (HEAD, LIST: MOUNT/.bucketfs/metrics);
#   - `ls -l` again after a remount that keeps cache_dir (the metadata index: what this host learnt of the objects);
#   - peak RSS (VmHWM of a fresh daemon) with 4 readers + 4 writers of SCALE_MIB (256) MiB at once;
#   - daemon CPU seconds (utime+stime from /proc/<pid>/stat) per GiB written and per GiB read (4 files of
#     SCALE_MIB, read after a remount and drop_caches), beside rclone mount's (--vfs-cache-mode off) on the
#     same server when rclone is installed.
#
#   bench/scale.sh
#   SCALE_N=10000 SCALE_S3_URL=http://127.0.0.1:19000 bench/scale.sh     smaller, on a running server (moto)
#   SCALE_PARTS="listing" bench/scale.sh                                 only some parts (listing rss cpu)
#   SCALE_SERVER_PID=PID                                                 with SCALE_S3_URL: the server's CPU too
#
# Prints "figure value unit load1" lines, then one "goal" line per goal of issue 13 that this run measured:
# "goal name value reference ratio limit met|MISSED" (ratio = value / reference, met when ratio <= limit).
# The objects are created once per server (bucket scale-SCALE_N, 64 parallel PUTs) and kept for the next run.
# Needs root (drop_caches).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/lib.sh"
bench_binary scale
WORK=${SCALE_WORK:-/tmp/bucketfs-scale}
N=${SCALE_N:-100000}
MIB=${SCALE_MIB:-256}
PORT=${SCALE_PORT:-19610}
PARTS=(${SCALE_PARTS:-listing rss cpu})
mkdir -p "$WORK"
MNT=$WORK/mnt
RCLONE_MNT=$WORK/rclone-mnt
S3_URL=${SCALE_S3_URL:-}
RCLONE_PID=
cleanup() {
    mountpoint -q "$MNT" && "$BIN" unmount "$MNT" >/dev/null 2>&1 || true
    mountpoint -q "$RCLONE_MNT" && fusermount3 -u "$RCLONE_MNT" 2>/dev/null || true
    [ -n "$RCLONE_PID" ] && kill "$RCLONE_PID" 2>/dev/null || true
    [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true
}
trap cleanup EXIT
SERVER_PID=${SCALE_SERVER_PID:-}    # the server's, for its CPU seconds (a server given by SCALE_S3_URL: its pid)
if [ -z "$S3_URL" ]; then
    bench_seaweed "$WORK/seaweed" "$PORT"
    SERVER_PID=$WEED_PID
fi
BUCKET=scale-$N

emit() { echo "$1 $2 $3 $(load)"; }
GOALS=()
# goal NAME VALUE REFERENCE LIMIT: VALUE / REFERENCE must stay at or below LIMIT; printed at the end.
goal() { GOALS+=("$1 $2 $3 $4"); }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
daemon_pid() {
    local real; real=$(realpath "$1")
    for d in /proc/[0-9]*; do
        { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qx -- "--foreground" || continue
        { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qx -- "$real" && { basename "$d"; return; }
    done
}
mount_it() {    # $1 "keep": keep cache_dir (and its metadata index) from the previous mount
    mkdir -p "$MNT"; [ "${1:-}" = keep ] || rm -rf "$WORK/cache"
    "$BIN" mount "s3://$BUCKET/" "$MNT" --endpoint-url "$S3_URL" --cache-dir "$WORK/cache" >&2
    PID=$(daemon_pid "$MNT")
    [ -n "$PID" ] || { echo "scale: daemon pid not found" >&2; exit 1; }
}
unmount_it() { "$BIN" unmount "$MNT" >&2; }
# cpu_seconds PID TICKS0: CPU seconds PID used since TICKS0 ("-" without a PID: a server not started here).
cpu_seconds() {
    [ -n "$1" ] || { echo -; return; }
    python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]):.1f}')" \
        "$2" "$(cpu_ticks "$1")" "$(getconf CLK_TCK)"
}
# store_requests OP: the mounted daemon's count of store requests of kind OP (head, list, get...).
store_requests() {
    awk -v k="bucketfs_store_operations_total{op=\"$1\"}" '$1 == k { print $2 + 0; found = 1 }
        END { if (!found) print 0 }' "$MNT/.bucketfs/metrics"
}

bench_create_bucket "$S3_URL" "$BUCKET" >&2
# The objects (0 bytes each, as many listings hold) and the direct listing time.
python3 - "$S3_URL" "$BUCKET" "$N" <<'PY' >&2
import sys, time, concurrent.futures, boto3, botocore.config
url, bucket, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test", config=botocore.config.Config(max_pool_connections=64))
count = sum(p.get("KeyCount", 0) for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="big/"))
if count < n:
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"big/f{i:06d}", Body=b""), range(n)))
    print(f"created {n} objects in {time.monotonic() - t0:.1f} s", file=sys.stderr)
PY
if [[ " ${PARTS[*]} " == *" listing "* ]]; then
    direct=$(python3 - "$S3_URL" "$BUCKET" <<'PY'
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
best = None
for _ in range(2):
    t0, pages, token = time.monotonic(), 0, None
    while True:
        args = dict(Bucket=sys.argv[2], Prefix="big/", Delimiter="/", MaxKeys=1000)
        if token: args["ContinuationToken"] = token
        reply = s3.list_objects_v2(**args); pages += 1
        token = reply.get("NextContinuationToken")
        if not token: break
    best = min(best or 1e9, time.monotonic() - t0)
print(f"{best:.3f} {pages}")
PY
)
    emit direct_list_pages "${direct#* }" pages
    emit direct_list_all "${direct% *}" s
    for tool in "ls -l" "find"; do
        mount_it; drop
        rss0=$(status_kib "$PID" VmRSS)
        heads0=$(store_requests head); lists0=$(store_requests list)
        cpu0=$(cpu_ticks "$PID"); server0=$([ -n "$SERVER_PID" ] && cpu_ticks "$SERVER_PID" || echo 0)
        t0=$(now)
        if [ "$tool" = find ]; then lines=$(find "$MNT/big" | wc -l); else lines=$(ls -l "$MNT/big" | wc -l); fi
        t1=$(now)
        rss1=$(status_kib "$PID" VmRSS); hwm=$(status_kib "$PID" VmHWM)
        name=${tool// /_}; name=${name//-/}
        emit "${name}_${N}_daemon_cpu_s" "$(cpu_seconds "$PID" "$cpu0")" s
        emit "${name}_${N}_server_cpu_s" "$(cpu_seconds "$SERVER_PID" "$server0")" s
        emit "${name}_${N}_requests" \
            "HEAD=$(( $(store_requests head) - heads0 ))/LIST=$(( $(store_requests list) - lists0 ))" requests
        took=$(span "$t0" "$t1")
        emit "${name}_${N}_s" "$took" s
        emit "${name}_${N}_lines" "$lines" lines
        emit "${name}_${N}_rss_growth" "$(( (rss1 - rss0) / 1024 ))" MiB
        goal "${name}_${N}_s_vs_list_pages" "$took" "${direct% *}" 1.5
        goal "${name}_${N}_rss_growth_vs_150MiB" "$(( (rss1 - rss0) / 1024 ))" 150 1
        emit "${name}_${N}_rss_after_hwm" "$(( rss1 / 1024 ))/$(( hwm / 1024 ))" MiB
        # A second pass on the same daemon: what its caches keep.
        t0=$(now); ls -l "$MNT/big" > /dev/null; t1=$(now)
        emit "${name}_${N}_then_ls_l_warm_s" "$(span "$t0" "$t1")" s
        emit "${name}_${N}_rss_after_second" "$(( $(status_kib "$PID" VmRSS) / 1024 ))" MiB
        unmount_it
    done
    # After a remount on this host: the metadata index in cache_dir knows every object `ls -l` asked for above.
    mount_it keep; drop
    heads0=$(store_requests head); lists0=$(store_requests list)
    t0=$(now); lines=$(ls -l "$MNT/big" | wc -l); t1=$(now)
    took=$(span "$t0" "$t1")
    emit "ls_l_${N}_after_remount_s" "$took" s
    emit "ls_l_${N}_after_remount_requests" \
        "HEAD=$(( $(store_requests head) - heads0 ))/LIST=$(( $(store_requests list) - lists0 ))" requests
    emit "ls_l_${N}_after_remount_vs_list_pages" "$(python3 -c "print(f'{$took / ${direct% *}:.2f}')")" ratio
    unmount_it
fi

SOURCE_FILE=$WORK/source-$MIB
[ -s "$SOURCE_FILE" ] || head -c "$((MIB << 20))" /dev/urandom > "$SOURCE_FILE"

if [[ " ${PARTS[*]} " == *" rss "* ]]; then
    mount_it
    mkdir -p "$MNT/rss"
    # (`wait` names its jobs: a bare one would also wait for the SeaweedFS started above, forever.)
    jobs_=()
    for i in 1 2 3 4; do dd if="$SOURCE_FILE" of="$MNT/rss/r$i" bs=1M status=none & jobs_+=($!); done
    wait "${jobs_[@]}"
    unmount_it; mount_it; drop
    rss0=$(status_kib "$PID" VmRSS)
    jobs_=()
    for i in 1 2 3 4; do
        dd if="$MNT/rss/r$i" of=/dev/null bs=1M status=none & jobs_+=($!)
        dd if="$SOURCE_FILE" of="$MNT/rss/w$i" bs=1M status=none & jobs_+=($!)
    done
    wait "${jobs_[@]}"
    emit rss_4r4w_start "$(( rss0 / 1024 ))" MiB
    emit rss_4r4w_peak_hwm "$(( $(status_kib "$PID" VmHWM) / 1024 ))" MiB
    goal rss_4r4w_peak_vs_256MiB "$(( $(status_kib "$PID" VmHWM) / 1024 ))" 256 1
    rm -rf "$MNT/rss"
    unmount_it
fi

# CPU seconds per GiB: write 4 × MIB, remount, drop caches, read them back; the same through rclone.
cpu_round() {    # $1 name, $2 mount point, $3 pid of its daemon, $4 remount command
    local dir=$2/cpu ticks0 ticks1 hz gib
    hz=$(getconf CLK_TCK)
    gib=$(python3 -c "print($MIB * 4 / 1024)")
    mkdir -p "$dir"
    ticks0=$(cpu_ticks "$3")
    for i in 1 2 3 4; do dd if="$SOURCE_FILE" of="$dir/c$i" bs=1M status=none; done
    sync
    ticks1=$(cpu_ticks "$3")
    CPU_WRITTEN[$1]=$(python3 -c "print(f'{($ticks1 - $ticks0) / $hz / $gib:.2f}')")
    emit "${1}_cpu_s_per_GiB_written" "${CPU_WRITTEN[$1]}" s/GiB
    $4    # sets NEWPID
    drop
    ticks0=$(cpu_ticks "$NEWPID")
    for i in 1 2 3 4; do dd if="$dir/c$i" of=/dev/null bs=1M status=none; done
    ticks1=$(cpu_ticks "$NEWPID")
    CPU_READ[$1]=$(python3 -c "print(f'{($ticks1 - $ticks0) / $hz / $gib:.2f}')")
    emit "${1}_cpu_s_per_GiB_read" "${CPU_READ[$1]}" s/GiB
    rm -rf "$dir"
}
declare -A CPU_WRITTEN CPU_READ
bucketfs_remount() { unmount_it; mount_it; NEWPID=$PID; }
rclone_mount() {
    mkdir -p "$RCLONE_MNT"
    cat > "$WORK/rclone.conf" <<EOF
[scale]
type = s3
provider = Other
env_auth = false
access_key_id = test
secret_access_key = test
endpoint = $S3_URL
region = us-east-1
EOF
    env -u AWS_CA_BUNDLE rclone --config "$WORK/rclone.conf" mount "scale:$BUCKET" "$RCLONE_MNT" \
        --vfs-cache-mode off --dir-cache-time 1s >> "$WORK/rclone.log" 2>&1 &
    RCLONE_PID=$!
    for _ in $(seq 1 100); do mountpoint -q "$RCLONE_MNT" && break; sleep 0.1; done
    mountpoint -q "$RCLONE_MNT" || { echo "scale: rclone did not mount" >&2; exit 1; }
}
rclone_remount() {
    fusermount3 -u "$RCLONE_MNT"; wait "$RCLONE_PID" 2>/dev/null || true
    rclone_mount; NEWPID=$RCLONE_PID
}
if [[ " ${PARTS[*]} " == *" cpu "* ]]; then
    mount_it
    cpu_round bucketfs "$MNT" "$PID" bucketfs_remount
    unmount_it
    if command -v rclone > /dev/null; then
        rclone_mount
        cpu_round rclone "$RCLONE_MNT" "$RCLONE_PID" rclone_remount
        fusermount3 -u "$RCLONE_MNT"; wait "$RCLONE_PID" 2>/dev/null || true; RCLONE_PID=
        goal cpu_s_per_GiB_written_vs_rclone "${CPU_WRITTEN[bucketfs]}" "${CPU_WRITTEN[rclone]}" 0.5
        goal cpu_s_per_GiB_read_vs_rclone "${CPU_READ[bucketfs]}" "${CPU_READ[rclone]}" 0.5
    else
        emit rclone_cpu_s_per_GiB NOT_INSTALLED -
    fi
fi
for g in "${GOALS[@]}"; do
    set -- $g
    python3 -c "import sys; n, v, ref, lim = sys.argv[1:]; r = float(v) / float(ref) if float(ref) else float('inf')
print(f'goal {n} {v} {ref} {r:.2f} {lim} {\"met\" if r <= float(lim) else \"MISSED\"}')" "$@"
done
echo "# $(date -u +%FT%TZ) uptime: $(uptime)"
