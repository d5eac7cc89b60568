"""The daemon's metrics, scraped by a real Prometheus (Debian's `prometheus`, loopback, temp dir) and checked
through its HTTP API after I/O through an s3:// mount on moto."""
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, Mount, run

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    def __init__(self, tmp_path, target):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: bucketfs
    static_configs:
      - targets: ["{target}"]
""")
        self.log = open(tmp_path / "prometheus.log", "w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.wait(lambda: urllib.request.urlopen(self.url + "/-/ready", timeout=1).status == 200, "ready")

    def wait(self, check, what, seconds=60):
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as error:  # not up yet, or no sample yet
                last = error
            assert self.process.poll() is None, "prometheus exited"
            time.sleep(0.2)
        raise AssertionError(f"prometheus: {what} not reached ({last})")

    def query(self, expression):
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        answer = json.load(urllib.request.urlopen(url, timeout=5))
        assert answer["status"] == "success", answer
        return {json.dumps({k: v for k, v in r["metric"].items() if k not in ("instance", "job")}, sort_keys=True):
                float(r["value"][1]) for r in answer["data"]["result"]}

    def value(self, expression):
        result = self.query(expression)
        assert len(result) == 1, (expression, result)
        return next(iter(result.values()))

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)


def test_prometheus_scrapes_fuse_store_and_file_system_metrics(moto, tmp_path):
    bucket = moto.new_bucket()
    cold = os.urandom(3 << 20)
    bucket.put("cold.bin", cold)
    bucket.put("small.txt", b"small\n")
    metrics_port = free_port()
    m = Mount(tmp_path, "metrics", bucket=bucket, options=["--metrics-addr", f"127.0.0.1:{metrics_port}",
                                                                # every lookup revalidates: small files by a GET
                                                                "-o", "metadata_ttl=0"])
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
    try:
        m.mount()
        written = os.urandom((3 << 20) + 12345)
        with open(m / "new.bin", "wb") as f:
            f.write(written)
        (m / "a.txt").write_text("hello")
        assert (m / "cold.bin").read_bytes() == cold
        assert {"a.txt", "cold.bin", "new.bin", "small.txt"} <= set(os.listdir(m.path))
        assert (m / "small.txt").read_bytes() == b"small\n"  # the lookup's GET, read by the open: a hit
        for _ in range(3):
            assert not (m / "missing").exists()
        sent = len(written) + len("hello")

        # Prometheus has scraped the state after the I/O once the put bytes show there.
        prometheus.wait(lambda: prometheus.value('bucketfs_store_bytes_total{op="put",direction="sent"}') == sent,
                        f"{sent} bytes sent by PUT")
        assert prometheus.value('bucketfs_store_operations_total{op="put"}') == 2
        received = prometheus.value('sum(bucketfs_store_bytes_total{direction="received"})')
        assert received >= len(cold) + len(b"small\n"), received
        writes = prometheus.value('bucketfs_fuse_operations_total{op="write"}')
        assert writes >= 4, writes  # 3 MiB + a bit in writes of at most 1 MiB
        assert prometheus.value('bucketfs_fuse_operation_duration_seconds_count{op="write"}') == writes
        assert prometheus.value('bucketfs_fuse_operations_total{op="create"}') == 2
        assert prometheus.value('bucketfs_fuse_errors_total{op="lookup",errno="ENOENT"}') >= 1
        assert prometheus.query('bucketfs_fuse_errors_total{op="write"}') == {}
        assert prometheus.value('bucketfs_store_operation_duration_seconds_count{op="put"}') == 2
        assert prometheus.value('bucketfs_store_retries_total') == 0
        assert prometheus.query('bucketfs_store_operation_errors_total') == {}
        assert prometheus.value('sum(bucketfs_read_ahead_total)') >= 1
        assert prometheus.value('bucketfs_small_content_cache_total{result="hit"}') >= 1
        assert prometheus.value('bucketfs_uploads_pending') == 0
        assert prometheus.value('bucketfs_uploads_queued') == 0
        assert prometheus.value('bucketfs_staging_bytes') == 0
        assert prometheus.value('bucketfs_recovery_items') == 0
        # Latency histograms answer quantile queries (what the dashboard plots).
        assert prometheus.query('histogram_quantile(0.9, sum by (le) (rate('
                                'bucketfs_fuse_operation_duration_seconds_bucket{op="write"}[1m])))') is not None
        # Every series the Grafana dashboard plots exists (conflicts, store errors and locks once they happen).
        names = set(json.load(urllib.request.urlopen(prometheus.url + "/api/v1/label/__name__/values"))["data"])
        dashboard = (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text()
        plotted = {n.removesuffix("_bucket") for n in re.findall(r"bucketfs_[a-z_]+", dashboard)}
        missing = {n for n in plotted - names if not n.startswith("bucketfs_lock")
                   and n not in ("bucketfs_conflicts_total", "bucketfs_store_operation_errors_total")}
        missing = {n for n in missing if n + "_bucket" not in names}
        assert not missing, missing
        m.unmount()
    finally:
        m.force_cleanup()
        prometheus.stop()
