"""Input: a batch checked against the job's schema and converted to kernel inputs.

:class:`InputStage` owns what a batch is read with: the bound plan (taken from the
first batch when the job was given no schema), the job's string dictionaries (a
batch's codes are re-mapped into them), which columns are nullable (which decides the
kernel variant: none, or all once any used column has had a null) and the compiled
variants. :meth:`InputStage.prepare` changes nothing until every check has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from velokern import config
from velokern.batch import (
    STRING,
    RecordBatch,
    Schema,
    StringDictionary,
    _has_no_value,
    _is_untyped,
    _safe_cast,
    _Untyped,
)
from velokern.codegen import KernelSpec, generate
from velokern.exec.context import JobContext, Prepared, SchemaError
from velokern.kernels.compiler import load_module
from velokern.kernels.windows import NO_WATERMARK, first_outside, watermarks
from velokern.plan import (
    PROCESSING_TIME,
    WINDOW_COLUMNS,
    BoundQuery,
    PlanError,
    Query,
    bind,
    columns_of,
    is_float,
    is_int,
    is_time,
)

__all__ = ["InputStage", "checked_lateness", "partition_key_bits", "stamp_processing_time"]

_EMPTY_I64 = np.empty(0, dtype=np.int64)
_NO_MASKS = np.ones((1, 0), dtype=np.bool_)
# engines of the same query over the same schema share generated kernels
_GENERATED: dict[tuple, tuple[KernelSpec, Any]] = {}
_GENERATED_LOCK = threading.Lock()


class InputStage:
    """Schema, dictionaries, nullability and kernel variants of one job."""

    def __init__(self, query: Query, ctx: JobContext):
        self.query = query
        self.ctx = ctx
        self.bound: BoundQuery | None = None
        self.dicts: dict[str, StringDictionary] = {}
        self.nullable: set[str] = set()
        self._variants: dict[bool, tuple[KernelSpec, Any]] = {}
        self._wants: list[tuple[str, np.dtype | None]] = []
        self._literal_codes: dict[int, np.ndarray] = {}
        self._remaps: dict[str, tuple[StringDictionary, np.ndarray]] = {}

    # ---------------------------------------------------------------- plan
    def bind_schema(self, schema: Schema) -> None:
        self.bound = bind(self.query, schema)
        self._wants = _wanted_types(self.bound)
        for c in self.bound.columns:
            if schema[c] == STRING and c not in self.dicts:
                self.dicts[c] = StringDictionary()

    def variant(self) -> tuple[KernelSpec, Any]:
        """(spec, module) of the kernels for the current nullability."""
        key = bool(self.nullable)
        v = self._variants.get(key)
        if v is None:
            gkey = (self.ctx.sql, self.bound.schema, key)
            with _GENERATED_LOCK:
                v = _GENERATED.get(gkey)
                if v is None:
                    spec = generate(self.bound, set(self.nullable))
                    v = (spec, load_module(spec.source))
                    _GENERATED[gkey] = v
            self._variants[key] = v
        return v

    def runtime_constants(self, spec: KernelSpec) -> tuple:
        """R: string literal codes (interned once) and current string ranks."""
        lit = self._literal_codes.get(id(spec))
        if lit is None:
            lit = np.array([self.dicts[o].code_of(v) for o, v in spec.literals] or [0],
                           dtype=np.int64)
            self._literal_codes[id(spec)] = lit
        if not spec.rank_columns:
            return (lit,)
        return (lit, *[self.dicts[c].ranks() for c in spec.rank_columns])

    def window_runtime(self, marks: np.ndarray, n: int, watermark: int) -> tuple:
        """R's windowed tail, in layout order (R_WINDOW, R_MARKS, R_LATE): [lateness in
        ticks (a ROWS query's state TTL), watermark after the batch], the per-record
        watermarks, slots for late row numbers (sized by the driver)."""
        b = self.bound
        lateness = b.ttl if b.overs else round(self.ctx.allowed_lateness_ms * b.ticks_per_ms)
        return (np.array([lateness, watermark], np.int64), marks[:n], _EMPTY_I64)

    def end_runtime(self, spec: KernelSpec) -> tuple:
        """R for end-of-input kernels: no batch, the job's watermark."""
        R = self.runtime_constants(spec)
        if spec.windowed:
            R = R + self.window_runtime(self.ctx.scratch.get("wm", 1), 0,
                                        self.ctx.watermark)
        return R

    # ---------------------------------------------------------------- batches
    def prepare(self, batch: RecordBatch, on_nullable: Callable[[], None]) -> Prepared:
        """Validate ``batch`` and convert it to kernel inputs. ``on_nullable()`` is
        called when this batch moves the job to the nullable variant (after every check
        has passed)."""
        if not isinstance(batch, RecordBatch):
            raise TypeError(f"expected a RecordBatch, got {type(batch).__name__}")
        w = self.query.window
        if w is not None and w.time_col is None and PROCESSING_TIME not in batch:
            batch = stamp_processing_time(batch)
        bound = self.bound if self.bound is not None else self._bind_first(batch)
        wants = self._wants if self.bound is not None else _wanted_types(bound)
        data, masks, bdicts = _read_columns(batch, bound, wants)
        tcol = _time_column(bound)
        if tcol is not None:
            check_event_times(tcol, data[tcol], masks[tcol])
        # -- from here on nothing can fail on the data; adopt schema and dictionaries
        if self.bound is None:
            self.bound = bound
            self._wants = wants
        cols = bound.columns
        for c in cols:
            if bdicts[c] is not None:
                data[c] = self._encode_strings(c, bdicts[c], data[c], masks[c])
        # Kernel variants: either no column is nullable, or (once any used column has had
        # a null) all are, so a query compiles at most two variants.
        if not self.nullable and any(masks[c] is not None for c in cols):
            self.nullable = set(cols)
            on_nullable()
        spec, module = self.variant()
        return self._kernel_inputs(batch, spec, module, data, masks)

    def _bind_first(self, batch: RecordBatch) -> BoundQuery:
        """The plan bound to the first batch's schema (adopted once the batch passes)."""
        missing = [c for c in self.needed_columns() if c not in batch]
        if self.query.window is None and any(c in WINDOW_COLUMNS for c in missing):
            name = next(c for c in missing if c in WINDOW_COLUMNS)
            raise PlanError(f"{name} is defined only in a time-windowed query (add "
                            f"WINDOW TUMBLING(...) or GROUP BY TUMBLE(...))")
        if missing:
            raise SchemaError(f"batch lacks column(s) {missing} used by the query "
                              f"(batch columns: {batch.column_names})")
        _refuse_untyped(batch, self.needed_columns())  # before a guessed type is bound
        bound = bind(self.query, batch.schema)  # raises PlanError before any change
        _refuse_untyped(batch, bound.columns)  # (SELECT *)
        return bound

    def _kernel_inputs(self, batch: RecordBatch, spec: KernelSpec, module, data,
                       masks) -> Prepared:
        n = len(batch)
        C = []
        for c, kind in spec.inputs:
            arr = data[c]
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            if kind == "bits" or arr.dtype.kind == "M":
                arr = arr.view(np.int64) if arr.dtype.itemsize == 8 else arr.view(np.int32)
            C.append(arr)
        # validity masks travel as one [columns, rows] array: a short argument tuple keeps
        # numba's parallel compilation fast
        if spec.nullable:
            M = np.ones((len(spec.nullable), n), dtype=np.bool_)
            for k, c in enumerate(spec.nullable):
                if masks[c] is not None:
                    M[k] = masks[c]
        else:
            M = _NO_MASKS
        R = self.runtime_constants(spec)
        wm = NO_WATERMARK
        if spec.windowed or spec.ttl:
            tcol = _time_column(self.bound)
            k = spec.inputs.index((tcol, "data"))
            tmask = masks[tcol]
            marks = self.ctx.scratch.get("wm", n)
            wm = watermarks(C[k], tmask if tmask is not None else _NO_MASKS[0],
                            tmask is not None, self.ctx.watermark, marks)
            R = R + self.window_runtime(marks, n, wm)
        return Prepared(batch, n, spec, module, tuple(C), M, R, wm)

    def needed_columns(self) -> list[str]:
        """Input columns the query names (known before a schema is bound)."""
        q = self.query
        cols: list[str] = []
        exprs = [e for _, e in q.select] + q.group_by
        exprs += [x for x in (q.where, q.having) if x is not None]
        for e in exprs:
            for c in columns_of(e):
                if c not in cols and not (q.window is not None and c in WINDOW_COLUMNS):
                    cols.append(c)
        if q.window is not None and q.window.time_column not in cols:
            cols.append(q.window.time_column)
        return cols

    def _encode_strings(self, c: str, bd: StringDictionary, codes: np.ndarray,
                        mask) -> np.ndarray:
        """Codes of a batch's string column in the job's dictionary for that column."""
        d = self.dicts.get(c)
        if d is None:
            self.dicts[c] = bd
            return codes
        if bd is d:
            return codes
        # the batch's dictionary is append-only: extend a cached mapping, never redo it
        cached = self._remaps.get(c)
        if cached is not None and cached[0] is bd:
            mapping = cached[1]
            if len(mapping) < len(bd):
                mapping = np.concatenate([mapping, d.encode_unique(bd.values[len(mapping):])])
        else:
            mapping = d.mapping_from(bd)
        self._remaps[c] = (bd, mapping)
        if len(mapping) == 0:
            return np.full(len(codes), -1, np.int32)
        safe = codes if mask is None else np.where(mask, codes, 0)
        out = mapping[safe]
        if mask is not None:
            out = np.where(mask, out, -1).astype(np.int32)
        return out


def _refuse_untyped(batch: RecordBatch, columns) -> None:
    """A job without a schema takes none from a column whose type nothing told."""
    for c in columns:
        parts = batch._parts(c)
        if parts is not None and _is_untyped(parts[0], parts[1]):
            what = "no rows" if len(batch) == 0 else "only nulls"
            raise SchemaError(
                f"column {c!r} has no type in this batch ({what}, and its source gave "
                f"none) and the job has no schema yet: pass schema= (e.g. "
                f"schema={{{c!r}: 'int64', ...}}), or the job takes its schema from the "
                f"first batch where every column it reads has a type")


def _read_columns(batch: RecordBatch, bound: BoundQuery, wants) -> tuple[dict, dict, dict]:
    """(data, masks, batch dictionaries) of the columns the kernels read, each checked
    against the job's schema; a narrower integer type is widened when every value fits,
    and a column with no valid value (all null, or no rows) is read as the schema's type."""
    schema = bound.schema
    data, masks, bdicts = {}, {}, {}
    for c, want in wants:
        parts = batch._parts(c)
        if parts is None:
            raise SchemaError(f"batch lacks column {c!r} used by the query "
                              f"(batch columns: {batch.column_names})")
        arr, m, d = parts
        if ((want is None) != (d is not None) or (d is None and arr.dtype != want)
                or type(arr) is _Untyped):
            arr, d = _as_schema_type(batch, c, arr, m, want, schema[c])
        data[c] = arr
        masks[c] = m
        bdicts[c] = d
    return data, masks, bdicts


def _as_schema_type(batch: RecordBatch, c: str, arr: np.ndarray, m, want,
                    want_name: str) -> tuple[np.ndarray, StringDictionary | None]:
    """A column whose stored type is not the job's, as the job's type (and its batch
    dictionary): no value to convert (all null, or no rows; the column's own type,
    given or guessed, does not matter), or a wider or narrower number whose every
    valid value fits; anything else is refused."""
    if _has_no_value(arr, m):
        if want is None:
            return np.full(len(arr), -1, dtype=np.int32), None
        return np.zeros(len(arr), dtype=want), None
    got = batch.type_of(c)
    if _kind(want_name) != _kind(got) or is_time(want_name):
        raise SchemaError(f"column {c!r} has type {got} in this batch but the "
                          f"job's schema has {want_name}")
    try:  # a narrower integer type: every valid value must fit (no wrapping)
        return _safe_cast(c, arr, m, np.dtype(want)), None
    except ValueError as ex:
        raise SchemaError(f"{ex} (type {got} in this batch, {want_name} in the "
                          "job's schema)") from None


def _kind(t: str) -> str:
    if t == STRING:
        return "string"
    if is_int(t):
        return "integer"
    if is_float(t):
        return "float"
    if is_time(t):
        return "timestamp"
    return t


def _wanted_types(bound: BoundQuery) -> list[tuple[str, np.dtype | None]]:
    """(column, storage dtype, None for strings) of every column the kernels read."""
    return [(c, None if bound.schema[c] == STRING else np.dtype(bound.schema[c]))
            for c in bound.columns]


def _time_column(b: BoundQuery) -> str | None:
    """The event-time column: a time window's, or a ROWS state TTL's (else None)."""
    return b.window.time_column if b.window is not None else b.ttl_column


def check_event_times(column: str, arr: np.ndarray, valid: np.ndarray | None) -> None:
    """Refuse a batch whose event times are not strictly within config.MAX_EVENT_TIME
    ticks of 0: window arithmetic on them could leave int64 and put records in wrong
    windows (a null time is no event time)."""
    if arr.dtype.kind not in "iuM" or (arr.dtype.kind != "M" and arr.dtype.itemsize < 8):
        return  # (no narrower integer reaches the limit; other types are refused by plan)
    limit = config.MAX_EVENT_TIME
    if arr.dtype.kind == "u":
        over = arr >= limit
        bad = np.flatnonzero(over if valid is None else over & valid)
        i = int(bad[0]) if len(bad) else -1
    else:
        i = first_outside(arr.view(np.int64), valid if valid is not None else _NO_MASKS[0],
                          valid is not None, limit)
    if i >= 0:
        raise ValueError(
            f"event time {arr[i]} of column {column!r} at row {i} is outside the range "
            f"windows support: event times lie strictly between -2**62 and 2**62 ticks "
            f"of the column's type ({arr.dtype}; velokern.config.MAX_EVENT_TIME); the "
            "batch is refused")


def stamp_processing_time(batch: RecordBatch) -> RecordBatch:
    """``batch`` with a ``_timestamp`` column: the ingestion time in epoch milliseconds."""
    now = np.full(len(batch), int(time.time() * 1000), dtype=np.int64)
    names = batch.column_names + [PROCESSING_TIME]
    data = {n: batch._parts(n)[0] for n in batch.column_names}
    data[PROCESSING_TIME] = now
    masks = {n: batch._parts(n)[1] for n in batch.column_names}
    masks[PROCESSING_TIME] = None
    return RecordBatch._trusted(names, data, masks, batch.dictionaries, len(batch))


def partition_key_bits(prep: Prepared) -> list[np.ndarray]:
    """The grouping bits of every GROUP BY key of every row (for partitioning): the
    key columns themselves when their values are their bits (integers, times, string
    codes; the shim widens them to int64) and none is null in this batch, else int64
    bits computed by the kernel module (a null key's bits are 0)."""
    spec = prep.spec
    if spec.raw_keys is not None and (not spec.nullable or all(
            c not in spec.nullable
            or np.count_nonzero(prep.M[spec.nullable.index(c)]) == prep.n
            for _, c in spec.raw_keys)):
        return [prep.C[k] for k, _ in spec.raw_keys]
    out = np.empty((spec.num_part_keys, prep.n), dtype=np.int64)
    prep.module.key_bits(prep.C, prep.M, prep.R, prep.n, out)
    return list(out)


def checked_lateness(query: Query, allowed_lateness_ms) -> int:
    """The job's allowed lateness in ms, checked."""
    if allowed_lateness_ms is None:
        allowed_lateness_ms = query.allowed_lateness_ms or 0
    if (not isinstance(allowed_lateness_ms, (int, np.integer))
            or isinstance(allowed_lateness_ms, bool) or allowed_lateness_ms < 0):
        raise PlanError("allowed_lateness_ms must be a non-negative integer, got "
                        f"{allowed_lateness_ms!r}")
    limit = config.MAX_WINDOW_TICKS // 1_000_000  # (in ns ticks, the finest unit)
    if allowed_lateness_ms >= limit:
        raise PlanError(f"allowed_lateness_ms {allowed_lateness_ms} is over the limit: it "
                        f"must be under {limit} ms (2**60 ns; "
                        "velokern.config.MAX_WINDOW_TICKS)")
    if allowed_lateness_ms and query.window is None:
        raise PlanError("allowed_lateness_ms applies to time windows; this query has no "
                        "WINDOW")
    return int(allowed_lateness_ms)
