#!/usr/bin/env python3
"""Table of the figures of one bench run, and bucketfs's ratio against each goal of issue 13 (same-run ratios).

Usage: compare.py RESULTS_DIR   (reads <target>.txt files of "name value unit" lines)
"""
import pathlib
import sys

TARGETS = ["bucketfs", "s3fs", "rclone-off", "moto-direct", "peak-rss", "bucketfs-gcs", "gcs-direct", "create8", "cold-read"]

# (label, bucketfs figure, peer target, peer figure, kind, goal): kind "higher" means bucketfs/peer ≥ goal,
# "lower" means bucketfs/peer ≤ goal (times), "max" means the bucketfs figure itself ≤ goal.
# Issue 13's goals. A peer figure given as a tuple takes the best (largest) of them: "the best direct download".
# A bucketfs figure given as (target, figure) is read from that target's file (create8.txt holds both mounts').
BEST_GET = ("get_object_single_256MiB", "download_file_ranged_8MiBx10threads_256MiB")
BEST_PUT = ("put_object_single_256MiB", "upload_file_multipart_8MiBx10threads_256MiB")
GOALS = [
    ("seq read 256 MiB cold vs best direct download", "seq_read_256MiB", "moto-direct", BEST_GET, "higher", 1.0),
    ("seq read 256 MiB after remount vs best direct download", "seq_read_256MiB_remount", "moto-direct", BEST_GET, "higher", 1.0),
    ("seq read 256 MiB cold vs s3fs", "seq_read_256MiB", "s3fs", "seq_read_256MiB", "higher", 1.5),
    ("seq read 256 MiB after remount vs s3fs", "seq_read_256MiB_remount", "s3fs", "seq_read_256MiB_remount", "higher", 1.5),
    ("seq read 256 MiB cold, object put by boto3, vs best direct download also cold", ("cold-read", "bucketfs_seq_read_foreign_cold_256MiB"), "cold-read", ("direct_get_cold_256MiB", "direct_ranged_cold_256MiB"), "higher", 1.0),
    ("seq read 256 MiB cold, object put by boto3, vs s3fs", ("cold-read", "bucketfs_seq_read_foreign_cold_256MiB"), "cold-read", "s3fs_seq_read_foreign_cold_256MiB", "higher", 1.5),
    ("seq write 256 MiB until in bucket vs best direct upload", "seq_write_256MiB_until_in_s3", "moto-direct", BEST_PUT, "higher", 0.9),
    ("seq write 256 MiB until in bucket vs s3fs", "seq_write_256MiB_until_in_s3", "s3fs", "seq_write_256MiB_until_in_s3", "higher", 1.5),
    ("create 1000 x 4 KiB (files/s) vs direct 1-thread PUT/s", "create_1000x4KiB", "moto-direct", "put_4KiB_x1000_1thread", "higher", 0.9),
    ("create 1000 x 4 KiB, 8 writers (files/s) vs direct 8-thread PUT/s", ("create8", "bucketfs_create_1000x4KiB_8writers"), "moto-direct", "put_4KiB_x1000_8threads", "higher", 0.8),
    ("cat 1000 x 4 KiB cold (files/s) vs direct 1-thread GET/s", "cat_1000x4KiB", "moto-direct", "get_4KiB_x1000_1thread", "higher", 0.9),
    ("rename dir of 100 files vs s3fs (time)", "rename_dir_100files", "s3fs", "rename_dir_100files", "lower", 0.5),
    ("rm -rf 1000 files vs s3fs (time)", "rm_rf_1000", "s3fs", "rm_rf_1000", "lower", 1.0),
    ("fio 4 KiB randread after a full read (IOPS)", "fio_randread_4k_qd1_buffered", "bucketfs", None, "min", 100000),
    ("fio 4 KiB randread O_DIRECT vs rclone", "fio_randread_4k_qd1_direct", "rclone-off", "fio_randread_4k_qd1_direct", "higher", 2.0),
    ("ls -l 1000 files after remount vs one LIST page", "ls_l_1000_remount_cold", "moto-direct", "list_v2_1000_keys_one_page", "lower", 2.0),
    ("peak RSS, 4 writers + 4 readers of 256 MiB (MiB)", "peak_rss_4w4r_256MiB", "peak-rss", None, "max", 256),
]

# gs:// (issue 6): bucketfs on fake-gcs-server against the same server driven directly (gcs_direct.py).
# bucketfs uploads before close() returns, so its write figure is also the time until the object is in the bucket.
GCS_GOALS = [
    ("gs: seq read 256 MiB cold vs one direct GET", "seq_read_256MiB_remount", "gcs-direct", "get_object_single_256MiB", "higher", 0.8),
    ("gs: seq write 256 MiB (in bucket at close) vs one direct upload", "seq_write_256MiB", "gcs-direct", "put_object_single_256MiB", "higher", 0.8),
    ("gs: seq write 256 MiB vs the same parts + compose, direct", "seq_write_256MiB", "gcs-direct", "streamed_write_ceiling_256MiB", "higher", 0.8),
    ("gs: ls -l 1000 files after remount vs one list page", "ls_l_1000_remount_cold", "gcs-direct", "list_1000_keys_one_page", "lower", 1.5),
    ("gs: create 1000 x 4 KiB (files/s) vs direct uploads (req/s)", "create_1000x4KiB", "gcs-direct", "put_4KiB_x1000_1thread", "higher", 0.5),
    ("gs: cat 1000 x 4 KiB cold (files/s) vs direct GETs (req/s)", "cat_1000x4KiB", "gcs-direct", "get_4KiB_x1000_1thread", "higher", 0.5),
]


def load(path):
    """name -> (value, unit); a name given once per round (cold-read.txt) -> the mean of its numeric values."""
    rows, repeated = {}, {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and not line.startswith("#"):
                rows[parts[0]] = (parts[1], parts[2])
                if number(parts[1]) is not None:
                    repeated.setdefault(parts[0], []).append(number(parts[1]))
    for name, values in repeated.items():
        if len(values) > 1:
            rows[name] = (f"{sum(values) / len(values):.1f}", rows[name][1])
    return rows


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def main():
    res = pathlib.Path(sys.argv[1])
    data = {t: load(res / f"{t}.txt") for t in TARGETS}
    figures = []
    for t in ["bucketfs", "s3fs", "rclone-off", "bucketfs-gcs"]:
        figures += [k for k in data[t] if k not in figures]
    shown = [t for t in ["bucketfs", "s3fs", "rclone-off", "bucketfs-gcs"] if data[t]]
    print("| figure | unit | " + " | ".join(shown) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in shown) + " |")
    for k in figures:
        unit = next((data[t][k][1] for t in shown if k in data[t]), "")
        print(f"| {k} | {unit} | " + " | ".join(data[t].get(k, ("–",))[0] for t in shown) + " |")

    print("\n| goal | bucketfs | peer | ratio | target | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    goals = [(g, "bucketfs") for g in GOALS if data["bucketfs"] or data["peak-rss"] or data["create8"] or data["cold-read"]]
    goals += [(g, "bucketfs-gcs") for g in GCS_GOALS if data["bucketfs-gcs"]]
    for (label, mine, peer, peer_fig, kind, goal), target in goals:
        source = peer if kind in ("max", "min") else target
        if isinstance(mine, tuple):
            source, mine = mine
        a = number(data[source].get(mine, (None,))[0])
        if isinstance(peer_fig, tuple):
            found = [number(data[peer].get(f, (None,))[0]) for f in peer_fig]
            b = max((v for v in found if v is not None), default=None)
        else:
            b = number(data[peer].get(peer_fig, (None,))[0]) if peer_fig else None
        if kind in ("max", "min"):
            if a is None and source == "peak-rss" and not data[source]:
                continue
            ok = a is not None and (a <= goal if kind == "max" else a >= goal)
            print(f"| {label} | {a} | – | – | {'≤' if kind == 'max' else '≥'} {goal} | {'yes' if ok else 'no'} |")
            continue
        ratio = a / b if a is not None and b else None
        ok = ratio is not None and (ratio >= goal if kind == "higher" else ratio <= goal)
        sign = "≥" if kind == "higher" else "≤"
        shown_ratio = f"{ratio:.2f}" if ratio is not None else "n/a"
        print(f"| {label} | {a} | {b} | {shown_ratio} | {sign} {goal} | {'yes' if ok else 'no'} |")
    if data["cold-read"]:
        print("\nCold read of another tool's object (cold-read.txt, means over rounds): "
              + ", ".join(f"{k} {v[0]} {v[1]}" for k, v in data["cold-read"].items()))
    if data["create8"]:
        print("\n8-writer create (create8.txt): " + ", ".join(f"{k} {v[0]} {v[1]}" for k, v in data["create8"].items()))
    print("\nNot measured by fsbench.sh (create with 8 writers: target create8), ls/find of 100,000 objects (time, RSS), "
          "daemon CPU seconds per GiB.")


if __name__ == "__main__":
    main()
