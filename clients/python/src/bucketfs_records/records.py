"""Typed access to the record kinds, with the JSON schemas of the Swift `Records` module (docs/RECORDS.md)."""
import json

from . import coding, keys


def _load(data, key):
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as error:
        raise ValueError(f"corrupt record {key}: {error}") from None


class Checkpoints:
    def __init__(self, backend):
        self.backend = backend

    def store(self, thread, checkpoint_id, data=None, metadata=None, created_at=None):
        """Stores (or replaces) a checkpoint; returns the record."""
        keys.validate(thread, "thread id")
        keys.validate(checkpoint_id, "checkpoint id")
        record = {"checkpoint_id": checkpoint_id, "created_at": created_at or coding.now(), "data": data,
                  "metadata": metadata or {}, "schema_version": coding.SCHEMA_VERSION, "thread_id": thread}
        key, data = keys.checkpoint(thread, checkpoint_id), coding.encode(record)
        # A new id (the usual case) is one exclusive create; an existing one is replaced whole.
        if not self.backend.create(key, data):
            self.backend.write(key, data)
        return record

    def get(self, thread, checkpoint_id=None):
        """The checkpoint, or the thread's latest without an id; None if there is none."""
        if checkpoint_id is None:
            latest = self.list(thread, limit=1)
            return latest[0] if latest else None
        key = keys.checkpoint(thread, checkpoint_id)
        return _load(self.backend.read(key), key)

    def list(self, thread, limit=10):
        """Newest first (by `created_at`, then id), as the Swift CheckpointStore lists them."""
        found = []
        for key in self.backend.keys(keys.checkpoints(thread)):
            if key.endswith(".json") and not key.endswith(".writes.json"):
                record = _load(self.backend.read(key), key)
                if record is not None:
                    found.append(record)
        found.sort(key=lambda r: (coding.parse_time(r["created_at"]), r["checkpoint_id"]), reverse=True)
        return found[:max(limit, 0)]

    def threads(self):
        segments = {k[len("checkpoints/"):].split("/")[0] for k in self.backend.keys("checkpoints/")}
        return sorted(keys.id_from_segment(s) for s in segments)

    def put_writes(self, thread, checkpoint_id, task_id, writes):
        """Appends `(channel, value)` pairs of `task_id` to the checkpoint's intermediate writes, atomically."""
        entries = [{"channel": channel, "task_id": task_id, "value": value} for channel, value in writes]
        self.update_writes(thread, checkpoint_id, lambda current: current + entries)

    def update_writes(self, thread, checkpoint_id, change):
        """Atomic change of the writes list (`change(list) -> list`); the record is created when absent."""
        key = keys.writes(thread, checkpoint_id)

        def apply(old):
            record = _load(old, key) or {"checkpoint_id": checkpoint_id, "schema_version": coding.SCHEMA_VERSION,
                                         "thread_id": thread, "writes": []}
            record["writes"] = change(record["writes"])
            record["updated_at"] = coding.now()
            return coding.encode(record)

        self.backend.update(key, apply)

    def get_writes(self, thread, checkpoint_id):
        key = keys.writes(thread, checkpoint_id)
        record = _load(self.backend.read_locked(key), key)
        return record["writes"] if record else []


class Events:
    """Append-only event logs, `events/<stream>/<seq>.json` (Swift: EventLog)."""

    def __init__(self, backend):
        self.backend = backend

    def append(self, stream, type, data=None):
        keys.validate(stream, "event stream")
        existing = self.backend.keys(keys.events(stream))
        sequence = max((int(k.rsplit("/", 1)[1][:-5]) for k in existing if k.endswith(".json")), default=-1) + 1
        for _ in range(1000):
            record = {"data": data or {}, "schema_version": coding.SCHEMA_VERSION, "sequence": sequence,
                      "stream": stream, "timestamp": coding.now(), "type": type}
            if self.backend.create(keys.event(stream, sequence), coding.encode(record)):
                return record
            sequence += 1
        raise RuntimeError(f"could not append to {stream}")

    def read(self, stream, start=0, limit=None):
        out = []
        for key in self.backend.keys(keys.events(stream)):
            name = key.rsplit("/", 1)[1]
            if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) >= start:
                record = _load(self.backend.read(key), key)
                if record is not None:
                    out.append(record)
        out.sort(key=lambda r: r["sequence"])
        return out if limit is None else out[:limit]

    def streams(self):
        return sorted({keys.id_from_segment(k[len("events/"):].split("/")[0]) for k in self.backend.keys("events/")})


class Sessions:
    def __init__(self, backend):
        self.backend = backend

    def get(self, session_id):
        key = keys.session(session_id)
        return _load(self.backend.read(key), key)

    def list(self):
        found = [_load(self.backend.read(k), k) for k in self.backend.keys("sessions/") if k.endswith(".json")]
        return sorted((r for r in found if r), key=lambda r: (r["created_at"], r["session_id"]))


class Records:
    """Every record kind over one backend."""

    def __init__(self, backend):
        self.backend = backend
        self.checkpoints = Checkpoints(backend)
        self.events = Events(backend)
        self.sessions = Sessions(backend)
