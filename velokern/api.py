"""Conveniences for scripts: run a query over a sequence of batches in one call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from velokern.batch import RecordBatch, Schema
from velokern.exec import StreamExecutionEngine
from velokern.processors import JobProcessorConfig, JobProcessorFactory

__all__ = ["as_batch", "run_sql"]


def as_batch(obj: Any) -> RecordBatch:
    """A RecordBatch from a RecordBatch, a dict of columns, a list of row dicts, or a
    pyarrow / pandas / polars table."""
    if isinstance(obj, RecordBatch):
        return obj
    if isinstance(obj, Mapping):
        return RecordBatch.from_pydict(obj)
    if isinstance(obj, list) and (not obj or isinstance(obj[0], Mapping)):
        return RecordBatch.from_records(obj)
    mod = type(obj).__module__.split(".")[0]
    if mod == "pyarrow":
        return RecordBatch.from_arrow(obj)
    if mod == "pandas":
        return RecordBatch.from_pandas(obj)
    if mod == "polars":
        return RecordBatch.from_polars(obj)
    raise TypeError(f"cannot make a RecordBatch from {type(obj).__name__}")


def run_sql(
    sql: str,
    batches: Iterable[Any] | RecordBatch,
    processor: JobProcessorConfig | str | None = "v2",
    schema: Schema | Mapping[str, str] | None = None,
) -> RecordBatch:
    """Run ``sql`` over ``batches`` and return every emitted row (flush included) as one
    RecordBatch."""
    if isinstance(batches, (RecordBatch, Mapping)) or type(batches).__module__.split(".")[0] in (
        "pyarrow", "pandas", "polars"
    ):
        batches = [batches]
    engine = StreamExecutionEngine(sql, schema)
    proc = JobProcessorFactory.create(processor)
    outs = [proc.process_batch(as_batch(b), engine) for b in batches]
    outs.append(proc.flush(engine))
    outs = [o for o in outs if o.num_columns]
    if not outs:
        return RecordBatch({})
    return RecordBatch.concat(outs)
