"""V2 moves a job's keyed state into one partition while it runs on one worker, and back
into its partitions when it runs on all (velokern.exec.reshard): the answer never
changes, checkpoints hold the job's own partitions, and the state follows the batches."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_batches_identical, cut, run, timed_batches
from test_checkpoint import QUERIES as CHECKPOINT_QUERIES

import velokern as vk
from velokern import config

#: the checkpoint tests' queries over the same columns (their kernels are compiled once)
QUERIES = {name: CHECKPOINT_QUERIES[name]
           for name in ("group_by", "tumbling", "sliding_changes", "rows")}


@pytest.fixture
def switching(monkeypatch):
    """Batches of 300 rows and more may run on all workers; two in a row on one worker
    move the state into one partition; the worker choice probes often."""
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 300)
    monkeypatch.setattr(config, "V2_ONE_PARTITION_AFTER", 2)
    monkeypatch.setattr(config, "V2_PROBE_EVERY", 2)
    monkeypatch.setattr(config, "V2_PROBE_MAX", 4)


def _stream(seed: int, n: int = 9_000):
    batch = timed_batches(1, n, seed=seed, keys=300, span=50_000, jitter=400)[0]
    return batch, np.random.default_rng(seed + 1)


@pytest.mark.parametrize("name", list(QUERIES))
def test_moving_the_state_changes_no_answer(name, switching):
    batch, rng = _stream(3)
    parts = cut(batch, [int(x) for x in rng.choice([40, 200, 900, 1400], 16)])
    sql = QUERIES[name]
    v1 = run(sql, parts, "v1")
    for proc in ("v2:2", "v2:3"):
        e = vk.StreamExecutionEngine(sql)
        p = vk.JobProcessorFactory.create(proc)
        layouts = []
        outs = []
        for b in parts:
            outs.append(p.process_batch(b, e))
            layouts.append(e.state.partitions)
        outs.append(p.flush(e))
        assert_batches_identical(v1, outs, f"{name} {proc}")
        assert {1, p.num_partitions} <= set(layouts)  # it moved, both ways


def test_small_batches_run_in_one_partition():
    """Batches below the break-even run on one worker, and the state in one partition,
    V1's layout (no bucketing, no merge): a new job's from its first batch, a state with
    groups in the job's partitions after V2_ONE_PARTITION_AFTER of them."""
    batch, _ = _stream(4, 4_000)
    e = vk.StreamExecutionEngine(QUERIES["group_by"])
    p = vk.JobProcessorFactory.create("v2:3")
    seen = []
    for b in cut(batch, [500] * 8):
        p.process_batch(b, e)
        seen.append(e.state.partitions)
    assert seen == [1] * 8  # a new job's state has nothing to move: one partition at once
    assert e.num_partitions == 3  # the job's partition count is the same
    # a state restored in the job's partitions moves after V2_ONE_PARTITION_AFTER batches
    restored = vk.StreamExecutionEngine.restore(e.snapshot())
    p2 = vk.JobProcessorFactory.create("v2:3")
    seen = []
    for b in cut(batch, [500] * 8):
        p2.process_batch(b, restored)
        seen.append(restored.state.partitions)
    k = config.V2_ONE_PARTITION_AFTER
    assert seen[:k - 1] == [3] * (k - 1) and seen[k - 1:] == [1] * (8 - k + 1)


def test_a_checkpoint_holds_the_jobs_partitions():
    batch, _ = _stream(5, 6_000)
    parts = cut(batch, [500] * 12)
    sql = QUERIES["group_by"]
    ref = run(sql, parts, "v2:3")
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create("v2:3")
    first = [p.process_batch(b, e) for b in parts[:6]]
    assert e.state.partitions == 1
    snap = e.snapshot()
    assert all(a.shape[0] == 3 for a in snap["state"])  # the job's 3, not the 1 in use
    restored = vk.StreamExecutionEngine.restore(snap)
    p2 = vk.JobProcessorFactory.create("v2:3")
    rest = [p2.process_batch(b, restored) for b in parts[6:]] + [p2.flush(restored)]
    assert_batches_identical(ref, first + rest, "restored")
    with pytest.raises(ValueError, match="runs in 1 or 3 partitions"):
        restored.use_partitions(2)
