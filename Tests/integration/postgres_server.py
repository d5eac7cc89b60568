"""A throwaway PostgreSQL server (Debian's `postgresql`) on a free loopback port, for the records tests.

`initdb` into a temp dir, then `postgres` with password (SCRAM) authentication. PostgreSQL refuses to run as
root, so as root both run as the `postgres` user (`runuser`). Databases are created with `psql`.
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

USER = "bucketfs"
PASSWORD = "pg-test-pw"


def bin_directory():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    def __init__(self):
        self.bin = bin_directory()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.directory = tempfile.mkdtemp(prefix="bucketfs-pg-")
        with open(os.path.join(self.directory, "pw"), "w") as f:
            f.write(PASSWORD)
        self.as_postgres = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in [self.directory, os.path.join(self.directory, "pw")]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.data = os.path.join(self.directory, "data")
        subprocess.run(self.as_postgres + [f"{self.bin}/initdb", "-D", self.data, "-U", USER,
                                           f"--pwfile={self.directory}/pw", "-A", "scram-sha-256", "-E", "UTF8",
                                           "--locale=C", "--no-sync"], check=True, capture_output=True)
        self.log = open(os.path.join(self.directory, "log"), "w")
        self.process = subprocess.Popen(
            self.as_postgres + [f"{self.bin}/postgres", "-D", self.data, "-p", str(self.port), "-k", self.directory,
                                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                                "-c", "full_page_writes=off"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while self.psql("postgres", "SELECT 1", check=False).returncode != 0:
            if self.process.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start on port {self.port}")
            time.sleep(0.1)
        self.databases = 0

    def url(self, database, password=True):
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgres://{auth}@127.0.0.1:{self.port}/{database}"

    def psql(self, database, sql, check=True):
        return subprocess.run([f"{self.bin}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)],
                              capture_output=True, text=True, check=check)

    def new_database(self):
        """A fresh database; returns its name."""
        self.databases += 1
        name = f"records_{self.databases}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name

    def stop(self):
        # SIGINT is PostgreSQL's fast shutdown; the postmaster's pid is the first line of postmaster.pid.
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGINT)
        except (OSError, ValueError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)
