# bench/lib.sh — start-up shared by fuse-options.sh and scale.sh (sourced, after ROOT is set): the daemon binary,
# dummy credentials, a SeaweedFS on loopback when no server is given, and small timing helpers.

# bench_binary NAME: BIN is BUCKETFS_BIN or the release build, as an absolute path (NAME prefixes the error).
bench_binary() {
    BIN=${BUCKETFS_BIN:-$ROOT/.build/release/bucketfs}
    [ -x "$BIN" ] || { echo "$1: no $BIN (swift build -c release, or set BUCKETFS_BIN)" >&2; exit 1; }
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
}

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
WEED_PID=

# bench_seaweed DIR PORT: starts SeaweedFS (S3 on PORT; master, volume, filer on PORT+1..3) on loopback with
# telemetry off, data in DIR, log beside it; sets S3_URL and WEED_PID (the caller's cleanup kills it).
bench_seaweed() {
    mkdir -p "$1"
    # The server of a run just ended may still hold the ports while it shuts down: a new one would fail to bind.
    local i
    for i in $(seq 60); do
        (: > "/dev/tcp/127.0.0.1/$2") 2>/dev/null || (: > "/dev/tcp/127.0.0.1/$(($2 + 1))") 2>/dev/null || break
        sleep 0.5
    done
    weed server -dir="$1" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
        -master.port=$(($2 + 1)) -master.volumeSizeLimitMB=1024 -volume.port=$(($2 + 2)) -volume.max=200 \
        -filer -filer.port=$(($2 + 3)) -s3 -s3.port="$2" -s3.port.iceberg=0 -s3.port.lance=0 >> "$1.log" 2>&1 &
    WEED_PID=$!
    S3_URL=http://127.0.0.1:$2
}

# bench_create_bucket URL BUCKET: creates BUCKET (kept if it exists), waiting up to 60 s for a server just started.
bench_create_bucket() {
    python3 - "$1" "$2" <<'PY'
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
deadline = time.monotonic() + 60
while True:
    try:
        s3.create_bucket(Bucket=sys.argv[2]); break
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        break
    except Exception:
        if time.monotonic() > deadline: raise
        time.sleep(0.5)
PY
}

load() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }
span() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$@"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# daemon_cpu PID: its utime+stime in clock ticks; cpu_since PID TICKS: seconds used since then.
daemon_cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_since() { python3 -c "import os, sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / os.sysconf(\"SC_CLK_TCK\"):.2f}')" "$2" "$(daemon_cpu "$1")"; }
