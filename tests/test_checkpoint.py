"""Engine snapshots and checkpoint files: a restored engine continues exactly as the
original would (bit for bit, V1 and V2), and a checkpoint of another job is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import timed_batches

import velokern as vk
from velokern.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from velokern.datagen import SCENARIOS, stream_for

_T = ("SELECT k, COUNT(*) AS n, SUM(x) AS sx, MIN(f) AS lo, COUNT(DISTINCT s) AS ds, "
      "window_start FROM t WHERE y IS NULL OR y > -2 GROUP BY k ")
QUERIES = {
    "stateless": "SELECT seq, k, s, x * 2 AS x2 FROM t WHERE f > 0 OR s2 IS NULL",
    "group_by": "SELECT s, s2, COUNT(*) AS n, AVG(f) AS af, COUNT(DISTINCT k) AS dk, "
                "STDDEV(x) AS sd FROM t GROUP BY s, s2 HAVING COUNT(*) > 1",
    "keyless": "SELECT COUNT(*) AS n, SUM(x) AS sx, MAX(f) AS mf FROM t",
    "tumbling": _T + "WINDOW TUMBLING(ts, INTERVAL '2' SECOND) WITH (allowed_lateness = '1s')",
    "sliding_changes": _T + "WINDOW SLIDING(ts, 3s, 1s) EMIT CHANGES",
    "rows": "SELECT k, f, AVG(f) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 5 PRECEDING "
            "AND CURRENT ROW) AS ma, LAG(x) OVER (PARTITION BY k ORDER BY ts) AS px FROM t",
    "session": "SELECT k, COUNT(*) AS n, SUM(x) AS sx, window_start, window_end FROM t "
               "GROUP BY k WINDOW SESSION(ts, 1500ms)",
    "rows_ttl": "SELECT k, f, AVG(f) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 5 "
                "PRECEDING AND CURRENT ROW) AS ma FROM t WITH (state_ttl = '3s')",
}


def _batches(n_batches=6, size=700, seed=3):
    return timed_batches(n_batches, size, seed=seed, keys=15)


def _run(engine, proc, batches):
    return [proc.process_batch(b, engine) for b in batches]


def _roundtrip(snap, tmp_path):
    write_checkpoint(tmp_path, {"sql": snap["sql"]}, {"engine": snap})
    return read_checkpoint(tmp_path, {"sql": snap["sql"]})[1]["engine"]


@pytest.mark.parametrize("kind, processor", [
    ("stateless", "v1"), ("group_by", "v2:3"), ("keyless", "v1"), ("tumbling", "v1"),
    ("sliding_changes", "v1"), ("rows", "v2:3"), ("session", "v2:3"), ("group_by", "v1"),
    ("rows_ttl", "v2:3")])
def test_restored_engine_continues_bit_for_bit(kind, processor, tmp_path):
    sql = QUERIES[kind]
    batches = _batches()
    ref_engine = vk.StreamExecutionEngine(sql)
    ref_proc = vk.JobProcessorFactory.create(processor)
    ref = _run(ref_engine, ref_proc, batches) + [ref_proc.flush(ref_engine)]
    for cut in (1, 4):
        engine = vk.StreamExecutionEngine(sql)
        proc = vk.JobProcessorFactory.create(processor)
        first = _run(engine, proc, batches[:cut])
        snap = _roundtrip(engine.snapshot(), tmp_path)
        # the original goes on being used: the snapshot shares no memory with it
        _run(engine, proc, batches[cut:cut + 1])
        restored = vk.StreamExecutionEngine.restore(snap)
        proc2 = vk.JobProcessorFactory.create(processor)
        rest = _run(restored, proc2, batches[cut:]) + [proc2.flush(restored)]
        for k, (a, b) in enumerate(zip(ref, first + rest)):
            assert a.equals(b, bitwise=True), (kind, processor, cut, k)
        m_ref, m = ref_engine.metrics, restored.metrics
        for key in ("records_in", "records_filtered", "records_emitted", "late_records",
                    "batches", "groups"):
            assert m.get(key) == m_ref.get(key), key
        # per partition, records count where they ran: V2 runs a state in one partition
        # after a few batches on one worker, and a restored job's processor starts anew
        # (velokern.exec.reshard); every record ran in some partition
        assert sum(m["partition_records"]) == sum(m_ref["partition_records"]) == \
            m["records_in"]


@pytest.mark.parametrize("kind", ["group_by", "tumbling"])
def test_restore_rebuilds_the_hash_table(kind):
    """The hash table is an index over the groups' stored hashes: a snapshot whose table
    has another layout (one group id per slot, as before the hash moved into the slot)
    or stale contents restores to the same answers."""
    sql = QUERIES[kind]
    batches = _batches()
    ref_engine = vk.StreamExecutionEngine(sql)
    proc = vk.JobProcessorFactory.create("v2:2")
    ref = _run(ref_engine, proc, batches) + [proc.flush(ref_engine)]
    engine = vk.StreamExecutionEngine(sql)
    proc = vk.JobProcessorFactory.create("v2:2")
    first = _run(engine, proc, batches[:3])
    for table in ("old layout", "stale"):
        snap = engine.snapshot()
        t = snap["state"][0]
        snap["state"][0] = (np.full(t.shape[:2], -1, np.int64) if table == "old layout"
                            else np.full_like(t, 3))
        restored = vk.StreamExecutionEngine.restore(snap)
        proc2 = vk.JobProcessorFactory.create("v2:2")
        rest = _run(restored, proc2, batches[3:]) + [proc2.flush(restored)]
        assert len(ref) == len(first + rest)
        for k, (a, b) in enumerate(zip(ref, first + rest)):
            assert a.equals(b, bitwise=True), (kind, table, k)


def test_restored_engine_with_scenario_streams(tmp_path):
    for name in ("S1", "S2", "S3a"):
        batches = list(stream_for(name, 40_000, 10_000, seed=2, random=True))
        ref_e = vk.StreamExecutionEngine(SCENARIOS[name])
        p = vk.JobProcessorFactory.create("v2:2")
        ref = _run(ref_e, p, batches) + [p.flush(ref_e)]
        e = vk.StreamExecutionEngine(SCENARIOS[name])
        p = vk.JobProcessorFactory.create("v2:2")
        first = _run(e, p, batches[:2])
        r = vk.StreamExecutionEngine.restore(_roundtrip(e.snapshot(), tmp_path))
        p = vk.JobProcessorFactory.create("v2:2")
        rest = _run(r, p, batches[2:]) + [p.flush(r)]
        assert all(a.equals(b, bitwise=True) for a, b in zip(ref, first + rest)), name


def test_engine_with_declared_schema_runs():
    # regression: an engine given its schema up front did not prepare any column
    e = vk.StreamExecutionEngine("SELECT a, a + 1 AS b FROM t WHERE a > 1", {"a": "int64"})
    out = vk.JobProcessorFactory.create("v1").process_batch(
        vk.RecordBatch.from_pydict({"a": [1, 2, 3]}), e)
    assert out.to_pydict() == {"a": [2, 3], "b": [3, 4]}


def test_checkpoint_of_another_job_is_refused(tmp_path):
    write_checkpoint(tmp_path, {"sql": "SELECT a FROM t", "processor": "v1"},
                     {"engine": {"x": np.arange(3)}})
    with pytest.raises(CheckpointError, match="its sql is 'SELECT a FROM t'"):
        read_checkpoint(tmp_path, {"sql": "SELECT b FROM t", "processor": "v1"})
    with pytest.raises(CheckpointError, match="its processor is 'v1'"):
        read_checkpoint(tmp_path, {"sql": "SELECT a FROM t", "processor": "v2:2"})
    _, payload = read_checkpoint(tmp_path, {"sql": "SELECT a FROM t"})
    assert payload["engine"]["x"].tolist() == [0, 1, 2]


def test_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    path = write_checkpoint(tmp_path, {"sql": "q"}, {"engine": {"x": np.arange(100)}})
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # truncated
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(tmp_path, {"sql": "q"})
    head = json.loads(data.split(b"\n", 1)[0])
    head["velokern"] = "0.0.0-other"
    path.write_bytes(json.dumps(head).encode() + b"\n" + data.split(b"\n", 1)[1])
    with pytest.raises(CheckpointError, match=r"written by velokern 0\.0\.0-other"):
        read_checkpoint(tmp_path, {"sql": "q"})
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not json\n")
    with pytest.raises(CheckpointError, match="not a velokern checkpoint"):
        read_checkpoint(tmp_path, {"sql": "q"})


def test_checkpoint_payload_may_not_carry_code(tmp_path, capsys):
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = write_checkpoint(tmp_path, {"sql": "q"}, {"engine": 1})
    body = pickle.dumps({"engine": Evil()})
    head = json.loads(path.read_bytes().split(b"\n", 1)[0])
    head.update(sha256=hashlib.sha256(body).hexdigest(), payload_bytes=len(body))
    path.write_bytes(json.dumps(head).encode() + b"\n" + body)
    # a pickle is not a payload (format 2 has no pickle at all): refused, never run
    with pytest.raises(CheckpointError, match=r"cannot be read"):
        read_checkpoint(tmp_path, {"sql": "q"})
    assert "pwned" not in capsys.readouterr().out
