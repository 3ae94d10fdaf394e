"""Time windows: tumbling and sliding (hopping) windows, watermarks, late data, EMIT
FINAL / CHANGES. V1 = V2 bit for bit; FINAL results = DuckDB over the records that were
not late (lateness decided by the reference rule below, independently of the engine)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_batches_identical, assert_rows_match, cut, duckdb_rows, rows_of, run_job

import velokern as vk
from velokern.batch import RecordBatch, StringDictionary
from velokern.datagen import SCENARIOS, market_trades
from velokern.exec import SchemaError
from velokern.kernels.layout import HASHES
from velokern.plan import PlanError

SIZE = 5_000
SLIDE = 2_000


def timed_stream(n: int, seed: int = 0, jitter: int = 4_000, very_late: float = 0.02):
    """Records every 100 ms on average, times moved by up to ``jitter`` ms, and a few
    records far behind (late unless the lateness bound covers them)."""
    rng = np.random.default_rng(seed)
    ts = 1_000_000 + np.arange(n) * 100 + rng.integers(-jitter, jitter + 1, n)
    far = rng.random(n) < very_late
    ts[far] -= 30_000
    names = StringDictionary(["ab", "cd", "ef", "gh"])
    x = rng.integers(-50, 50, n)
    xm = rng.random(n) < 0.1
    f = np.round(rng.normal(0, 10, n), 3)
    return RecordBatch(
        {"seq": np.arange(n, dtype=np.int64), "k": rng.integers(0, 6, n),
         "s": rng.integers(0, 4, n).astype(np.int32), "x": x, "f": f, "ts": ts},
        {"x": ~xm},
        {"s": names},
    )


def reference_late(ts: np.ndarray, size: int, slide: int, lateness: int) -> np.ndarray:
    """The late flag of every record: its first window had closed (end + lateness <= the
    largest event time among the records before it)."""
    wm = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(ts)[:-1]])
    wl = ts - ts % slide
    wf = wl - ((size - 1 - (ts - wl)) // slide) * slide
    return wf + size + lateness <= wm


def with_windows(batch: RecordBatch, size: int, slide: int, lateness: int) -> RecordBatch:
    """The stream plus its reference columns: late flag, first and last window start."""
    ts = batch.column("ts")
    wl = ts - ts % slide
    wf = wl - ((size - 1 - (ts - wl)) // slide) * slide
    d = {n: batch.column(n) for n in batch.column_names}
    m = {n: batch.validity(n) for n in batch.column_names}
    d.update(late=reference_late(ts, size, slide, lateness), wf=wf, wl=wl)
    return RecordBatch(d, m, batch.dictionaries)


AGGS = ("COUNT(*) AS n, COUNT(x) AS nx, SUM(x) AS sx, AVG(f) AS af, MIN(f) AS mn, "
        "MAX(x) AS mx, FIRST_VALUE(f) AS ff, LAST_VALUE(x) AS lx, COUNT(DISTINCT s) AS ds")
AGGS_DUCK = ("COUNT(*), COUNT(x), SUM(x), AVG(f), MIN(f), MAX(x), first(f ORDER BY seq), "
             "last(x ORDER BY seq), COUNT(DISTINCT s)")

QUERIES = {
    "tumbling": (
        f"SELECT k, s, {AGGS}, window_start, window_end FROM t GROUP BY k, s "
        f"WINDOW TUMBLING(ts, INTERVAL '5' SECOND)",
        f"SELECT k, s, {AGGS_DUCK}, wf AS ws, wf + {SIZE} FROM t WHERE NOT late "
        f"GROUP BY k, s, wf ORDER BY ws, MIN(seq)",
        SIZE, SIZE,
    ),
    "tumble_fn": (
        f"SELECT k, {AGGS}, _window_start, _window_end FROM t WHERE x IS NULL OR x > -40 "
        f"GROUP BY TUMBLE(ts, 5s), k HAVING COUNT(*) > 1",
        f"SELECT k, {AGGS_DUCK}, wf AS ws, wf + {SIZE} FROM t WHERE NOT late AND "
        f"(x IS NULL OR x > -40) GROUP BY wf, k HAVING COUNT(*) > 1 ORDER BY ws, MIN(seq)",
        SIZE, SIZE,
    ),
    "global": (
        "SELECT COUNT(*) AS n, SUM(x) AS sx, window_start FROM t "
        "WINDOW TUMBLING(ts, INTERVAL '5' SECOND)",
        "SELECT COUNT(*), SUM(x), wf AS ws FROM t WHERE NOT late GROUP BY wf ORDER BY ws",
        SIZE, SIZE,
    ),
    "sliding": (
        f"SELECT k, {AGGS}, window_start, window_end FROM t GROUP BY k "
        f"WINDOW SLIDING(ts, INTERVAL '5' SECOND, INTERVAL '2' SECOND)",
        f"SELECT k, {AGGS_DUCK}, w AS ws, w + {SIZE} FROM "
        f"(SELECT *, UNNEST(generate_series(wf, wl, {SLIDE})) AS w FROM t WHERE NOT late) "
        f"GROUP BY k, w ORDER BY ws, MIN(seq)",
        SIZE, SLIDE,
    ),
    "hop_fn": (
        "SELECT s, COUNT(*) AS n, SUM(f) AS sf, window_end FROM t "
        "GROUP BY s, HOP(ts, INTERVAL '2' SECOND, INTERVAL '5' SECOND)",
        f"SELECT s, COUNT(*), SUM(f), w + {SIZE} AS we FROM "
        f"(SELECT *, UNNEST(generate_series(wf, wl, {SLIDE})) AS w FROM t WHERE NOT late) "
        f"GROUP BY s, w ORDER BY w, MIN(seq)",
        SIZE, SLIDE,
    ),
}
CUTS = {"one": [10**9], "fine": [37, 1, 250, 7, 999, 3], "even": [500] * 40}



@pytest.fixture(scope="module")
def stream():
    return timed_stream(4000, seed=3)


@pytest.mark.parametrize("lateness", [0, 3000])
@pytest.mark.parametrize("name", list(QUERIES))
def test_windows_match_duckdb_and_v1_equals_v2(stream, name, lateness):
    sql, ref, size, slide = QUERIES[name]
    sql = sql + (f" WITH (allowed_lateness = '{lateness}ms')" if lateness else "")
    data = with_windows(stream, size, slide, lateness)
    ref_rows = duckdb_rows(ref, data)
    base = None
    for cname, sizes in CUTS.items():
        batches = cut(stream, sizes)
        for cfg in ("v1", "v2:1", "v2:2", "v2:3", "v2:8"):
            outs, engine = run_job(sql, batches, cfg)
            if cfg == "v1":
                v1 = outs
                ours = rows_of(RecordBatch.concat([o for o in outs if len(o)]))
                assert_rows_match(ours, ref_rows, f"{name} {cname}")
                # a record WHERE filters out is counted as filtered, never as late
                cond = "x IS NULL OR x > -40" if "WHERE" in sql else "TRUE"
                late = duckdb_rows(f"SELECT COUNT(*) FROM t WHERE late AND ({cond})", data)
                assert engine.metrics["late_records"] == late[0][0]
                assert engine.metrics["groups"] == 0  # flush freed every window
                final = RecordBatch.concat(outs)
                if base is None:
                    base = final
                else:  # batching does not change the FINAL results (same rows, order, bits)
                    assert final.equals(base, bitwise=True), f"{name}: cut {cname} differs"
            else:
                assert_batches_identical(outs, v1, f"{name} {cname} {cfg}")


def test_late_records_reach_the_late_sink_in_input_order(stream):
    sql = QUERIES["tumbling"][0]
    got = []
    engine = vk.StreamExecutionEngine(sql, late_sink=got.append)
    proc = vk.JobProcessorFactory.create("v2:3")
    for b in cut(stream, [333] * 20):
        proc.process_batch(b, engine)
    proc.flush(engine)
    late = RecordBatch.concat(got)
    flags = reference_late(stream.column("ts"), SIZE, SIZE, 0)
    assert flags.sum() > 20  # the stream really has late records
    assert late.column("seq").tolist() == np.flatnonzero(flags).tolist()
    assert late.column_names == stream.column_names
    m = engine.metrics
    assert m["late_records"] == flags.sum()
    # nothing lost: every record is late or counted in an emitted row
    rows = engine.metrics["records_in"] - m["late_records"]
    assert rows == len(stream) - flags.sum()


def test_lateness_from_the_engine_overrides_sql(stream):
    sql = QUERIES["tumbling"][0] + " WITH (allowed_lateness = '1s')"
    e = vk.StreamExecutionEngine(sql, allowed_lateness_ms=30_000)
    assert e.allowed_lateness_ms == 30_000
    vk.JobProcessorFactory.create("v1").process_batch(stream, e)
    flags = reference_late(stream.column("ts"), SIZE, SIZE, 30_000)
    assert e.metrics["late_records"] == flags.sum()
    assert vk.StreamExecutionEngine(sql).allowed_lateness_ms == 1000


def test_emit_changes_rows_end_at_the_final_answer(stream):
    base_sql = QUERIES["tumbling"][0]
    batches = cut(stream, [400] * 10)
    changes, _ = run_job(base_sql + " EMIT CHANGES", batches, "v1")
    for cfg in ("v2:2", "v2:8"):
        other, _ = run_job(base_sql + " EMIT CHANGES", batches, cfg)
        assert_batches_identical(other, changes, f"changes {cfg}")
    final, _ = run_job(base_sql, batches, "v1")
    assert len(changes[-1]) == 0  # flush has nothing left to say
    last = {}
    for out in changes:
        for row in rows_of(out):
            last[(row[0], row[1], row[-2])] = row
    fin = rows_of(RecordBatch.concat(final))
    assert sorted(last.values(), key=lambda r: (r[-2], r[0], r[1])) == sorted(
        fin, key=lambda r: (r[-2], r[0], r[1]))
    # every batch emits each touched (window, group) row once, ordered by window start
    for out in changes:
        ws = out.column("window_start")
        assert (np.diff(ws) >= 0).all()
        keys = list(zip(out.column("k").tolist(), out.column("s").tolist(), ws.tolist()))
        assert len(keys) == len(set(keys))


def test_windows_close_as_the_watermark_passes():
    # one record per second, 10 s windows: each window closes when a record at its end
    # arrives, in the output of that record's batch
    n = 100
    b = RecordBatch({"k": np.zeros(n, np.int64), "ts": np.arange(n) * 1000})
    sql = "SELECT COUNT(*) AS n, window_start FROM t GROUP BY k WINDOW TUMBLING(ts, 10s)"
    e = vk.StreamExecutionEngine(sql)
    proc = vk.JobProcessorFactory.create("v1")
    outs = [proc.process_batch(x, e) for x in cut(b, [10] * 10)]
    # batch 0 holds ts 0..9 s: the watermark (9 s) has not reached 10 s yet
    assert len(outs[0]) == 0
    for i in range(1, 10):
        assert rows_of(outs[i]) == [(10, (i - 1) * 10_000)]
    assert rows_of(proc.flush(e)) == [(10, 90_000)]
    assert e.watermark == 99_000


def test_state_of_closed_windows_is_freed():
    """20 M records of S3a: live groups stay bounded by the open windows."""
    sql = SCENARIOS["S3a"]
    e = vk.StreamExecutionEngine(sql)
    proc = vk.JobProcessorFactory.create("v1")
    peak = 0
    emitted = 0
    for b in market_trades(20_000_000, 1_000_000):
        emitted += len(proc.process_batch(b, e))
        peak = max(peak, e.metrics["groups"])
    emitted += len(proc.flush(e))
    # one minute holds 60 records: at most 60 (trader, symbol) groups are open
    assert peak <= 60
    assert e.metrics["groups"] == 0
    assert emitted == 20_000_000  # each group of S3a holds one record
    assert e.state.arrays[HASHES].shape[1] <= 8192  # the group arrays never grew with the stream


def test_datetime_time_column_gives_the_same_windows(stream):
    ms = stream.column("ts")
    d = {n: stream.column(n) for n in stream.column_names}
    d["ts"] = (ms * 1_000_000).astype("datetime64[ns]")
    dt_batch = RecordBatch(d, {n: stream.validity(n) for n in stream.column_names},
                           stream.dictionaries)
    sql = QUERIES["tumbling"][0]
    a, _ = run_job(sql, cut(stream, [700] * 6), "v1")
    b, _ = run_job(sql, cut(dt_batch, [700] * 6), "v2:2")
    fa, fb = RecordBatch.concat(a), RecordBatch.concat(b)
    assert fb.type_of("window_start") == "datetime64[ns]"
    assert (fb.column("window_start").astype(np.int64) // 1_000_000).tolist() == \
        fa.column("window_start").tolist()
    assert fa.select(["k", "n", "sx"]).equals(fb.select(["k", "n", "sx"]), bitwise=True)


def test_processing_time_when_the_stream_has_no_time_column():
    b = RecordBatch({"k": np.arange(100) % 3})
    e = vk.StreamExecutionEngine("SELECT k, COUNT(*) AS n, window_start FROM t GROUP BY k "
                                 "WINDOW TUMBLING(1m)")
    proc = vk.JobProcessorFactory.create("v1")
    proc.process_batch(b, e)
    out = proc.flush(e)
    assert sum(out.column("n").tolist()) == 100
    assert (out.column("window_start") % 60_000 == 0).all()
    assert abs(int(out.column("window_start")[0]) - e.watermark) < 120_000


@pytest.mark.parametrize("sql, msg", [
    ("SELECT COUNT(*) FROM t WINDOW TUMBLING(nope, 1m)", r"column\(s\) \['nope'\]"),
    ("SELECT COUNT(*) FROM t WINDOW TUMBLING(s, 1m)", "time column 's'"),
    ("SELECT COUNT(*) FROM t WINDOW TUMBLING(ts, 5 parsecs)", "cannot read duration"),
    ("SELECT COUNT(*) FROM t GROUP BY TUMBLE(ts, 1m) WINDOW TUMBLING(ts, 1m)", "one time "
     "window"),
    ("SELECT COUNT(*) FROM t WITH (allowed_lateness = '5s')", "no WINDOW"),
    ("SELECT COUNT(*) FROM t WINDOW SLIDING(ts, 1s, 5s)", "slide"),
    ("SELECT COUNT(*) FROM t WINDOW TUMBLING(ts, 1m) WITH (lateness = '5s')",
     "unknown option"),
    ("SELECT window_start FROM t", "window_start is defined only in a time-windowed"),
])
def test_window_errors_name_the_problem(stream, sql, msg):
    with pytest.raises((PlanError, SchemaError), match=msg):
        e = vk.StreamExecutionEngine(sql)
        vk.JobProcessorFactory.create("v1").process_batch(stream, e)


def test_bad_lateness_argument():
    with pytest.raises(ValueError, match="allowed_lateness_ms"):
        vk.StreamExecutionEngine(QUERIES["tumbling"][0], allowed_lateness_ms=-1)
    with pytest.raises(PlanError, match="no WINDOW"):
        vk.StreamExecutionEngine("SELECT k FROM t", allowed_lateness_ms=5)


def test_null_event_times_are_counted():
    ts = np.arange(50) * 1000
    valid = np.arange(50) % 5 != 0
    b = RecordBatch({"k": np.zeros(50, np.int64), "ts": ts}, {"ts": valid})
    e = vk.StreamExecutionEngine("SELECT COUNT(*) AS n FROM t GROUP BY k "
                                 "WINDOW TUMBLING(ts, 10s)")
    proc = vk.JobProcessorFactory.create("v2:2")
    got = proc.process_batch(b, e)
    got = RecordBatch.concat([got, proc.flush(e)])
    assert sum(got.column("n").tolist()) == valid.sum()
    assert e.metrics["records_without_time"] == 10
