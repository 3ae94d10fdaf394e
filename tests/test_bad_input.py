"""Bad input: clear errors naming the problem, and the engine state is left untouched
(the next good batch gives the answer as if the bad one never came)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_batches_identical, cut, make_stream, to_batch

import velokern as vk
from velokern.plan import PlanError
from velokern.sql import parse_sql

SQL = "SELECT k, COUNT(*) AS n, SUM(f) AS sf, MAX(s2) AS ms FROM t WHERE x > -5 GROUP BY k"
STATELESS = "SELECT k, f * 2 AS f2 FROM t WHERE x > 0"


def good_batches():
    return cut(to_batch(make_stream(900, seed=13, keys=12)), [300, 300])


def bad_batches(good: vk.RecordBatch) -> dict[str, tuple[vk.RecordBatch, str]]:
    cols = {n: good.column(n) for n in good.column_names}
    masks = {n: good.validity(n) for n in good.column_names}
    dicts = good.dictionaries
    missing = vk.RecordBatch({n: a for n, a in cols.items() if n != "f"},
                             {n: m for n, m in masks.items() if n != "f"}, dicts)
    wrong = dict(cols)
    wrong_f = vk.RecordBatch.from_pydict({"f": [str(v) for v in range(len(good))]})
    wrong["f"] = wrong_f.column("f")
    wrong_type = vk.RecordBatch(wrong, masks | {"f": None}, dicts | {"f": wrong_f.dictionary("f")})
    changed = dict(cols)
    changed["k"] = cols["k"].astype(np.float64)
    schema_change = vk.RecordBatch(changed, masks, dicts)
    return {
        "missing column": (missing, "'f'"),
        "wrong type": (wrong_type, "'f'"),
        "schema change": (schema_change, "'k'"),
    }


@pytest.mark.parametrize("processor", ["v1", "v2:3"])
@pytest.mark.parametrize("sql", [SQL, STATELESS])
def test_bad_batch_leaves_state_untouched(processor, sql):
    g = good_batches()
    for name, (bad, fragment) in bad_batches(g[1]).items():
        proc = vk.JobProcessorFactory.create(processor)
        engine = vk.StreamExecutionEngine(sql)
        ref_engine = vk.StreamExecutionEngine(sql)
        ref_proc = vk.JobProcessorFactory.create(processor)
        out = [proc.process_batch(g[0], engine)]
        ref = [ref_proc.process_batch(g[0], ref_engine)]
        before = engine.metrics
        with pytest.raises((ValueError, TypeError)) as exc:
            proc.process_batch(bad, engine)
        assert fragment in str(exc.value), (name, str(exc.value))
        after = engine.metrics
        assert after["records_rejected"] == before["records_rejected"] + len(bad)
        assert after["records_in"] == before["records_in"]
        assert after["groups"] == before["groups"]
        for b in g[1:]:
            out.append(proc.process_batch(b, engine))
            ref.append(ref_proc.process_batch(b, ref_engine))
        out.append(proc.flush(engine))
        ref.append(ref_proc.flush(ref_engine))
        assert_batches_identical(ref, out, f"{name} {processor}")


def test_error_messages_name_the_problem():
    g = good_batches()[0]
    engine = vk.StreamExecutionEngine(SQL)
    bad = bad_batches(g)
    with pytest.raises(ValueError, match=r"lacks column.*'f'"):
        engine.prepare(bad["missing column"][0])
    with pytest.raises(PlanError, match="SUM needs a number, got string"):
        engine.prepare(bad["wrong type"][0])
    engine.prepare(g)
    with pytest.raises(ValueError, match=r"column 'f' has type string .* schema has float64"):
        engine.prepare(bad["wrong type"][0])
    with pytest.raises(ValueError, match=r"column 'k' has type float64 .* schema has int64"):
        engine.prepare(bad["schema change"][0])
    with pytest.raises(TypeError, match="expected a RecordBatch"):
        engine.prepare({"k": [1]})


def test_unequal_lengths_rejected_before_any_batch_exists():
    with pytest.raises(ValueError, match="unequal lengths"):
        vk.RecordBatch.from_pydict({"k": [1, 2, 3], "f": [1.0, 2.0]})


def test_integer_width_change_is_not_a_schema_change():
    """int32 in one batch and int64 in the next is the same integer column."""
    a = vk.RecordBatch.from_pydict({"k": np.array([1, 2], np.int64), "f": [1.0, 2.0]})
    b = vk.RecordBatch.from_pydict({"k": np.array([2, 3], np.int32), "f": [3.0, 4.0]})
    out = vk.run_sql("SELECT k, SUM(f) AS s FROM t GROUP BY k EMIT FINAL", [a, b], "v1")
    assert out.to_pydict() == {"k": [1, 2, 3], "s": [1.0, 5.0, 4.0]}


@pytest.mark.parametrize(
    "sql, fragment",
    [
        ("SELECT a FROM t JOIN u ON t.a = u.a", "JOIN"),
        ("SELECT a FROM (SELECT a FROM t)", "subqueries"),
        ("SELECT a FROM t WHERE a IN (SELECT a FROM u)", "subquery"),
        ("SELECT a FROM t ORDER BY a", "ORDER BY on an unbounded stream"),
        ("SELECT a FROM t LIMIT 5", "LIMIT on an unbounded stream"),
        ("SELECT DISTINCT a FROM t", "DISTINCT"),
        ("SELECT foo(a) FROM t", "unknown function FOO"),
        ("SELECT a FROM t UNION SELECT a FROM u", "UNION"),
        ("SELECT 1", "FROM"),
        ("SELEC a FROM t", "syntax error"),
        ("", "empty SQL"),
        ("INSERT INTO t VALUES (1)", "only SELECT"),
        ("SELECT a, SUM(b) OVER (PARTITION BY a) FROM t", "SUM OVER (...) needs a frame"),
        ("SELECT a FROM t EMIT SOMETIMES", "EMIT must be followed by CHANGES or FINAL"),
        ("SELECT SUM(DISTINCT a) FROM t", "SUM(DISTINCT"),
    ],
)
def test_unsupported_sql_is_refused(sql, fragment):
    with pytest.raises(PlanError) as exc:
        vk.StreamExecutionEngine(sql, schema={"a": "int64", "b": "int64"})
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    "sql, fragment",
    [
        ("SELECT nope FROM t", "unknown column 'nope'"),
        ("SELECT a FROM t GROUP BY b", "column 'a' in SELECT must appear in GROUP BY"),
        ("SELECT a + s FROM t", "operator + needs numbers; right side is string"),
        ("SELECT a FROM t WHERE a", "WHERE must be a boolean condition"),
        ("SELECT a FROM t WHERE s < 'x'", "strings can be compared with = , <> and IN only"),
        ("SELECT SUM(s) FROM t", "SUM needs a number, got string"),
        ("SELECT a, a FROM t", "duplicate output column names"),
        ("SELECT SUM(SUM(a)) FROM t", "aggregates cannot be nested"),
        ("SELECT a FROM t WHERE SUM(a) > 1", "not allowed in WHERE"),
        ("SELECT CAST(s AS BIGINT) FROM t", "CAST from string"),
        ("SELECT ROUND(a, b) FROM t", "integer literal"),
    ],
)
def test_invalid_queries_name_the_problem(sql, fragment):
    with pytest.raises(PlanError) as exc:
        vk.StreamExecutionEngine(sql, schema={"a": "int64", "b": "int64", "s": "string"})
    assert fragment in str(exc.value)


def test_errors_carry_line_and_column():
    sql = "SELECT a,\n       nope\nFROM t"
    with pytest.raises(PlanError, match=r"line 2, column 8"):
        vk.StreamExecutionEngine(sql, schema={"a": "int64"})
    with pytest.raises(PlanError, match=r"line 1, column 17"):
        vk.StreamExecutionEngine("SELECT a FROM t JOIN u ON t.a = u.a", schema={"a": "int64"})


def test_a_query_parsed_again_is_a_fresh_copy_with_the_same_errors():
    """parse_sql keeps parsed queries: a second parse still points errors at the SQL, and
    changing one caller's query does not change what the next caller gets."""
    sql = "SELECT a,\n       nope\nFROM t"
    for _ in range(2):
        with pytest.raises(PlanError, match=r"line 2, column 8"):
            vk.StreamExecutionEngine(sql, schema={"a": "int64"})
    grouped = "SELECT a, SUM(b) AS s FROM t GROUP BY a"
    q1 = parse_sql(grouped)
    q1.select.append(("x", q1.select[0][1]))
    q1.group_by.clear()
    q1.positions.clear()
    q2 = parse_sql(grouped)
    assert [n for n, _ in q2.select] == ["a", "s"] and len(q2.group_by) == 1
    assert q2.positions and q2 is not q1


_NEW_PROCESS = """
import sys
import velokern as vk
from velokern.plan import PlanError
try:
    vk.StreamExecutionEngine("SELECT a,\\n       nope\\nFROM t", schema={"a": "int64"})
except PlanError as e:
    print(e)
e = vk.StreamExecutionEngine("SELECT a, SUM(b) AS s FROM t GROUP BY a")
print([n for n, _ in e.query.select], "sqlglot" in sys.modules)
"""


def test_a_new_process_reuses_parsed_queries_without_sqlglot(tmp_path):
    """Parsed queries are kept in the cache directory: a second process running the same
    queries gets them (error positions included) without importing sqlglot; a damaged
    entry is parsed again."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, VELOKERN_CACHE_DIR=str(tmp_path))

    def run():
        return subprocess.run([sys.executable, "-c", _NEW_PROCESS], env=env, check=True,
                              capture_output=True, text=True).stdout.splitlines()

    first, second = run(), run()
    assert first[-1] == "['a', 's'] True"
    assert second[-1] == "['a', 's'] False"
    assert "line 2, column 8" in first[0] and second[0] == first[0]
    entries = list((tmp_path / "queries").glob("*.json"))
    assert len(entries) == 2
    for f in entries:
        f.write_bytes(b"not a query entry")
    assert run()[-1] == "['a', 's'] True"  # parsed again (and stored again)
    assert run()[-1] == "['a', 's'] False"


def test_unbound_engine_rejects_batch_without_query_columns():
    engine = vk.StreamExecutionEngine(SQL)
    with pytest.raises(ValueError, match="lacks column"):
        engine.prepare(vk.RecordBatch.from_pydict({"other": [1, 2]}))
    assert engine.schema is None
    assert engine.metrics["records_rejected"] == 2


@pytest.mark.parametrize("processor", ["v1", "v2:2"])
def test_integer_values_that_do_not_fit_the_jobs_narrower_type_are_refused(processor):
    """The first batch fixed int8 columns; a later int64 batch with 300 is refused (it
    was cast with wrapping: key 300 became a group 44, 1000 was summed as -24), the
    batch counted as rejected, the state untouched; values that fit are still cast."""
    from velokern.exec import SchemaError

    sql = "SELECT k, SUM(v) AS s FROM t GROUP BY k EMIT FINAL"
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create_from_str(processor)
    p.process_batch(vk.RecordBatch({"k": np.array([1], np.int8), "v": np.array([1], np.int8)}), e)
    with pytest.raises(SchemaError, match=r"column 'k': value 300 at row 0 .*int8"):
        p.process_batch(vk.RecordBatch({"k": np.array([300], np.int64),
                                        "v": np.array([1000], np.int64)}), e)
    assert e.metrics["records_rejected"] == 1
    p.process_batch(vk.RecordBatch({"k": np.array([2, 1], np.int64),
                                    "v": np.array([100, -5], np.int64)}), e)
    assert p.flush(e).to_pydict() == {"k": [1, 2], "s": [-4, 100]}
