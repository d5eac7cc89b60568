"""The lock metrics a mount serves (--metrics-addr), and a lease reported lost when its Redis goes away."""
import socket

from conftest import BIN, Mount, run
from lockholder import hold, wait_for
from servers import RedisServer, free_port


def scrape(port):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_endpoint_counts_lock_traffic(tmp_path):
    port = free_port()
    m = Mount(tmp_path, "metrics", options=["--metrics-addr", f"127.0.0.1:{port}"])
    try:
        m.mount()
        (m / "f").write_text("x")
        run("flock", "-n", str(m / "f"), "true")
        holder = hold(m / "f")
        try:
            assert run("flock", "-n", str(m / "f"), "true", check=False).returncode == 1
            values = scrape(port)
            assert values['bucketfs_locks_held{strategy="object"}'] == 1
        finally:
            holder.kill()
            holder.wait()
        assert wait_for(lambda: scrape(port)['bucketfs_lock_released_total{strategy="object"}'] == 2, 5)
        values = scrape(port)
        assert values['bucketfs_locks_held{strategy="object"}'] == 0
        assert values['bucketfs_lock_acquired_total{strategy="object"}'] == 2
        # The refused flock -n never reached the strategy: the mount itself held the file.
        assert values['bucketfs_lock_acquire_seconds_count{strategy="object"}'] == 2
        assert values['bucketfs_lock_hold_seconds_count{strategy="object"}'] == 2
    finally:
        m.force_cleanup()


def test_metrics_address_in_use_fails_the_mount(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        m = Mount(tmp_path, "busy", options=["--metrics-addr", f"127.0.0.1:{busy.getsockname()[1]}"])
        result = run(BIN, "mount", m.source, str(m.path), "--cache-dir", str(m.cache), *m.options, check=False)
        m.force_cleanup()
    assert result.returncode != 0
    assert "cannot serve metrics" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_redis_stopped_means_the_lease_is_reported_lost(tmp_path):
    server = RedisServer(tmp_path)
    port = free_port()
    m = Mount(tmp_path, "lost", options=["--lock-strategy", "redis", "--redis-url", server.url,
                                         "--lock-lease-seconds", "3", "--metrics-addr", f"127.0.0.1:{port}"])
    try:
        m.mount()
        (m / "f").write_text("x")
        holder = hold(m / "f")
        server.stop()
        assert wait_for(lambda: scrape(port).get('bucketfs_lock_lost_total{strategy="redis"}') == 1, 15)
        log = next((m.cache / "logs").iterdir()).read_text()
        assert "lock lost" in log and "f" in log
        holder.kill()
    finally:
        server.stop()
        m.force_cleanup()
