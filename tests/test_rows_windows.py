"""ROWS window functions: one output row per input row, in input order; per key a ring
buffer of the last rows. V1 = V2 bit for bit; = DuckDB's window functions ordered by
arrival (``seq``)."""

from __future__ import annotations

import pytest
from conftest import (
    assert_batches_identical,
    assert_rows_match,
    cut,
    duckdb_rows,
    make_stream,
    rows_of,
    run,
    to_batch,
)

import velokern as vk
from velokern.batch import RecordBatch
from velokern.datagen import SCENARIOS, stream_for
from velokern.plan import PlanError

W = "PARTITION BY k ORDER BY seq ROWS BETWEEN 4 PRECEDING AND CURRENT ROW"
QUERIES = {
    "frame_aggs": (
        f"SELECT seq, k, AVG(f) OVER ({W}) AS af, SUM(x) OVER ({W}) AS sx, "
        f"MIN(f) OVER ({W}) AS mnf, MAX(x) OVER ({W}) AS mxx, COUNT(x) OVER ({W}) AS cx, "
        f"COUNT(*) OVER ({W}) AS cs, SUM(f) OVER ({W}) AS sf, MIN(x) OVER ({W}) AS mnx FROM t",
        f"SELECT seq, k, AVG(f) OVER w, SUM(x) OVER w, MIN(f) OVER w, MAX(x) OVER w, "
        f"COUNT(x) OVER w, COUNT(*) OVER w, SUM(f) OVER w, MIN(x) OVER w FROM t "
        f"WINDOW w AS ({W}) ORDER BY seq",
    ),
    "lag_rownum": (
        "SELECT seq, s2, LAG(x) OVER (PARTITION BY s2 ORDER BY seq) AS l1, "
        "LAG(f, 3, 0) OVER (PARTITION BY s2 ORDER BY seq) AS l3, "
        "ROW_NUMBER() OVER (PARTITION BY s2 ORDER BY seq) AS rn, "
        "f - AVG(f) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY s2 ORDER BY seq) AS dev "
        "FROM t WHERE x IS NULL OR x > -8",
        "SELECT seq, s2, LAG(x) OVER w, LAG(f, 3, 0) OVER w, ROW_NUMBER() OVER w, "
        "f - AVG(f) OVER (PARTITION BY s2 ORDER BY seq ROWS BETWEEN 2 PRECEDING AND CURRENT "
        "ROW) FROM t WHERE x IS NULL OR x > -8 WINDOW w AS (PARTITION BY s2 ORDER BY seq) "
        "ORDER BY seq",
    ),
    "global_frame": (
        "SELECT seq, MAX(f) OVER (ROWS BETWEEN 50 PRECEDING AND CURRENT ROW) AS m, "
        "AVG(x) OVER (ROWS BETWEEN 50 PRECEDING AND CURRENT ROW) AS a FROM t",
        "SELECT seq, MAX(f) OVER w, AVG(x) OVER w FROM t WINDOW w AS (ORDER BY seq ROWS "
        "BETWEEN 50 PRECEDING AND CURRENT ROW) ORDER BY seq",
    ),
}


@pytest.fixture(scope="module")
def batch():
    return to_batch(make_stream(3000, seed=5, keys=7))


@pytest.mark.parametrize("name", list(QUERIES))
def test_rows_windows_match_duckdb_and_v1_equals_v2(batch, name):
    sql, ref = QUERIES[name]
    ref_rows = duckdb_rows(ref, batch)
    for sizes in ([10**9], [1, 17, 400, 3, 1000], [250] * 12):
        batches = cut(batch, sizes)
        v1 = run(sql, batches, "v1")
        assert_rows_match(rows_of(RecordBatch.concat(v1)), ref_rows, name)
        for cfg in ("v2:1", "v2:2", "v2:3", "v2:8"):
            assert_batches_identical(run(sql, batches, cfg), v1, f"{name} {cfg}")


def test_s1_scenario_matches_duckdb():
    batches = list(stream_for("S1", 30_000, 7_000, random=True))
    whole = RecordBatch.concat(batches)
    ours = RecordBatch.concat(run(SCENARIOS["S1"], batches, "v2:2"))
    ref = duckdb_rows(
        "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY rn ROWS BETWEEN "
        "99 PRECEDING AND CURRENT ROW) FROM (SELECT *, row_number() OVER () AS rn FROM t) "
        "ORDER BY rn", whole)
    assert_rows_match(rows_of(ours), ref, "S1")


def test_rows_window_by_a_string_key_whose_dictionary_grows():
    """PARTITION BY a string column (its codes index a direct map instead of the hash
    table): later batches bring new strings past the map's size, and nulls; the answer
    stays DuckDB's, V1 = V2, and a snapshot taken mid-stream carries on the same."""
    import numpy as np

    rng = np.random.default_rng(3)
    batches, seq = [], 0
    for b, nkeys in enumerate([3, 3, 40, 300, 5, 300]):
        n = 120
        keys = [None if rng.random() < 0.1 else f"k{b if nkeys > 5 else 0}_{v}"
                for v in rng.integers(0, nkeys, n)]
        batches.append(RecordBatch.from_pydict({
            "seq": list(range(seq, seq + n)), "s": keys,
            "f": rng.standard_normal(n).round(3).tolist()}))
        seq += n
    sql = ("SELECT seq, s, AVG(f) OVER (PARTITION BY s ORDER BY seq ROWS BETWEEN 2 "
           "PRECEDING AND CURRENT ROW) AS a, LAG(f) OVER (PARTITION BY s ORDER BY seq) "
           "AS l FROM t")
    ref = duckdb_rows(sql.replace(" FROM t", " FROM t ORDER BY seq"),
                      RecordBatch.concat(batches))
    v1 = run(sql, batches, "v1")
    assert_rows_match(rows_of(RecordBatch.concat(v1)), ref, "growing dictionary")
    for cfg in ("v2:2", "v2:3"):
        assert_batches_identical(run(sql, batches, cfg), v1, cfg)
    engine = vk.StreamExecutionEngine(sql)
    proc = vk.SimpleJobProcessor()
    head = [proc.process_batch(b, engine) for b in batches[:3]]
    again = vk.StreamExecutionEngine.restore(engine.snapshot())
    tail = [proc.process_batch(b, again) for b in batches[3:]] + [proc.flush(again)]
    assert_batches_identical(head + tail, v1, "restored mid-stream")


def test_frames_filled_before_the_first_null_stay_right_after_it():
    """The first batches have no null: their kernel keeps no null flags for the frames'
    values. Nulls arrive later, while those values are still in the frames (frame of 5
    rows, batches of 3): AVG, SUM, MIN, MAX, COUNT and LAG stay DuckDB's, V1 = V2."""
    import numpy as np

    rng = np.random.default_rng(11)
    n = 60
    f = rng.integers(-9, 9, n).astype(float).tolist()
    for i in range(9, n, 4):
        f[i] = None  # first null at row 9: batches 0-2 have none
    batch = RecordBatch.from_pydict({"seq": list(range(n)), "k": [i % 2 for i in range(n)],
                                     "f": f})
    w = "PARTITION BY k ORDER BY seq ROWS BETWEEN 4 PRECEDING AND CURRENT ROW"
    sql = (f"SELECT seq, AVG(f) OVER ({w}) AS a, SUM(f) OVER ({w}) AS s, MIN(f) OVER ({w}) "
           f"AS mn, MAX(f) OVER ({w}) AS mx, COUNT(f) OVER ({w}) AS c, LAG(f, 2) OVER "
           "(PARTITION BY k ORDER BY seq) AS l FROM t")
    ref = duckdb_rows(sql.replace(" FROM t", " FROM t ORDER BY seq"), batch)
    batches = cut(batch, [3] * 20)
    v1 = run(sql, batches, "v1")
    assert_rows_match(rows_of(RecordBatch.concat(v1)), ref, "nulls after the first batches")
    assert_batches_identical(run(sql, batches, "v2:2"), v1, "v2:2")


def test_a_snapshot_with_another_state_layout_is_refused(batch):
    sql = "SELECT seq, LAG(x) OVER (PARTITION BY s2 ORDER BY seq) AS l FROM t"
    engine = vk.StreamExecutionEngine(sql)
    vk.SimpleJobProcessor().process_batch(batch, engine)
    snap = engine.snapshot()
    snap["state"][7] = snap["state"][7][:, :3]  # the meta columns of an older layout
    with pytest.raises(ValueError, match="state layout"):
        vk.StreamExecutionEngine.restore(snap)


def test_one_output_row_per_input_row_in_order(batch):
    sql = "SELECT seq, ROW_NUMBER() OVER (PARTITION BY k) AS rn FROM t"
    outs = run(sql, cut(batch, [100] * 30), "v2:3")
    for inp, out in zip(cut(batch, [100] * 30), outs):
        assert out.column("seq").tolist() == inp.column("seq").tolist()


@pytest.mark.parametrize("sql, msg", [
    ("SELECT LEAD(x) OVER (PARTITION BY k) FROM t", "LEAD"),
    ("SELECT AVG(x) OVER (PARTITION BY k ORDER BY seq) FROM t", "needs a frame"),
    ("SELECT SUM(x) OVER (ORDER BY seq ROWS BETWEEN 2 PRECEDING AND 2 FOLLOWING) FROM t",
     "unsupported window frame"),
    ("SELECT SUM(x) OVER (ORDER BY seq RANGE BETWEEN 2 PRECEDING AND CURRENT ROW) FROM t",
     "unsupported window frame"),
    ("SELECT k, COUNT(*), SUM(x) OVER (ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM t "
     "GROUP BY k", "cannot be combined"),
    ("SELECT LAG(x) OVER (PARTITION BY k), LAG(x) OVER (PARTITION BY s) FROM t",
     "same PARTITION BY"),
    ("SELECT NTILE(4) OVER (PARTITION BY k) FROM t", "unsupported function NTILE"),
])
def test_rows_window_errors(batch, sql, msg):
    with pytest.raises(PlanError, match=msg):
        e = vk.StreamExecutionEngine(sql)
        vk.JobProcessorFactory.create("v1").process_batch(batch, e)
