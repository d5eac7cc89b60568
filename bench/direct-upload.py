#!/usr/bin/env python3
"""bench/direct-upload.py — direct uploads of one file to an S3 server, several ways, alternated round by round,
each with the server's CPU seconds for it (/proc/PID/stat): what a server costs per byte for one PUT against a
multipart upload, and whether part size, parts in flight or part checksums change that.

    bench/direct-upload.py URL FILE ROUNDS SERVER_PID put,8x4,8x4c,16x4

Variants: `put` (one put_object), `PxT` (multipart upload of P MiB parts, T at once), `PxTc` (the same declared
CRC32C, each part with its x-amz-checksum-crc32c, listed at completion, as bucketfs streams them; the CRC comes from
Sources/CCRC32C, compiled on first use with cc). Payload hashes as boto3 sends them over http (signed).
Prints "round N variant MiB/s server_cpu S load L".
"""
import base64
import concurrent.futures
import ctypes
import os
import struct
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.config

BUCKET = "direct-upload"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crc32c_function():
    library = os.path.join(tempfile.gettempdir(), "bucketfs-bench-crc32c.so")
    if not os.path.exists(library):
        source = os.path.join(ROOT, "Sources", "CCRC32C")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I", os.path.join(source, "include"),
                        os.path.join(source, "crc32c.c"), "-o", library], check=True)
    lib = ctypes.CDLL(library)
    lib.bucketfs_crc32c.restype = ctypes.c_uint32
    lib.bucketfs_crc32c.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
    return lambda data: base64.b64encode(struct.pack(">I", lib.bucketfs_crc32c(0, data, len(data)))).decode()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    url, path, rounds, server, variants = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    data = open(path, "rb").read()
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test",
                      config=botocore.config.Config(max_pool_connections=16,
                                                    request_checksum_calculation="when_required"))
    try:
        s3.create_bucket(Bucket=BUCKET)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass
    crc = crc32c_function() if any(v.endswith("c") for v in variants.split(",")) else None

    def multipart(key, part, threads, checksums):
        extra = {"ChecksumAlgorithm": "CRC32C"} if checksums else {}
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)["UploadId"]
        offsets = list(range(0, len(data), part))

        def send(index):
            body = data[offsets[index]:offsets[index] + part]
            checksum = {"ChecksumCRC32C": crc(body)} if checksums else {}
            etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=index + 1, Body=body,
                                  **checksum)["ETag"]
            return dict(PartNumber=index + 1, ETag=etag, **checksum)

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(send, range(len(offsets))))
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})

    for round_ in range(1, rounds + 1):
        for variant in variants.split(","):
            before, start = cpu_seconds(server), time.monotonic()
            if variant == "put":
                s3.put_object(Bucket=BUCKET, Key=f"put-{round_}", Body=data)
            else:
                part, threads = map(int, variant.rstrip("c").split("x"))
                multipart(f"{variant}-{round_}", part << 20, threads, variant.endswith("c"))
            seconds = time.monotonic() - start
            load = open("/proc/loadavg").read().split()[0]
            print(f"round {round_} {variant} {len(data) / 1048576 / seconds:.1f} MiB/s "
                  f"server_cpu {cpu_seconds(server) - before:.2f} load {load}", flush=True)


if __name__ == "__main__":
    main()
