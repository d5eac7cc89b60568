"""Where records live: a directory (a bucketfs mount, or any directory) or Redis, with the same keys
(`checkpoints/<thread>/<checkpoint>.json`…) as the Swift `Records` module.

Every backend offers: `read(key) -> bytes | None`, `create(key, data) -> bool` (only if absent),
`write(key, data)` (whole, last writer wins), `remove(key) -> bool`, `keys(prefix) -> sorted list`, and
`update(key, change) -> bytes | None`, an atomic read-modify-write: `change(old bytes or None)` returns the new
bytes (or None to leave it), and no concurrent update is lost.
"""
import errno
import fcntl
import os
import random
import time
import uuid


class DirectoryBackend:
    """Records as files under `root` (e.g. `/mnt/data/graphs/.bucketfs`): plain file I/O. Create is
    `O_CREAT|O_EXCL`; a whole write goes to a temp file renamed over the record (readers see old or new, never
    half); `update` holds `flock` on the record while it reads and rewrites it — on a bucketfs mount that lock
    is a cross-host lock, so updaters on several mounts exclude each other too."""

    def __init__(self, root):
        self.root = os.fspath(root).rstrip("/")

    def __repr__(self):
        return f"DirectoryBackend({self.root!r})"

    def _path(self, key):
        if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"not a record key: {key!r}")
        return os.path.join(self.root, key)

    def read(self, key):
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def create(self, key, data):
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)    # on a bucketfs mount the upload happens here; its failure raises
        return True

    def write(self, key, data):
        path = self._path(key)
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        temp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
        os.close(fd)
        os.rename(temp, path)

    def remove(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return False
        return True

    def keys(self, prefix=""):
        """Every record key under `prefix` (recursively), sorted; temp files are left out."""
        base, _, start = prefix.rpartition("/")
        top = os.path.join(self.root, base) if base else self.root
        found = []
        for directory, dirs, files in os.walk(top):
            rel = os.path.relpath(directory, self.root)
            rel = "" if rel == "." else rel + "/"
            for name in files:
                key = rel + name
                if name.startswith(".") or not key.startswith(prefix):
                    continue
                found.append(key)
        return sorted(found)

    def update(self, key, change, attempts=20):
        """`_update_once`, again when a bucketfs mount refuses the upload as stale (ESTALE: another mount wrote
        the record after this one's view of it was taken), after a pause that outlasts the mount's cache."""
        for attempt in range(attempts):
            try:
                return self._update_once(key, change)
            except OSError as error:
                if error.errno != errno.ESTALE or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)

    def _update_once(self, key, change):
        """Holds `flock(LOCK_EX)` on the record itself while it reads and rewrites it in place. On a bucketfs
        mount that lock is a cross-host lock whose grant revalidates the file, so the read sees the last
        writer's bytes on any mount; readers of such records use `read_locked` (a shared lock)."""
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Opened again once the lock is ours: an open after the other writer's close sees its version, and a
            # bucketfs upload is conditional on the version seen at open.
            fd = os.open(path, os.O_RDWR)
            try:
                new = change(_read_all(fd) or None)
                if new is not None:
                    os.ftruncate(fd, 0)
                    _write_all(fd, new, offset=0)
                    os.fsync(fd)
            finally:
                os.close(fd)    # on a mount the upload happens at fsync/close, under the lock
            return new
        finally:
            os.close(lock)    # releases the lock

    def read_locked(self, key):
        """`read` under a shared lock, for records changed by `update` (never half-written)."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return _read_all(fd) or None
        finally:
            os.close(fd)


def _read_all(fd):
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _write_all(fd, data, offset=None):
    view = memoryview(data)
    while view:
        if offset is None:
            view = view[os.write(fd, view):]
        else:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


class RedisBackend:
    """Records in Redis exactly as the Swift `RedisRecordBackend` keeps them: a hash `<namespace><key>` with
    fields `data` (the JSON), `version` (a fresh UUID per write) and `modified`; create and compare-and-swap are
    the same Lua scripts, so Swift and Python clients can share a database."""

    CREATE = """
        local current = redis.call('hget', KEYS[1], 'version')
        if current == ARGV[2] then return 1 end
        if current then return 0 end
        redis.call('hset', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'modified', ARGV[3])
        return 1
        """
    REPLACE = """
        local current = redis.call('hget', KEYS[1], 'version')
        if current == ARGV[2] then return 1 end
        if current ~= ARGV[4] then return 0 end
        redis.call('hset', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'modified', ARGV[3])
        return 1
        """

    def __init__(self, url="redis://127.0.0.1:6379/0", namespace="bucketfs:records:", client=None):
        if client is None:
            import redis
            plain, options = _redis_py_url(url)
            client = redis.Redis.from_url(plain, **options)
        self.client = client
        self.namespace = namespace

    def __repr__(self):
        return f"RedisBackend({self.namespace!r})"

    def read_versioned(self, key):
        data, version = self.client.hmget(self.namespace + key, "data", "version")
        return None if data is None or version is None else (bytes(data), version.decode())

    def read(self, key):
        found = self.read_versioned(key)
        return found and found[0]

    read_locked = read

    def create(self, key, data):
        return self.client.eval(self.CREATE, 1, self.namespace + key, data, str(uuid.uuid4()).upper(),
                                repr(time.time())) == 1

    def replace(self, key, data, version):
        return self.client.eval(self.REPLACE, 1, self.namespace + key, data, str(uuid.uuid4()).upper(),
                                repr(time.time()), version) == 1

    def write(self, key, data):
        self.client.hset(self.namespace + key, mapping={"data": data, "version": str(uuid.uuid4()).upper(),
                                                        "modified": repr(time.time())})

    def remove(self, key):
        return self.client.delete(self.namespace + key) == 1

    def keys(self, prefix=""):
        pattern = _glob_escaped(self.namespace + prefix) + "*"
        return sorted({k.decode()[len(self.namespace):] for k in self.client.scan_iter(match=pattern, count=1000)})

    def update(self, key, change, attempts=200):
        delay = 0.001
        for _ in range(attempts):
            found = self.read_versioned(key)
            new = change(found and found[0])
            if new is None:
                return None
            if (self.replace(key, new, found[1]) if found else self.create(key, new)):
                return new
            time.sleep(delay + random.random() * delay)
            delay = min(delay * 2, 0.05)
        raise RuntimeError(f"record {key} kept changing under concurrent updates; gave up")


def _glob_escaped(text):
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _redis_py_url(url):
    """bucketfs's `rediss://…?ca=FILE&cert=FILE&key=FILE` as redis-py's URL and keyword arguments, so one URL
    serves the daemon and this client; the server's certificate is verified as the daemon does."""
    import urllib.parse
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "rediss":
        return url, {}
    names = {"ca": "ssl_ca_certs", "cert": "ssl_certfile", "key": "ssl_keyfile"}
    query = urllib.parse.parse_qsl(parts.query)
    unknown = [k for k, _ in query if k not in names]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} in the Redis URL (known: ca, cert, key)")
    options = {names[k]: v for k, v in query}
    options["ssl_cert_reqs"] = "required"
    options["ssl_check_hostname"] = True
    return urllib.parse.urlunsplit(parts._replace(query="")), options
