"""The daemon's metrics, scraped by a real Prometheus (Debian's `prometheus`, loopback, temp dir) and checked
through its HTTP API after I/O through an s3:// mount on moto."""
import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from conftest import Mount
from servers import PrometheusServer, free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")


def test_prometheus_scrapes_fuse_store_and_file_system_metrics(moto, tmp_path):
    bucket = moto.new_bucket()
    cold = os.urandom(3 << 20)
    bucket.put("cold.bin", cold)
    bucket.put("small.txt", b"small\n")
    metrics_port = free_port()
    m = Mount(tmp_path, "metrics", bucket=bucket, options=["--metrics-addr", f"127.0.0.1:{metrics_port}",
                                                                # every lookup revalidates: small files by a GET
                                                                "-o", "metadata_ttl=0"])
    prometheus = PrometheusServer(PROMETHEUS, tmp_path, f"127.0.0.1:{metrics_port}")
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
        prometheus.wait_until(lambda: prometheus.value('bucketfs_store_bytes_total{op="put",direction="sent"}') == sent,
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
