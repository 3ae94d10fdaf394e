"""StreamExecutionEngine: a facade over the stages of :mod:`velokern.exec` (input,
state, driver, output, windows, sessions, checkpoint payload). Job processors route a
batch's rows to partitions and call :meth:`~StreamExecutionEngine.prepare` (validates,
changes no state), then :meth:`~StreamExecutionEngine.execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from velokern.batch import RecordBatch, Schema, StringDictionary
from velokern.exec import payload
from velokern.exec.context import JobContext, Prepared, Routing
from velokern.exec.driver import Driver
from velokern.exec.explain import explain
from velokern.exec.input import (
    InputStage,
    checked_lateness,
    partition_key_bits,
    stamp_processing_time,
)
from velokern.exec.output import OutputStage
from velokern.exec.reshard import partition_key_columns
from velokern.exec.sessions import SessionWindows, is_session
from velokern.exec.state import KeyedState
from velokern.exec.windows import deliver_late
from velokern.kernels.windows import NO_WATERMARK
from velokern.plan import PROCESSING_TIME, BoundQuery, Over, Query, columns_of, walk
from velokern.sql import parse_sql

__all__ = ["StreamExecutionEngine"]


class StreamExecutionEngine:
    """A streaming SQL query compiled to numba kernels, with its state.

    ``StreamExecutionEngine(sql, schema=None)``: the schema is taken from the first batch
    when not given. Pass the engine to a job processor's ``process_batch``/``flush``.

    Time windows: ``allowed_lateness_ms`` (default: the SQL's ``WITH (allowed_lateness =
    ...)``, else 0) keeps a window open that long after its end; ``late_sink`` gets, once
    the batch is done, a RecordBatch of its records that came after their window closed
    (not applied, counted in ``metrics["late_records"]``; see :class:`LateSinkError`).
    """

    def __init__(self, sql: str, schema: Schema | Mapping[str, str] | None = None, *,
                 allowed_lateness_ms: int | None = None,
                 late_sink: Callable[[RecordBatch], object] | None = None):
        self._setup(parse_sql(sql), sql, schema, allowed_lateness_ms, late_sink)

    @classmethod
    def from_query(cls, query: Query, schema: Schema | None = None) -> StreamExecutionEngine:
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
        lateness = checked_lateness(query, allowed_lateness_ms)
        if late_sink is not None and not callable(late_sink):
            raise TypeError(f"late_sink must be callable, got {type(late_sink).__name__}")
        self.ctx = JobContext(sql, lateness, late_sink)
        self.inputs = InputStage(query, self.ctx)
        self.state = KeyedState()
        self.output = OutputStage(self.ctx)
        self.driver = Driver(self.ctx, self.inputs, self.state, self.output, self._emit_mode)
        if schema is not None and not isinstance(schema, Schema):
            schema = Schema(schema)
        self._sessions: SessionWindows | None = None
        if is_session(query):
            self._sessions = SessionWindows(query, schema, self.ctx, type(self).from_query)
        elif schema is not None:
            self.inputs.bind_schema(schema)

    @property
    def allowed_lateness_ms(self) -> int:
        return self.ctx.allowed_lateness_ms

    @property
    def late_sink(self) -> Callable[[RecordBatch], object] | None:
        return self.ctx.late_sink

    def advance_watermark(self, t: int) -> None:
        """Move the event-time watermark to at least ``t`` (in the time column's units),
        as if records up to ``t`` had been seen: a part of a stream processed on its own
        starts from the watermark of the parts before it (velokern.distributed)."""
        with self.ctx.lock:
            self.ctx.watermark = max(self.ctx.watermark, int(t))

    # ---------------------------------------------------------------- snapshots
    def snapshot(self) -> dict[str, Any]:
        """The engine's whole state as plain data (numpy arrays, numbers, strings, lists
        and dicts): what a checkpoint stores. :meth:`restore` rebuilds the engine, which
        then continues exactly as this one would."""
        with self.ctx.lock:
            return payload.snapshot(self.ctx, self.inputs, self.state, self._sessions)

    @classmethod
    def restore(cls, snap: Mapping[str, Any], *,
                late_sink: Callable[[RecordBatch], object] | None = None
                ) -> StreamExecutionEngine:
        """An engine rebuilt from :meth:`snapshot` (kernels load from the cache)."""
        self = cls(snap["sql"], None, allowed_lateness_ms=snap["allowed_lateness_ms"],
                   late_sink=late_sink)
        self.load(snap)
        return self

    def load(self, snap: Mapping[str, Any]) -> None:
        """Adopt a snapshot's state (this engine is new: it has seen no batch)."""
        payload.load(snap, self.ctx, self.inputs, self.state, self._sessions,
                     self.bind_partitions)

    # ---------------------------------------------------------------- plan
    @property
    def bound(self) -> BoundQuery | None:
        return self.inputs.bound

    @property
    def schema(self) -> Schema | None:
        return None if self.inputs.bound is None else self.inputs.bound.schema

    @property
    def is_stateful(self) -> bool:
        return self._stateful

    @property
    def group_by_columns(self) -> list[str]:
        """Input columns the GROUP BY keys are computed from."""
        keys = self.query.group_by
        if self.query.has_over:
            keys = next(n.partition for _, e in self.query.select for n in walk(e)
                        if isinstance(n, Over))
        return list(dict.fromkeys(c for k in keys for c in columns_of(k)))

    @property
    def emit_mode(self) -> str:
        return self._emit_mode

    @property
    def watermark(self) -> int | None:
        """The event-time watermark (largest event time seen, in the time column's
        units), None before the first timed record or for a query without a window."""
        w = self.ctx.watermark
        return None if w == NO_WATERMARK else int(w)

    @property
    def dictionaries(self) -> dict[str, StringDictionary]:
        """The job's string dictionaries (encode batches into these to skip remapping)."""
        return dict(self.inputs.dicts)

    @property
    def num_partitions(self) -> int | None:
        return self.ctx.num_partitions

    @property
    def metrics(self) -> dict[str, Any]:
        m = dict(self.ctx.metrics)
        m["partition_records"] = [int(x) for x in m["partition_records"]]
        for name, v in self.state.counters().items():  # (kept by the kernels, in the state)
            m[name] = m.get(name, 0) + v
        if self.query.state_ttl_ms:
            m.setdefault("keys_expired", 0)
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
        return self.state.num_groups()

    def explain(self) -> str:
        """The plan as text (also printed by ``velokern explain``)."""
        return explain(self.query, self.inputs.bound, self._sessions is not None,
                       self.allowed_lateness_ms, self.ctx.num_partitions)

    def output_schema(self) -> Schema | None:
        b = self.inputs.bound
        if b is None:
            return None
        return Schema([(n, t) for (n, _), t in zip(b.outputs, b.output_types)])

    # ---------------------------------------------------------------- input
    def prepare(self, batch: RecordBatch) -> Prepared:
        """Validate ``batch`` and convert it to kernel inputs; changes no state.

        Raises a ValueError/TypeError naming the problem (missing column, wrong type,
        schema change); the batch's records are then counted as rejected.
        """
        try:
            if self._sessions is None:
                return self.inputs.prepare(batch, self._on_nullable)
            if not isinstance(batch, RecordBatch):
                raise TypeError(f"expected a RecordBatch, got {type(batch).__name__}")
            if self.query.window.time_col is None and PROCESSING_TIME not in batch:
                batch = stamp_processing_time(batch)
            return self._sessions.prepare(batch)
        except (ValueError, TypeError, KeyError):
            self.reject(batch)
            raise

    def _on_nullable(self) -> None:
        if self.state.allocated:
            self.state.switch_to_nullable(self.inputs.variant()[0])

    def reject(self, batch: object) -> None:
        """Count a batch that could not be processed (its records are 'rejected')."""
        n = len(batch) if isinstance(batch, RecordBatch) else 0
        with self.ctx.lock:
            self.ctx.metrics["records_rejected"] += n
            self.ctx.metrics["batches_rejected"] += 1

    # ---------------------------------------------------------------- partitions
    def bind_partitions(self, n: int) -> None:
        """Shard the state into ``n`` partitions (once; a live job cannot be resharded)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"number of partitions must be a positive integer, got {n!r}")
        if self.ctx.num_partitions is None:
            self.ctx.num_partitions = int(n)
            self.ctx.metrics["partition_records"] = np.zeros(int(n), dtype=np.int64)
        elif self.ctx.num_partitions != n:
            raise ValueError(
                f"this engine's state is already sharded into {self.ctx.num_partitions} "
                f"partitions; it cannot be run with {n} (create a new engine)"
            )

    def use_partitions(self, n: int) -> None:
        """Run the keyed state in ``n`` partitions from the next batch on: 1 (V2 on one
        worker: V1's layout) or the job's count (velokern.exec.reshard)."""
        if n not in (1, self.ctx.num_partitions) or self._sessions is not None:
            raise ValueError(f"a keyed state runs in 1 or {self.ctx.num_partitions} "
                             "partitions (session windows keep their own, unpartitioned)")
        with self.ctx.lock:
            self.state.reshard(n, partition_key_columns(self.inputs.bound))

    def key_bits(self, prep: Prepared) -> list[np.ndarray]:
        """The grouping bits of every GROUP BY key of every row (for partitioning)."""
        return partition_key_bits(prep)

    # ---------------------------------------------------------------- execution
    def execute(self, prep: Prepared, routing: Routing) -> RecordBatch:
        """Run a prepared batch through the kernels; returns what the batch emits (raises
        :class:`LateSinkError`, which carries it, when the late sink fails)."""
        ctx = self.ctx
        nparts = len(routing.starts)
        want = (self.state.partitions or ctx.num_partitions) if prep.spec.stateful else None
        if ctx.num_partitions is None:
            raise RuntimeError("bind_partitions must be called before execute")
        if want is not None and nparts != want:
            raise ValueError(f"routing has {nparts} partitions, the engine's state {want}")
        with ctx.lock:
            m = ctx.metrics
            pr = m["partition_records"]
            if nparts == 1:  # (a scalar add: most batches at small sizes)
                pr[0] += prep.n
            elif nparts == len(pr):
                pr += routing.ends - routing.starts
            else:  # a stateless batch routed to fewer slices than partitions
                pr[:nparts] += routing.ends - routing.starts
            m["records_in"] += prep.n
            m["batches"] += 1
            m["batches_parallel"] += routing.threads > 1
            ctx.late = None
            if self._sessions is not None:
                out = self._sessions.execute(prep)
            else:
                out = self.driver.run(prep, routing)
            ctx.seq += prep.n
            m["records_emitted"] += out.num_rows
            return deliver_late(ctx, out)  # (the batch is done: a failing sink loses nothing)

    def empty_output(self) -> RecordBatch:
        """No rows, with the columns (names, types, string dictionaries) the query emits
        for the schema the engine is bound to; generates no kernel code to run."""
        with self.ctx.lock:
            if self.inputs.bound is None:
                raise RuntimeError("the engine has no schema yet: prepare a batch first")
            return self.driver.empty(self.inputs.variant()[0])

    def flush(self) -> RecordBatch:
        """End of input: emit what is still held (final group rows for EMIT FINAL)."""
        with self.ctx.lock:
            if self._sessions is not None:
                out = self._sessions.flush()
            elif self.inputs.bound is None:
                return RecordBatch({})
            else:
                if self.ctx.num_partitions is None and self._emit_mode == "final":
                    self.bind_partitions(1)  # (no batch came: the state is made now)
                out = self.driver.flush()
            self.ctx.metrics["records_emitted"] += len(out)
            return out
