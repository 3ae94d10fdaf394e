"""A column that is all null, or a batch with no rows, takes its type from the job's
schema or an earlier batch, never from a guess (issue 24, item 3).

Every way such a column arrives (lists of None, records, Arrow's ``null`` type,
``pa.nulls(n, type)``, pandas object or empty frames, polars' Null) is run through V1
and V2 with and without ``schema=``; answers must equal the same stream with typed
columns (bit for bit) and DuckDB.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import assert_batches_identical, assert_rows_match, duckdb_rows, rows_of

import velokern as vk
from velokern.exec.context import SchemaError
from velokern.io.sources import MemorySource
from velokern.server import JobFailed

SQL = "SELECT k, COUNT(*) AS n, SUM(x) AS sx, COUNT(x) AS cx, MAX(s) AS ms FROM t GROUP BY k"
FINAL = SQL + " EMIT FINAL"
SCHEMA = {"k": "int64", "x": "int64", "s": "string"}
PROCESSORS = ["v1", "v2:2"]


def good(seed: int, n: int = 7) -> vk.RecordBatch:
    rng = np.random.default_rng(seed)
    x = rng.integers(-50, 50, n)
    return vk.RecordBatch.from_pydict({
        "k": rng.integers(0, 3, n).tolist(),
        "x": [None if v % 4 == 0 else int(v) for v in x],
        "s": [f"s{v % 5}" for v in x],
    })


KEYS = [2, 0, 1]


def _pandas_object(keys):
    k = pd.Series(keys, dtype="int64" if keys else object)
    return pd.DataFrame({"k": k, "x": pd.Series([None] * len(keys), dtype=object),
                         "s": pd.Series([None] * len(keys), dtype=object)})


# every way a batch whose x and s have no value arrives (rows: KEYS, or none)
UNTYPED = {
    "pydict None": lambda: vk.RecordBatch.from_pydict(
        {"k": KEYS, "x": [None] * 3, "s": [None] * 3}),
    "records None": lambda: vk.RecordBatch.from_records(
        [{"k": k, "x": None, "s": None} for k in KEYS]),
    "arrow null": lambda: vk.RecordBatch.from_arrow(
        pa.table({"k": pa.array(KEYS), "x": pa.nulls(3), "s": pa.nulls(3)})),
    "pandas object": lambda: vk.RecordBatch.from_pandas(_pandas_object(KEYS)),
    "polars Null": lambda: vk.RecordBatch.from_polars(
        pl.DataFrame({"k": KEYS, "x": [None] * 3, "s": [None] * 3})),
    "pandas empty object": lambda: vk.RecordBatch.from_pandas(_pandas_object([])),
    "pydict empty lists": lambda: vk.RecordBatch.from_pydict({"k": [], "x": [], "s": []}),
}
# the same batches with typed columns
TYPED = {
    "arrow nulls typed": lambda: vk.RecordBatch.from_arrow(pa.table({
        "k": pa.array(KEYS), "x": pa.nulls(3, pa.int64()), "s": pa.nulls(3, pa.string())})),
    "pandas empty typed": lambda: vk.RecordBatch.from_pandas(pd.DataFrame({
        "k": pd.Series([], dtype="int64"), "x": pd.Series([], dtype="Int64"),
        "s": pd.Series([], dtype="string")})),
}


def typed_twin(b: vk.RecordBatch) -> vk.RecordBatch:
    """The same rows with x int64 and s string (all null)."""
    n = len(b)
    k = b.column("k").astype(np.int64) if n else np.zeros(0, np.int64)
    return vk.RecordBatch.from_arrow(pa.table({
        "k": pa.array(k, pa.int64()), "x": pa.nulls(n, pa.int64()),
        "s": pa.nulls(n, pa.string())}))


def run(batches, processor, schema=None, sql=SQL):
    engine = vk.StreamExecutionEngine(sql, schema)
    proc = vk.JobProcessorFactory.create(processor)
    outs = [proc.process_batch(b, engine) for b in batches]
    outs.append(proc.flush(engine))
    return outs, engine


# ---------------------------------------------------------------- batches
@pytest.mark.parametrize("name", sorted(UNTYPED))
def test_a_column_without_values_or_type_is_untyped(name):
    b = UNTYPED[name]()
    assert b.untyped_columns == (["k", "x", "s"] if len(b) == 0 else ["x", "s"])
    cast = b.cast(SCHEMA)
    assert cast.untyped_columns == [] and cast.schema == vk.Schema(SCHEMA)
    # Arrow's null type round-trips
    assert pa.types.is_null(b.to_arrow().schema.field("x").type)
    assert vk.RecordBatch.from_arrow(b.to_arrow()).untyped_columns == b.untyped_columns
    # slices and takes keep the mark
    assert b.slice(0, 2).untyped_columns == b.untyped_columns
    assert b.take(np.arange(len(b))).untyped_columns == b.untyped_columns


@pytest.mark.parametrize("processor", PROCESSORS)
@pytest.mark.parametrize("name", sorted(TYPED))
def test_a_column_with_a_type_keeps_it(name, processor):
    b = TYPED[name]()
    assert b.untyped_columns == []
    assert b.type_of("x") == "int64" and b.type_of("s") == "string"
    # with no schema, it gives the job its type
    outs, engine = run([b, good(1)], processor)
    assert engine.bound.schema["x"] == "int64" and engine.bound.schema["s"] == "string"
    assert engine.metrics["records_in"] == len(b) + len(good(1))
    assert_batches_identical(run([typed_twin(b), good(1)], processor)[0], outs, name)


def test_untyped_is_only_for_no_values():
    b = vk.RecordBatch.from_pydict({"x": [None, 1.5]})
    assert b.untyped_columns == []
    # a schema's float64 is a type, though it is the placeholder's storage
    r = vk.RecordBatch.from_records([{"x": None}], schema=vk.Schema({"x": "float64"}))
    assert r.untyped_columns == []
    # a numpy array has a type, empty or not
    assert vk.RecordBatch.from_pydict({"x": np.zeros(0, np.float64)}).untyped_columns == []


def test_concat_gives_untyped_columns_the_other_batches_type():
    a, u = good(1), UNTYPED["pydict None"]()
    d = a.dictionary("s")
    both = vk.RecordBatch.concat([u, a, u])
    assert both.schema == a.schema and both.untyped_columns == []
    assert both.dictionary("s") is d
    assert both.to_pydict()["x"] == [None] * 3 + a.to_pydict()["x"] + [None] * 3
    only = vk.RecordBatch.concat([u, u])
    assert only.untyped_columns == ["x", "s"] and len(only) == 6


# ---------------------------------------------------------------- engines
@pytest.mark.parametrize("processor", PROCESSORS)
@pytest.mark.parametrize("name", [*sorted(UNTYPED), "pandas empty typed"])
def test_with_schema_every_record_counts(name, processor):
    nb = {**UNTYPED, **TYPED}[name]()
    stream = [good(1), nb, good(2)]
    ref, _ = run([good(1), typed_twin(nb), good(2)], processor, SCHEMA)
    for first in (False, True):  # also as the very first batch
        batches = stream if not first else [nb, good(1), good(2)]
        ref_b = ref if not first else run([typed_twin(nb), good(1), good(2)], processor,
                                          SCHEMA)[0]
        outs, engine = run(batches, processor, SCHEMA)
        assert_batches_identical(ref_b, outs, f"{name} first={first}")
        m = engine.metrics
        assert m["records_rejected"] == 0
        assert m["records_in"] == sum(len(b) for b in batches)
    final, _ = run(stream, processor, SCHEMA, FINAL)
    whole = vk.RecordBatch.concat([good(1), typed_twin(nb), good(2)])
    assert_rows_match(sorted(rows_of(final[-1])),
                      sorted(duckdb_rows(SQL, whole)), name)


@pytest.mark.parametrize("processor", PROCESSORS)
@pytest.mark.parametrize("name", sorted(UNTYPED))
def test_without_schema_an_earlier_batch_types_it(name, processor):
    nb = UNTYPED[name]()
    outs, engine = run([good(1), nb, good(2)], processor)
    ref, _ = run([good(1), typed_twin(nb), good(2)], processor)
    assert_batches_identical(ref, outs, name)
    assert engine.metrics["records_rejected"] == 0
    assert engine.bound.schema["x"] == "int64"


@pytest.mark.parametrize("processor", PROCESSORS)
@pytest.mark.parametrize("name", sorted(UNTYPED))
def test_without_schema_a_leading_untyped_batch_is_refused_clearly(name, processor):
    nb = UNTYPED[name]()
    engine = vk.StreamExecutionEngine(SQL)
    proc = vk.JobProcessorFactory.create(processor)
    with pytest.raises(SchemaError, match=r"has no type in this batch .*pass schema="):
        proc.process_batch(nb, engine)
    assert engine.bound is None  # no schema taken from a guess
    assert engine.metrics["records_rejected"] == len(nb)
    outs = [proc.process_batch(b, engine) for b in (good(1), nb, good(2))]
    outs.append(proc.flush(engine))
    ref, _ = run([good(1), typed_twin(nb), good(2)], processor)
    assert_batches_identical(ref, outs, name)
    assert engine.bound.schema["x"] == "int64"


def test_a_column_without_values_is_read_as_the_schema_type_whatever_its_own():
    # a typed column with no value carries nothing to convert
    nb = vk.RecordBatch.from_arrow(pa.table({
        "k": pa.array(KEYS), "x": pa.nulls(3, pa.float32()), "s": pa.nulls(3, pa.int8())}))
    outs, engine = run([good(1), nb], "v1", SCHEMA)
    ref, _ = run([good(1), typed_twin(nb)], "v1", SCHEMA)
    assert_batches_identical(ref, outs)
    # a value of another type is still refused
    bad = vk.RecordBatch.from_pydict({"k": [1], "x": [1.5], "s": ["a"]})
    with pytest.raises(SchemaError, match="'x' has type float64"):
        engine.prepare(bad)


# ---------------------------------------------------------------- jobs
@pytest.mark.parametrize("processor", PROCESSORS)
def test_job_on_error_skip_processes_every_record_with_a_schema(processor):
    items = [good(1), UNTYPED["arrow null"](), good(2), UNTYPED["pandas object"](), good(3)]
    job = vk.StreamJob(FINAL, items, processor=processor, on_error="skip", schema=SCHEMA)
    m = job.run()
    assert m["status"] == "finished"
    assert m["records_rejected"] == 0
    assert m["records_in"] == sum(len(b) for b in items)
    whole = vk.RecordBatch.concat([good(1), typed_twin(items[1]), good(2),
                                   typed_twin(items[3]), good(3)])
    assert_rows_match(sorted(rows_of(job.sink.result())), sorted(duckdb_rows(SQL, whole)))


def test_job_without_schema_counts_a_leading_untyped_batch_and_says_why():
    items = [UNTYPED["pydict None"](), good(1), UNTYPED["polars Null"](), good(2)]
    job = vk.StreamJob(FINAL, items, processor="v1", on_error="skip")
    m = job.run()
    assert m["records_rejected"] == 3 and m["records_in"] == 3 + len(good(1)) + len(good(2))
    job = vk.StreamJob(FINAL, items, processor="v1")
    with pytest.raises(JobFailed, match=r"batch 0: column 'x' has no type .*pass schema="):
        job.run()


def test_memory_source_recut_gives_untyped_columns_the_stream_type():
    items = [good(1), UNTYPED["pydict None"](), good(2)]
    batches = list(MemorySource(items, batch_size=4).batches())
    assert all(b.untyped_columns == [] and b.type_of("x") == "int64" for b in batches)
    assert sum(len(b) for b in batches) == sum(len(b) for b in items)


def test_session_windows_read_an_untyped_column_as_the_schema_type():
    sql = ("SELECT k, COUNT(*) AS n, SUM(x) AS sx FROM t "
           "GROUP BY k, SESSION(ts, INTERVAL '10' MILLISECOND)")
    schema = {"k": "int64", "x": "int64", "ts": "int64"}
    g1 = vk.RecordBatch.from_pydict({"k": [1, 2, 1], "x": [1, 2, 3], "ts": [1, 2, 3]})
    nb = vk.RecordBatch.from_pydict({"k": [1, 2], "x": [None, None], "ts": [4, 5]})
    tb = nb.cast(schema)
    g2 = vk.RecordBatch.from_pydict({"k": [1, 2], "x": [5, 6], "ts": [100, 101]})
    outs, engine = run([g1, nb, g2], "v1", schema, sql)
    assert_batches_identical(run([g1, tb, g2], "v1", schema, sql)[0], outs)
    assert engine.metrics["records_in"] == 7
    with pytest.raises(SchemaError, match="pass schema="):
        run([nb], "v1", None, sql)
