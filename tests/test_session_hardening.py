"""Session windows under any cut of the stream, and over endless streams of new keys.

Order (docs/semantics.md, *Session windows*): a session is emitted by the first batch
whose last record brings the watermark to ``end + allowed lateness`` (``flush`` emits the
rest), and every output batch lists its sessions by (session start, stream position of
the session's first record). So each output batch is a subsequence of one order of the
whole stream, and the concatenated output is ``ORDER BY emitting batch, session start,
first record``: held here against a single-batch run and against DuckDB, for random
cuts, V1 and V2.

Key state: a key is forgotten once it has no open session, so the state of an endless
stream of ever-new keys stays as large as its open sessions."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
from conftest import cut, rows_of, run_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sessions import sparse_stream

import velokern as vk
from velokern.batch import RecordBatch
from velokern.kernels import slow


def _sql(gap: int, lateness: int) -> str:
    return ("SELECT k, MIN(seq) AS fs, COUNT(*) AS n, SUM(x) AS sx, window_start, "
            f"window_end FROM t WHERE x > 1 GROUP BY k WINDOW SESSION(ts, {gap}) "
            f"WITH (allowed_lateness = '{lateness}ms')")


def _stream(recs) -> RecordBatch:
    n = len(recs)
    return RecordBatch({"seq": np.arange(n, dtype=np.int64),
                        "k": np.array([r[0] for r in recs], np.int64),
                        "ts": np.array([r[1] for r in recs], np.int64),
                        "x": np.array([r[2] for r in recs], np.int64)})


def _duckdb_order(b: RecordBatch, batches: list[RecordBatch], gap: int, lateness: int):
    """The concatenated output by DuckDB: the slow twin's sessions (record-by-record
    rules, WHERE x > 1), each emitted by the first batch whose final watermark reaches
    its end + lateness (else by the flush), ordered by that batch, start, first record."""
    import duckdb

    ts, x = b.column("ts"), b.column("x")
    wm = np.concatenate([[slow.NO_WATERMARK], np.maximum.accumulate(ts)[:-1]])
    rows = np.flatnonzero(x > 1)
    sid = np.full(len(ts), -2, np.int64)
    sid[rows] = slow.assign_sessions(b.column("k")[rows].tolist(), ts[rows].tolist(),
                                     wm[rows].tolist(), gap, lateness)
    data = b.to_arrow().append_column("sid", pa.array(sid))
    ends = np.cumsum([len(p) for p in batches])
    marks = RecordBatch({"i": np.arange(len(ends), dtype=np.int64),
                         "wm": np.array([ts[:e].max() for e in ends], np.int64)})
    con = duckdb.connect()
    con.register("t", data)
    con.register("b", marks.to_arrow())
    return con.execute(
        f"WITH s AS (SELECT k, MIN(seq) AS fs, COUNT(*) AS n, SUM(x) AS sx, MIN(ts) AS ws, "
        f"MAX(ts) + {gap} AS we FROM t WHERE sid >= 0 GROUP BY k, sid) "
        f"SELECT s.k, s.fs, s.n, s.sx, s.ws, s.we FROM s ORDER BY COALESCE((SELECT "
        f"MIN(i) FROM b WHERE b.wm >= s.we + {lateness}), {len(ends)}), s.ws, s.fs"
    ).fetchall()


def _check_cut(b: RecordBatch, sizes: list[int], gap: int, lateness: int, processor: str,
               whole: list[tuple]) -> list[tuple]:
    """Run one cut; every output batch is a subsequence of ``whole`` (the one order of the
    whole stream) and the concatenation is DuckDB's. Returns the concatenation."""
    batches = cut(b, sizes)
    outs, _ = run_job(_sql(gap, lateness), batches, processor)
    got = []
    for o in outs:
        rows = rows_of(o)
        firsts = {r[1] for r in rows}
        assert rows == [r for r in whole if r[1] in firsts]
        got += rows
    assert sorted(got) == sorted(whole)
    assert got == [tuple(r) for r in _duckdb_order(b, batches, gap, lateness)]
    return got


def _whole_order(b: RecordBatch, gap: int, lateness: int) -> list[tuple]:
    """A single-batch run's rows by (session start, first record)."""
    outs, _ = run_job(_sql(gap, lateness), [b], "v1")
    return sorted((r for o in outs for r in rows_of(o)), key=lambda r: (r[4], r[1]))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 80), st.integers(0, 9)),
                min_size=1, max_size=70),
       st.integers(1, 15), st.integers(0, 12),
       st.lists(st.integers(1, 12), min_size=1, max_size=30),
       st.sampled_from(["v1", "v2:2"]))
def test_any_cut_emits_in_the_defined_order(recs, gap, lateness, sizes, processor):
    b = _stream(recs)
    _check_cut(b, sizes, gap, lateness, processor, _whole_order(b, gap, lateness))


def test_cuts_of_a_long_stream():
    s = sparse_stream(3000, seed=11)
    b = RecordBatch({"seq": s.column("seq"), "k": s.column("k"), "ts": s.column("ts"),
                     "x": s.column("x") % 10})
    whole = _whole_order(b, 1500, 2500)
    rng = np.random.default_rng(4)
    got = {}
    for name, sizes in {"one": [10**9], "sevens": [7] * 500,
                        "random": rng.integers(1, 80, 200).tolist()}.items():
        for processor in ("v1", "v2:2"):
            got[name, processor] = _check_cut(b, sizes, 1500, 2500, processor, whole)
        assert got[name, "v1"] == got[name, "v2:2"]


def test_a_short_session_closes_before_a_longer_one_that_started_earlier():
    """Why the concatenation depends on the cut: session (k=1, start 10) closes long
    before session (k=0, start 0); a cut between them emits it first."""
    recs = [(0, 0, 5), (1, 10, 5), (0, 30, 5), (0, 60, 5), (0, 90, 5), (0, 120, 5),
            (2, 300, 5)]
    b = _stream(recs)
    sql = _sql(40, 0)
    one, _ = run_job(sql, [b], "v1")
    assert [[r[:3] for r in rows_of(o)] for o in one] == [[(0, 0, 5), (1, 1, 1)],
                                                          [(2, 6, 1)]]
    two, _ = run_job(sql, cut(b, [4]), "v1")
    assert [[r[:3] for r in rows_of(o)] for o in two] == [[(1, 1, 1)], [(0, 0, 5)],
                                                          [(2, 6, 1)]]


# ---------------------------------------------------------------------- key state


def _bursts(n_keys: int, per_key: int, seed: int = 0) -> RecordBatch:
    """Each key in one short burst of ``per_key`` records, bursts overlapping, time
    advancing: an endless-style stream of ever-new keys."""
    rng = np.random.default_rng(seed)
    n = n_keys * per_key
    k = np.repeat(np.arange(n_keys, dtype=np.int64), per_key)
    # interleave neighbouring bursts a little, so several keys are open at once
    order = np.argsort(np.arange(n) + rng.integers(0, 4 * per_key, n), kind="stable")
    k = k[order]
    ts = np.arange(n, dtype=np.int64) * 10 + rng.integers(0, 30, n)
    return RecordBatch({"k": k, "ts": ts, "v": rng.integers(0, 100, n)})


def _open_keys(engine) -> int:
    s = engine._sessions
    n = s._nsess
    return len(np.unique(s._skey[:n][s._alive[:n] != 0]))


_BURST_SQL = ("SELECT k, COUNT(*) AS n, SUM(v) AS sv, window_start, window_end FROM t "
              "GROUP BY k WINDOW SESSION(ts, 200ms) WITH (allowed_lateness = '50ms')")


@pytest.mark.parametrize("processor", ["v1", "v2:2"])
def test_keys_without_open_sessions_are_forgotten(processor):
    b = _bursts(40_000, 5)  # 200k records, 40,000 keys
    parts = cut(b, [2_000] * 100)
    e = vk.StreamExecutionEngine(_BURST_SQL)
    proc = vk.JobProcessorFactory.create(processor)
    outs, peak_keys = [], 0
    for part in parts:
        outs.append(proc.process_batch(part, e))
        s = e._sessions
        assert len(s._key_ids) == _open_keys(e)  # exactly the keys with open sessions
        peak_keys = max(peak_keys, len(s._key_ids))
    outs.append(proc.flush(e))
    s = e._sessions
    assert len(s._key_ids) == 0 and e.metrics["groups"] == 0
    assert peak_keys < 100  # the keys of the last gap's records, not 40,000
    # ids: at most the keys of one batch (400) and those open before it
    assert len(s._key_of) <= 400 + peak_keys and len(s._head) <= 1_024
    # output = an unbounded reference: DuckDB's gap sessions (the stream is in order up
    # to less than the lateness, so no record is late and no session closes early)
    assert e.metrics["late_records"] == 0
    import duckdb

    con = duckdb.connect()
    con.register("t", b.to_arrow())
    ref = con.execute(
        "SELECT k, COUNT(*), SUM(v), MIN(ts), MAX(ts) + 200 FROM (SELECT *, SUM(brk) OVER "
        "(PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sess FROM (SELECT *, "
        "CASE WHEN ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) < 200 THEN 0 ELSE 1 END "
        "AS brk FROM t)) GROUP BY k, sess ORDER BY k, MIN(ts)").fetchall()
    ours = sorted(r for o in outs for r in rows_of(o))
    assert ours == [tuple(int(v) for v in r) for r in ref]


def test_memory_stays_flat_over_ever_new_keys():
    """The same stream again, outputs dropped: traced memory after 40k, 80k, ... 200k
    records stays within 256 KiB of the reading at 40k (it grew ~100 B a key before)."""
    parts = cut(_bursts(40_000, 5), [2_000] * 100)
    e = vk.StreamExecutionEngine(_BURST_SQL)
    proc = vk.JobProcessorFactory.create("v1")
    mem = []
    gc.collect()
    tracemalloc.start()
    try:
        for i, part in enumerate(parts):
            proc.process_batch(part, e)
            if i % 20 == 19:
                gc.collect()
                mem.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert max(mem) - mem[0] < 256 << 10, mem


def test_a_forgotten_key_comes_back_and_checkpoints_keep_working(tmp_path):
    """Keys leave and come back (their ids reused); a snapshot taken in between restores
    to an engine that continues bit for bit, V1 and V2."""
    from velokern.checkpoint import read_checkpoint, write_checkpoint

    rng = np.random.default_rng(7)
    n = 6_000
    k = rng.integers(0, 300, n) + 300 * (np.arange(n) // 1_500)  # key ranges come and go
    back = rng.random(n) < 0.2
    k[back] = rng.integers(0, 40, int(back.sum()))  # and a few keys come back often
    ts = np.arange(n, dtype=np.int64) * 20 + rng.integers(-300, 300, n)
    b = RecordBatch({"k": k.astype(np.int64), "ts": ts, "x": rng.integers(-5, 5, n)})
    sql = ("SELECT k, COUNT(*) AS n, SUM(x) AS sx, window_start, window_end FROM t "
           "GROUP BY k WINDOW SESSION(ts, 500ms)")
    parts = cut(b, [700] * 9)
    for processor in ("v1", "v2:2"):
        ref, ref_engine = run_job(sql, parts, processor)
        assert len(ref_engine._sessions._key_ids) == 0
        for at in (2, 5):
            e = vk.StreamExecutionEngine(sql)
            proc = vk.JobProcessorFactory.create(processor)
            first = [proc.process_batch(p, e) for p in parts[:at]]
            assert len(e._sessions._key_ids) == _open_keys(e)
            snap = e.snapshot()
            write_checkpoint(tmp_path, {"sql": sql}, {"engine": snap})
            snap = read_checkpoint(tmp_path, {"sql": sql})[1]["engine"]
            e2 = vk.StreamExecutionEngine.restore(snap)
            proc2 = vk.JobProcessorFactory.create(processor)
            rest = [proc2.process_batch(p, e2) for p in parts[at:]] + [proc2.flush(e2)]
            for j, (x, y) in enumerate(zip(ref, first + rest)):
                assert x.equals(y, bitwise=True), (processor, at, j)
