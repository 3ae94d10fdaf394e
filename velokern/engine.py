"""StreamExecutionEngine: a compiled query and its streaming state.

The engine owns the plan, the generated kernels, the job's string dictionaries and the
per-partition state (sharded once a processor binds it). Job processors
(:mod:`velokern.processors`) decide how rows are routed to partitions and whether the
partitions run serially or in parallel; they call :meth:`StreamExecutionEngine.prepare`
(which validates a batch and changes no state) and then
:meth:`StreamExecutionEngine.execute`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from velokern.batch import STRING, RecordBatch, Schema, StringDictionary, _safe_cast
from velokern.kernels.calls import part_address
from velokern.kernels.codegen import STATE_SLOTS, KernelSpec, generate
from velokern.kernels.compiler import load_module
from velokern.kernels.hashtable import (
    collect_all,
    new_table,
    rebuild_direct,
    rebuild_distinct,
    table_of,
)
from velokern.kernels.order import (
    gather_rows,
    gather_rows_parallel,
    input_order,
    merge_runs,
    merge_runs_parallel,
    scatter_rows,
    scatter_rows_parallel,
)
from velokern.kernels.windows import NO_WATERMARK, watermarks
from velokern.plan import (
    PROCESSING_TIME,
    WINDOW_COLUMNS,
    BoundQuery,
    Over,
    PlanError,
    Query,
    bind,
    columns_of,
    is_float,
    is_int,
    is_time,
    walk,
)
from velokern.pool import BlockPool
from velokern.sessions import SessionWindows, is_session
from velokern.sql import parse_sql

__all__ = ["Prepared", "Routing", "StreamExecutionEngine"]

_INITIAL_GROUPS = 256
_EMPTY_I64 = np.empty(0, dtype=np.int64)
_ZERO_I64 = np.zeros(1, dtype=np.int64)  # one partition's output offset (read only)
_ZERO_I64.flags.writeable = False
_NO_MASKS = np.ones((1, 0), dtype=np.bool_)
#: the output packs the kernels write (velokern.kernels.codegen), in argument order
_PACKS = ("OI", "OF", "OB", "OC", "OM")
_PACK_DTYPES = (np.dtype(np.int64), np.dtype(np.float64), np.dtype(np.bool_),
                np.dtype(np.int32), np.dtype(np.bool_))
_MASKS = 4  # index of OM in the packs
_PASSTHROUGH = 5  # an assembly plan's "pack" of an input column passed through
_DIRECT_LIMIT = 1 << 20  # direct-map slots per partition
#: V2 routes (the shim) and puts its output rows in order (merge, gather, scatter) on
#: its worker threads for batches and outputs of this many rows and more
PARALLEL_MIN_ROWS = 32_768
_GENERATED: dict[tuple, tuple[KernelSpec, Any]] = {}
_GENERATED_LOCK = threading.Lock()
_SINGLE: dict[int, Routing] = {}


class SchemaError(ValueError):
    """A batch that does not fit the job's schema (missing column, wrong type)."""


@dataclass
class Prepared:
    """A validated batch, converted to kernel inputs. Making one changes no state."""

    batch: RecordBatch
    n: int
    spec: KernelSpec
    module: Any
    C: tuple
    M: np.ndarray
    R: tuple
    watermark: int = NO_WATERMARK  # after this batch (windowed queries)


@dataclass
class Routing:
    """How a batch's rows reach partitions.

    Partition p processes ``idx[starts[p]:ends[p]]`` (rows in bucketed order) when
    ``idx`` is given, else the contiguous rows ``starts[p]:ends[p]``.
    """

    starts: np.ndarray
    ends: np.ndarray
    idx: np.ndarray | None = None
    parallel: bool = False

    @staticmethod
    def single(n: int) -> Routing:
        """All ``n`` rows, in order, as one partition (cached: routings are not mutated)."""
        r = _SINGLE.get(n)
        if r is None:
            if len(_SINGLE) > 64:
                _SINGLE.clear()
            r = _SINGLE[n] = Routing(np.zeros(1, np.int64), np.array([n], np.int64))
        return r


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


class StreamExecutionEngine:
    """A streaming SQL query compiled to numba kernels, with its state.

    ``StreamExecutionEngine(sql, schema=None)``: the schema is taken from the first batch
    when not given. Pass the engine to a job processor's ``process_batch``/``flush``.

    Time windows: ``allowed_lateness_ms`` (default: the SQL's ``WITH (allowed_lateness =
    ...)``, else 0) keeps a window open that long after its end; ``late_sink`` is called
    with a RecordBatch of the input records that arrived after their window had closed
    (they are not applied; ``metrics["late_records"]`` counts them).
    """

    def __init__(self, sql: str, schema: Schema | Mapping[str, str] | None = None, *,
                 allowed_lateness_ms: int | None = None,
                 late_sink: Callable[[RecordBatch], object] | None = None):
        self._setup(parse_sql(sql), sql, schema, allowed_lateness_ms, late_sink)

    @classmethod
    def _from_query(cls, query: Query, schema: Schema | None) -> StreamExecutionEngine:
        """An engine for an already parsed (e.g. derived) query."""
        self = cls.__new__(cls)
        self._setup(query, query.sql, schema, None, None)
        return self

    def _setup(self, query: Query, sql: str, schema, allowed_lateness_ms, late_sink) -> None:
        self.sql = sql
        self.query = query
        # fixed by the query; computed once (each walks the expression trees)
        self._stateful = query.is_aggregate or query.has_over
        if not self._stateful or query.has_over:
            self._emit_mode = "rows"
        else:
            self._emit_mode = query.emit or ("final" if query.window is not None else "changes")
        if allowed_lateness_ms is None:
            allowed_lateness_ms = self.query.allowed_lateness_ms or 0
        if (not isinstance(allowed_lateness_ms, (int, np.integer))
                or isinstance(allowed_lateness_ms, bool) or allowed_lateness_ms < 0):
            raise ValueError("allowed_lateness_ms must be a non-negative integer, got "
                             f"{allowed_lateness_ms!r}")
        if allowed_lateness_ms and self.query.window is None:
            raise PlanError("allowed_lateness_ms applies to time windows; this query has no "
                            "WINDOW")
        if late_sink is not None and not callable(late_sink):
            raise TypeError(f"late_sink must be callable, got {type(late_sink).__name__}")
        self.allowed_lateness_ms = int(allowed_lateness_ms)
        self.late_sink = late_sink
        self._watermark = NO_WATERMARK
        self._bound: BoundQuery | None = None
        self._dicts: dict[str, StringDictionary] = {}
        self._nullable: set[str] = set()
        self._variants: dict[bool, tuple[KernelSpec, Any]] = {}
        self._wants: list[tuple[str, np.dtype | None]] = []
        self._direct_fits: list | None = None
        self._state: list[np.ndarray] | None = None
        self._spec: KernelSpec | None = None
        self._num_partitions: int | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._bufs: dict[str, Any] = {}
        # output packs are carved from recycled blocks (velokern.pool): a block comes
        # back once no output uses it, so a job whose consumer drops its outputs writes
        # into memory that is already mapped instead of page-faulting new memory
        self._pool = BlockPool()
        self._literal_codes: dict[int, np.ndarray] = {}
        self._remaps: dict[str, tuple[StringDictionary, np.ndarray]] = {}
        self._plans: dict[int, list] = {}
        self._metrics: dict[str, Any] = {
            "records_in": 0,
            "records_filtered": 0,
            "records_emitted": 0,
            "records_rejected": 0,
            "late_records": 0,
            "batches": 0,
            "batches_rejected": 0,
            "partition_records": [],
        }
        if schema is not None and not isinstance(schema, Schema):
            schema = Schema(schema)
        self._sessions: SessionWindows | None = None
        if is_session(query):
            self._sessions = SessionWindows(self, schema)
        elif schema is not None:
            self._bind_schema(schema)

    def advance_watermark(self, t: int) -> None:
        """Move the event-time watermark to at least ``t`` (in the time column's units),
        as if records up to ``t`` had been seen: a part of a stream processed on its own
        starts from the watermark of the parts before it (velokern.distributed)."""
        with self._lock:
            self._watermark = max(self._watermark, int(t))

    # ---------------------------------------------------------------- snapshots
    def snapshot(self) -> dict[str, Any]:
        """The engine's whole state as plain data (numpy arrays, numbers, strings, lists
        and dicts): what a checkpoint stores. :meth:`restore` rebuilds the engine, which
        then continues exactly as this one would."""
        with self._lock:
            return {
                "sql": self.sql,
                "schema": None if self._bound is None else [list(f) for f in
                                                            self._bound.schema],
                "allowed_lateness_ms": self.allowed_lateness_ms,
                "nullable": sorted(self._nullable),
                "num_partitions": self._num_partitions,
                "watermark": int(self._watermark),
                "seq": int(self._seq),
                "metrics": {k: v.copy() if isinstance(v, np.ndarray) else v
                            for k, v in self._metrics.items()},
                "dicts": {c: d.values for c, d in self._dicts.items()},
                "state": None if self._state is None else [a.copy() for a in self._state],
                "sessions": None if self._sessions is None else self._sessions.snapshot(),
            }

    @classmethod
    def restore(cls, snap: Mapping[str, Any], *,
                late_sink: Callable[[RecordBatch], object] | None = None
                ) -> StreamExecutionEngine:
        """An engine rebuilt from :meth:`snapshot` (kernels load from the cache)."""
        self = cls(snap["sql"], None, allowed_lateness_ms=snap["allowed_lateness_ms"],
                   late_sink=late_sink)
        self._load(snap)
        return self

    def _load(self, snap: Mapping[str, Any]) -> None:
        """Adopt a snapshot's state (this engine is new: it has seen no batch)."""
        if snap["schema"] is not None and self._bound is None:
            self._bind_schema(Schema([tuple(f) for f in snap["schema"]]))
        self._dicts = {c: StringDictionary(v) for c, v in snap["dicts"].items()}
        self._nullable = set(snap["nullable"])
        if snap["num_partitions"] is not None:
            self.bind_partitions(snap["num_partitions"])
        self._watermark = int(snap["watermark"])
        self._seq = int(snap["seq"])
        self._metrics.update({k: v.copy() if isinstance(v, np.ndarray) else v
                              for k, v in snap["metrics"].items()})
        if snap["state"] is not None:
            spec = self._variant()[0]
            state = [np.array(a) for a in snap["state"]]
            want = (len(spec.meta_cols), *(max(spec.pack_rows[k], 1) for k in "IFB"))
            got = (state[7].shape[1], state[4].shape[1], state[5].shape[1], state[6].shape[1])
            if len(state) != len(STATE_SLOTS) or got != want:
                raise ValueError(
                    "this snapshot's state layout (meta columns and I/F/B pack rows "
                    f"{got}) is not the one this velokern's kernels for {self.sql!r} use "
                    f"{want}: it was written by another version")
            # the table is rebuilt from the groups' hashes: it is an index, and this
            # keeps snapshots written with another table layout readable
            state[0] = table_of(state[1], state[7], state[0].shape[1])
            self._spec = spec
            self._state = state
        if snap["sessions"] is not None:
            self._sessions.restore(snap["sessions"])

    # ---------------------------------------------------------------- plan
    def _bind_schema(self, schema: Schema) -> None:
        self._bound = bind(self.query, schema)
        self._wants = _wanted_types(self._bound)
        for c in self._bound.columns:
            if schema[c] == STRING and c not in self._dicts:
                self._dicts[c] = StringDictionary()

    @property
    def bound(self) -> BoundQuery | None:
        return self._bound

    @property
    def schema(self) -> Schema | None:
        return None if self._bound is None else self._bound.schema

    @property
    def is_stateful(self) -> bool:
        return self._stateful

    @property
    def group_by_columns(self) -> list[str]:
        """Input columns the GROUP BY keys are computed from."""
        cols: list[str] = []
        keys = self.query.group_by
        if self.query.has_over:
            keys = next(n.partition for _, e in self.query.select for n in walk(e)
                        if isinstance(n, Over))
        for k in keys:
            for c in columns_of(k):
                if c not in cols:
                    cols.append(c)
        return cols

    @property
    def emit_mode(self) -> str:
        return self._emit_mode

    @property
    def watermark(self) -> int | None:
        """The event-time watermark (largest event time seen, in the time column's
        units), None before the first timed record or for a query without a window."""
        return None if self._watermark == NO_WATERMARK else int(self._watermark)

    @property
    def dictionaries(self) -> dict[str, StringDictionary]:
        """The job's string dictionaries (encode batches into these to skip remapping)."""
        return dict(self._dicts)

    @property
    def num_partitions(self) -> int | None:
        return self._num_partitions

    @property
    def metrics(self) -> dict[str, Any]:
        m = dict(self._metrics)
        m["partition_records"] = [int(x) for x in m["partition_records"]]
        if self._state is not None:
            # stateful kernels count filtered records in their state (no per-batch work)
            m["records_filtered"] += int(self._meta()[:, 2].sum())
            if self._spec.windowed:
                m["records_without_time"] = int(self._meta()[:, 4].sum())
        if self.query.window is not None:
            m.setdefault("records_without_time", 0)
            m["watermark"] = self.watermark
        if self._sessions is not None:
            m["records_filtered"] += self._sessions.pre.metrics["records_filtered"]
        m["groups"] = self.num_groups
        return m

    @property
    def num_groups(self) -> int:
        if self._sessions is not None:
            return self._sessions.groups()
        if self._state is None or self._spec is None:
            return 0
        return int(self._meta()[:, 0].sum())

    def explain(self) -> str:
        """The plan as text (also printed by ``velokern explain``)."""
        q = self.query
        lines = [f"StreamExecutionEngine: FROM {q.source}"]
        if self._sessions is not None:
            lines.append(f"  window: {q.window.describe()}, allowed lateness "
                         f"{self.allowed_lateness_ms} ms (a session closes when the "
                         "watermark passes its end + lateness)")
            lines.append("  kernels: WHERE and keys fused; sessions assigned record by "
                         "record; a closed session's records aggregated by the query's "
                         "GROUP BY kernel (serial: V2 partitions do not split sessions)")
            lines.append("  output: " + ", ".join(n for n, _ in q.select))
            return "\n".join(lines)
        if self._bound is not None:
            b = self._bound
            lines.append(f"  input columns: {', '.join(f'{c} {b.schema[c]}' for c in b.columns)}")
            if b.where is not None:
                lines.append(f"  filter: {_fmt(b.where)}")
            if b.window is not None:
                lines.append(f"  window: {b.window.describe()}, allowed lateness "
                             f"{self.allowed_lateness_ms} ms (closes when the watermark "
                             "passes end + lateness)")
            if b.is_aggregate:
                lines.append(f"  group by: {', '.join(_fmt(k) for k in b.keys) or '(all rows)'}")
                lines.append("  aggregates: " + ", ".join(
                    f"a{i}={_fmt(a)}" for i, a in enumerate(b.aggs)))
                if b.having is not None:
                    lines.append(f"  having: {_fmt(b.having)}")
                lines.append(f"  emit: {b.emit.upper()}")
            lines.append("  output: " + ", ".join(
                f"{n} {t} = {_fmt(e)}" for (n, e), t in zip(b.outputs, b.output_types)))
            kind = "stateful (hash table per partition)" if b.is_aggregate else "stateless"
            lines.append(f"  kernels: fused, {kind}")
        else:
            lines.append("  (schema not bound yet: it is taken from the first batch)")
            if q.where is not None:
                lines.append(f"  filter: {_fmt(q.where)}")
            if q.group_by:
                lines.append(f"  group by: {', '.join(_fmt(k) for k in q.group_by)}")
            star = " *" if q.star else ""
            lines.append("  output: " + ", ".join(n for n, _ in q.select) + star)
        if self._num_partitions is not None:
            lines.append(f"  partitions: {self._num_partitions}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- input
    def prepare(self, batch: RecordBatch) -> Prepared:
        """Validate ``batch`` and convert it to kernel inputs; changes no state.

        Raises a ValueError/TypeError naming the problem (missing column, wrong type,
        schema change); the batch's records are then counted as rejected.
        """
        try:
            return self._prepare(batch)
        except (ValueError, TypeError, KeyError):
            self.reject(batch)
            raise

    def reject(self, batch: object) -> None:
        """Count a batch that could not be processed (its records are 'rejected')."""
        n = len(batch) if isinstance(batch, RecordBatch) else 0
        with self._lock:
            self._metrics["records_rejected"] += n
            self._metrics["batches_rejected"] += 1

    def _prepare(self, batch: RecordBatch) -> Prepared:
        if not isinstance(batch, RecordBatch):
            raise TypeError(f"expected a RecordBatch, got {type(batch).__name__}")
        w = self.query.window
        if w is not None and w.time_col is None and PROCESSING_TIME not in batch:
            batch = _stamp_processing_time(batch)
        if self._sessions is not None:
            return self._sessions.prepare(batch)
        bound = self._bound
        if bound is None:
            missing = [c for c in self._needed_columns() if c not in batch]
            if w is None and any(c in WINDOW_COLUMNS for c in missing):
                name = next(c for c in missing if c in WINDOW_COLUMNS)
                raise PlanError(f"{name} is defined only in a time-windowed query (add "
                                f"WINDOW TUMBLING(...) or GROUP BY TUMBLE(...))")
            if missing:
                raise SchemaError(f"batch lacks column(s) {missing} used by the query "
                                  f"(batch columns: {batch.column_names})")
            bound = bind(self.query, batch.schema)  # raises PlanError before any change
        schema = bound.schema
        cols = bound.columns
        wants = self._wants if self._bound is not None else _wanted_types(bound)
        data, masks, bdicts = {}, {}, {}
        for c, want in wants:
            parts = batch._parts(c)
            if parts is None:
                raise SchemaError(f"batch lacks column {c!r} used by the query "
                                  f"(batch columns: {batch.column_names})")
            arr, m, d = parts
            if (want is None) != (d is not None) or (d is None and arr.dtype != want):
                got, want_name = batch.type_of(c), schema[c]
                if _kind(want_name) != _kind(got) or is_time(want_name):
                    raise SchemaError(f"column {c!r} has type {got} in this batch but the "
                                      f"job's schema has {want_name}")
                try:  # a narrower integer type: every valid value must fit (no wrapping)
                    arr = _safe_cast(c, arr, m, np.dtype(want))
                except ValueError as ex:
                    raise SchemaError(f"{ex} (type {got} in this batch, {want_name} in the "
                                      "job's schema)") from None
            data[c] = arr
            masks[c] = m
            bdicts[c] = d
        # -- from here on nothing can fail on the data; adopt schema and dictionaries
        if self._bound is None:
            self._bound = bound
            self._wants = wants
        for c in cols:
            if bdicts[c] is not None:
                data[c] = self._encode_strings(c, bdicts[c], data[c], masks[c])
        # Kernel variants: either no column is nullable, or (once any used column has had
        # a null) all are, so a query compiles at most two variants.
        if not self._nullable and any(masks[c] is not None for c in cols):
            self._nullable = set(cols)
            if self._state is not None:
                self._switch_to_nullable()
        spec, module = self._variant()
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
        R = self._runtime_constants(spec)
        wm = NO_WATERMARK
        if spec.windowed:
            k = spec.inputs.index((bound.window.time_column, "data"))
            tmask = masks[bound.window.time_column]
            marks = self._buffer("wm", n)
            wm = watermarks(C[k], tmask if tmask is not None else _NO_MASKS[0], tmask is not None,
                            self._watermark, marks)
            R = R + self._window_runtime(bound, marks, n, wm)
        return Prepared(batch, n, spec, module, tuple(C), M, R, wm)

    def _window_runtime(self, bound: BoundQuery, marks: np.ndarray, n: int,
                        watermark: int) -> tuple:
        """(WIN, WM, LATEBUF): [lateness in ticks, watermark after the batch], the
        per-record watermarks, slots for late row numbers (sized by ``execute``)."""
        lateness = round(self.allowed_lateness_ms * bound.ticks_per_ms)
        return (np.array([lateness, watermark], np.int64), marks[:n], _EMPTY_I64)

    def _buffer(self, name: str, n: int) -> np.ndarray:
        """A reusable int64 scratch array of at least ``n`` entries."""
        b = self._bufs.get(name)
        if b is None or len(b) < n:
            b = self._bufs[name] = np.empty(max(n, 1024), np.int64)
        return b

    def _switch_to_nullable(self) -> None:
        """Moving to the nullable kernel variant: the non-null counts it maintains were
        not kept by the non-null variant, where they equal the row count."""
        old = self._spec
        new, _ = self._variant()
        I_ = self._state[4]
        for row in set(old.unmaintained_counts) - set(new.unmaintained_counts):
            I_[:, row, :] = I_[:, old.rows_row, :]
        self._spec = new

    def _runtime_constants(self, spec: KernelSpec) -> tuple:
        """R: string literal codes (interned once) and current string ranks."""
        lit = self._literal_codes.get(id(spec))
        if lit is None:
            lit = np.array([self._dicts[o].code_of(v) for o, v in spec.literals] or [0],
                           dtype=np.int64)
            self._literal_codes[id(spec)] = lit
        if not spec.rank_columns:
            return (lit,)
        return (lit, *[self._dicts[c].ranks() for c in spec.rank_columns])

    def _needed_columns(self) -> list[str]:
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
        d = self._dicts.get(c)
        if d is None:
            self._dicts[c] = bd
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

    def _variant(self) -> tuple[KernelSpec, Any]:
        key = bool(self._nullable)
        v = self._variants.get(key)
        if v is None:
            # engines of the same query over the same schema share generated kernels
            gkey = (self.sql, self._bound.schema, key)
            with _GENERATED_LOCK:
                v = _GENERATED.get(gkey)
                if v is None:
                    spec = generate(self._bound, set(self._nullable))
                    v = (spec, load_module(spec.source))
                    _GENERATED[gkey] = v
            self._variants[key] = v
        return v

    # ---------------------------------------------------------------- partitions
    def bind_partitions(self, n: int) -> None:
        """Shard the state into ``n`` partitions (once; a live job cannot be resharded)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"number of partitions must be a positive integer, got {n!r}")
        if self._num_partitions is None:
            self._num_partitions = int(n)
            self._metrics["partition_records"] = np.zeros(int(n), dtype=np.int64)
        elif self._num_partitions != n:
            raise ValueError(
                f"this engine's state is already sharded into {self._num_partitions} "
                f"partitions; it cannot be run with {n} (create a new engine)"
            )

    def key_bits(self, prep: Prepared) -> list[np.ndarray]:
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
        out = np.empty((prep.spec.num_part_keys, prep.n), dtype=np.int64)
        prep.module.key_bits(prep.C, prep.M, prep.R, prep.n, out)
        return list(out)

    # ---------------------------------------------------------------- state
    def _ensure_state(self, spec: KernelSpec) -> None:
        """Allocate the state (layout: velokern.kernels.codegen.STATE_SLOTS)."""
        if self._state is not None:
            return
        P = self._num_partitions
        cap = _INITIAL_GROUPS
        k = max(spec.num_keys, 1)
        nd = max(len(spec.distinct), 1)
        rows = spec.pack_rows
        self._state = [
            new_table(P, 2 * cap),  # table: (group id, hash) per slot
            np.zeros((P, cap), dtype=np.uint64),  # hashes
            np.zeros((P, cap, k), dtype=np.int64),  # kbits
            np.zeros((P, cap, k), dtype=np.uint8),  # knull
            # pack rows are padded by one cache line so that the same group's value in
            # consecutive rows (ring buffers, aggregate states) does not fall in one L1
            # cache set (a power-of-two row stride aliases; measured: a keyless AVG over
            # 100 rows, 2.61 -> 1.67 ms per 100k-record batch)
            np.zeros((P, max(rows["I"], 1), cap + 8), dtype=np.int64),  # I
            np.zeros((P, max(rows["F"], 1), cap + 8), dtype=np.float64),  # F
            np.zeros((P, max(rows["B"], 1), cap + 64), dtype=np.uint8),  # B
            np.zeros((P, len(spec.meta_cols)), dtype=np.int64),  # meta
            np.full((P, nd, 2 * cap), -1, dtype=np.int64),  # dtab
            np.zeros((P, nd, cap), dtype=np.int64),  # dgid
            np.zeros((P, nd, cap), dtype=np.int64),  # dval
            np.full((P, 1), -1, dtype=np.int64),  # dmap (sized by _ensure_direct)
            np.zeros((P, 2, k), dtype=np.int64),  # ddims: per-key sizes and strides
        ]
        self._spec = spec
        if spec.direct:
            self._meta()[:, spec.meta_cols["direct"]] = 1
        if spec.num_keys == 0 and not spec.rows_window:
            module = self._variant()[1]
            module.init_global(tuple(self._state), 0)

    def _meta(self) -> np.ndarray:
        return self._state[7]

    def _ensure_direct(self, spec: KernelSpec) -> None:
        """Size the direct map so every current dictionary code fits (GROUP BY or ROWS
        PARTITION BY keys that are all string/bool columns); past _DIRECT_LIMIT slots,
        turn it off for good."""
        # fast path: every key's dictionary still fits the map's current size
        fits = self._direct_fits
        if fits is not None:
            for d, lim in fits:
                if len(d) >= lim:
                    break
            else:
                return
        meta = self._meta()
        col = spec.meta_cols["direct"]
        if meta[0, col] == 0:
            self._direct_fits = []  # turned off for good: nothing to check any more
            return
        ddims = self._state[12]
        need = []
        for k, t in zip(self._bound.keys, self._bound.key_types):
            need.append(3 if t != STRING else len(self._dicts[k.name]) + 1)
        if all(n <= d for n, d in zip(need, ddims[0, 0])):
            return
        dims = [max(int(d), 1 << max(3, (n - 1).bit_length())) if n > d else int(d)
                for n, d in zip(need, ddims[0, 0])]
        total = int(np.prod(dims, dtype=np.float64))
        if total > _DIRECT_LIMIT:
            meta[:, col] = 0
            self._state[11] = np.full((meta.shape[0], 1), -1, dtype=np.int64)
            return
        strides = [int(np.prod(dims[j + 1:], dtype=np.int64)) for j in range(len(dims))]
        ddims[:, 0] = dims
        ddims[:, 1] = strides
        self._direct_fits = [(self._dicts[k.name], dims[j]) for j, (k, t) in
                             enumerate(zip(self._bound.keys, self._bound.key_types))
                             if t == STRING]
        if meta[:, 0].any():
            self._state[11] = np.empty((meta.shape[0], total), dtype=np.int64)
            rebuild_direct(self._state[11], self._state[2], self._state[3], meta, ddims)
        else:  # no group yet (a new job): nothing to map, and no kernel to load
            self._state[11] = np.full((meta.shape[0], total), -1, dtype=np.int64)

    def _grow(self) -> None:
        """Double whatever is full (groups and/or distinct sets), rebuild its tables.
        Full means: one more record could not get its groups (as many as the windows a
        record belongs to), which is when the kernels stop."""
        spec, st = self._spec, self._state
        meta = self._meta()
        room = spec.max_windows
        if meta[:, 0].max() + room > st[1].shape[1]:
            st[1] = _double(st[1], 1)
            st[2] = _double(st[2], 1)
            st[3] = _double(st[3], 1)
            for k in (4, 5, 6):
                st[k] = _double(st[k], 2)
            st[0] = table_of(st[1], meta, 2 * st[0].shape[1])
        cols = [spec.meta_cols[f"{a}_nd"] for a in spec.distinct]
        if cols and max(meta[:, c].max() for c in cols) + room > st[9].shape[2]:
            st[9] = _double(st[9], 2)
            st[10] = _double(st[10], 2)
            st[8] = np.full(st[8].shape[:2] + (st[8].shape[2] * 2,), -1, np.int64)
            for d, c in enumerate(cols):
                rebuild_distinct(st[8][:, d], st[9][:, d], st[10][:, d], meta, c)

    # ---------------------------------------------------------------- execution
    def execute(self, prep: Prepared, routing: Routing) -> RecordBatch:
        """Run a prepared batch through the kernels; returns what the batch emits."""
        nparts = len(routing.starts)
        if nparts != self._num_partitions and (
            prep.spec.stateful or self._num_partitions is None
        ):
            if self._num_partitions is None:
                raise RuntimeError("bind_partitions must be called before execute")
            raise ValueError(f"routing has {nparts} partitions, the engine has "
                             f"{self._num_partitions}")
        with self._lock:
            pr = self._metrics["partition_records"]
            if nparts == 1 and len(pr) == 1:
                pr[0] += prep.n
            elif len(routing.starts) == len(pr):
                pr += routing.ends - routing.starts
            else:  # a stateless batch routed to fewer slices than partitions
                pr[: len(routing.starts)] += routing.ends - routing.starts
            self._metrics["records_in"] += prep.n
            self._metrics["batches"] += 1
            if self._sessions is not None:
                out = self._sessions.execute(prep)
            elif prep.spec.rows_window:
                out = self._execute_rows(prep, routing)
            elif prep.spec.stateful:
                out = self._execute_stateful(prep, routing)
            else:
                out = self._execute_stateless(prep, routing)
            self._seq += prep.n
            self._metrics["records_emitted"] += out.num_rows
            return out

    def _execute_stateless(self, prep: Prepared, r: Routing) -> RecordBatch:
        spec = prep.spec
        n = prep.n
        OI, OF, OB, OC, OM, orow = self._out_buffers(spec, n)
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        P = len(r.starts)
        counts = np.zeros(P, dtype=np.int64)
        if r.parallel and P > 1:
            args = (prep.C, prep.M, prep.R, idx, use_idx, r.starts, r.ends, OI, OF, OB, OC, OM,
                    orow, counts)
            part = part_address(prep.module.project_part, "int", args, lambda: (
                prep.C, prep.M, prep.R, idx, use_idx, r.starts[0], r.ends[0], OI, OF, OB, OC, OM,
                orow))
            prep.module.project_all(part, *args)
        else:
            for p in range(P):
                counts[p] = prep.module.project_part(prep.C, prep.M, prep.R, idx, use_idx,
                                                     int(r.starts[p]), int(r.ends[p]), OI, OF,
                                                     OB, OC, OM, orow)
        self._metrics["records_filtered"] += n - int(counts.sum())
        return self._in_input_order(spec, (OI, OF, OB, OC, OM), orow, r.starts, counts, prep)

    def _execute_rows(self, prep: Prepared, r: Routing) -> RecordBatch:
        """ROWS window functions: partition p updates its keys' frames and writes one row
        per record at ``r.starts[p]``; rows are put back in input order."""
        spec = prep.spec
        self._ensure_state(spec)
        if spec.direct:
            self._ensure_direct(spec)
        n = prep.n
        OI, OF, OB, OC, OM, orow = self._out_buffers(spec, n)
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        P = len(r.starts)
        obases = r.starts.astype(np.int64, copy=False)
        ends = r.ends.astype(np.int64, copy=False)
        module = prep.module

        def run_all(S, starts, active, stops, counts):
            args = (S, prep.C, prep.M, prep.R, idx, use_idx, starts, ends, obases, active, OI,
                    OF, OB, OC, OM, orow, stops, counts)
            part = part_address(module.rows_part, "pair", args, lambda: (
                S, starts[0], prep.C, prep.M, prep.R, idx, use_idx, starts[0], ends[0],
                obases[0], OI, OF, OB, OC, OM, orow))
            module.rows_all(part, *args)

        def run_part(S, p, start):
            return module.rows_part(S, p, prep.C, prep.M, prep.R, idx, use_idx, start,
                                    int(ends[p]), int(obases[p]), OI, OF, OB, OC, OM, orow)

        counts = self._run_partitions(obases, ends, run_all, run_part, r.parallel and P > 1)
        return self._in_input_order(spec, (OI, OF, OB, OC, OM), orow, obases, counts, prep)

    def _in_input_order(self, spec: KernelSpec, packs, orow, starts, counts,
                        prep: Prepared) -> RecordBatch:
        """The output of rows that each belong to one input row (partition p wrote
        ``counts[p]`` rows at ``starts[p]`` of ``packs``, pack row k belongs to input row
        ``orow[k]``), in input order; passthrough columns come from ``prep``."""
        n = prep.n
        segs = [(int(s), int(s) + int(c)) for s, c in zip(starts, counts) if c > 0]
        total = sum(b - a for a, b in segs)
        if len(segs) <= 1:  # one partition's rows: already in input order
            rows = segs[0] if segs else (0, 0)
            sel = None if total == n else orow[rows[0]:rows[1]].copy()
            return self._assemble(spec, packs, rows, prep, sel)
        starts = np.asarray(starts, np.int64)
        counts = np.asarray(counts, np.int64)
        if total == n:
            # every input row has its row: the packs' rows are scattered into new packs
            # in input order (one pass per pack; gathering through the inverse map took
            # a pass to build it, then one per column: S1, V2:2, ~200 -> ~60 us)
            threads = self._worker_threads(n)
            out = _repacked(spec, packs, n, (
                lambda src, dst: scatter_rows_parallel(src, orow, starts, counts, dst,
                                                       threads)) if threads > 1 else (
                lambda src, dst: scatter_rows(src, orow, starts, counts, dst)), self._pool)
            return self._assemble(spec, out, (0, n), prep)
        pos, sel = self._buffer("pos", total), self._buffer("sel", total)
        input_order(orow, starts, counts, self._buffer("inv", n)[:n], pos, sel)
        return self._assemble(spec, packs, pos[:total], prep, sel[:total])

    def _run_partitions(self, starts, ends, run_all, run_part, parallel: bool) -> np.ndarray:
        """Run every partition's kernel over ``[starts[p], ends[p])`` (one prange call, or
        one call per partition), growing the state and resuming the partitions that
        stopped because it was full. Returns the output rows of each partition."""
        P = len(ends)
        starts = np.asarray(starts, np.int64).copy()
        stops = starts.copy()
        counts = np.zeros(P, np.int64)
        active = np.ones(P, np.uint8)
        while True:
            S = tuple(self._state)
            if parallel:
                run_all(S, starts, active, stops, counts)
            else:
                for p in range(P):
                    if active[p]:
                        stops[p], counts[p] = run_part(S, p, int(starts[p]))
            unfinished = stops < ends
            if not unfinished.any():
                return counts
            self._grow()
            active = unfinished.astype(np.uint8)
            starts = stops.copy()

    def _out_buffers(self, spec: KernelSpec, n: int, seq_rows: bool = True):
        """(OI, OF, OB, OC, OM, seq): output packs and order keys for ``n`` rows, reused
        across batches (the packs are new again after an output took them over).
        ``seq_rows`` False: an empty ``seq`` (group rows of one partition are in order
        already; their emit kernel then writes no order keys)."""
        key = id(spec)
        packs = self._bufs.get(key)
        if not seq_rows:
            seq = self._bufs.get((key, "noseq"))
            if seq is None:
                seq = self._bufs[(key, "noseq")] = _alloc_seq(spec, 0)
        else:
            seq = self._bufs.get((key, "seq"))
            if seq is None or seq.shape[-1] < n:
                seq = self._bufs[(key, "seq")] = _alloc_seq(spec, max(n, 1024))
        if packs is None or packs[0].shape[-1] < n:
            packs = self._bufs[key] = _alloc_outputs(spec, max(n, 1024), self._pool)
        return packs + (seq,)

    def _assembly_plan(self, spec: KernelSpec) -> list:
        plan = self._plans.get(id(spec))
        if plan is None:
            b = self._bound
            plan = []
            for oc, t, (_, e) in zip(spec.outputs, b.output_types, b.outputs):
                pack = _PACKS.index(oc.pack) if oc.pack != "C" else _PASSTHROUGH
                if pack == _PASSTHROUGH:
                    conv = None
                    if is_time(t):
                        conv = ("view", np.dtype(t))
                    elif t == STRING:
                        conv = ("dict", self._dicts[_owner(b, e)])
                    plan.append((oc.name, pack, oc.row, oc.mask_row, conv,
                                 np.dtype(oc.dtype)))
                    continue
                if is_time(t):
                    conv = ("view", np.dtype(t))
                elif t == STRING:  # int32 codes in pack OC
                    conv = ("dict", self._dicts[_owner(b, e)])
                elif np.dtype(oc.dtype).kind == "u" and np.dtype(oc.dtype).itemsize == 8:
                    conv = ("view", np.dtype(np.uint64))
                elif np.dtype(oc.dtype) != _PACK_DTYPES[pack]:
                    conv = ("astype", np.dtype(oc.dtype))
                else:
                    conv = None
                plan.append((oc.name, pack, oc.row, oc.mask_row, conv, None))
            self._plans[id(spec)] = plan
        return plan

    def _worker_threads(self, rows: int) -> int:
        """numba workers to put ``rows`` output rows in order on (merge, gather,
        scatter): a V2 job's (its processor sets them for its parallel kernel) for
        PARALLEL_MIN_ROWS rows and more, else 1."""
        if rows < PARALLEL_MIN_ROWS or not self._num_partitions or self._num_partitions < 2:
            return 1
        return numba.get_num_threads()

    def _assemble(self, spec: KernelSpec, packs, rows, prep: Prepared | None = None,
                  sel: np.ndarray | None = None) -> RecordBatch:
        """Output batch from the output packs' rows ``rows``: ``(a, b)`` the rows a..b-1,
        or an int64 array of positions in output order (velokern.kernels.order);
        passthrough columns come from ``prep``'s inputs at rows ``sel`` (None: all)."""
        if not isinstance(rows, tuple):
            # positions: new packs hold those rows in order, gathered pack by pack (a
            # take per column and per mask cost more: S3a, V2:2, 3.99-4.51 -> 3.83-4.43
            # ms per batch), on the numba workers of a V2 job (16-core machine, S3a 100k
            # batches: 782 -> 407 us at 4 threads, 831 -> 234 at 16; 2-core machine, S3a
            # V2:2 with outputs kept 3.95-4.01 -> 2.90-3.03 ms per batch: the workers
            # fault in the new packs' pages side by side)
            pos = rows
            threads = self._worker_threads(len(pos))
            packs = _repacked(spec, packs, len(pos), (
                lambda src, dst: gather_rows_parallel(src, pos, dst, threads))
                if threads > 1 else (lambda src, dst: gather_rows(src, pos, dst)), self._pool)
            rows = (0, len(pos))
        OM = packs[_MASKS]
        a, b = rows
        n = b - a
        blocks = [None] * _MASKS  # one block per output pack; columns are its rows
        # rows filling at least half the packs: the output takes the packs themselves
        # (no copy) and the next batch gets new ones; fewer rows are copied out, so an
        # output never holds much more memory than its rows
        give = 2 * n >= packs[0].shape[-1] and n > 0
        if give and self._bufs.get(id(spec), (None,))[0] is packs[0]:
            del self._bufs[id(spec)]
        names, cols, masks, dicts = [], {}, {}, {}
        for name, pack, row, mask_row, conv, dtype in self._assembly_plan(spec):
            if pack == _PASSTHROUGH and prep is None:  # no input: an empty column
                arr, m = np.empty(0, dtype=dtype), None
            elif pack == _PASSTHROUGH:  # an input column passed through
                src = prep.C[row]
                col = spec.inputs[row][0]
                vm = prep.batch.validity(col)
                if sel is None:
                    arr, m = src, vm
                else:
                    arr = src[sel]
                    m = None if vm is None else vm[sel]
                    if m is not None and _all_true(m):
                        m = None
            else:
                block = blocks[pack]
                if block is None:
                    block = packs[pack][:, a:b]
                    block = blocks[pack] = block if give else block.copy()
                arr = block[row]
                m = None
                if mask_row >= 0:
                    mv = OM[mask_row, a:b]
                    if not _all_true(mv):
                        m = mv if give else mv.copy()
            if conv is not None:
                how, arg = conv
                if how == "view":
                    arr = arr.view(arg)
                elif how == "astype":
                    arr = arr.astype(arg)
                else:  # "dict": int32 codes of this dictionary
                    dicts[name] = arg
            names.append(name)
            cols[name] = arr
            masks[name] = m
        return RecordBatch._trusted(names, cols, masks, dicts, n)

    def _execute_stateful(self, prep: Prepared, r: Routing) -> RecordBatch:
        """Update every partition's state and (EMIT CHANGES) emit its touched groups in
        one fused kernel call per partition; partition p writes its output rows at
        ``obases[p]``: ``r.starts[p]`` (it touched at most ``ends[p] - starts[p]``
        groups), or for a windowed query after its live groups plus its records times
        the windows a record can belong to (closing windows emit them)."""
        spec = prep.spec
        self._ensure_state(spec)
        if spec.direct:
            self._ensure_direct(spec)
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        emit = self._emit_mode == "changes"
        module = prep.module
        P = len(r.starts)
        R = prep.R
        if spec.windowed:
            if P == 1:  # (plain ints: this is most of the work at small batches)
                obases = _ZERO_I64
                cap = int(self._meta()[0, 0]) + prep.n * spec.max_windows
            else:
                sizes = self._meta()[:, 0] + (r.ends - r.starts) * spec.max_windows
                obases = np.zeros(P, np.int64)
                np.cumsum(sizes[:-1], out=obases[1:])
                cap = int(sizes.sum())
            R = R[:-1] + (self._buffer("late", cap),)
        else:
            obases = r.starts if P == 1 else r.starts.astype(np.int64, copy=False)
            cap = prep.n
        OI, OF, OB, OC, OM, oseq = self._out_buffers(spec, cap, seq_rows=P > 1)
        if P == 1:
            start = int(r.starts[0])
            end = int(r.ends[0])
            base = 0 if spec.windowed else start
            while True:
                stop, k = module.batch_part(tuple(self._state), 0, prep.C, prep.M, R, idx,
                                            use_idx, start, end, base, self._seq, emit, OI, OF,
                                            OB, OC, OM, oseq)
                if stop >= end:
                    break
                self._grow()
                start = stop
        else:
            ends = r.ends.astype(np.int64, copy=False)

            def run_all(S, starts, active, stops, counts):
                args = (S, prep.C, prep.M, R, idx, use_idx, starts, ends, obases, active,
                        self._seq, emit, OI, OF, OB, OC, OM, oseq, stops, counts)
                part = part_address(module.batch_part, "pair", args, lambda: (
                    S, starts[0], prep.C, prep.M, R, idx, use_idx, starts[0], ends[0],
                    obases[0], self._seq, emit, OI, OF, OB, OC, OM, oseq))
                module.batch_all(part, *args)

            def run_part(S, p, start):
                return module.batch_part(S, p, prep.C, prep.M, R, idx, use_idx, start,
                                         ends[p], obases[p], self._seq, emit, OI, OF, OB, OC, OM,
                                         oseq)

            counts = self._run_partitions(r.starts, ends, run_all, run_part, r.parallel)
        packs = (OI, OF, OB, OC, OM)
        if spec.windowed:
            self._take_late(prep, R[-1], obases)
            self._watermark = max(self._watermark, prep.watermark)
        elif not emit:
            return self._empty_output(spec)
        if P == 1:  # (the common path at small batches: plain ints, no more numpy)
            return self._assemble(spec, packs, (base, base + k))
        return self._assemble_groups(spec, packs, oseq, obases, counts)

    def _take_late(self, prep: Prepared, late: np.ndarray, obases: np.ndarray) -> None:
        """Count the batch's late records and hand them, in input order, to the late
        sink (partition p left their row numbers in ``late[obases[p]:]``)."""
        meta = self._meta()
        if not (meta[0, 3] if len(meta) == 1 else meta[:, 3].any()):
            return  # (one partition: a scalar test, most batches have no late record)
        nlate = meta[:, 3].copy()
        meta[:, 3] = 0
        rows = np.sort(np.concatenate([late[int(b):int(b) + int(c)]
                                       for b, c in zip(obases, nlate)]))
        self._metrics["late_records"] += len(rows)
        if self.late_sink is not None:
            self.late_sink(prep.batch.take(rows))

    def _close_windows(self, module, R) -> RecordBatch:
        """End of input: close every open window (EMIT FINAL: emit its rows in (window
        start, first record) order) and free its state."""
        spec, st = self._spec, self._state
        meta = self._meta()
        P = meta.shape[0]
        sizes = meta[:, 0].copy()
        obases = np.zeros(P, np.int64)
        np.cumsum(sizes[:-1], out=obases[1:])
        total = int(sizes.sum())
        packs = _alloc_outputs(spec, total, self._pool)
        oseq = _alloc_seq(spec, total if P > 1 else 0)  # (one partition: no merge)
        counts = np.zeros(P, np.int64)
        S = tuple(st)
        for p in range(P):  # once per job: serial (see velokern.kernels.codegen)
            if sizes[p]:
                counts[p] = module.close_groups(S, p, R, _MAX_I64, *packs, oseq,
                                                int(obases[p]))
        return self._assemble_groups(spec, packs, oseq, obases, counts)

    def _assemble_groups(self, spec: KernelSpec, packs, oseq, obases, counts) -> RecordBatch:
        """Group rows written by partitions (partition p: ``counts[p]`` rows at
        ``obases[p]``), merged into the defined order: by the position of each group's
        first record in the stream."""
        segs = [(int(a), int(a) + int(c)) for a, c in zip(obases, counts) if c > 0]
        if len(segs) <= 1:
            return self._assemble(spec, packs, segs[0] if segs else (0, 0))
        # each partition's run is sorted: windowed by (window start, first record),
        # otherwise by first record (groups are numbered in creation order)
        win, seq = (oseq[0], oseq[1]) if oseq.ndim == 2 else (oseq, oseq)
        total = sum(b - a for a, b in segs)
        pos = self._buffer("pos", total)
        starts = np.array([a for a, _ in segs], np.int64)
        ends = np.array([b for _, b in segs], np.int64)
        threads = self._worker_threads(total)
        if threads > 1:
            merge_runs_parallel(win, seq, starts, ends, pos,
                                self._buffer("merge_scratch", total), threads)
        else:
            merge_runs(win, seq, starts, ends, pos,
                       self._buffer("merge_scratch", total) if len(segs) > 2 else pos)
        return self._assemble(spec, packs, pos[:total])

    def _emit(self, module, R) -> RecordBatch:
        """End of input, EMIT FINAL without a window: every group, in creation order."""
        spec = self._spec
        st = self._state
        meta = self._meta()
        P = meta.shape[0]
        total = int(meta[:, 0].sum())
        gids = np.empty(total, dtype=np.int64)
        goffs = np.empty(P + 1, dtype=np.int64)
        collect_all(meta, 0, gids, goffs)
        OI, OF, OB, OC, OM = _alloc_outputs(spec, total, self._pool)
        oseq = np.empty(total if P > 1 else 0, dtype=np.int64)  # (one partition: no merge)
        counts = np.zeros(P, dtype=np.int64)
        obases = goffs[:P].copy()
        S = tuple(st)
        for p in range(P):  # once per job: serial (see velokern.kernels.codegen)
            counts[p] = module.emit_part(S, p, R, gids, int(goffs[p]), int(goffs[p + 1]),
                                         OI, OF, OB, OC, OM, oseq, int(obases[p]))
        return self._assemble_groups(spec, (OI, OF, OB, OC, OM), oseq, obases, counts)

    def empty_output(self) -> RecordBatch:
        """No rows, with the columns (names, types, string dictionaries) the query emits
        for the schema the engine is bound to; generates no kernel code to run."""
        with self._lock:
            if self._bound is None:
                raise RuntimeError("the engine has no schema yet: prepare a batch first")
            spec, _ = self._variant()
            return self._empty_output(spec)

    def _empty_output(self, spec: KernelSpec) -> RecordBatch:
        key = f"empty:{id(spec)}"
        out = self._bufs.get(key)
        if out is None:
            out = self._assemble(spec, _alloc_outputs(spec, 0), (0, 0))
            self._bufs[key] = out
        return out

    def flush(self) -> RecordBatch:
        """End of input: emit what is still held (final group rows for EMIT FINAL).
        Once per job, so partitions are emitted one after another (no parallel kernel
        to compile for it)."""
        with self._lock:
            if self._sessions is not None:
                out = self._sessions.flush()
                self._metrics["records_emitted"] += len(out)
                return out
            if self._bound is None:
                return RecordBatch({})
            spec, module = self._variant()
            if spec.windowed and self._state is not None and self.emit_mode != "final":
                # EMIT CHANGES already emitted every row: free the open windows
                R = self._runtime_constants(spec) + self._window_runtime(
                    self._bound, self._buffer("wm", 1), 0, self._watermark)
                self._close_windows(module, R)
            if not spec.stateful or self.emit_mode != "final":
                return self._empty_output(spec)
            if self._state is None:
                if self._num_partitions is None:
                    self.bind_partitions(1)
                self._ensure_state(spec)
            R = self._runtime_constants(spec)
            if spec.windowed:
                R = R + self._window_runtime(self._bound, self._buffer("wm", 1), 0,
                                             self._watermark)
                out = self._close_windows(module, R)
            else:
                out = self._emit(module, R)
            self._metrics["records_emitted"] += len(out)
            return out

    def output_schema(self) -> Schema | None:
        if self._bound is None:
            return None
        return Schema([(n, t) for (n, _), t in zip(self._bound.outputs,
                                                   self._bound.output_types)])


_MAX_I64 = int(np.iinfo(np.int64).max)


def _stamp_processing_time(batch: RecordBatch) -> RecordBatch:
    """``batch`` with a ``_timestamp`` column: the ingestion time in epoch milliseconds."""
    now = np.full(len(batch), int(time.time() * 1000), dtype=np.int64)
    names = batch.column_names + [PROCESSING_TIME]
    data = {n: batch._parts(n)[0] for n in batch.column_names}
    data[PROCESSING_TIME] = now
    masks = {n: batch._parts(n)[1] for n in batch.column_names}
    masks[PROCESSING_TIME] = None
    return RecordBatch._trusted(names, data, masks, batch.dictionaries, len(batch))


def _alloc_seq(spec: KernelSpec, n: int) -> np.ndarray:
    """Order keys of emitted group rows: first-record positions, with the window start
    in front for a windowed query."""
    return np.empty((2, n) if spec.windowed else n, dtype=np.int64)


def _wanted_types(bound: BoundQuery) -> list[tuple[str, np.dtype | None]]:
    """(column, storage dtype, None for strings) of every column the kernels read."""
    return [(c, None if bound.schema[c] == STRING else np.dtype(bound.schema[c]))
            for c in bound.columns]


def _owner(b: BoundQuery, e) -> str:
    from velokern.plan import AggRef, Col, KeyRef

    if isinstance(e, Col):
        return e.name
    if isinstance(e, KeyRef):
        return _owner(b, b.keys[e.i])
    if isinstance(e, AggRef):
        return _owner(b, b.aggs[e.i].arg)
    raise PlanError(f"no dictionary for string expression {e}")


def _repacked(spec: KernelSpec, packs, n: int, fill: Callable, pool: BlockPool) -> tuple:
    """New output packs of ``n`` rows, each filled by ``fill(src, dst)`` from the same
    pack of ``packs`` (only the rows the query's outputs use)."""
    out = _alloc_outputs(spec, n, pool)
    used = spec.out_rows()
    for src, dst, name in zip(packs, out, _PACKS):
        if used[name]:
            fill(src[:used[name]], dst[:used[name]])
    return out


def _all_true(m: np.ndarray) -> bool:
    """``m.all()`` for a bool array: a count for up to a few thousand entries (numpy's
    reduction costs ~1.4 us a call, the count ~0.4 us; an output of 1k-record batches
    checks a mask per nullable column), the reduction beyond (faster on long arrays)."""
    if m.size <= 8192:
        return np.count_nonzero(m) == m.size
    return bool(m.all())


def _double(a: np.ndarray, axis: int) -> np.ndarray:
    """Copy of ``a`` with twice the capacity along ``axis`` (new slots zeroed)."""
    shape = list(a.shape)
    shape[axis] *= 2
    out = np.zeros(shape, dtype=a.dtype)
    out[(slice(None),) * axis + (slice(0, a.shape[axis]),)] = a
    return out


def _alloc_outputs(spec: KernelSpec, n: int, pool: BlockPool | None = None):
    """Output packs (OI int64, OF float64, OB bool, OC int32 string codes, OM bool
    masks), ``n`` rows each (none for a pack other than OI that no output uses: the
    kernels never index it). With a ``pool``, the large packs are carved from one of
    its blocks (64-byte aligned), which comes back once no output refers to it; small
    packs are plain arrays, which the C allocator serves from memory it keeps (carved
    from the block, S1's mask row was ~25 new pages every batch)."""
    min_bytes = pool.min_bytes if pool is not None else None
    layout = spec.layouts.get((n, min_bytes))
    if layout is None:
        layout = spec.layouts[(n, min_bytes)] = _pack_layout(spec, n, min_bytes)
    packs, total = layout
    if not total:
        return tuple(np.empty(sh, dtype=dt) for sh, dt, _, _ in packs)
    block = pool.take(total)
    return tuple(np.empty(sh, dtype=dt) if o < 0 else block[o:o + size].view(dt).reshape(sh)
                 for sh, dt, size, o in packs)


def _pack_layout(spec: KernelSpec, n: int, min_bytes: int | None) -> tuple:
    """(per pack: shape, dtype, bytes, offset in the pooled block or -1 for a plain
    array), block bytes: the layout :func:`_alloc_outputs` reuses for each size."""
    rows = spec.out_rows()
    if len(spec.layouts) > 64:  # sizes seen by a job are few; keep the cache small
        spec.layouts.clear()
    packs, total = [], 0
    for name, dt in zip(_PACKS, _PACK_DTYPES):
        # OI always has the width: the engine reads the packs' room from it
        sh = (max(rows[name], 1), n if rows[name] or name == "OI" else 0)
        size = sh[0] * sh[1] * dt.itemsize
        if min_bytes is None or size < min_bytes:
            packs.append((sh, dt, size, -1))
        else:
            packs.append((sh, dt, size, total))
            total += (size + 63) // 64 * 64
    return tuple(packs), total


def _fmt(e) -> str:
    from velokern.plan import (
        Agg,
        AggRef,
        Binary,
        Case,
        Cast,
        Col,
        Func,
        InList,
        IsNull,
        KeyRef,
        Lit,
        Unary,
    )

    if isinstance(e, Col):
        return e.name
    if isinstance(e, Lit):
        return "NULL" if e.value is None else repr(e.value)
    if isinstance(e, KeyRef):
        return f"key{e.i}"
    if isinstance(e, AggRef):
        return f"a{e.i}"
    if isinstance(e, Unary):
        return f"(NOT {_fmt(e.x)})" if e.op == "not" else f"(-{_fmt(e.x)})"
    if isinstance(e, Binary):
        return f"({_fmt(e.l)} {e.op.upper() if e.op in ('and', 'or') else e.op} {_fmt(e.r)})"
    if isinstance(e, IsNull):
        return f"({_fmt(e.x)} IS {'NOT ' if e.negated else ''}NULL)"
    if isinstance(e, InList):
        vals = ", ".join(_fmt(v) for v in e.values)
        return f"({_fmt(e.x)} {'NOT ' if e.negated else ''}IN ({vals}))"
    if isinstance(e, Case):
        parts = " ".join(f"WHEN {_fmt(c)} THEN {_fmt(v)}" for c, v in e.whens)
        d = f" ELSE {_fmt(e.default)}" if e.default is not None else ""
        return f"CASE {parts}{d} END"
    if isinstance(e, Cast):
        return f"CAST({_fmt(e.x)} AS {e.to})"
    if isinstance(e, Func):
        return f"{e.name.upper()}({', '.join(_fmt(a) for a in e.args)})"
    if isinstance(e, Agg):
        inner = "*" if e.arg is None else _fmt(e.arg)
        return f"{e.func.upper()}({inner})"
    return str(e)
