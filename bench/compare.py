#!/usr/bin/env python3
"""Table of the figures of one bench run, and bucketfs's ratio against each goal of the S3 issue.

Usage: compare.py RESULTS_DIR   (reads <target>.txt files of "name value unit" lines)
"""
import pathlib
import sys

TARGETS = ["bucketfs", "s3fs", "rclone-off", "moto-direct", "peak-rss", "bucketfs-gcs", "gcs-direct"]

# (label, bucketfs figure, peer target, peer figure, kind, goal): kind "higher" means bucketfs/peer ≥ goal,
# "lower" means bucketfs/peer ≤ goal (times), "max" means the bucketfs figure itself ≤ goal.
GOALS = [
    ("seq read 256 MiB cold vs one direct GET", "seq_read_256MiB_remount", "moto-direct", "get_object_single_256MiB", "higher", 0.8),
    ("seq read 256 MiB cold vs rclone", "seq_read_256MiB_remount", "rclone-off", "seq_read_256MiB_remount", "higher", 3.0),
    ("seq write 256 MiB until in bucket vs one direct PUT", "seq_write_256MiB_until_in_s3", "moto-direct", "put_object_single_256MiB", "higher", 0.8),
    ("seq write 256 MiB until in bucket vs s3fs", "seq_write_256MiB_until_in_s3", "s3fs", "seq_write_256MiB_until_in_s3", "higher", 2.0),
    ("ls -l 1000 files after remount vs one LIST page", "ls_l_1000_remount_cold", "moto-direct", "list_v2_1000_keys_one_page", "lower", 1.5),
    ("create 1000 x 4 KiB vs rclone", "create_1000x4KiB", "rclone-off", "create_1000x4KiB", "higher", 1.2),
    ("cat 1000 x 4 KiB cold vs rclone", "cat_1000x4KiB", "rclone-off", "cat_1000x4KiB", "higher", 1.0),
    ("rename dir of 100 files vs s3fs (time)", "rename_dir_100files", "s3fs", "rename_dir_100files", "lower", 0.5),
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
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and not line.startswith("#"):
                rows[parts[0]] = (parts[1], parts[2])
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
    goals = [(g, "bucketfs") for g in GOALS if data["bucketfs"] or data["peak-rss"]]
    goals += [(g, "bucketfs-gcs") for g in GCS_GOALS if data["bucketfs-gcs"]]
    for (label, mine, peer, peer_fig, kind, goal), target in goals:
        source = "peak-rss" if kind == "max" else target
        a = number(data[source].get(mine, (None,))[0])
        b = number(data[peer].get(peer_fig, (None,))[0]) if peer_fig else None
        if kind == "max":
            ok = a is not None and a <= goal
            print(f"| {label} | {a} | – | – | ≤ {goal} | {'yes' if ok else 'no'} |")
            continue
        ratio = a / b if a is not None and b else None
        ok = ratio is not None and (ratio >= goal if kind == "higher" else ratio <= goal)
        sign = "≥" if kind == "higher" else "≤"
        shown_ratio = f"{ratio:.2f}" if ratio is not None else "n/a"
        print(f"| {label} | {a} | {b} | {shown_ratio} | {sign} {goal} | {'yes' if ok else 'no'} |")


if __name__ == "__main__":
    main()
