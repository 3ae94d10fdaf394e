"""Session windows: V1 = V2 bit for bit; FINAL results = DuckDB over the sessions the
slow twin assigns (its own record-by-record rules), and = DuckDB's gap sessionization
when the stream is in order; batching does not change the final rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_batches_identical, assert_rows_match, cut, duckdb_rows, rows_of, run_job
from test_windows import timed_stream

import velokern as vk
from velokern.batch import RecordBatch
from velokern.kernels import slow
from velokern.plan import PlanError

GAP = 1_500
SQL = ("SELECT k, COUNT(*) AS n, SUM(x) AS sx, AVG(f) AS af, MAX(f) AS mx, "
       "FIRST_VALUE(f) AS ff, COUNT(DISTINCT s) AS ds, window_start, window_end FROM t "
       "WHERE x IS NULL OR x > -45 GROUP BY k WINDOW SESSION(ts, INTERVAL '1500' "
       "MILLISECOND)")
DUCK_AGGS = "COUNT(*), SUM(x), AVG(f), MAX(f), first(f ORDER BY seq), COUNT(DISTINCT s)"
CUTS = {"one": [10**9], "fine": [37, 1, 250, 7, 999, 3], "even": [500] * 40}


def sparse_stream(n: int, seed: int) -> RecordBatch:
    """timed_stream with wider spacing, so sessions end and start."""
    b = timed_stream(n, seed=seed, jitter=1_200, very_late=0.01)
    rng = np.random.default_rng(seed + 1)
    ts = b.column("ts") + np.cumsum(rng.integers(0, 2, n) * rng.integers(0, 900, n))
    d = {c: b.column(c) for c in b.column_names}
    d["ts"] = ts
    return RecordBatch(d, {c: b.validity(c) for c in b.column_names}, b.dictionaries)


def with_sessions(batch: RecordBatch, lateness: int) -> RecordBatch:
    """The stream plus its reference session id (-1: late; -2: filtered by WHERE)."""
    ts = batch.column("ts")
    x, xv = batch.column("x"), batch.validity("x")
    passes = ~xv | (x > -45)
    wm = np.concatenate([[slow.NO_WATERMARK], np.maximum.accumulate(ts)[:-1]])
    rows = np.flatnonzero(passes)
    sid = np.full(len(ts), -2, np.int64)
    sid[rows] = slow.assign_sessions(batch.column("k")[rows].tolist(), ts[rows].tolist(),
                                     wm[rows].tolist(), GAP, lateness)
    d = {c: batch.column(c) for c in batch.column_names}
    d["sid"] = sid
    return RecordBatch(d, {c: batch.validity(c) for c in batch.column_names},
                       batch.dictionaries)



def _sorted_rows(outs):
    rows = rows_of(RecordBatch.concat([o for o in outs if o.num_columns]))
    return sorted(rows, key=lambda r: (r[-2], r[0]))


@pytest.fixture(scope="module")
def stream():
    return sparse_stream(3000, seed=11)


@pytest.mark.parametrize("lateness", [0, 2500])
def test_sessions_match_the_reference_and_v1_equals_v2(stream, lateness):
    sql = SQL + (f" WITH (allowed_lateness = '{lateness}ms')" if lateness else "")
    data = with_sessions(stream, lateness)
    ref = duckdb_rows(
        f"SELECT k, {DUCK_AGGS}, MIN(ts), MAX(ts) + {GAP} FROM t WHERE sid >= 0 "
        "GROUP BY k, sid ORDER BY MIN(ts), k", data)
    late = int((data.column("sid") == -1).sum())
    assert late > 10  # the stream really has late records
    base = None
    for cname, sizes in CUTS.items():
        batches = cut(stream, sizes)
        v1, engine = run_job(sql, batches, "v1")
        ours = _sorted_rows(v1)
        assert_rows_match(ours, ref, f"sessions {cname}")
        assert engine.metrics["late_records"] == late
        assert engine.metrics["groups"] == 0
        if base is None:
            base = ours
        else:  # batching does not change the final rows
            assert ours == base, cname
        for out in v1:  # each emission is ordered by session start
            if len(out):
                assert (np.diff(out.column("window_start")) >= 0).all()
        for cfg in ("v2:1", "v2:2", "v2:3", "v2:8"):
            assert_batches_identical(run_job(sql, batches, cfg)[0], v1, f"{cname} {cfg}")


def test_in_order_sessions_equal_duckdb_gap_sessionization():
    rng = np.random.default_rng(5)
    n = 2000
    ts = np.cumsum(rng.integers(0, 1200, n))
    b = RecordBatch({"k": rng.integers(0, 4, n), "ts": ts, "v": rng.normal(size=n)})
    sql = ("SELECT k, COUNT(*) AS n, SUM(v) AS sv, window_start, window_end FROM t "
           "GROUP BY k WINDOW SESSION(ts, 3s)")
    outs, _ = run_job(sql, cut(b, [333] * 7), "v2:2")
    ref = duckdb_rows(
        "SELECT k, COUNT(*), SUM(v), MIN(ts), MAX(ts) + 3000 FROM (SELECT *, SUM(brk) OVER "
        "(PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sess FROM (SELECT *, "
        "CASE WHEN ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) < 3000 THEN 0 ELSE 1 END "
        "AS brk FROM t)) GROUP BY k, sess ORDER BY MIN(ts), k", b)
    assert_rows_match(_sorted_rows(outs), ref, "gap sessions")


def test_sessions_merge_when_a_record_bridges_them():
    b = RecordBatch({"k": np.zeros(3, np.int64), "ts": np.array([0, 5_000, 2_500])})
    sql = ("SELECT COUNT(*) AS n, window_start, window_end FROM t GROUP BY k "
           "WINDOW SESSION(ts, 3s) WITH (allowed_lateness = '10s')")
    e = vk.StreamExecutionEngine(sql)
    proc = vk.SimpleJobProcessor()
    assert len(proc.process_batch(b.slice(0, 2), e)) == 0
    assert e.metrics["groups"] == 2  # two sessions until the bridge arrives
    proc.process_batch(b.slice(2), e)
    assert e.metrics["groups"] == 1
    assert rows_of(proc.flush(e)) == [(3, 0, 8_000)]


def test_session_late_records_reach_the_sink(stream):
    got = []
    sql = SQL.replace("WHERE x IS NULL OR x > -45 ", "")
    e = vk.StreamExecutionEngine(sql, late_sink=got.append)
    proc = vk.JobProcessorFactory.create("v2:2")
    for b in cut(stream, [400] * 8):
        proc.process_batch(b, e)
    proc.flush(e)
    ts = stream.column("ts")
    wm = np.concatenate([[slow.NO_WATERMARK], np.maximum.accumulate(ts)[:-1]])
    sid = slow.assign_sessions(stream.column("k").tolist(), ts.tolist(), wm.tolist(), GAP, 0)
    late = [i for i, s in enumerate(sid) if s == -1]
    assert RecordBatch.concat(got).column("seq").tolist() == late
    assert e.metrics["late_records"] == len(late)


def test_session_state_stays_bounded():
    sql = "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(ts, 2s)"
    e = vk.StreamExecutionEngine(sql)
    proc = vk.SimpleJobProcessor()
    peak = emitted = 0
    for i in range(200):  # 10 keys, a record every 100 ms, a 5 s pause every 10 s
        t = i * 10_000 + np.arange(100) * 50
        b = RecordBatch({"k": np.arange(100) % 10, "ts": t})
        emitted += int(sum(proc.process_batch(b, e).column("n").tolist() or [0]))
        peak = max(peak, e.metrics["groups"])
    emitted += int(sum(proc.flush(e).column("n").tolist()))
    assert emitted == 20_000
    assert peak <= 10


@pytest.mark.parametrize("sql, msg", [
    ("SELECT COUNT(*) FROM t GROUP BY k WINDOW SESSION(ts, 1s) EMIT CHANGES",
     "EMIT CHANGES is not supported for session windows"),
    ("SELECT COUNT(*) FROM t GROUP BY k WINDOW SESSION(ts, 1s, 2s)", "SESSION"),
    ("SELECT COUNT(*) FROM t GROUP BY k WINDOW SESSION(s, 1s)", "time column 's'"),
])
def test_session_errors(stream, sql, msg):
    with pytest.raises(PlanError, match=msg):
        e = vk.StreamExecutionEngine(sql)
        vk.JobProcessorFactory.create("v1").process_batch(stream, e)


def test_group_window_form_and_processing_time():
    b = RecordBatch({"k": np.arange(50) % 5, "ts": np.arange(50) * 100})
    a, _ = run_job("SELECT k, COUNT(*) AS n FROM t GROUP BY k, SESSION(ts, 1s)", [b], "v1")
    c, _ = run_job("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(ts, 1s)", [b],
                   "v1")
    assert RecordBatch.concat(a).equals(RecordBatch.concat(c), bitwise=True)
    p, _ = run_job("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(1m)",
                   [b.select(["k"])], "v1")
    assert sorted(rows_of(RecordBatch.concat(p))) == [(j, 10) for j in range(5)]
