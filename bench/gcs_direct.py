#!/usr/bin/env python3
"""Server-side ceiling for gs:// figures: the GCS JSON API of fake-gcs-server straight from one client, no FUSE.

Usage: gcs_direct.py ENDPOINT BUCKET [size_mib]
Prints "name value unit" lines like fsbench.sh. One keep-alive connection (http.client), as a daemon would use.
"""
import http.client
import json
import os
import random
import sys
import time
import urllib.parse

EP = sys.argv[1]
BUCKET = sys.argv[2]
SIZE_MIB = int(sys.argv[3]) if len(sys.argv) > 3 else 256
SRC = f"/tmp/fsbench-src-{SIZE_MIB}M"
P = f"direct-{os.getpid()}/"
HOST = urllib.parse.urlparse(EP).netloc
connection = http.client.HTTPConnection(HOST, timeout=600)


def call(method, path, body=None, headers=None, expect=(200,)):
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    if response.status not in expect:
        raise SystemExit(f"{method} {path}: HTTP {response.status} {data[:200]!r}")
    return data


def obj(key):
    return f"/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(key, safe='')}"


def put(key, data):
    name = urllib.parse.quote(key, safe="")
    return call("POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}", data,
                {"Content-Type": "application/octet-stream"})


def fig(name, value, unit):
    if isinstance(value, float):
        value = f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.4f}"
    print(name, value, unit, flush=True)


def timed(fn):
    t0 = time.monotonic()
    result = fn()
    return time.monotonic() - t0, result


def main():
    call("POST", "/storage/v1/b", json.dumps({"name": BUCKET}).encode(), {"Content-Type": "application/json"},
         expect=(200, 409))
    if os.path.getsize(SRC) != SIZE_MIB << 20:
        raise SystemExit(f"{SRC} missing/wrong size (run fsbench.sh once)")
    with open(SRC, "rb") as f:
        data = f.read()

    # One request each way, body in memory: the server and its HTTP stack only.
    dt, _ = timed(lambda: put(P + "big", data))
    fig(f"put_object_single_{SIZE_MIB}MiB", SIZE_MIB / dt, "MiB/s")
    dt, body = timed(lambda: call("GET", obj(P + "big") + "?alt=media"))
    assert body == data
    fig(f"get_object_single_{SIZE_MIB}MiB", SIZE_MIB / dt, "MiB/s")
    del body

    # What a streamed write costs bucketfs: 32 parts of 8 MiB uploaded 4 at a time (uploadType=multipart, as
    # bucketfs sends them), then one compose. fake-gcs-server's compose copies the bytes; GCS's does not.
    import concurrent.futures
    part = 8 << 20
    def upload_part(i):
        own = http.client.HTTPConnection(HOST, timeout=600)
        boundary = f"part{i}x{os.getpid()}"
        meta = json.dumps({"name": f"{P}part/{i:05d}"}).encode()
        body = (f"--{boundary}\r\ncontent-type: application/json\r\n\r\n".encode() + meta
                + f"\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n".encode()
                + data[i * part:(i + 1) * part] + f"\r\n--{boundary}--\r\n".encode())
        own.request("POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=multipart", body,
                    {"Content-Type": f"multipart/related; boundary={boundary}"})
        response = own.getresponse()
        response.read()
        assert response.status == 200, response.status
    parts = (SIZE_MIB << 20) // part
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        dt_parts, _ = timed(lambda: list(pool.map(upload_part, range(parts))))
    fig(f"upload_parts_8MiBx4threads_{SIZE_MIB}MiB", SIZE_MIB / dt_parts, "MiB/s")
    sources = [{"name": f"{P}part/{i:05d}"} for i in range(parts)]
    dt_compose = 0.0
    for start in range(0, parts, 32):
        dt, _ = timed(lambda: call("POST", obj(f"{P}composed-{start}") + "/compose",
                                   json.dumps({"sourceObjects": sources[start:start + 32], "destination": {}}).encode(),
                                   {"Content-Type": "application/json"}))
        dt_compose += dt
    fig(f"compose_{SIZE_MIB}MiB_of_8MiB_parts", dt_compose, "s")
    fig(f"streamed_write_ceiling_{SIZE_MIB}MiB", SIZE_MIB / (dt_parts + dt_compose), "MiB/s")
    for i in range(parts):
        call("DELETE", obj(f"{P}part/{i:05d}"), expect=(200, 204))
    for start in range(0, parts, 32):
        call("DELETE", obj(f"{P}composed-{start}"), expect=(200, 204))

    rnd = random.Random(1)
    n = 200
    t0 = time.monotonic()
    for _ in range(n):
        off = rnd.randrange(0, (SIZE_MIB << 20) // 4096) * 4096
        call("GET", obj(P + "big") + "?alt=media", headers={"Range": f"bytes={off}-{off + 4095}"}, expect=(206,))
    fig("ranged_get_4KiB_seq_client", n / (time.monotonic() - t0), "req/s")
    call("DELETE", obj(P + "big"), expect=(200, 204))
    del data

    # Small objects, one client: per-request cost of the server.
    small = os.urandom(4096)
    n = 1000
    dt, _ = timed(lambda: [put(f"{P}s/f{i:05d}", small) for i in range(n)])
    fig("put_4KiB_x1000_1thread", n / dt, "req/s")
    dt, _ = timed(lambda: [call("GET", obj(f"{P}s/f{i:05d}")) for i in range(n)])
    fig("metadata_get_x1000_1thread", n / dt, "req/s")
    dt, _ = timed(lambda: [call("GET", obj(f"{P}s/f{i:05d}") + "?alt=media") for i in range(n)])
    fig("get_4KiB_x1000_1thread", n / dt, "req/s")
    prefix = urllib.parse.quote(P + "s/", safe="")
    dt, listing = timed(lambda: call("GET", f"/storage/v1/b/{BUCKET}/o?prefix={prefix}&delimiter=/&maxResults=1000"))
    assert len(json.loads(listing).get("items", [])) == n
    fig("list_1000_keys_one_page", dt, "s")
    dt, _ = timed(lambda: [call("POST", obj(f"{P}s/f{i:05d}") + f"/rewriteTo/b/{BUCKET}/o/"
                                + urllib.parse.quote(f"{P}c/f{i:05d}", safe=""), b"{}",
                                {"Content-Type": "application/json"}) for i in range(100)])
    fig("rewrite_4KiB_x100_1thread", 100 / dt, "req/s")
    dt, _ = timed(lambda: [call("DELETE", obj(f"{P}s/f{i:05d}"), expect=(200, 204)) for i in range(n)])
    fig("delete_x1000_1thread", n / dt, "req/s")
    for i in range(100):
        call("DELETE", obj(f"{P}c/f{i:05d}"), expect=(200, 204))


if __name__ == "__main__":
    main()
