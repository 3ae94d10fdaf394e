"""V2 picks each batch's worker count (velokern.processors.adaptive): one worker below
the break-even, then whichever way its measured cost per row says, probing the other
way now and then. The answer never depends on it."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import assert_batches_identical, run_job

import velokern as vk
from velokern import config
from velokern.processors.adaptive import WorkerChoice

BIG = 100_000


def _feed(choice: WorkerChoice, batches: int, cost_ns: dict[int, float]) -> list[int]:
    """Run ``batches`` large batches whose cost per row on t workers is cost_ns[t];
    returns the worker count each ran on."""
    picks = []
    for _ in range(batches):
        t = choice.threads_for(BIG)
        picks.append(t)
        choice.observe(BIG, t, cost_ns[t] * BIG * 1e-9)
    return picks


def test_small_batches_run_on_one_worker():
    c = WorkerChoice(4)
    assert c.threads_for(config.PARALLEL_MIN_ROWS - 1) == 1
    assert c.threads_for(config.PARALLEL_MIN_ROWS) == 4
    assert WorkerChoice(1).threads_for(BIG) == 1


def test_parallel_stays_when_it_is_cheaper_and_probes_less_and_less(monkeypatch):
    monkeypatch.setattr(config, "V2_PROBE_EVERY", 8)
    monkeypatch.setattr(config, "V2_PROBE_MAX", 32)
    picks = _feed(WorkerChoice(2), 200, {2: 3.0, 1: 5.0})
    # the first four measure each way (the first of each is not counted); then a probe
    # after 8 large batches, 16 more, 32 more, and every 32 from then on
    probes = [k for k in range(4, 200) if picks[k] == 1]
    assert probes == [11, 27, 59, 91, 123, 155, 187]
    assert all(t == 2 for k, t in enumerate(picks[4:], 4) if k not in probes)


def test_a_stalled_parallel_run_goes_serial_and_comes_back(monkeypatch):
    """A busy core makes the workers wait: the parallel cost passes the serial one and
    the batches go on one worker; once the core is free a probe finds it out."""
    monkeypatch.setattr(config, "V2_PROBE_EVERY", 4)
    monkeypatch.setattr(config, "V2_PROBE_MAX", 16)
    c = WorkerChoice(2)
    _feed(c, 20, {2: 3.0, 1: 5.0})
    busy = _feed(c, 40, {2: 40.0, 1: 5.0})
    assert busy[-20:].count(1) >= 15
    free = _feed(c, 60, {2: 3.0, 1: 5.0})
    assert free[-30:].count(2) >= 25
    costs = c.costs()
    assert costs["parallel_ns_per_row"] < costs["serial_ns_per_row"]


def test_the_first_batch_each_way_is_not_counted():
    """It may have compiled the kernels (seconds): that is not a cost per row."""
    c = WorkerChoice(2)
    c.observe(BIG, 2, 5.0)
    assert c.costs()["parallel_ns_per_row"] is None
    c.observe(BIG, 2, BIG * 3e-9)
    assert c.costs()["parallel_ns_per_row"] == pytest.approx(3.0)


@pytest.mark.parametrize("sql", [
    "SELECT k, x FROM t WHERE x > 0",
    "SELECT k, COUNT(*) AS n, SUM(f) AS s FROM t GROUP BY k",
])
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one CPU: one worker")
def test_metrics_say_how_many_batches_ran_on_several_workers(sql, monkeypatch):
    rng = np.random.default_rng(1)
    batches = [vk.RecordBatch({"k": rng.integers(0, 50, 2000), "x": rng.integers(-5, 5, 2000),
                               "f": rng.standard_normal(2000)}) for _ in range(4)]
    one, e1 = run_job(sql, batches, "v2:2")
    assert e1.metrics["batches_parallel"] == 0  # 2,000 rows: below the break-even
    monkeypatch.setattr(WorkerChoice, "threads_for", lambda self, rows: self.threads)
    many, e2 = run_job(sql, batches, "v2:2")
    assert e2.metrics["batches_parallel"] == 4
    assert_batches_identical(one, many, "one worker vs two")
    assert_batches_identical(one, run_job(sql, batches, "v1")[0], "V2 vs V1")


def test_where_the_state_runs(monkeypatch):
    """All partitions on several workers; one at once for a large batch on one worker
    (its cost is measured on V1's layout), and after V2_ONE_PARTITION_AFTER small ones
    in a row; otherwise where it is."""
    monkeypatch.setattr(config, "V2_ONE_PARTITION_AFTER", 3)
    c = WorkerChoice(2)
    assert c.partitions_for(2, 4, BIG) == 4
    assert c.partitions_for(1, 4, BIG) == 1
    small = config.PARALLEL_MIN_ROWS - 1
    got = []
    for _ in range(4):
        c.threads_for(small)
        got.append(c.partitions_for(1, 4, small))
    assert got == [4, 4, 1, 1]
    c.layout = 1
    c.serial_run = 0
    assert c.partitions_for(1, 4, small) == 1  # stays where it is
