"""Partitioning strategies: how V2 routes a batch's rows to partitions.

=============  =====================================================================
``hash``       GROUP BY keys -> ``mix(keys) % n`` (Cython shim), stable bucketing.
               Stateful queries; every key lives in one partition.
``sticky``     the ``__partition__`` column (e.g. a Kafka partition) ``% n``. Stateless
               queries, or stateful ones whose source is declared keyed by (a subset
               of) the GROUP BY columns, so a group never spans two partitions.
``smart``      stateful: ``sticky`` when the source is declared keyed by the GROUP BY
               columns, else ``hash``; stateless: ``fan_in``.
``round_robin`` row i -> partition ``i % n``. Stateless queries only.
``fan_in``     contiguous slices of the batch, one per partition, outputs laid end to
               end in slice order; no bucketing at all (a batch run on one worker is
               one slice). Stateless queries only.
=============  =====================================================================

A strategy that cannot give the right answer for a query is rejected by
:meth:`Strategy.validate` when the job is set up. Default: ``hash`` for stateful
queries, ``fan_in`` for stateless ones. Every strategy keeps each partition's rows in
arrival order, so outputs equal V1's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from velokern import _shim
from velokern.batch import RecordBatch
from velokern.exec import Prepared, Routing, StreamExecutionEngine

__all__ = ["PARTITION_COLUMN", "Strategy", "StrategyError", "make_strategy"]

PARTITION_COLUMN = "__partition__"


class StrategyError(ValueError):
    """A partitioning strategy that cannot run this query correctly."""


class Strategy:
    name = ""

    def __init__(self, keyed_by: Sequence[str] | None = None):
        self.keyed_by = tuple(keyed_by) if keyed_by else ()

    def validate(self, engine: StreamExecutionEngine) -> None:
        """Raise StrategyError when this strategy would give wrong answers."""

    def check(self, engine: StreamExecutionEngine, batch: RecordBatch) -> None:
        """Raise StrategyError when ``batch`` cannot be routed. Called before the engine
        sees the batch, so a refused batch changes nothing (not even a first batch's
        schema, which the engine adopts once it has prepared the batch)."""

    def keyed_by_hash(self, engine: StreamExecutionEngine) -> bool:
        """Whether a key's partition is the hash of its key bits (then V2 may move the
        state into one partition and back: velokern.exec.reshard)."""
        return False

    def route(self, engine: StreamExecutionEngine, prep: Prepared, n: int,
              threads: int = 1) -> Routing:
        """How the batch's rows reach the ``n`` partitions; ``threads``: the worker
        threads the processor runs them on (a strategy may use them to route)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _bucketed(pids: np.ndarray, n: int, threads: int) -> Routing:
    return _routing(*_shim.stable_bucket(pids, n), threads)


def _routing(order: np.ndarray, offsets: np.ndarray, threads: int) -> Routing:
    """Partition p reads the rows ``order[offsets[p]:offsets[p + 1]]``."""
    return Routing(offsets[:-1].copy(), offsets[1:].copy(), idx=order, parallel=True,
                   threads=threads)


def _keyed_ok(engine: StreamExecutionEngine, keyed_by: tuple[str, ...]) -> bool:
    groups = set(engine.group_by_columns)
    return bool(keyed_by) and set(keyed_by) <= groups


class HashStrategy(Strategy):
    name = "hash"

    def validate(self, engine):
        if not engine.is_stateful:
            raise StrategyError("strategy 'hash' partitions by GROUP BY keys; this query has "
                                "none (use fan_in, round_robin or sticky)")

    def keyed_by_hash(self, engine):
        return True

    def route(self, engine, prep, n, threads=1):
        if n == 1:
            return Routing.single(prep.n)
        if prep.spec.num_part_keys == 0:
            # a global aggregate is one group: it lives in partition 0
            starts = np.zeros(n, np.int64)
            ends = np.zeros(n, np.int64)
            ends[0] = prep.n
            return Routing(starts, ends, parallel=True)
        # the shim hashes, counts and scatters on the worker threads (contiguous chunks
        # of rows)
        _, order, offsets = _shim.bucket_by_keys(engine.key_bits(prep), n, threads)
        return _routing(order, offsets, threads)


class StickyStrategy(Strategy):
    name = "sticky"

    def validate(self, engine):
        if engine.is_stateful and not _keyed_ok(engine, self.keyed_by):
            raise StrategyError(
                "strategy 'sticky' routes rows by the __partition__ column; for a GROUP BY "
                "query that is only correct when the source is declared keyed by the GROUP "
                f"BY columns {engine.group_by_columns} (keyed_by=...), so a group never spans "
                "two partitions; use 'hash' or 'smart'"
            )

    def check(self, engine, batch):
        b = batch
        if not isinstance(b, RecordBatch):
            return  # the engine refuses it (TypeError)
        if PARTITION_COLUMN not in b:
            raise StrategyError(f"strategy 'sticky' needs a {PARTITION_COLUMN!r} column; the "
                                f"batch has {b.column_names}")
        col = b.column(PARTITION_COLUMN)
        if col.dtype.kind not in "iu":
            raise StrategyError(f"column {PARTITION_COLUMN!r} must hold integers, got "
                                f"{b.type_of(PARTITION_COLUMN)}")
        if b.validity(PARTITION_COLUMN) is not None:
            raise StrategyError(f"column {PARTITION_COLUMN!r} has nulls")
        if len(col) and col.min() < 0:
            raise StrategyError(f"column {PARTITION_COLUMN!r} has a negative value "
                                f"{int(col.min())}")

    def route(self, engine, prep, n, threads=1):
        # checked by check() before the engine prepared the batch
        col = prep.batch.column(PARTITION_COLUMN)
        pids = (col.astype(np.int64) % n).astype(np.int32)
        return _bucketed(pids, n, threads)


class SmartStrategy(Strategy):
    name = "smart"

    def _pick(self, engine) -> Strategy:
        if not engine.is_stateful:
            return FanInStrategy()
        if _keyed_ok(engine, self.keyed_by):
            return StickyStrategy(self.keyed_by)
        return HashStrategy()

    def validate(self, engine):
        self._pick(engine).validate(engine)

    def check(self, engine, batch):
        self._pick(engine).check(engine, batch)

    def keyed_by_hash(self, engine):
        return self._pick(engine).keyed_by_hash(engine)

    def route(self, engine, prep, n, threads=1):
        return self._pick(engine).route(engine, prep, n, threads)

    def describe(self, engine) -> str:
        return self._pick(engine).name


class _StatelessOnly(Strategy):
    def validate(self, engine):
        if engine.is_stateful:
            raise StrategyError(
                f"strategy {self.name!r} spreads the rows of one group over several "
                "partitions, which is only correct for stateless queries; this query has "
                "GROUP BY/aggregates (use 'hash', or 'smart')"
            )


class RoundRobinStrategy(_StatelessOnly):
    name = "round_robin"

    def route(self, engine, prep, n, threads=1):
        pids = (np.arange(prep.n, dtype=np.int64) % n).astype(np.int32)
        return _bucketed(pids, n, threads)


class FanInStrategy(_StatelessOnly):
    name = "fan_in"

    def __init__(self, keyed_by: Sequence[str] | None = None):
        super().__init__(keyed_by)
        self._last: tuple[tuple[int, int], Routing] | None = None

    def route(self, engine, prep, n, threads=1):
        if n == 1 or threads <= 1:
            # one slice on the calling thread: with no state, where the rows run changes
            # nothing
            return Routing.single(prep.n)
        key = (prep.n, n, threads)
        if self._last is None or self._last[0] != key:  # (batches repeat their sizes)
            bounds = np.linspace(0, prep.n, n + 1).astype(np.int64)
            self._last = (key, Routing(bounds[:-1].copy(), bounds[1:].copy(),
                                       parallel=True, threads=threads))
        return self._last[1]


_BY_NAME = {s.name: s for s in (HashStrategy, StickyStrategy, SmartStrategy,
                                RoundRobinStrategy, FanInStrategy)}


def make_strategy(name: str | None, engine: StreamExecutionEngine,
                  keyed_by: Sequence[str] | None = None) -> Strategy:
    """The named strategy (or the default for the query), validated against it."""
    if name is None:
        s: Strategy = HashStrategy() if engine.is_stateful else FanInStrategy()
    else:
        cls = _BY_NAME.get(name)
        if cls is None:
            raise StrategyError(f"unknown partitioning strategy {name!r}: expected one of "
                                f"{', '.join(_BY_NAME)}")
        s = cls(keyed_by)
    s.validate(engine)
    return s
