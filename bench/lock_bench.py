#!/usr/bin/env python3
"""Lock figures per strategy, through real mounts: flock acquire+release latency (p50/p99, uncontended), the
hand-off (p50/p99 from LOCK_UN on mount A to the grant of a blocked flock on mount B), and the contended
counter (4 processes on each of two mounts, N rounds of `flock counter: read, add 1, write`).

Starts moto_server and redis-server on loopback, mounts the same bucket twice per strategy, and counts the
store requests the object strategy makes per acquire+release from moto's request log. `--s3-endpoint URL` adds
the object strategy on another S3 server (e.g. SeaweedFS from /work/shared/bench/setup.sh with PEERS_S3=seaweed).

    python3 bench/lock_bench.py [--bin .build/release/bucketfs] [--rounds 50] [--samples 200] [--handoffs 30]
                                [--s3-endpoint http://127.0.0.1:19400]
"""
import argparse
import fcntl
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


class Servers:
    def __init__(self, work):
        self.moto_port, self.redis_port = free_port(), free_port()
        self.moto_log = open(work / "moto.log", "w")
        self.moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                     stdout=self.moto_log, stderr=subprocess.STDOUT)
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(work)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.moto_port)
        wait_port(self.redis_port)
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.moto_port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
        import boto3
        boto3.client("s3").create_bucket(Bucket="locks")

    def moto_requests(self):
        """Requests moto has logged so far that touched lock objects."""
        self.moto_log.flush()
        with open(self.moto_log.name) as f:
            return sum(1 for line in f if "/.bucketfs/locks/" in line and "HTTP/1.1" in line)

    def stop(self):
        for p in (self.moto, self.redis):
            p.terminate()
            p.wait(timeout=10)


def mount(binary, source, path, cache, options):
    path.mkdir(parents=True, exist_ok=True)
    run(binary, "mount", source, str(path), "--cache-dir", str(cache), *options)


def unmount(binary, path):
    subprocess.run([binary, "unmount", str(path)], capture_output=True)


def latency(path, samples):
    """flock(LOCK_EX) + flock(LOCK_UN) on an open file, uncontended: seconds per pair."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(5):  # warm: the first acquire creates the lock object
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
            times.append(time.perf_counter() - started)
        return times
    finally:
        os.close(fd)


HANDOFF_WAITER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
print("waiting", flush=True)
fcntl.flock(fd, fcntl.LOCK_EX)
print(time.time(), flush=True)
fcntl.flock(fd, fcntl.LOCK_UN)
"""


def handoff(a, b, samples):
    """Seconds from LOCK_UN on A to the grant of a flock blocked on B, per sample."""
    times = []
    fd = os.open(a, os.O_RDONLY)
    try:
        for _ in range(samples):
            fcntl.flock(fd, fcntl.LOCK_EX)
            waiter = subprocess.Popen([sys.executable, "-c", HANDOFF_WAITER, str(b)], stdout=subprocess.PIPE, text=True)
            assert waiter.stdout.readline().strip() == "waiting"
            time.sleep(1.0)  # B is blocked in flock by now, and has waited as a real waiter would
            released = time.time()
            fcntl.flock(fd, fcntl.LOCK_UN)
            granted = float(waiter.stdout.readline())
            waiter.wait(timeout=30)
            times.append(granted - released)
    finally:
        os.close(fd)
    return times


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(len(ordered) * q)) - 1))]


def counter(a, b, rounds, workers=4):
    a.write_text("0\n")
    time.sleep(1.2)  # let B's cached attributes of the file expire
    step = 'n=$(cat "$0"); echo $((n + 1)) > "$0"'
    script = f'for i in $(seq {rounds}); do flock "$0" bash -c {step!r} "$0" || exit 1; done'
    started = time.perf_counter()
    procs = [subprocess.Popen(["bash", "-c", script, str(p)]) for p in [a] * workers + [b] * workers]
    ok = all(p.wait() == 0 for p in procs)
    elapsed = time.perf_counter() - started
    return int(a.read_text()), elapsed, ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=str(ROOT / ".build" / "release" / "bucketfs"))
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--handoffs", type=int, default=30)
    parser.add_argument("--s3-endpoint", help="another S3 server for the object strategy (SeaweedFS, …)")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bucketfs-lockbench-"))
    load_before = os.getloadavg()
    servers = Servers(work)
    scenarios = [
        ("file", "file://", []),
        ("redis", "file://", ["--redis-url", f"redis://127.0.0.1:{servers.redis_port}/0"]),
        ("object", "file://", []),
        ("object", "s3://", []),
    ]
    if args.s3_endpoint:
        import boto3
        client = boto3.client("s3", endpoint_url=args.s3_endpoint)
        try:
            client.create_bucket(Bucket="lockbench")
        except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            pass
        scenarios.append(("object", "external", ["--endpoint-url", args.s3_endpoint]))
    rows = []
    try:
        for index, (strategy, scheme, extra) in enumerate(scenarios):
            if scheme == "file://":
                (work / f"bucket{index}").mkdir()
                source = f"file://{work}/bucket{index}/"
            elif scheme == "external":
                source = f"s3://lockbench/run{index}-{os.getpid()}/"
            else:
                source = f"s3://locks/run{index}/"
            options = ["--lock-strategy", strategy, *extra]
            if strategy == "file":
                options += ["-o", f"file_lock_dir={work}/locks{index}"]
            a, b = work / f"a{index}", work / f"b{index}"
            mount(args.bin, source, a, work / f"ca{index}", options)
            mount(args.bin, source, b, work / f"cb{index}", options)
            try:
                (a / "latency").write_text("x")
                before = servers.moto_requests()
                times = latency(a / "latency", args.samples)
                trips = (servers.moto_requests() - before) / args.samples if scheme == "s3://" else None
                hands = handoff(a / "latency", b / "latency", args.handoffs)
                total, elapsed, ok = counter(a / "counter", b / "counter", args.rounds)
                expected = args.rounds * 8
                name = f"{strategy} on {args.s3_endpoint}" if scheme == "external" else f"{strategy} on {scheme}"
                rows.append((name, statistics.median(times) * 1000, pct(times, 0.99) * 1000, trips,
                             statistics.median(hands) * 1000, pct(hands, 0.99) * 1000, total, expected,
                             expected / elapsed, ok))
            finally:
                unmount(args.bin, a)
                unmount(args.bin, b)
    finally:
        servers.stop()
    print(f"\nflock acquire+release through the mount ({args.samples} samples, uncontended), hand-off from A's"
          f" LOCK_UN to the grant of B's blocked flock ({args.handoffs} samples), and the counter:"
          f" 4 processes on each of two mounts x {args.rounds} rounds\n")
    print("| strategy | p50 ms | p99 ms | store requests per acquire+release | hand-off p50 ms | hand-off p99 ms"
          " | counter | increments/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, p50, p99, trips, h50, h99, total, expected, rate, ok in rows:
        trips_text = f"{trips:.2f}" if trips is not None else "—"
        verdict = f"{total}/{expected}" + ("" if total == expected and ok else " LOST")
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {trips_text} | {h50:.1f} | {h99:.1f} | {verdict} | {rate:.1f} |")
    # Latencies on a shared machine depend on its load: say what it was (1/5/15-minute averages, and cores).
    load_after = os.getloadavg()
    print(f"\nload average: {' '.join(f'{x:.2f}' for x in load_before)} at the start,"
          f" {' '.join(f'{x:.2f}' for x in load_after)} at the end ({os.cpu_count()} cores)")
    lost = [r for r in rows if r[6] != r[7] or not r[9]]
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
