"""Scale out on Dask distributed: the same SQL over data spread across workers.

``run_sql(sql, data, client=None, processor="v2")`` where ``data`` is a dask DataFrame,
a list of Parquet files (or a directory of them), or a list of ``dask.delayed`` objects
that each produce one part (a RecordBatch or anything ``as_batch`` takes). Parts keep
their order: part *i* comes after part *i - 1*, as if one local job read them in turn.

- **Stateless queries**: every part runs through the engine where it lives; outputs are
  concatenated in part order (the local run's order).
- **GROUP BY and time windows**: every part builds *partial aggregates* with its own
  processor (a derived query computes, per group and window, the partial columns each
  aggregate's entry in the registry ``velokern.aggregates`` names: counts, sums, minima,
  maxima, Welford triples, first/last values, or the distinct values of a
  COUNT(DISTINCT)), partials are merged in a tree reduction on the workers by the
  registry's merges, and a last stateless query over the merged groups computes the
  SELECT expressions and HAVING. Rows come in the local EMIT FINAL order (window start, then
  first record). Lateness is decided as locally: each part's engine starts from the
  watermark of the parts before it (a first pass reads each part's largest event time).
  Integer, string, COUNT, MIN/MAX and FIRST/LAST results equal the local run exactly;
  float sums, means and variances are merged in another order (relative 1e-12).
- EMIT CHANGES queries return their final answer (the last change of every group): a
  change stream depends on batch boundaries that a distributed run does not have.
- **ROWS windows** (OVER): records are shuffled by the PARTITION BY columns with Dask's
  own shuffle; each shuffled partition is sorted back into stream order and run; the
  rows are put back in input order (exactly the local run's rows).
- Not supported (refused with a PlanError): session windows.

Tasks are named ``velokern-<step>-<part>-<run id>`` on the dashboard; ``progress(done, total)``
is called as tasks finish. Dask retries a task whose worker died. An error on a worker
(a file with another schema, a corrupt file) fails the run with that error, which names
the file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from velokern.aggregates import REGISTRY as AGGREGATES
from velokern.aggregates import Column, Groups
from velokern.batch import STRING, RecordBatch
from velokern.exec import StreamExecutionEngine
from velokern.exec.sessions import column_key_bits
from velokern.plan import Agg, Col, PlanError, Query, _rebuild, walk
from velokern.processors import JobProcessorFactory
from velokern.sql import parse_sql

__all__ = ["merge_partials", "partial_plan", "run_sql"]

SEQ = "__vk_seq"  # global record sequence: part index << 40 | row within the part
_PART_SHIFT = 40
_FIRST, _LAST, _WS, _WE = "__vk_first", "__vk_last", "__vk_ws", "__vk_we"


# --------------------------------------------------------------------------- plan
@dataclass
class PartialPlan:
    """How a query splits into partial aggregates, their merge, and the final step."""

    query: Query
    partial: Query  # per part: groups with partial aggregate columns
    distinct: list[tuple[int, Query]]  # per COUNT(DISTINCT): (agg index, query)
    keys: list[str]  # key columns of the partial tables
    aggs: list[Agg]
    final: Query  # over the merged groups


def _tag(q: Query, what: str) -> str:
    # derived queries must not share generated kernels with the user's query
    return f"{q.sql}\n/* velokern {what} */"


def partial_plan(sql: str) -> PartialPlan:
    """Split an aggregate query into its partial, distinct and final queries."""
    q = parse_sql(sql)
    if q.has_over:
        raise PlanError("ROWS windows (OVER) have no partial aggregates: run_sql shuffles "
                        "their records by the PARTITION BY columns instead")
    if q.window is not None and q.window.kind == "session":
        raise PlanError("session windows cannot run distributed yet (sessions merge "
                        "across parts); run the job locally")
    aggs = _aggregates_of(q)
    keys = [f"__vk_k{j}" for j in range(len(q.group_by))]
    select = [(k, e) for k, e in zip(keys, q.group_by)]
    if q.window is not None:
        select += [(_WS, Col("window_start")), (_WE, Col("window_end"))]
    select += [(_FIRST, Agg("min", Col(SEQ))), (_LAST, Agg("max", Col(SEQ)))]
    distinct = []
    for i, a in enumerate(aggs):
        # what each aggregate's partials are is the registry's (velokern.aggregates)
        spec = AGGREGATES[a.func].partial
        if spec.distinct:
            dq = replace(q, select=list(select[:len(keys) + (2 if q.window else 0)])
                         + [("__vk_d", a.arg)], group_by=q.group_by + [a.arg],
                         having=None, emit="final", sql=_tag(q, f"distinct {i}"))
            distinct.append((i, dq))
        else:
            select += [(f"__vk_a{i}{suffix}", pa) for suffix, pa in spec.columns(a)]
    partial = replace(q, select=select, having=None, emit="final",
                      sql=_tag(q, "partial"))
    return PartialPlan(q, partial, distinct, keys + ([_WS] if q.window else []),
                       aggs, _final_query(q, keys, aggs))


def _aggregates_of(q: Query) -> list[Agg]:
    """The distinct aggregate calls of the SELECT list and HAVING, in order of appearance."""
    aggs: list[Agg] = []
    for e in [e for _, e in q.select] + ([q.having] if q.having is not None else []):
        for n in walk(e):
            if isinstance(n, Agg) and n not in aggs:
                aggs.append(n)
    return aggs


def _final_query(q: Query, keys: list[str], aggs: list[Agg]) -> Query:
    """The last, stateless step: q's SELECT and HAVING over the merged groups' columns."""
    key_of = {e: Col(k) for k, e in zip(keys, q.group_by)}
    agg_of = {a: Col(f"__vk_a{i}") for i, a in enumerate(aggs)}

    def swap(e):
        if e in agg_of:
            return agg_of[e]
        if e in key_of:
            return key_of[e]
        if isinstance(e, Col) and e.name in ("window_start", "_window_start"):
            return Col(_WS)
        if isinstance(e, Col) and e.name in ("window_end", "_window_end"):
            return Col(_WE)
        return _rebuild(e, swap)

    return Query(q.source, [(n, swap(e)) for n, e in q.select],
                 where=None if q.having is None else swap(q.having),
                 sql=_tag(q, "final"), positions=q.positions)


# --------------------------------------------------------------------------- parts
def _with_seq(batch: RecordBatch, part: int, offset: int) -> RecordBatch:
    n = len(batch)
    seq = (np.int64(part) << _PART_SHIFT) + offset + np.arange(n, dtype=np.int64)
    names = [c for c in batch.column_names if c != SEQ] + [SEQ]
    data = {c: batch._parts(c)[0] for c in names[:-1]}
    masks = {c: batch._parts(c)[1] for c in names[:-1]}
    data[SEQ], masks[SEQ] = seq, None
    return RecordBatch._trusted(names, data, masks, dict(batch.dictionaries), n)


def _batches(part: Any, batch_size: int):
    """The batches of one part: a Parquet path, or a materialised part."""
    from velokern.api import as_batch

    if isinstance(part, str):
        from velokern.io import ParquetSource

        yield from ParquetSource(part, batch_size=batch_size).batches()
        return
    if isinstance(part, RecordBatch) and len(part) <= batch_size:
        yield part
        return
    b = as_batch(part)
    for start in range(0, max(len(b), 1), batch_size):
        yield b.slice(start, batch_size)


@contextlib.contextmanager
def _naming(part: Any, index: int):
    """Errors on a part name it: the file, or the part's index."""
    from velokern.io import SourceError

    try:
        yield
    except (SourceError, PlanError):  # a query error is no file's fault
        raise
    except (ValueError, TypeError, KeyError) as exc:
        where = part if isinstance(part, str) else f"part {index}"
        raise SourceError(f"{where}: {exc}") from exc


def _max_time(part: Any, column: str, batch_size: int, index: int = 0) -> int | None:
    with _naming(part, index):
        return _max_time_of(part, column, batch_size)


def _max_time_of(part: Any, column: str, batch_size: int) -> int | None:
    best = None
    for b in _batches(part, batch_size):
        if column not in b.column_names:
            continue
        a, valid = b.column(column), b.validity(column)
        a = a.view(np.int64) if a.dtype.kind == "M" else a.astype(np.int64)
        if valid is not None:
            a = a[valid]
        if len(a):
            m = int(a.max())
            best = m if best is None else max(best, m)
    return best


def _run_part(query: Query, part: Any, index: int, watermark: int | None, processor: str,
              batch_size: int) -> tuple[RecordBatch | None, dict]:
    """Run ``query`` over one part; returns (all emitted rows, the engine's metrics)."""
    engine = StreamExecutionEngine.from_query(query, None)
    if watermark is not None:
        engine.advance_watermark(watermark)
    proc = JobProcessorFactory.create(processor)
    outs, offset = [], 0
    with _naming(part, index):
        for b in _batches(part, batch_size):
            outs.append(proc.process_batch(_with_seq(b, index, offset), engine))
            offset += len(b)
    outs.append(proc.flush(engine))
    outs = [o for o in outs if o.num_columns]
    return (RecordBatch.concat(outs) if outs else None), engine.metrics


# --------------------------------------------------------------------------- merge
def _group_ids(batch: RecordBatch, keys: Sequence[str]) -> np.ndarray:
    """Dense id of every row's group (same keys, NULL a key of its own, NaN = NaN,
    -0.0 = 0.0), numbered in order of first appearance (hash factorisation)."""
    import pandas as pd

    n = len(batch)
    gid = np.zeros(n, np.int64)
    for k in keys:
        if batch.type_of(k) == STRING:  # codes are dense already: NULL -> 0, code c -> c + 1
            valid = batch.validity(k)
            codes = batch.column(k).astype(np.int64) + 1
            codes, width = (codes if valid is None else np.where(valid, codes, 0),
                            len(batch.dictionary(k)) + 1)
        else:
            bits, nulls = column_key_bits(batch, k)
            codes, uniq = pd.factorize(bits)
            width = len(uniq)
            if nulls.any():  # a NULL key (bits 0) is not the value whose bits are 0
                codes, width = codes * 2 + nulls, 2 * width
        gid = pd.factorize(gid * width + codes)[0].astype(np.int64)
    return gid


def merge_partials(plan: PartialPlan, parts: Sequence[RecordBatch | None]
                   ) -> RecordBatch | None:
    """Merge partial-aggregate tables of neighbouring ranges of the stream (the merge is
    associative over such groupings; FIRST/LAST_VALUE and ties of MIN/MAX are decided
    by stream order); the result has the same columns, one row per group. Each
    aggregate's columns are merged by its registry entry (``velokern.aggregates``)."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return None
    b = RecordBatch.concat(parts) if len(parts) > 1 else parts[0]
    gid = _group_ids(b, plan.keys)
    order = np.lexsort((b.column(_FIRST), gid))
    b, gid = b.take(order), gid[order]
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    groups = Groups(starts, len(b))
    out: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray | None] = {}
    for c in [*plan.keys, *([_WE] if plan.query.window is not None else []), _FIRST]:
        out[c] = b.column(c)[starts]
        v = b.validity(c)
        masks[c] = None if v is None else v[starts]
    out[_LAST] = np.maximum.reduceat(b.column(_LAST), starts)
    masks[_LAST] = None
    for i, a in enumerate(plan.aggs):
        spec = AGGREGATES[a.func].partial
        if spec.distinct:
            continue
        p = f"__vk_a{i}"
        cols = {s: _column(b, p + s) for s, _ in spec.columns(a)}
        for s, (values, valid) in spec.merge(cols, groups, a).items():
            out[p + s], masks[p + s] = values, valid
    names = [c for c in b.column_names if c in out]
    dicts = {c: d for c, d in b.dictionaries.items() if c in out}
    return RecordBatch({c: out[c] for c in names}, {c: masks[c] for c in names}, dicts)


def _column(b: RecordBatch, name: str) -> Column:
    dictionary = b.dictionary(name) if b.type_of(name) == STRING else None
    return Column(b.column(name), b.validity(name), dictionary)


def merge_distinct(parts: Sequence[RecordBatch | None], keys: Sequence[str]
                   ) -> RecordBatch | None:
    """Union of distinct (group, value) tables: one row per distinct pair."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return None
    b = RecordBatch.concat(parts) if len(parts) > 1 else parts[0]
    gid = _group_ids(b, [*keys, "__vk_d"])
    _, first = np.unique(gid, return_index=True)
    return b.take(np.sort(first))


# --------------------------------------------------------------------------- final
def _final(plan: PartialPlan, merged: RecordBatch | None,
           distinct: dict[int, RecordBatch | None], processor: str,
           empty: RecordBatch | None = None) -> RecordBatch:
    """The query's rows from the merged groups (SELECT expressions, HAVING, order);
    ``empty`` when no group came back."""
    if merged is None:
        return RecordBatch({}) if empty is None else empty
    if plan.query.window is not None:
        order = np.lexsort((merged.column(_FIRST), merged.column(_WS).view(np.int64)
                            if merged.column(_WS).dtype.kind == "M"
                            else merged.column(_WS)))
    else:
        order = np.argsort(merged.column(_FIRST), kind="stable")
    merged = merged.take(order)
    data = {c: merged._parts(c)[0] for c in merged.column_names}
    masks = {c: merged._parts(c)[1] for c in merged.column_names}
    dicts = dict(merged.dictionaries)
    n = len(merged)
    for i, a in enumerate(plan.aggs):
        p = f"__vk_a{i}"
        spec = AGGREGATES[a.func].partial
        if spec.distinct:
            # each distinct (group, value) pair's merged group; the registry counts them
            group, valid = np.zeros(0, np.int64), None
            d = distinct.get(i)
            if d is not None and len(d):
                valid = d.validity("__vk_d")
                both = RecordBatch.concat([merged.select(plan.keys), d.select(plan.keys)]) \
                    if plan.keys else None
                ids = (_group_ids(both, plan.keys) if both is not None
                       else np.zeros(n + len(d), np.int64))
                g_of_merged, g_of_d = ids[:n], ids[n:]
                pos = np.full(ids.max() + 1, -1, np.int64)
                pos[g_of_merged] = np.arange(n)
                group = pos[g_of_d]
            data[p], masks[p] = spec.final({"": (group, valid)}, n)
            continue
        names = [p + s for s, _ in spec.columns(a)]
        part = {name[len(p):]: (data.pop(name), masks.pop(name, None)) for name in names}
        data[p], masks[p] = spec.final(part, n)
    fed = RecordBatch({c: data[c] for c in data}, {c: masks.get(c) for c in data},
                      {c: d for c, d in dicts.items() if c in data}, num_rows=n)
    engine = StreamExecutionEngine.from_query(plan.final, None)
    proc = JobProcessorFactory.create(processor)
    return proc.process_batch(fed, engine)


# --------------------------------------------------------------------------- driver
def _check_schemas(q: Query, parts: list, kind: str) -> RecordBatch:
    """Every part runs in its own engine, so nothing would hold a part to the others'
    columns. Checked here, before any task runs, as the local job would: Parquet files
    as a local ParquetSource over them does (every footer read; the first file's schema
    for all), in-memory Arrow or velokern batches with the engine's rule for a batch
    whose column changed type (on each part's first row). Errors name the part.
    Returns the answer to give when no row comes back: the local job's columns, without
    rows (none for dask objects)."""
    import pyarrow as pa

    from velokern.io import ParquetSource

    engine = StreamExecutionEngine.from_query(q, None)
    if kind == "parquet":
        empty = RecordBatch.from_arrow(ParquetSource(parts).check_schemas().empty_table())
        schemas = [(0, parts[0], empty)]
    else:
        # a part's first row: a column without a value takes the job's type whatever
        # type it came with (docs/semantics.md), so an empty slice would check nothing
        schemas = [(i, p, p.slice(0, 1) if isinstance(p, RecordBatch)
                    else RecordBatch.from_arrow(p.slice(0, 1)))
                   for i, p in enumerate(parts)
                   if isinstance(p, (RecordBatch, pa.Table, pa.RecordBatch))]
    for i, part, empty in schemas:
        with _naming(part, i):
            engine.prepare(empty)  # the first binds the job's schema
    if engine.bound is None:  # nothing checked (dask objects); session windows
        return RecordBatch({})
    return engine.empty_output()


def _parts_of(data: Any) -> tuple[list, str]:
    """(parts, description): Parquet paths, or dask objects to compute on workers."""
    if isinstance(data, (str, os.PathLike)):
        from velokern.io import ParquetSource

        return list(ParquetSource(data).paths), "parquet"
    if hasattr(data, "to_delayed") and hasattr(data, "npartitions"):
        return list(data.to_delayed()), "dask"
    data = list(data)
    if data and all(isinstance(x, (str, os.PathLike)) for x in data):
        return [os.fspath(x) for x in data], "parquet"
    return data, "dask"


def run_sql(sql: str, data: Any, client: Any = None, processor: str = "v2", *,
            batch_size: int = 100_000,
            progress: Callable[[int, int], object] | None = None,
            sink: Any = None, metrics: dict | None = None) -> RecordBatch:
    """Run ``sql`` over ``data`` on a Dask cluster (``client``, or the default one);
    returns every row the local run emits (the final answer for EMIT CHANGES queries)
    as one RecordBatch, also written to ``sink`` (a path or Sink) when given.
    ``metrics``, a dict, receives the summed ``records_in``, ``records_filtered`` and
    ``late_records`` of the parts and the number of ``parts`` (not for ROWS windows)."""
    out = _run(sql, data, client, processor, batch_size, progress, metrics)
    if sink is not None:
        from velokern.io import open_sink

        s = open_sink(sink)
        s.open()
        s.write(out)
        s.close()
    return out


def _sum_metrics(ms: list[dict], into: dict | None) -> None:
    if into is None:
        return
    into["parts"] = len(ms)
    for k in ("records_in", "records_filtered", "late_records"):
        into[k] = int(sum(m.get(k, 0) for m in ms))


class _Tasks:
    """One run's tasks on the cluster: named, counted for ``progress``, waited for in order."""

    def __init__(self, client: Any, run_id: str,
                 progress: Callable[[int, int], object] | None):
        self.client = client
        self.run_id = run_id
        self.progress = progress
        self.total = 0
        self.done = 0
        self.lock = threading.Lock()

    def finished(self, _future) -> None:
        """A task ended: report the progress."""
        with self.lock:
            self.done += 1
            done, total = self.done, self.total
        if self.progress is not None:
            self.progress(done, total)

    def tick(self, futs):
        """Count the futures in the total and report when each ends; returns them."""
        with self.lock:
            self.total += len(futs)
        for f in futs:
            f.add_done_callback(self.finished)
        return futs

    def wait(self, futs):
        """The futures' results, in their order."""
        from distributed import as_completed

        out = [None] * len(futs)
        pos = {f.key: i for i, f in enumerate(futs)}
        for f in as_completed(futs):
            out[pos[f.key]] = f.result()  # re-raises a worker's error (names the file)
        return out

    def submit(self, step: str, fn, *args, i: int = 0):
        """``fn(*args)`` as task ``velokern-<step>-<i>-<run id>``."""
        # no retries: Dask re-runs a task whose worker died by itself; an error in the
        # data would only repeat
        return self.client.submit(fn, *args, key=f"velokern-{step}-{i}-{self.run_id}")


def _run(sql: str, data: Any, client: Any, processor: str, batch_size: int,
         progress: Callable[[int, int], object] | None, metrics: dict | None) -> RecordBatch:
    from distributed import default_client

    client = client or default_client()
    q = parse_sql(sql)
    run_id = uuid.uuid4().hex[:8]
    parts, kind = _parts_of(data)
    empty = _check_schemas(q, parts, kind)
    if kind == "dask" and not q.has_over:
        parts = client.compute(parts)  # materialised where they are computed
    tasks = _Tasks(client, run_id, progress)
    if q.has_over:
        return _run_rows(q, parts, kind, client, processor, batch_size, run_id, tasks.tick,
                         tasks.wait, empty)
    if not q.is_aggregate:
        return _run_stateless(q, parts, tasks, processor, batch_size, metrics, empty)
    plan = partial_plan(sql)
    marks = _start_watermarks(q, parts, tasks, batch_size)
    queries = [("partial", plan.partial)] + [(f"distinct{i}", dq) for i, dq in plan.distinct]
    futs = []
    for step, query in queries:
        futs.append([tasks.submit(step, _run_part, query, part, i, marks[i], processor,
                                  batch_size, i=i) for i, part in enumerate(parts)])
    tasks.tick([f for fs in futs for f in fs])
    merged = [_merge_tree(tasks, plan, step, fs) for (step, _), fs in zip(queries, futs)]
    results = tasks.wait(merged)
    if metrics is not None:
        _sum_metrics(tasks.wait([client.submit(_second, f, key=f"velokern-metrics-{i}-{run_id}")
                                 for i, f in enumerate(futs[0])]), metrics)
    distinct = {i: r for (i, _), r in zip(plan.distinct, results[1:])}
    return _final(plan, results[0], distinct, processor, empty)


def _run_stateless(q: Query, parts: list, tasks: _Tasks, processor: str, batch_size: int,
                   metrics: dict | None, empty: RecordBatch) -> RecordBatch:
    """A query without aggregates: every part run where it lives, outputs in part order."""
    futs = tasks.tick([tasks.submit("part", _run_part, q, part, i, None, processor,
                                    batch_size, i=i)
                       for i, part in enumerate(parts)])
    pairs = tasks.wait(futs)
    _sum_metrics([m for _, m in pairs], metrics)
    outs = [o for o, _ in pairs if o is not None]
    return RecordBatch.concat(outs).select([n for n in outs[0].column_names
                                            if n != SEQ]) if outs else empty


def _start_watermarks(q: Query, parts: list, tasks: _Tasks, batch_size: int
                      ) -> list[int | None]:
    """Each part's starting watermark: the largest event time of the parts before it."""
    marks: list[int | None] = [None] * len(parts)
    if q.window is not None:
        tcol = q.window.time_column
        maxes = tasks.wait(tasks.tick([
            tasks.submit("max-time", _max_time, part, tcol, batch_size, i, i=i)
            for i, part in enumerate(parts)]))
        wm = None
        for i, m in enumerate(maxes):
            marks[i] = wm
            if m is not None:
                wm = m if wm is None else max(wm, m)
    return marks


def _merge_tree(tasks: _Tasks, plan: PartialPlan, step: str, fs: list):
    """One step's part results merged on the workers, four per task; the merged future."""
    client, run_id = tasks.client, tasks.run_id
    level = 0
    rows = [client.submit(_first, f, key=f"velokern-{step}-rows-{i}-{run_id}")
            for i, f in enumerate(fs)]
    while len(rows) > 1 or level == 0:  # merged at least once
        nxt = []
        for j in range(0, len(rows), 4):
            group = rows[j:j + 4]
            fn = merge_partials if step == "partial" else _merge_distinct_step
            arg = plan if step == "partial" else plan.keys
            nxt.append(client.submit(fn, arg, group,
                                     key=f"velokern-merge-{step}-{level}-{j}-{run_id}"))
        tasks.tick(nxt)
        rows, level = nxt, level + 1
    return rows[0]


# --------------------------------------------------------------------------- ROWS windows
def _arrow_frame(part: Any, index: int, batch_size: int):
    """One part as a pandas DataFrame with Arrow dtypes (nulls and types survive)."""
    import pandas as pd

    with _naming(part, index):
        whole = _with_seq(RecordBatch.concat(list(_batches(part, batch_size))), index, 0)
    return whole.to_arrow().to_pandas(types_mapper=pd.ArrowDtype)


def _rows_part(frame, query: Query, processor: str, batch_size: int) -> RecordBatch | None:
    """The ROWS query over the records of some keys, in stream order."""
    import pyarrow as pa

    if len(frame) == 0:
        return None
    frame = frame.sort_values(SEQ, kind="stable")
    batch = RecordBatch.from_arrow(pa.Table.from_pandas(frame, preserve_index=False))
    engine = StreamExecutionEngine.from_query(query, None)
    proc = JobProcessorFactory.create(processor)
    outs = [proc.process_batch(batch.slice(i, batch_size), engine)
            for i in range(0, len(batch), batch_size)]
    outs.append(proc.flush(engine))
    outs = [o for o in outs if o.num_columns]
    return RecordBatch.concat(outs) if outs else None


def _run_rows(q: Query, parts: list, kind: str, client, processor: str, batch_size: int,
              run_id: str, tick, wait, empty: RecordBatch) -> RecordBatch:
    """ROWS windows: shuffle the records by the PARTITION BY columns with Dask's own
    shuffle, run each shuffled partition in stream order, put rows back in input
    order (every ROWS query gives one row per input row)."""
    import dask
    import dask.dataframe as dd

    if q.state_ttl_ms:
        # a key's expiry depends on the largest event time of every record before it,
        # also those of the other keys, which a shuffled partition does not see
        raise PlanError("ROWS windows with a state TTL cannot run distributed yet (the "
                        "TTL is measured against the whole stream's watermark); run the "
                        "job locally")
    engine = StreamExecutionEngine.from_query(q, None)
    keys = engine.group_by_columns
    # each record's stream position rides along (SELECT * passes it through already)
    extra = [] if q.star else [(SEQ, Col(SEQ))]
    query = replace(q, select=list(q.select) + extra, sql=_tag(q, "rows"))
    frames = [dask.delayed(_arrow_frame, pure=False)(
        part, i, batch_size, dask_key_name=f"velokern-load-{i}-{run_id}")
        for i, part in enumerate(parts)]
    meta = client.compute(frames[0]).result().iloc[:0]
    ddf = dd.from_delayed(frames, meta=meta, verify_meta=False)
    if keys:
        ddf = ddf.shuffle(on=keys, npartitions=max(1, len(parts)))
    else:
        ddf = ddf.repartition(npartitions=1)
    runs = [dask.delayed(_rows_part, pure=False)(
        d, query, processor, batch_size, dask_key_name=f"velokern-rows-{i}-{run_id}")
        for i, d in enumerate(ddf.to_delayed())]
    outs = [o for o in wait(tick(client.compute(runs))) if o is not None]
    if not outs:
        return empty
    whole = RecordBatch.concat(outs)
    whole = whole.take(np.argsort(whole.column(SEQ), kind="stable"))
    return whole.select([c for c in whole.column_names if c != SEQ])


def _first(pair: tuple) -> RecordBatch | None:
    return pair[0]


def _second(pair: tuple) -> dict:
    return pair[1]


def _merge_distinct_step(keys: Sequence[str], parts: Sequence[RecordBatch | None]
                         ) -> RecordBatch | None:
    return merge_distinct(parts, keys)
