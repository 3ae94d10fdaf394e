"""The aggregate registry (velokern.aggregates), one table: every entry over random data
with NULLs, NaN, -0.0 and groups with no non-null value, held to its slow reference
through the engine (V1 and V2), to DuckDB, through a sliding window with EMIT CHANGES
and a checkpoint restore, and merged from partials (the distributed path) against one
pass. Adding an aggregate adds a row to TABLE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import cut, duckdb_rows, to_batch, values_equal
from hypothesis import given, settings
from hypothesis import strategies as st
from test_distributed_merge import assert_close, local_final, run_in_parts

import velokern as vk
from velokern.aggregates import REGISTRY, kind_for, reference
from velokern.sql import parse_sql

# (aggregate, velokern SQL, DuckDB SQL, argument column, IGNORE NULLS)
TABLE = [
    ("count_star", "COUNT(*)", "COUNT(*)", None, False),
    ("count", "COUNT(f)", "COUNT(f)", "f", False),
    ("count_distinct", "COUNT(DISTINCT x)", "COUNT(DISTINCT x)", "x", False),
    ("sum", "SUM(f)", "SUM(f)", "f", False),
    ("sum", "SUM(x)", "SUM(x)", "x", False),
    ("avg", "AVG(f)", "AVG(f)", "f", False),
    ("min", "MIN(f)", "MIN(f)", "f", False),
    ("min", "MIN(s2)", "MIN(s2)", "s2", False),
    ("max", "MAX(f)", "MAX(f)", "f", False),
    ("max", "MAX(s2)", "MAX(s2)", "s2", False),
    ("var_samp", "VAR_SAMP(f)", "VAR_SAMP(f)", "f", False),
    ("var_pop", "VAR_POP(x)", "VAR_POP(x)", "x", False),
    ("stddev_samp", "STDDEV(x)", "STDDEV_SAMP(x)", "x", False),
    ("stddev_pop", "STDDEV_POP(f)", "STDDEV_POP(f)", "f", False),
    ("first_value", "FIRST_VALUE(x)", "FIRST(x ORDER BY seq)", "x", False),
    ("first_value", "FIRST_VALUE(s2 IGNORE NULLS)",
     "FIRST(s2 ORDER BY seq) FILTER (WHERE s2 IS NOT NULL)", "s2", True),
    ("last_value", "LAST_VALUE(f)", "LAST(f ORDER BY seq)", "f", False),
    ("last_value", "LAST_VALUE(x IGNORE NULLS)",
     "LAST(x ORDER BY seq) FILTER (WHERE x IS NOT NULL)", "x", True),
    ("bool_and", "BOOL_AND(b)", "BOOL_AND(b)", "b", False),
    ("bool_or", "BOOL_OR(b)", "BOOL_OR(b)", "b", False),
    ("bool_and", "EVERY(b)", "BOOL_AND(b)", "b", False),
]
OUTS = [f"a{i}" for i in range(len(TABLE))]
SELECT = ", ".join(f"{sql} AS {o}" for (_, sql, _, _, _), o in zip(TABLE, OUTS))
# one row per entry (the windowed and global queries: each query compiles its kernels)
ONE = sorted({row[0]: i for i, row in reversed(list(enumerate(TABLE)))}.values())
SELECT_ONE = ", ".join(f"{TABLE[i][1]} AS {OUTS[i]}" for i in ONE)
GROUP_BY = f"SELECT k, {SELECT} FROM t GROUP BY k EMIT FINAL"
DUCK = ("SELECT k, " + ", ".join(duck for _, _, duck, _, _ in TABLE)
        + " FROM t GROUP BY k ORDER BY k")


def _stream(n=1600, seed=7):
    """Columns k (group), seq, ts (in order), f (float: NaN, -0.0, NULL), x (int, NULL),
    s2 (string, NULL), b (bool, NULL). Group 0 has no non-null value at all; in group 1
    b is always true."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 14, n)
    f = np.round(rng.normal(0.0, 10.0, n), 2)
    f[rng.random(n) < 0.03] = np.nan
    f[rng.random(n) < 0.03] = -0.0
    f[rng.random(n) < 0.03] = 0.0
    x = rng.integers(-6, 7, n)
    b = rng.random(n) < 0.6
    b[k == 1] = True
    s2 = np.array([f"v{v:02d}" for v in rng.integers(0, 9, n)], dtype=object)
    null = {c: (rng.random(n) < 0.15) | (k == 0) for c in ("f", "x", "b", "s2")}
    s2[null["s2"]] = None
    cols = {
        "seq": np.arange(n, dtype=np.int64),
        "ts": np.arange(n, dtype=np.int64) * 7,
        "k": k.astype(np.int64),
        "f": np.ma.MaskedArray(f, mask=null["f"]),
        "x": np.ma.MaskedArray(x, mask=null["x"]),
        "b": np.ma.MaskedArray(b, mask=null["b"]),
        "s2": s2,
    }
    whole = to_batch(cols)
    return whole, cut(whole, [300, 1, 450, 250])


def _same(got, exp, label):
    if isinstance(exp, float) and isinstance(got, float):
        if math.isnan(exp):
            assert math.isnan(got), label
        else:
            assert got == pytest.approx(exp, rel=1e-12, abs=1e-12), label
            if exp == 0.0:  # MIN/MAX/FIRST/LAST keep the sign of the zero they hold
                assert math.copysign(1, got) == math.copysign(1, exp) or label[0] in (
                    "sum", "avg", "var_samp", "var_pop", "stddev_samp", "stddev_pop"), label
    else:
        assert got == exp and type(got) is type(exp), (label, got, exp)


def _check_against_reference(out: vk.RecordBatch, whole: vk.RecordBatch, member=None,
                             entries=None):
    """Every output row against the reference over its group's records (``member``:
    which records belong to a row, default those with its key; ``entries``: the rows of
    TABLE in the query, default all)."""
    src = whole.to_pydict()
    records = out.to_records()
    assert records
    for r in records:
        if member is None:
            idx = [i for i, kk in enumerate(src["k"]) if kk == r["k"]]
        else:
            idx = member(r)
        for j in range(len(TABLE)) if entries is None else entries:
            (func, sql, _, col, ign), o = TABLE[j], OUTS[j]
            vals = [None] * len(idx) if col is None else [src[col][i] for i in idx]
            _same(r[o], reference(func, vals, ign), (func, sql, r.get("k")))


def test_table_covers_the_registry():
    assert {row[0] for row in TABLE} == set(REGISTRY)
    for name, a in REGISTRY.items():
        assert a.name == name and a.null_rule and a.sql and a.sqlglot
        assert a.form in ("", "*", "distinct")
        k = kind_for(name, "float64")
        assert callable(k.state) and isinstance(k.final, str)
        assert (a.partial.columns is None) == a.partial.distinct


def test_sql_spellings_parse_to_their_entry():
    for func, sql, _, _, ign in TABLE:
        (_, e), = parse_sql(f"SELECT {sql} AS a FROM t").select
        assert (e.func, e.ignore_nulls) == (func, ign), sql
    for name, a in REGISTRY.items():
        if a.form == "":
            for spelling in a.sql:
                (_, e), = parse_sql(f"SELECT {spelling}(v) AS a FROM t").select
                assert e.func == name, spelling


@pytest.mark.parametrize("processor", ["v1", "v2:2"])
def test_every_entry_matches_its_reference(processor):
    whole, batches = _stream()
    out = vk.run_sql(GROUP_BY, batches, processor)
    assert sorted(out.column("k").tolist()) == list(range(14))
    _check_against_reference(out, whole)
    if processor == "v1":
        # and DuckDB, on the same rows
        ref = duckdb_rows(DUCK, whole)
        ours = sorted(out.to_records(), key=lambda r: r["k"])
        for r, d in zip(ours, ref, strict=True):
            for (_, sql, *_), o, dv in zip(TABLE, OUTS, d[1:]):
                if hasattr(dv, "is_finite"):  # Decimal
                    dv = float(dv)
                assert values_equal(r[o], dv), (sql, r["k"], r[o], dv)


def test_a_global_aggregate_over_no_rows():
    """Nothing passed WHERE: the registry's NULL rules (COUNTs 0, everything else NULL),
    as DuckDB."""
    whole, batches = _stream(200, seed=3)
    sql = f"SELECT {SELECT_ONE} FROM t WHERE seq < 0 EMIT FINAL"
    for processor in ("v1", "v2:2"):
        (row,) = vk.run_sql(sql, batches, processor).to_records()
        for i in ONE:
            assert row[OUTS[i]] == reference(TABLE[i][0], []), (TABLE[i][1], row[OUTS[i]])
    duck = duckdb_rows("SELECT " + ", ".join(TABLE[i][2] for i in ONE)
                       + " FROM t WHERE seq < 0", whole)
    assert [row[OUTS[i]] for i in ONE] == list(duck[0])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(
    st.integers(0, 2),
    st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.5, -2.25, 3.0, math.nan, 1e6])),
    st.one_of(st.none(), st.integers(-3, 3)),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.sampled_from(["a", "b", "ab", ""]))), min_size=1, max_size=40))
def test_every_entry_matches_its_reference_on_edge_cases(rows):
    rows = [*rows, (3, None, None, None, None)]  # every column nullable: the same kernel
    n = len(rows)
    cols = {"seq": np.arange(n, dtype=np.int64), "ts": np.arange(n, dtype=np.int64),
            "k": np.array([r[0] for r in rows], np.int64)}
    for j, (c, dt) in enumerate((("f", np.float64), ("x", np.int64), ("b", np.bool_)), 1):
        vals = [r[j] for r in rows]
        cols[c] = np.ma.MaskedArray(np.array([0 if v is None else v for v in vals], dt),
                                    mask=[v is None for v in vals])
    cols["s2"] = np.array([r[4] for r in rows], dtype=object)
    whole = to_batch(cols)
    out = vk.run_sql(GROUP_BY, [whole], "v1")
    assert out.column("k").tolist() == list(dict.fromkeys(r[0] for r in rows))
    _check_against_reference(out, whole)


WINDOWED = (f"SELECT k, {SELECT_ONE}, window_start FROM t GROUP BY k "
            "WINDOW SLIDING(ts, 2800ms, 1400ms) EMIT CHANGES")


@pytest.mark.parametrize("processor", ["v1", "v2:2"])
def test_windows_emit_changes_and_checkpoint_restore(processor, tmp_path):
    """Through sliding windows with EMIT CHANGES: each (window, key)'s last change equals
    the reference over the window's records; a job checkpointed after two batches and
    restored goes on bit for bit."""
    from velokern.checkpoint import read_checkpoint, write_checkpoint

    whole, batches = _stream()
    engine = vk.StreamExecutionEngine(WINDOWED)
    proc = vk.JobProcessorFactory.create(processor)
    ref = [proc.process_batch(b, engine) for b in batches] + [proc.flush(engine)]

    engine = vk.StreamExecutionEngine(WINDOWED)
    proc = vk.JobProcessorFactory.create(processor)
    first = [proc.process_batch(b, engine) for b in batches[:2]]
    snap = engine.snapshot()
    write_checkpoint(tmp_path, {"sql": snap["sql"]}, {"engine": snap})
    restored = vk.StreamExecutionEngine.restore(
        read_checkpoint(tmp_path, {"sql": snap["sql"]})[1]["engine"])
    proc2 = vk.JobProcessorFactory.create(processor)
    rest = [proc2.process_batch(b, restored) for b in batches[2:]] + [proc2.flush(restored)]
    for k, (a, b) in enumerate(zip(ref, first + rest, strict=True)):
        assert a.equals(b, bitwise=True), (processor, k)

    out = vk.RecordBatch.concat([o for o in ref if o.num_columns])
    last = {}
    for r in out.to_records():
        last[(r["window_start"], r["k"])] = r
    ts, ks = whole.column("ts"), whole.column("k")

    def member(r):
        ws = r["window_start"]
        ws = ws.value // 1_000_000 if hasattr(ws, "value") else ws  # a Timestamp
        return np.flatnonzero((ts >= ws) & (ts < ws + 2800) & (ks == r["k"])).tolist()

    _check_against_reference(vk.RecordBatch.from_records(list(last.values())), whole,
                             member=member, entries=ONE)


def test_partials_merged_equal_one_pass():
    """The distributed path: each part's partial columns, merged by the registry in
    random groupings, give the one-pass answer."""
    _, batches = _stream(1200, seed=11)
    exp = local_final(GROUP_BY, batches)
    for seed in (0, 1):
        assert_close(run_in_parts(GROUP_BY, batches, seed=seed), exp)


@pytest.mark.parametrize("sql, typ", [
    ("SELECT BOOL_AND(x) FROM t", "int64"),
    ("SELECT k, BOOL_OR(f) FROM t GROUP BY k", "float64"),
    ("SELECT BOOL_OR(s2) FROM t", "string"),
    ("SELECT EVERY(x + 1) FROM t", "int64"),
])
def test_a_non_boolean_argument_is_refused(sql, typ):
    _, batches = _stream(50)
    name = "BOOL_OR" if "BOOL_OR" in sql else "BOOL_AND"
    with pytest.raises(vk.PlanError, match=f"{name} needs a boolean argument, got {typ}"):
        vk.run_sql(sql, batches, "v1")
