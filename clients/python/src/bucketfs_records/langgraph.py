"""A LangGraph checkpointer whose state is bucketfs records: each checkpoint is
`checkpoints/<thread>/<checkpoint>.json` and its intermediate writes `<checkpoint>.writes.json`, with the
schemas of the Swift `Records` module, so `bucketfs checkpoints list|show`, `ls`, `cat` and `jq` read a graph's
state.

Values go through LangGraph's serde only where JSON cannot hold them. Every stored value is an envelope:
`{"json": <value>}` when the value is plain JSON (str, int, non-integral finite float, bool, None, lists and
str-keyed dicts of those), else `{"serde": "<type>", "base64": "<bytes>"}` with `serde.dumps_typed`'s type and
bytes. A checkpoint record's `data` holds `checkpoint` (the LangGraph checkpoint without its channel values),
`channel_values` (one envelope per channel), `checkpoint_ns`, `parent_checkpoint_id` and, when the metadata is
not plain JSON, `metadata_serde`; its `metadata` is LangGraph's metadata when that is plain JSON. Checkpoints of
a non-root namespace `ns` are stored under the id `<ns>#<checkpoint id>`.
"""
from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

from . import coding, keys
from .backends import DirectoryBackend
from .records import Records

_INT64 = 2 ** 63


def _plain(value) -> bool:
    """True when `value` survives the record JSON unchanged, types included."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf")) and not value.is_integer()
    if type(value) is list:
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


class BucketfsSaver(BaseCheckpointSaver[str]):
    """`BucketfsSaver("/mnt/data/graphs/.bucketfs")` or `BucketfsSaver(backend=RedisBackend(...))`.

    Through a bucketfs mount, use a folder of your own (the mount's root `.bucketfs/` is the daemon's read-only
    view): records in `MNT/graphs/.bucketfs/` are those of the source `s3://bucket/graphs/` for the CLI.
    Checkpoints are written whole (ids are unique); intermediate writes are merged under the backend's atomic
    update (`flock` on a directory, compare-and-swap on Redis), so writers on several mounts lose none.
    The async methods run the blocking file or Redis calls in a worker thread.
    """

    def __init__(self, root=None, *, backend=None, serde=None):
        super().__init__(serde=serde)
        if backend is None:
            if root is None:
                raise ValueError("BucketfsSaver needs a records directory or a backend")
            backend = DirectoryBackend(root)
        self.backend = backend
        self.records = Records(backend)

    # MARK: envelopes

    def _wrap(self, value):
        if _plain(value):
            return {"json": value}
        kind, data = self.serde.dumps_typed(value)
        return {"base64": base64.b64encode(data).decode("ascii"), "serde": kind}

    def _unwrap(self, envelope):
        if "json" in envelope:
            return envelope["json"]
        return self.serde.loads_typed((envelope["serde"], base64.b64decode(envelope["base64"])))

    @staticmethod
    def _record_id(ns, checkpoint_id):
        return checkpoint_id if not ns else f"{ns}#{checkpoint_id}"

    @staticmethod
    def _split_id(record_id):
        ns, sep, checkpoint_id = record_id.rpartition("#")
        return (ns, checkpoint_id) if sep else ("", record_id)

    # MARK: reading

    def _entries(self, thread_id):
        """(ns, checkpoint id, key) of every checkpoint of the thread."""
        out = []
        for key in self.backend.keys(keys.checkpoints(thread_id)):
            name = key.rsplit("/", 1)[1]
            if name.endswith(".json") and not name.endswith(".writes.json"):
                ns, checkpoint_id = self._split_id(keys.id_from_segment(name[:-5]))
                out.append((ns, checkpoint_id, key))
        return out

    def _tuple(self, thread_id, ns, checkpoint_id) -> CheckpointTuple | None:
        record = self.records.checkpoints.get(thread_id, self._record_id(ns, checkpoint_id))
        if record is None:
            return None
        data = record["data"]
        checkpoint = self._unwrap(data["checkpoint"])
        checkpoint["channel_values"] = {k: self._unwrap(v) for k, v in data["channel_values"].items()}
        metadata = self._unwrap(data["metadata_serde"]) if "metadata_serde" in data else record["metadata"]
        writes = self.records.checkpoints.get_writes(thread_id, self._record_id(ns, checkpoint_id))
        writes = sorted(writes, key=lambda w: writes_sort_key(w.get("task_path", ""), w["task_id"], w.get("idx", 0)))
        parent = data.get("parent_checkpoint_id")
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                            "checkpoint_id": parent}} if parent else None,
            pending_writes=[(w["task_id"], w["channel"], self._unwrap(w["value"])) for w in writes],
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            ids = [cid for n, cid, _ in self._entries(thread_id) if n == ns]
            if not ids:
                return None
            checkpoint_id = max(ids)
        return self._tuple(thread_id, ns, checkpoint_id)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        if config:
            threads = [config["configurable"]["thread_id"]]
        else:
            threads = self.records.checkpoints.threads()
        wanted_ns = config["configurable"].get("checkpoint_ns") if config else None
        wanted_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        for thread_id in threads:
            entries = self._entries(thread_id)
            for ns in sorted({n for n, _, _ in entries}):
                if wanted_ns is not None and ns != wanted_ns:
                    continue
                for checkpoint_id in sorted((c for n, c, _ in entries if n == ns), reverse=True):
                    if wanted_id and checkpoint_id != wanted_id:
                        continue
                    if before_id and checkpoint_id >= before_id:
                        continue
                    found = self._tuple(thread_id, ns, checkpoint_id)
                    if found is None:
                        continue
                    if filter and not all(found.metadata.get(k) == v for k, v in filter.items()):
                        continue
                    if limit is not None:
                        if limit <= 0:
                            return
                        limit -= 1
                    yield found

    # MARK: writing

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        stored = dict(checkpoint)
        values = stored.pop("channel_values", {}) or {}
        full_metadata = get_checkpoint_metadata(config, metadata)
        data = {"channel_values": {k: self._wrap(v) for k, v in values.items()},
                "checkpoint": self._wrap(stored), "checkpoint_ns": ns,
                "parent_checkpoint_id": config["configurable"].get("checkpoint_id")}
        if _plain(dict(full_metadata)):
            plain_metadata = dict(full_metadata)
        else:
            plain_metadata = {}
            data["metadata_serde"] = self._wrap(dict(full_metadata))
        try:
            created = coding.format_time(coding.parse_time(checkpoint["ts"]))
        except (KeyError, TypeError, ValueError):
            created = coding.now()
        self.records.checkpoints.store(thread_id, self._record_id(ns, checkpoint["id"]), data=data,
                                       metadata=dict(plain_metadata), created_at=created)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        record_id = self._record_id(ns, config["configurable"]["checkpoint_id"])
        new = [{"channel": channel, "idx": WRITES_IDX_MAP.get(channel, idx), "task_id": task_id,
                "task_path": task_path, "value": self._wrap(value)} for idx, (channel, value) in enumerate(writes)]

        def merge(current):
            index = {(w["task_id"], w.get("idx", 0)): n for n, w in enumerate(current)}
            for write in new:
                slot = index.get((write["task_id"], write["idx"]))
                if slot is None:
                    index[(write["task_id"], write["idx"])] = len(current)
                    current.append(write)
                elif write["idx"] < 0:
                    current[slot] = write    # special writes (errors, interrupts) replace; others are kept once
            return current

        self.records.checkpoints.update_writes(thread_id, record_id, merge)

    def delete_thread(self, thread_id: str) -> None:
        for key in self.backend.keys(keys.checkpoints(thread_id)):
            self.backend.remove(key)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        for key in self.backend.keys(keys.checkpoints(source_thread_id)):
            record = json.loads(self.backend.read(key) or b"null")
            if not isinstance(record, dict):
                continue
            record["thread_id"] = target_thread_id
            if isinstance(record.get("metadata"), dict) and "thread_id" in record["metadata"]:
                record["metadata"]["thread_id"] = target_thread_id
            name = key.rsplit("/", 1)[1]
            self.backend.write(keys.checkpoints(target_thread_id) + name, coding.encode(record))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = set(run_ids)
        if not runs:
            return
        for thread_id in self.records.checkpoints.threads():
            for ns, checkpoint_id, _ in self._entries(thread_id):
                found = self._tuple(thread_id, ns, checkpoint_id)
                if found is not None and found.metadata.get("run_id") in runs:
                    self._delete_checkpoint(thread_id, ns, checkpoint_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            entries = self._entries(thread_id)
            for ns in {n for n, _, _ in entries}:
                ids = sorted(c for n, c, _ in entries if n == ns)
                for checkpoint_id in ids[:-1]:
                    self._delete_checkpoint(thread_id, ns, checkpoint_id)

    def _delete_checkpoint(self, thread_id, ns, checkpoint_id):
        record_id = self._record_id(ns, checkpoint_id)
        self.backend.remove(keys.checkpoint(thread_id, record_id))
        self.backend.remove(keys.writes(thread_id, record_id))

    def get_next_version(self, current: str | None, channel: None) -> str:
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # MARK: async: the same calls in a worker thread, so the event loop never waits on file or Redis I/O

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
