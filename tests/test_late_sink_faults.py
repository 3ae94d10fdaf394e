"""A late sink that fails in the middle of a stream loses nothing (issue 24, item 2).

The engine finishes the batch (its output, state and counters), then hands the late
records to the sink; when the sink raises, :class:`velokern.LateSinkError` carries the
batch's output and the late records not delivered, and ``late_undelivered`` counts them.
A StreamJob writes that output, fails, and keeps its checkpoint at or before the batch,
so a rerun from the checkpoint delivers every row and late record exactly once.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import velokern as vk
from velokern.batch import RecordBatch
from velokern.datagen import SCENARIOS
from velokern.io import ParquetSink, SinkError
from velokern.processors import JobProcessorConfig, JobProcessorFactory
from velokern.server import JobFailed, StreamJob

N, BATCH = 20_000, 1_000

TUMBLING = ("SELECT k, COUNT(*) AS n, SUM(x) AS sx, window_start FROM t WHERE x > -45 "
            "GROUP BY k WINDOW TUMBLING(ts, INTERVAL '1' SECOND)")
SESSION = ("SELECT k, COUNT(*) AS n, SUM(x) AS sx, window_start, window_end FROM t "
           "WHERE x > -45 GROUP BY k WINDOW SESSION(ts, 300ms)")


def _stream(seed: int = 7) -> RecordBatch:
    """Random event times about 10 ms apart; ~5% of the records are seconds behind."""
    rng = np.random.default_rng(seed)
    ts = 1_000_000 + np.arange(N) * 10 + rng.integers(-20, 21, N)
    behind = rng.random(N) < 0.05
    ts[behind] -= rng.integers(2_000, 6_000, int(behind.sum()))
    return RecordBatch({"seq": np.arange(N, dtype=np.int64), "k": rng.integers(0, 40, N),
                        "x": rng.integers(-50, 50, N), "ts": ts})


class _FlakyCallback:
    """Keeps the late batches it is given; raises on its ``fail_at``-th call (once)."""

    def __init__(self, fail_at: int | None):
        self.fail_at = fail_at
        self.calls = 0
        self.got: list[RecordBatch] = []

    def __call__(self, late: RecordBatch) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("late sink unavailable")
        self.got.append(late)


def _run(sql: str, processor: str, fail_at: int | None):
    """Batches through the processor; returns (outputs, callback, errors, metrics)."""
    data = _stream()
    sink = _FlakyCallback(fail_at)
    engine = vk.StreamExecutionEngine(sql, late_sink=sink)
    proc = JobProcessorFactory.create(JobProcessorConfig.coerce(processor))
    outs, errors = [], []
    for i in range(0, N, BATCH):
        try:
            outs.append(proc.process_batch(data.slice(i, BATCH), engine))
        except Exception as exc:  # (what a failing sink raises is what is tested)
            errors.append(exc)
            out = getattr(exc, "output", None)
            if out is not None:
                outs.append(out)
    outs.append(proc.flush(engine))
    return outs, sink, errors, engine.metrics


def _seqs(batches) -> list[int]:
    return sorted(int(s) for b in batches if len(b) for s in b.column("seq"))


@pytest.mark.parametrize("sql", [TUMBLING, SESSION], ids=["tumbling", "session"])
@pytest.mark.parametrize("processor", ["v1", "v2:2"])
def test_every_record_is_in_the_output_or_a_counter(sql, processor):
    outs, sink, errors, m = _run(sql, processor, fail_at=3)
    assert len(errors) == 1 and sink.calls > 3
    err = errors[0]
    assert isinstance(err, vk.LateSinkError)
    assert isinstance(err.__cause__, RuntimeError)
    assert len(err.late) > 0 and m["late_undelivered"] == len(err.late)
    counted = sum(int(np.sum(o.column("n"))) for o in outs if len(o))
    assert m["records_rejected"] == 0 and m["records_without_time"] == 0
    assert counted + m["records_filtered"] + m["late_records"] == N
    # the late records: those delivered plus those the error carries, each once
    late = _seqs(sink.got + [err.late])
    assert len(late) == len(set(late)) == m["late_records"]
    # and the same as a run whose sink never fails: output rows and late records
    ref_outs, ref_sink, ref_errors, ref_m = _run(sql, processor, fail_at=None)
    assert ref_errors == [] and ref_m["late_undelivered"] == 0
    got = RecordBatch.concat([o for o in outs if len(o)])
    ref = RecordBatch.concat([o for o in ref_outs if len(o)])
    assert got.equals(ref, bitwise=True)
    assert late == _seqs(ref_sink.got)
    assert ref_m["late_records"] == m["late_records"] > 0.03 * N


class _FlakyParquet(ParquetSink):
    """A Parquet late sink whose ``fail_at``-th write fails (the same file and identity
    as a plain one, so a rerun with a healthy sink resumes from the checkpoint)."""

    def __init__(self, path, fail_at: int):
        super().__init__(path)
        self.fail_at = fail_at
        self.writes = 0

    def _write(self, batch):
        self.writes += 1
        if self.writes == self.fail_at:
            raise SinkError(f"{self.name}: disk full")
        super()._write(batch)


_SRC = "scenario:S3a?total=60000&seed=5&random=1"


def _job(tmp_path, out, cp, late_sink, on_error="fail"):
    return StreamJob(SCENARIOS["S3a"], _SRC, str(out), processor="v2:2", batch_size=5_000,
                     late_sink=late_sink, checkpoint_dir=cp, checkpoint_every=3,
                     on_error=on_error)


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_job_fails_and_its_rerun_delivers_everything_once(tmp_path, on_error):
    ref_out, ref_late = tmp_path / "ref.parquet", tmp_path / "ref-late.parquet"
    ref = _job(tmp_path, ref_out, None, str(ref_late)).run()
    assert ref["late_records"] > 0
    out, late, cp = tmp_path / "out.parquet", tmp_path / "late.parquet", tmp_path / "cp"
    flaky = _FlakyParquet(late, fail_at=4)
    job = _job(tmp_path, out, cp, flaky, on_error)
    with pytest.raises(JobFailed, match="disk full"):
        job.run()
    assert job.status == "failed" and flaky.writes == 4
    assert isinstance(job.error, vk.LateSinkError)
    assert isinstance(job.error.__cause__, SinkError)
    m = job.metrics()
    assert m["late_undelivered"] == len(job.error.late) > 0
    assert "LateSinkError" in m["error"]
    failed_at = m["batches"]  # the batch whose late records were not delivered
    assert job.engine.metrics["records_in"] == failed_at * 5_000
    rerun = _job(tmp_path, out, cp, str(late), on_error)
    m2 = rerun.run()
    assert m2["status"] == "finished" and m2["resumed_from_batch"] < failed_at
    assert m2["records_in"] == 60_000 and m2["late_undelivered"] == 0
    assert m2["late_records"] == ref["late_records"]
    assert out.read_bytes() == ref_out.read_bytes()
    assert late.read_bytes() == ref_late.read_bytes()
    assert pq.read_table(late).num_rows == ref["late_records"]
