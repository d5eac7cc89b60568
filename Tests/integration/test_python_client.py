"""The Python client (clients/python, `bucketfs_records`) and its LangGraph checkpointer: LangGraph's own
conformance suite (langgraph-checkpoint-conformance) over a plain directory and over a real bucketfs mount of
s3:// (moto); records shared byte for byte with the Swift library and the CLI; two mounts writing one thread."""
import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import BIN, FileBucket, run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "clients/python/src"))    # the package as checked out (also pip-installable)

conformance = pytest.importorskip("langgraph.checkpoint.conformance")
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, EXTENDED_CAPABILITIES  # noqa: E402

from bucketfs_records import DirectoryBackend, RedisBackend, Records, coding  # noqa: E402
from bucketfs_records.langgraph import BucketfsSaver  # noqa: E402


def run_conformance(root):
    """Runs every capability suite, each on a fresh saver under `root`; returns {capability: result}."""
    counter = [0]

    @conformance.checkpointer_test(name="BucketfsSaver")
    async def factory():
        counter[0] += 1
        yield BucketfsSaver(os.path.join(root, f"suite{counter[0]}", ".bucketfs"))

    report = asyncio.run(conformance.validate(factory))
    failures = {name: r.failures for name, r in report.results.items() if r.passed is False}
    assert not failures, failures
    for capability in BASE_CAPABILITIES:
        result = report.results[capability.value]
        assert result.detected and result.passed and result.tests_passed > 0, (capability, result)
    extended = sorted(c.value for c in EXTENDED_CAPABILITIES if report.results[c.value].passed)
    print(f"extended capabilities passed: {extended}")
    return report.results


def test_conformance_on_a_plain_directory(tmp_path):
    results = run_conformance(str(tmp_path))
    assert sorted(n for n, r in results.items() if r.passed) == sorted(
        c.value for c in BASE_CAPABILITIES | EXTENDED_CAPABILITIES)


def test_conformance_through_an_s3_mount(make_mount, backend):
    if backend != "s3":
        pytest.skip("the conformance suite runs through a mount of s3:// (moto)")
    m = make_mount()
    m.mount()
    (m / "graphs").mkdir()
    results = run_conformance(str(m / "graphs"))
    assert all(r.passed for r in results.values()), results
    # The records are objects in the bucket, under graphs/<suite>/.bucketfs/checkpoints/.
    assert any(k.startswith("graphs/suite1/.bucketfs/checkpoints/") and k.endswith(".json")
               for k in m.bucket.all_keys())


INSTALLED_USE = textwrap.dedent("""
    import sys
    import bucketfs_records
    from bucketfs_records import DirectoryBackend, Records
    from bucketfs_records.langgraph import BucketfsSaver  # noqa: F401 (importable as installed)
    Records(DirectoryBackend(sys.argv[1])).checkpoints.store("installed", "c1", data={"from": "pip"})
    print(bucketfs_records.__file__)
""")


def test_pip_installs_the_package_pure_python_and_it_works_as_installed(tmp_path):
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                os.path.join(ROOT, "clients/python")], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    wheel = (next(target.glob("bucketfs_records-*.dist-info")) / "WHEEL").read_text()
    assert "Root-Is-Purelib: true" in wheel and "Tag: py3-none-any" in wheel, wheel
    files = [p for p in target.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert not [p for p in files if p.suffix in (".so", ".c", ".pyd")], files
    assert sorted(p.name for p in (target / "bucketfs_records").glob("*.py")) == sorted(
        n for n in os.listdir(os.path.join(ROOT, "clients/python/src/bucketfs_records")) if n.endswith(".py"))
    bucket = FileBucket(tmp_path / "bucket")
    env = dict(os.environ, PYTHONPATH=str(target))
    used = subprocess.run([sys.executable, "-c", INSTALLED_USE, str(bucket.directory / ".bucketfs")], env=env,
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip().startswith(str(target)), "imported from the installed copy"
    shown = run(BIN, "checkpoints", "show", bucket.url, "installed", "c1").stdout.encode()
    assert shown == bucket.get(".bucketfs/checkpoints/installed/c1.json")
    assert json.loads(shown)["data"] == {"from": "pip"}


def put_langgraph_checkpoint(saver, thread, step, parent=None):
    from langgraph.checkpoint.base import empty_checkpoint
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": ["hi", {"role": "user"}], "count": step, "blob": b"\x00\x01"}
    checkpoint["channel_versions"] = {"messages": saver.get_next_version(None, None)}
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    if parent:
        config["configurable"]["checkpoint_id"] = parent
    return saver.put(config, checkpoint, {"source": "loop", "step": step}, {})


def test_checkpoint_written_by_python_is_listed_and_shown_by_the_cli(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    saver = BucketfsSaver(bucket.directory / ".bucketfs")
    first = put_langgraph_checkpoint(saver, "thread/1", 1)
    second = put_langgraph_checkpoint(saver, "thread/1", 2, parent=first["configurable"]["checkpoint_id"])
    saver.put_writes(second, [("messages", "next"), ("count", 3)], task_id="task-a")
    assert run(BIN, "checkpoints", "list", bucket.url).stdout.splitlines() == ["thread/1"]
    listed = [line.split("\t")[0] for line in run(BIN, "checkpoints", "list", bucket.url, "thread/1").stdout.splitlines()]
    assert listed == [second["configurable"]["checkpoint_id"], first["configurable"]["checkpoint_id"]]
    shown = run(BIN, "checkpoints", "show", bucket.url, "thread/1").stdout.encode()
    stored = bucket.get(f".bucketfs/checkpoints/thread%2F1/{listed[0]}.json")
    assert shown == stored, "Swift re-encodes the record Python wrote byte for byte"
    record = json.loads(stored)
    assert record["data"]["channel_values"]["messages"] == {"json": ["hi", {"role": "user"}]}
    assert record["data"]["channel_values"]["blob"]["serde"] == "bytes"
    assert record["metadata"]["step"] == 2 and record["data"]["parent_checkpoint_id"] == listed[1]
    got = saver.get_tuple({"configurable": {"thread_id": "thread/1"}})
    assert got.checkpoint["channel_values"]["blob"] == b"\x00\x01"
    assert got.pending_writes == [("task-a", "messages", "next"), ("task-a", "count", 3)]


def test_checkpoint_written_by_swift_is_read_by_python_byte_for_byte(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    data = json.dumps({"plan": ["a", "b/c"], "done": False, "score": 0.25, "n": 100, "empty": {}, "none": [],
                       "text": "é\t\"q\"\u0001\\"})
    printed = run(BIN, "checkpoints", "put", bucket.url, "t 1", "cp1", "--data", data,
                  "--metadata", '{"by": "swift"}').stdout.encode()
    stored = bucket.get(".bucketfs/checkpoints/t%201/cp1.json")
    assert printed == stored
    record = Records(DirectoryBackend(bucket.directory / ".bucketfs")).checkpoints.get("t 1")
    assert record["data"] == json.loads(data) and record["metadata"] == {"by": "swift"}
    assert coding.encode(record) == stored, "Python writes the same bytes Swift wrote"


def test_events_appended_by_python_are_read_by_the_cli_and_a_mounts_events_by_python(make_mount, backend):
    if backend != "file":
        pytest.skip("events are records: the same on every store")
    m = make_mount()
    events = Records(DirectoryBackend(m.bucket.directory / ".bucketfs")).events
    for n, kind in enumerate(["started", "step", "step", "done"]):
        assert events.append("job/7", kind, {"n": n})["sequence"] == n
    source = m.bucket.url
    assert run(BIN, "events", "count", source, "job/7").stdout.splitlines() == ["done\t1", "started\t1", "step\t2"]
    listed = [json.loads(line) for line in run(BIN, "events", "list", source, "job/7", "--json").stdout.splitlines()]
    assert [(e["sequence"], e["type"], e["data"]) for e in listed] == [
        (n, kind, {"n": n}) for n, kind in enumerate(["started", "step", "step", "done"])]
    assert listed == [json.loads(m.bucket.get(f".bucketfs/events/job%2F7/{n:010d}.json")) for n in range(4)]
    # The daemon's own stream, read by Python: mounted, then unmounted.
    m.mount()
    m.unmount()
    streams = [s for s in events.streams() if s != "job/7"]
    assert len(streams) == 1
    written = events.read(streams[0])
    assert [e["type"] for e in written] == ["mounted", "unmounted"]
    assert written[0]["data"]["mount_point"] == str(m.path)
    raw = m.bucket.get(f".bucketfs/events/{streams[0]}/0000000000.json")
    assert coding.encode(written[0]) == raw, "Python re-encodes the daemon's event byte for byte"


def test_records_over_redis_are_shared_with_swift(tmp_path):
    from servers import RedisServer
    server = RedisServer(tmp_path)
    try:
        printed = run(BIN, "checkpoints", "put", server.url, "t", "c1", "--data", '{"x": [1, 2.5]}').stdout.encode()
        backend = RedisBackend(server.url)
        records = Records(backend)
        assert backend.read("checkpoints/t/c1.json") == printed
        assert coding.encode(records.checkpoints.get("t", "c1")) == printed
        records.checkpoints.store("t", "c2", data={"from": "python"})
        records.checkpoints.put_writes("t", "c2", "task", [("ch", 1)])
        listed = run(BIN, "checkpoints", "list", server.url, "t").stdout
        assert "c2" in listed and "c1" in listed
        shown = run(BIN, "checkpoints", "show", server.url, "t", "c2").stdout.encode()
        assert shown == backend.read("checkpoints/t/c2.json")
        saver = BucketfsSaver(backend=backend)
        put_langgraph_checkpoint(saver, "lg", 1)
        assert saver.get_tuple({"configurable": {"thread_id": "lg"}}).checkpoint["channel_values"]["count"] == 1
    finally:
        server.stop()


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from langgraph.checkpoint.base import empty_checkpoint
    from bucketfs_records.langgraph import BucketfsSaver
    saver, who, count = BucketfsSaver(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    shared = {"configurable": {"thread_id": "shared", "checkpoint_ns": "", "checkpoint_id": "base"}}
    for n in range(count):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"who": who, "n": n}
        saver.put({"configurable": {"thread_id": "shared", "checkpoint_ns": ""}}, checkpoint, {"who": who}, {})
        saver.put_writes(shared, [("log", f"{who}-{n}")], task_id=f"{who}-{n}")
    print("done", flush=True)
""")


def test_two_processes_on_two_mounts_lose_no_checkpoints(make_mount, backend):
    if backend != "file":
        pytest.skip("two mounts of one bucket: the file:// store is enough")
    # Default caching: the writes record is changed under flock on it, whose grant revalidates the file.
    a = make_mount("a")
    a.mount()
    b = make_mount("b", bucket=a.bucket)
    b.mount()
    count = 15
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, os.path.join(ROOT, "clients/python/src"),
                                 str(m / "graphs/.bucketfs"), who, str(count)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for m, who in [(a, "a"), (b, "b")]]
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0 and "done" in out, err
    # Read from the bucket itself, so no mount's listing cache is involved.
    saver = BucketfsSaver(a.bucket.directory / "graphs/.bucketfs")
    found = list(saver.list({"configurable": {"thread_id": "shared"}}))
    assert sorted((t.checkpoint["channel_values"]["who"], t.checkpoint["channel_values"]["n"]) for t in found) == \
        sorted((who, n) for who in "ab" for n in range(count))
    writes = Records(DirectoryBackend(a.bucket.directory / "graphs/.bucketfs")).checkpoints.get_writes("shared", "base")
    assert sorted(w["task_id"] for w in writes) == sorted(f"{who}-{n}" for who in "ab" for n in range(count))


def test_the_langgraph_example_of_the_docs_through_a_mount(make_mount, backend):
    if backend != "file":
        pytest.skip("one store is enough for the example")
    graph_module = pytest.importorskip("langgraph.graph")
    m = make_mount()
    m.mount()
    (m / "graphs").mkdir()

    def step(state):
        return {"count": state["count"] + 1}

    from typing import TypedDict

    class State(TypedDict):
        count: int

    graph = graph_module.StateGraph(State)
    graph.add_node("step", step)
    graph.add_edge(graph_module.START, "step")
    graph.add_edge("step", graph_module.END)
    app = graph.compile(checkpointer=BucketfsSaver(m / "graphs/.bucketfs"))
    config = {"configurable": {"thread_id": "demo"}}
    assert app.invoke({"count": 0}, config) == {"count": 1}
    assert app.get_state(config).values == {"count": 1}
    names = os.listdir(m / "graphs/.bucketfs/checkpoints/demo")
    records = [json.loads((m / "graphs/.bucketfs/checkpoints/demo" / n).read_text())
               for n in names if not n.endswith(".writes.json")]
    assert sorted(r["data"]["channel_values"].get("count", {}).get("json", -1) for r in records)[-1] == 1
    source = m.bucket.url + "graphs/"
    listed = run(BIN, "checkpoints", "list", source, "demo").stdout.splitlines()
    assert len(listed) == len(records) >= 2
    latest = json.loads(run(BIN, "checkpoints", "show", source, "demo").stdout)
    assert latest["data"]["channel_values"]["count"] == {"json": 1} and latest["metadata"]["step"] >= 0
