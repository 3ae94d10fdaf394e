"""Partial aggregates and their merge (velokern.distributed), without a cluster: a
stream cut into parts, each run on its own, merged in random groupings, equals one local
run (exactly for integers, strings, MIN/MAX, FIRST/LAST; floats to a relative 1e-12).
The reference scenarios are run on a real cluster in test_distributed.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import timed_batches

import velokern as vk
from velokern.datagen import SCENARIOS
from velokern.distributed import (
    _final,
    _max_time,
    _run_part,
    merge_distinct,
    merge_partials,
    partial_plan,
)
from velokern.sql import parse_sql


def run_in_parts(sql, parts, seed=0, processor="v1"):
    """What run_sql does on a cluster, in this process, with random merge groupings."""
    plan = partial_plan(sql)
    q = plan.query
    marks = [None] * len(parts)
    if q.window is not None:
        wm = None
        for i, p in enumerate(parts):
            marks[i] = wm
            m = _max_time(p, q.window.time_column, 1000)
            if m is not None:
                wm = m if wm is None else max(wm, m)
    rng = np.random.default_rng(seed)

    def reduce(tables, merge):
        tables = list(tables)
        while len(tables) > 1 or not reduce.merged:
            reduce.merged = True
            k = int(rng.integers(2, 4))
            tables = [merge(tables[j:j + k]) for j in range(0, len(tables), k)]
        return tables[0]

    reduce.merged = False
    main = reduce([_run_part(plan.partial, p, i, marks[i], processor, 700)[0]
                   for i, p in enumerate(parts)], lambda t: merge_partials(plan, t))
    distinct = {}
    for i, dq in plan.distinct:
        reduce.merged = False
        distinct[i] = reduce([_run_part(dq, p, j, marks[j], processor, 700)[0]
                              for j, p in enumerate(parts)],
                             lambda t: merge_distinct(t, plan.keys))
    return _final(plan, main, distinct, processor)


def local_final(sql, parts):
    """The local run's final answer (the last change of each group for EMIT CHANGES)."""
    q = parse_sql(sql)
    if q.emit == "changes" or (q.emit is None and q.window is None and q.is_aggregate):
        sql = sql.replace(" EMIT CHANGES", "") + " EMIT FINAL"
    return vk.run_sql(sql, parts, processor="v1")


def assert_close(got, exp):
    assert got.column_names == exp.column_names
    assert len(got) == len(exp), (len(got), len(exp))
    for c in exp.column_names:
        assert got.type_of(c) == exp.type_of(c), c
        a, b = got.to_pydict()[c], exp.to_pydict()[c]
        for x, y in zip(a, b):
            if isinstance(y, float) and x is not None:
                assert (math.isnan(x) and math.isnan(y)) or math.isclose(
                    x, y, rel_tol=1e-12, abs_tol=1e-12), (c, x, y)
            else:
                assert x == y, (c, x, y)


def _parts(n_parts=5, size=900, seed=1):
    return timed_batches(n_parts, size, seed=seed, keys=12, span=60_000, jitter=1500)


QUERIES = [
    # every mergeable aggregate kind, string keys, WHERE and HAVING
    "SELECT s, s2, COUNT(*) AS n, COUNT(x) AS cx, SUM(x) AS sx, SUM(f) AS sf, AVG(x) AS ax, "
    "AVG(f) AS af, MIN(f) AS lo, MAX(f) AS hi, MIN(s2) AS smin, MAX(k) AS kmax, "
    "FIRST_VALUE(x) AS fx, LAST_VALUE(x) AS lx, FIRST_VALUE(f IGNORE NULLS) AS ff, "
    "LAST_VALUE(s2 IGNORE NULLS) AS ls, FIRST_VALUE(b) AS fb, MAX(x) - MIN(x) AS rng, "
    "VAR_SAMP(f) AS vs, VAR_POP(x) AS vp, STDDEV(f) AS sd, STDDEV_POP(y) AS sdp, "
    "COUNT(DISTINCT k) AS dk FROM t WHERE b OR x > 0 GROUP BY s, s2 HAVING COUNT(*) > 2 "
    "EMIT FINAL",
    # keyless, sliding windows with lateness (late records decided as locally)
    "SELECT COUNT(*) AS n, SUM(y) AS sy, AVG(f) AS af, COUNT(DISTINCT s2) AS d, window_start "
    "FROM t WHERE x IS NULL OR x > -8 WINDOW SLIDING(ts, 6s, 2s) "
    "WITH (allowed_lateness = '1s')",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_parts_merged_equal_one_local_run(sql):
    parts = _parts()
    exp = local_final(sql, parts)
    for seed in (0, 1):
        assert_close(run_in_parts(sql, parts, seed=seed), exp)


def test_unsupported_queries_are_refused():
    with pytest.raises(vk.PlanError, match="ROWS windows"):
        partial_plan(SCENARIOS["S1"])  # run_sql shuffles them instead
    with pytest.raises(vk.PlanError, match="session windows"):
        partial_plan("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(ts, 1s)")


def test_min_max_ties_keep_the_first_value_seen():
    """0.0 and -0.0 are equal: MIN and MAX keep the one that came first in the stream,
    as the local kernels do, whichever part holds it (NaN: MAX is NaN once one is)."""
    sql = "SELECT k, MIN(f) AS lo, MAX(f) AS hi FROM t GROUP BY k EMIT FINAL"
    vals = [[0.0, -0.0], [-0.0, 0.0], [-0.0], [0.0, np.nan], [-0.0]]
    keys = [[1, 2], [1, 2], [3], [3, 4], [4]]
    parts = [vk.RecordBatch({"k": np.array(k, np.int64), "f": np.array(v)})
             for k, v in zip(keys, vals)]
    exp = local_final(sql, parts)
    assert np.signbit(exp.column("lo")).tolist() == [False, True, True, True]
    for seed in (0, 1, 2):
        got = run_in_parts(sql, parts, seed=seed)
        assert got.equals(exp, bitwise=True), (got.to_pydict(), exp.to_pydict())


def test_query_errors_are_not_blamed_on_a_part():
    with pytest.raises(vk.PlanError, match="needs a number"):
        run_in_parts("SELECT s, AVG(s2) AS a FROM t GROUP BY s EMIT FINAL", _parts(2, 50))
