"""V1 = V2 bit for bit (every partition count and valid strategy), and = DuckDB.

Random streams with nulls, NaN, -0.0, string and integer keys, skewed keys, cut into
random batch sizes (hypothesis drives the data and the cuts).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from conftest import (
    assert_batches_identical,
    assert_rows_match,
    cut,
    duckdb_rows,
    make_stream,
    rows_of,
    run,
    run_job,
    to_batch,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import velokern as vk
from velokern import config
from velokern.config import PREFETCH_MIN_SLOTS as PF_MIN_SLOTS
from velokern.kernels.layout import TABLE

STATELESS = {
    "exprs": (
        "SELECT seq, k, x + y AS add_, x - y AS sub_, x * y AS mul_, x / y AS div_, "
        "x // y AS idiv, x % y AS imod, f / 2 AS fdiv, f % 3 AS fmod, -x AS neg, ABS(f) AS af, "
        "ROUND(f, 1) AS r1, ROUND(f) AS r0, FLOOR(f) AS fl, CEIL(f) AS ce, "
        "COALESCE(x, y, 0) AS co, CAST(f AS BIGINT) AS ci, CAST(x AS DOUBLE) AS cd, "
        "CASE WHEN x > 5 THEN f WHEN x < -5 THEN y ELSE NULL END AS cs, "
        "x IS NULL AS xnull, s2 IN ('v01', 'v02') AS sin, x IN (1, 2, NULL) AS xin, "
        "x BETWEEN -2 AND 3 AS bt, NOT (x > 3 AND f < 0) OR s = 's1' AS logic, s2, f "
        "FROM t WHERE f IS NULL OR f > -5.0 OR s2 = 'v03'",
        "SELECT seq, k, x + y, x - y, x * y, x / y, x // y, x % y, f / 2, f % 3, -x, ABS(f), "
        "ROUND(f, 1), ROUND(f), FLOOR(f), CEIL(f), COALESCE(x, y, 0), TRY_CAST(f AS BIGINT), "
        "CAST(x AS DOUBLE), CASE WHEN x > 5 THEN f WHEN x < -5 THEN y ELSE NULL END, "
        "x IS NULL, s2 IN ('v01', 'v02'), x IN (1, 2, NULL), x BETWEEN -2 AND 3, "
        "NOT (x > 3 AND f < 0) OR s = 's1', s2, f "
        "FROM t WHERE f IS NULL OR f > -5.0 OR s2 = 'v03' ORDER BY seq",
    ),
    "star": (
        "SELECT * FROM t WHERE b AND x > 0",
        "SELECT * FROM t WHERE b AND x > 0 ORDER BY seq",
    ),
}

AGG_SELECT = (
    "COUNT(*) AS n, COUNT(x) AS nx, SUM(x) AS sx, SUM(f) AS sf, AVG(f) AS af, AVG(x) AS ax, "
    "MIN(f) AS minf, MAX(f) AS maxf, MIN(s2) AS mins, MAX(x) AS maxx, STDDEV(f) AS sd, "
    "VAR_POP(f) AS vp, STDDEV_POP(x) AS sdp, VARIANCE(x) AS vs, FIRST_VALUE(f) AS ff, "
    "LAST_VALUE(x) AS lx, FIRST_VALUE(s2 IGNORE NULLS) AS fs, COUNT(DISTINCT x) AS dx, "
    "COUNT(DISTINCT s2) AS ds, SUM(x) / COUNT(*) AS ratio"
)
AGG_DUCK = (
    "COUNT(*), COUNT(x), SUM(x), SUM(f), AVG(f), AVG(x), MIN(f), MAX(f), MIN(s2), MAX(x), "
    "STDDEV_SAMP(f), VAR_POP(f), STDDEV_POP(x), VAR_SAMP(x), first(f ORDER BY seq), "
    "last(x ORDER BY seq), first(s2 ORDER BY seq) FILTER (WHERE s2 IS NOT NULL), "
    "COUNT(DISTINCT x), COUNT(DISTINCT s2), SUM(x) / COUNT(*)"
)

AGGREGATE = {
    # EMIT CHANGES (the default): compared on the last row emitted for each group
    "changes": (
        f"SELECT k, s, {AGG_SELECT} FROM t WHERE x IS NULL OR x <> 3 GROUP BY k, s "
        "HAVING COUNT(*) > 1",
        f"SELECT k, s, {AGG_DUCK} FROM t WHERE x IS NULL OR x <> 3 GROUP BY k, s "
        "HAVING COUNT(*) > 1 ORDER BY MIN(seq)",
        2,
    ),
    "final_exprkeys": (
        "SELECT x % 3 AS xm, f, b, COUNT(*) AS n, SUM(y) AS sy, MAX(s2) AS ms, "
        "AVG(y) * 2 AS ay2 FROM t GROUP BY x % 3, f, b EMIT FINAL",
        "SELECT x % 3, f, b, COUNT(*), SUM(y), MAX(s2), AVG(y) * 2 FROM t "
        "GROUP BY x % 3, f, b ORDER BY MIN(seq)",
        None,
    ),
    "final_global": (
        "SELECT COUNT(*) AS n, SUM(f) AS sf, MAX(x) AS mx, COUNT(DISTINCT k) AS dk "
        "FROM t WHERE b EMIT FINAL",
        "SELECT COUNT(*), SUM(f), MAX(x), COUNT(DISTINCT k) FROM t WHERE b",
        None,
    ),
    "final_strings": (
        "SELECT s2, COUNT(*) AS n, MIN(f) AS mn, LAST_VALUE(s IGNORE NULLS) AS ls "
        "FROM t WHERE s2 <> 'v05' OR s2 IS NULL GROUP BY s2 HAVING COUNT(*) >= 1 EMIT FINAL",
        "SELECT s2, COUNT(*), MIN(f), last(s ORDER BY seq) FILTER (WHERE s IS NOT NULL) "
        "FROM t WHERE s2 <> 'v05' OR s2 IS NULL GROUP BY s2 ORDER BY MIN(seq)",
        None,
    ),
}

V2_STATELESS = ["v2:1", "v2:2", "v2:3", "v2:5", "v2:8", "v2:16", "v2:3:round_robin",
                "v2:2:sticky", "v2:8:fan_in", "v2:2:smart"]
V2_STATEFUL = ["v2:1", "v2:2", "v2:3", "v2:5", "v2:8", "v2:16", "v2:3:smart"]
#: run on the calling thread alone as well (batches below config.PARALLEL_MIN_ROWS do;
#: the others here run every batch on all workers, however small)
V2_ONE_WORKER = {"stateless": ("v2:3", "v2:8:fan_in"), "stateful": ("v2:3",)}


def _with_partition_column(batch: vk.RecordBatch, seed: int) -> vk.RecordBatch:
    rng = np.random.default_rng(seed)
    cols = {n: batch.column(n) for n in batch.column_names}
    masks = {n: batch.validity(n) for n in batch.column_names}
    # a Kafka-like partition keyed by k: the same k always lands in the same partition
    cols["__partition__"] = (batch.column("k") * 7 + 3) % 5
    del rng
    return vk.RecordBatch(cols, masks, batch.dictionaries)


def _stream(seed, n, keys, null_rate, skew) -> vk.RecordBatch:
    cols = make_stream(n, seed=seed, keys=keys, null_rate=null_rate, skew=skew)
    # nulls in the first row: every engine sees the nullable kernel variant from batch one
    for c in ("x", "y", "f"):
        cols[c].mask[0] = True
    cols["s2"][0] = None
    return _with_partition_column(to_batch(cols), seed)


def _last_per_group(outs: list[vk.RecordBatch], nkeys: int) -> dict:
    last = {}
    for o in outs:
        for row in rows_of(o):
            key = tuple("nan" if isinstance(v, float) and v != v else v for v in row[:nkeys])
            last[key] = row
    return last


def check_query(name: str, batch: vk.RecordBatch, batches: list[vk.RecordBatch],
                pick: np.random.Generator | None = None) -> None:
    """V1 against every V2 config (``pick``: against three of them, drawn), then against
    DuckDB."""
    if name in STATELESS:
        sql, duck = STATELESS[name]
        configs = V2_STATELESS
        nkeys = None
    else:
        sql, duck, nkeys = AGGREGATE[name]
        configs = V2_STATEFUL + (["v2:2:sticky"] if name == "changes" else [])
    if pick is not None:
        configs = list(pick.choice(configs, 3, replace=False))
    v1 = run(sql, batches, "v1")
    for cfg in configs:
        kw = {"keyed_by": ["k"]} if "sticky" in cfg else {}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(config, "PARALLEL_MIN_ROWS", 1)
            v2 = run(sql, batches, cfg, **kw)
        assert_batches_identical(v1, v2, f"{name} {cfg}")
    for cfg in V2_ONE_WORKER["stateless" if name in STATELESS else "stateful"][:1 if pick
                                                                               else None]:
        assert_batches_identical(v1, run(sql, batches, cfg), f"{name} {cfg}, one worker")
    ref = duckdb_rows(duck, batch)
    if nkeys is None:
        ours = [r for o in v1 for r in rows_of(o)]
        assert_rows_match(ours, ref, name)
    else:
        last = _last_per_group(v1, nkeys)
        ref_keys = [tuple("nan" if isinstance(v, float) and v != v else v for v in r[:nkeys])
                    for r in ref]
        assert set(last) == set(ref_keys), f"{name}: groups differ from DuckDB's"
        assert_rows_match([last[k] for k in ref_keys], ref, name)


@pytest.mark.parametrize("name", list(STATELESS) + list(AGGREGATE))
def test_fixed_stream(name):
    batch = _stream(seed=3, n=2500, keys=25, null_rate=0.1, skew=False)
    batches = cut(batch, [1, 7, 300, 1000, 1, 0, 523])
    check_query(name, batch, batches)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 1500),
    keys=st.sampled_from([1, 3, 40, 500]),
    null_rate=st.floats(0.02, 0.6),
    skew=st.booleans(),
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=6),
)
def test_random_streams(seed, n, keys, null_rate, skew, sizes):
    """Each random stream against three of the V2 configs, drawn per query (the fixed
    stream runs them all)."""
    batch = _stream(seed, n, keys, null_rate, skew)
    batches = cut(batch, sizes)
    pick = np.random.default_rng(seed)
    for name in list(STATELESS) + list(AGGREGATE):
        check_query(name, batch, batches, pick)


def test_emit_changes_rows_per_batch():
    """After each batch: one row per touched group with its aggregates so far."""
    batch = _stream(seed=5, n=400, keys=6, null_rate=0.1, skew=True)
    batches = cut(batch, [50, 1, 149, 200])
    sql = "SELECT k, COUNT(*) AS n, SUM(f) AS sf, MAX(s2) AS ms FROM t GROUP BY k"
    outs = run(sql, batches, "v1")
    seen = 0
    for b, o in zip(batches, outs):
        seen += len(b)
        prefix = batch.slice(0, seen)
        touched = sorted(set(b.column("k").tolist()))
        ref = duckdb_rows(
            "SELECT k, COUNT(*), SUM(f), MAX(s2) FROM t WHERE k IN ("
            + ",".join(map(str, touched)) + ") GROUP BY k ORDER BY MIN(seq)", prefix)
        assert_rows_match(rows_of(o), ref, f"after {seen} records")
    assert len(outs[-1]) == 0  # nothing held back at flush for EMIT CHANGES


def test_batching_does_not_change_final_answers():
    batch = _stream(seed=9, n=3000, keys=30, null_rate=0.1, skew=False)
    sql = AGGREGATE["final_exprkeys"][0]
    finals = []
    for sizes in ([3000], [1] * 50 + [2950], [7] * 430, [1000, 1000, 1000]):
        outs = run(sql, cut(batch, sizes), "v2:3")
        finals.append(outs[-1])
    for f in finals[1:]:
        assert f.equals(finals[0], bitwise=True)


def test_nulls_appearing_mid_stream():
    """A stream whose first batches have no nulls, later ones do (kernel variant switch)."""
    cols = make_stream(1200, seed=4, keys=10, null_rate=0.0, nan_rate=0.0)
    clean = to_batch(cols)
    cols2 = make_stream(800, seed=5, keys=10, null_rate=0.3)
    cols2["seq"] = cols2["seq"] + 1200
    dirty = to_batch(cols2)
    whole = vk.RecordBatch.concat([clean.select(dirty.column_names), dirty])
    batches = [clean.slice(0, 700), clean.slice(700), dirty.slice(0, 400), dirty.slice(400)]
    _final_matches_duckdb(
        "SELECT k, COUNT(x) AS nx, SUM(f) AS sf, MIN(s2) AS m FROM t GROUP BY k EMIT FINAL",
        batches, whole,
        "SELECT k, COUNT(x), SUM(f), MIN(s2) FROM t GROUP BY k ORDER BY MIN(seq)",
        "nulls mid-stream")


def _final_matches_duckdb(sql: str, batches, whole, ref_sql: str, label: str) -> None:
    """V1 and V2:3 give identical outputs for ``batches``, and the final one is
    DuckDB's ``ref_sql`` over ``whole``, row for row."""
    v1 = run(sql, batches, "v1")
    v2 = run(sql, batches, "v2:3")
    assert_batches_identical(v1, v2, label)
    ref = duckdb_rows(ref_sql, whole)
    assert len(ref) == v1[-1].num_rows
    assert_rows_match(rows_of(v1[-1]), ref, label)


def test_null_keys_appearing_mid_stream():
    """Groups created by the null-free kernel variant (which writes no key null flags)
    are found again by the nullable variant once null keys arrive, and null keys form
    their own groups: a GROUP BY on an integer and a string key, V1 and V2 against
    DuckDB."""
    rng = np.random.default_rng(7)
    n = 2000
    names = np.array(["a", "b", "c", "d"], dtype=object)
    k = rng.integers(0, 6, n)
    s = names[rng.integers(0, 4, n)].astype(object)
    kmask = np.ones(n, bool)
    kmask[1200:] = rng.random(n - 1200) > 0.3
    s[1200:][rng.random(n - 1200) < 0.3] = None
    whole = vk.RecordBatch.from_pydict({"seq": np.arange(n), "k": k, "s": list(s),
                                        "v": rng.integers(0, 100, n)}, masks={"k": kmask})
    batches = [whole.slice(0, 700), whole.slice(700, 500), whole.slice(1200, 300),
               whole.slice(1500)]
    assert batches[0].validity("k") is None and batches[2].validity("k") is not None
    _final_matches_duckdb(
        "SELECT k, s, COUNT(*) AS n, SUM(v) AS sv FROM t GROUP BY k, s EMIT FINAL",
        batches, whole,
        "SELECT k, s, COUNT(*), SUM(v) FROM t GROUP BY k, s ORDER BY MIN(seq)",
        "null keys mid-stream")


def test_keys_of_every_integer_width_time_and_float():
    """Keys read back from the hash table's key bits (int8, uint64 past 2**63, a
    timestamp) and a float key kept in a row of its own, null keys arriving mid-stream:
    V1 and V2 agree and match DuckDB, without and with a tumbling window."""
    rng = np.random.default_rng(11)
    n = 3000
    u = np.array([2**64 - 1, 2**63, 5, 0], np.uint64)[rng.integers(0, 4, n)]
    f = np.array([-0.0, 0.0, 1.5, np.nan])[rng.integers(0, 4, n)]
    masks = {c: np.ones(n, bool) for c in ("i8", "f")}
    masks["i8"][1500:] = rng.random(n - 1500) > 0.2
    masks["f"][2000:] = rng.random(n - 2000) > 0.2
    whole = vk.RecordBatch({
        "seq": np.arange(n), "i8": rng.integers(-3, 3, n).astype(np.int8), "u": u,
        "ts": (np.datetime64("2024-01-01") + rng.integers(0, 3, n).astype("timedelta64[D]")
               ).astype("datetime64[ns]"),
        "f": f, "t": np.arange(n, dtype=np.int64) * 1000, "v": rng.integers(0, 100, n),
    }, masks)
    batches = [whole.slice(0, 1000), whole.slice(1000, 700), whole.slice(1700)]
    assert batches[0].validity("i8") is None and batches[1].validity("i8") is not None
    _final_matches_duckdb(
        "SELECT i8, u, ts, f, COUNT(*) AS n, SUM(v) AS sv FROM t GROUP BY i8, u, ts, f "
        "EMIT FINAL", batches, whole,
        "SELECT i8, u, ts, f, COUNT(*), SUM(v) FROM t GROUP BY i8, u, ts, f "
        "ORDER BY MIN(seq)", "integer, time and float keys")
    sql = ("SELECT window_start, u, i8, COUNT(*) AS n, SUM(v) AS sv FROM t GROUP BY u, i8 "
           "WINDOW TUMBLING (t, INTERVAL '1' MINUTE)")
    v1 = run(sql, batches, "v1")
    assert_batches_identical(v1, run(sql, batches, "v2:3"), "windowed integer keys")
    got = [r for o in v1 for r in rows_of(o)]
    ref = duckdb_rows("SELECT t // 60000 * 60000, u, i8, COUNT(*), SUM(v) FROM t "
                      "GROUP BY 1, u, i8 ORDER BY 1, MIN(seq)", whole)
    assert len(got) == len(ref)
    assert_rows_match(got, ref, "windowed integer keys")


def test_large_group_count_grows_state():
    """Tens of thousands of groups: the hash table and distinct sets grow mid-batch, and
    past PF_MIN_SLOTS table slots the update kernel prefetches rows ahead (through
    filtered rows, null keys, V2's bucketed row order and a resume after growth)."""
    rng = np.random.default_rng(1)
    n = 150_000
    k = rng.integers(0, 60_000, n)
    b = vk.RecordBatch({
        "seq": np.arange(n),
        "k": k,
        "g": rng.integers(0, 2, n),
        "x": rng.integers(0, 50, n),
        "f": rng.normal(size=n),
    }, {"k": rng.random(n) > 0.02})
    sql = ("SELECT k, g, COUNT(*) AS n, COUNT(DISTINCT x) AS dx, SUM(f) AS sf FROM t "
           "WHERE x > 2 GROUP BY k, g EMIT FINAL")
    batches = cut(b, [10_000, 25_000, 115_000])
    v1, engine = run_job(sql, batches, "v1")
    # table slots: the prefetching kernel ran
    assert engine.state.arrays[TABLE].shape[1] >= PF_MIN_SLOTS
    for cfg in ("v2:2", "v2:3"):
        assert_batches_identical(v1, run(sql, batches, cfg), cfg)
    ref = duckdb_rows("SELECT k, g, COUNT(*), COUNT(DISTINCT x), SUM(f) FROM t WHERE x > 2 "
                      "GROUP BY k, g ORDER BY MIN(seq)", b)
    assert_rows_match(rows_of(v1[-1]), ref, "many groups")


def test_direct_map_grows_with_dictionaries_and_turns_off_when_too_large():
    """String GROUP BY keys use a direct map sized to the job's dictionaries: new strings
    in later batches resize it mid-stream, and past its size limit the engine falls back
    to the hash table (both with groups already live)."""
    rng = np.random.default_rng(12)
    n = 6000
    # a few strings at first, then thousands of new ones in later batches
    a = np.array([f"a{v}" for v in np.concatenate([rng.integers(0, 3, 1000),
                                                   rng.integers(0, 1500, n - 1000)])])
    b = np.array([f"b{v}" for v in np.concatenate([rng.integers(0, 2, 1000),
                                                   rng.integers(0, 1500, n - 1000)])])
    cols = {"seq": np.arange(n), "a": a, "b": b, "f": rng.normal(size=n)}
    batch = vk.RecordBatch.from_pydict(cols)
    def make_batches():
        # each batch with its own dictionaries: the job's dictionaries grow batch by batch
        return [vk.RecordBatch.from_pydict({k: v[lo:hi] for k, v in cols.items()})
                for lo, hi in pairwise([0, 500, 1000, 3000, 4000, n])]

    batches = make_batches()
    for sql, duck in (
        ("SELECT a, COUNT(*) AS n, SUM(f) AS s FROM t GROUP BY a",
         "SELECT a, COUNT(*), SUM(f) FROM t GROUP BY a ORDER BY MIN(seq)"),
        # 2048 x 2048 slots > the direct map's limit once both dictionaries grow
        ("SELECT a, b, COUNT(*) AS n, MAX(f) AS m FROM t GROUP BY a, b",
         "SELECT a, b, COUNT(*), MAX(f) FROM t GROUP BY a, b ORDER BY MIN(seq)"),
    ):
        v1 = run(sql, batches, "v1")
        for cfg in ("v2:2", "v2:3"):
            assert_batches_identical(v1, run(sql, batches, cfg), f"{sql} {cfg}")
        nkeys = 2 if " b," in sql else 1
        last = _last_per_group(v1, nkeys)
        ref = duckdb_rows(duck, batch)
        assert_rows_match([last[tuple(r[:nkeys])] for r in ref], ref, sql)
        assert len(last) == len(ref)
    # fresh batches: the jobs above adopted batches[0]'s dictionaries and grew them
    batches = make_batches()
    engine = vk.StreamExecutionEngine("SELECT a, b, COUNT(*) AS n FROM t GROUP BY a, b")
    proc = vk.SimpleJobProcessor()
    proc.process_batch(batches[0], engine)
    assert engine.state.meta[0, engine.state.spec.meta_cols["direct"]] == 1
    for bb in batches[1:]:
        proc.process_batch(bb, engine)
    assert engine.state.meta[0, engine.state.spec.meta_cols["direct"]] == 0  # fell back to hashing


@pytest.mark.parametrize("processor", ["v1", "v2:2"])
def test_global_aggregate_over_no_rows_is_null(processor):
    """A global aggregate's group exists before any record: when nothing passes WHERE
    (or the batch is empty), SUM/AVG/MIN/MAX/STDDEV/VAR are NULL and the counts 0, as
    DuckDB gives (they were the states' initial values: 0, INT64_MIN, NaN)."""
    import duckdb
    import pyarrow as pa

    y, e = [1, 2], [1.0, 2.0]
    sql = ("SELECT COUNT(*) AS n, COUNT(y) AS c, MAX(y) AS mx, MIN(e) AS mn, SUM(y) AS s, "
           "AVG(y) AS a, STDDEV(e) AS sd, VAR_POP(y) AS vp FROM t WHERE y > 5")
    con = duckdb.connect()
    con.register("t", pa.table({"y": y, "e": e}))
    want = [tuple(r) for r in con.execute(sql).fetchall()]
    assert want == [(0, 0, None, None, None, None, None, None)]
    b = vk.RecordBatch({"y": np.array(y, np.int64), "e": np.array(e)})
    for batches in ([b], [b.slice(0, 0)]):
        out = vk.run_sql(sql + " EMIT FINAL", batches, processor=processor).to_pydict()
        assert list(zip(*out.values())) == want
