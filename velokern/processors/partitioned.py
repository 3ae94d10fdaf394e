"""PartitionedJobCoordinator (V2): bucket by partition, one prange kernel over all.

The batch is routed by the partitioning strategy (the Cython shim computes partition ids
and does the stable bucketing), then one ``prange`` kernel runs every partition on its
own state: no lock, no shared writer. Outputs are put back into the defined order, so
V2 emits exactly what V1 emits. Each batch runs on all the workers or on the calling
thread alone, as :mod:`velokern.processors.adaptive` decides, and a job keyed by hash
runs its state in one partition while it runs on one worker (V1's kernels on V1's
layout; :mod:`velokern.exec.reshard`).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence

import numba

from velokern import config
from velokern.batch import RecordBatch
from velokern.exec import StreamExecutionEngine
from velokern.exec.sessions import is_session
from velokern.processors.adaptive import WorkerChoice
from velokern.processors.config import default_num_partitions
from velokern.processors.strategies import Strategy, StrategyError, make_strategy
from velokern.processors.threading import (
    available_cpus,
    configure_threading_layer,
    parallel_guard,
    pin_workers,
    use_threads,
)

__all__ = ["PartitionedJobCoordinator"]


class PartitionedJobCoordinator:
    """V2: ``num_partitions`` partitions (default: one per available CPU) run in
    parallel by numba workers; ``enable_core_affinity`` pins each worker to its own
    core; ``strategy`` names the partitioning strategy (default from the query);
    ``keyed_by`` declares the source keyed by these columns (for ``sticky``/``smart``).
    """

    def __init__(
        self,
        num_partitions: int | None = None,
        enable_core_affinity: bool = False,
        strategy: str | None = None,
        keyed_by: Sequence[str] | None = None,
    ):
        if num_partitions is None:
            num_partitions = default_num_partitions()
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or (
            num_partitions < 1
        ):
            raise ValueError(f"num_partitions must be a positive integer, got "
                             f"{num_partitions!r}")
        self._n = num_partitions
        self._affinity = bool(enable_core_affinity)
        self._strategy_name = strategy
        self._keyed_by = tuple(keyed_by) if keyed_by else ()
        # per engine, held weakly: a coordinator may serve several jobs over its life
        self._strategies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._choices: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._last: tuple | None = None  # (weak reference to an engine, its job record)
        self._pinned = threading.local()
        configure_threading_layer()
        max_threads = numba.config.NUMBA_NUM_THREADS
        self._threads = max(1, min(self._n, max_threads))
        if self._affinity:
            cpus = available_cpus()
            self._threads = max(1, min(self._threads, len(cpus) or 1))

    @property
    def num_partitions(self) -> int:
        return self._n

    @property
    def processor_name(self) -> str:
        return "PartitionedJobCoordinator"

    @property
    def processor_version(self) -> str:
        return "V2"

    @property
    def enable_core_affinity(self) -> bool:
        return self._affinity

    @property
    def num_threads(self) -> int:
        """Worker threads the prange kernels use (≤ partitions, ≤ numba's threads)."""
        return self._threads

    def __repr__(self) -> str:
        aff = ", core affinity" if self._affinity else ""
        strat = f", strategy={self._strategy_name}" if self._strategy_name else ""
        return f"PartitionedJobCoordinator(V2, {self._n} partitions{aff}{strat})"

    def strategy_for(self, engine: StreamExecutionEngine) -> Strategy:
        """The validated strategy for this engine's query (raises StrategyError)."""
        s = self._strategies.get(engine)
        if s is None:
            s = make_strategy(self._strategy_name, engine, self._keyed_by)
            self._strategies[engine] = s
        return s

    def validate(self, engine: StreamExecutionEngine) -> None:
        """Check the strategy against the query (done before the first batch runs)."""
        self.strategy_for(engine)

    def worker_choice(self, engine: StreamExecutionEngine) -> WorkerChoice:
        """How this engine's batches pick their worker count (see
        :mod:`velokern.processors.adaptive`)."""
        return self._job(engine)[1]

    def _job(self, engine: StreamExecutionEngine) -> tuple[Strategy, WorkerChoice, bool]:
        """(strategy, worker choice, whether the state may move into one partition and
        back) of this engine: one lookup per batch (none for the engine of the last)."""
        last = self._last
        if last is not None and last[0]() is engine:
            return last[1]
        job = self._choices.get(engine)
        if job is None:
            s = self.strategy_for(engine)
            movable = (self._n > 1 and engine.is_stateful and s.keyed_by_hash(engine)
                       and not is_session(engine.query))
            job = self._choices[engine] = (s, WorkerChoice(self._threads), movable)
        self._last = (weakref.ref(engine), job)
        return job

    def _prepare_threads(self, threads: int) -> None:
        if self._affinity and not getattr(self._pinned, "done", False):
            pin_workers(self._threads)
            self._pinned.done = True
        use_threads(threads)

    def process_batch(self, batch: RecordBatch, engine: StreamExecutionEngine) -> RecordBatch:
        strategy, choice, movable = self._job(engine)
        try:  # before prepare: a refused batch must not fix a fresh job's schema
            strategy.check(engine, batch)
        except StrategyError:
            engine.reject(batch)
            raise
        prep = engine.prepare(batch)
        threads = choice.threads_for(prep.n)
        self._prepare_threads(threads)
        if engine.num_partitions != self._n:
            engine.bind_partitions(self._n)
        parts = self._n
        if movable:  # one worker for a while: the state moves into one partition
            parts = choice.partitions_for(threads, self._n, prep.n,
                                          empty=not engine.state.allocated)
            if parts != choice.layout:
                if parts != (engine.state.partitions or self._n):
                    engine.use_partitions(parts)
                choice.layout = parts
        t0 = time.perf_counter()
        routing = strategy.route(engine, prep, parts, threads)
        with parallel_guard():
            out = engine.execute(prep, routing)
        if prep.n >= config.PARALLEL_MIN_ROWS:  # (only large batches are measured)
            choice.observe(prep.n, threads, time.perf_counter() - t0)
        return out

    def flush(self, engine: StreamExecutionEngine) -> RecordBatch:
        self.strategy_for(engine)
        if engine.num_partitions is None:
            engine.bind_partitions(self._n)
        # the last windows' rows are merged and gathered on the workers, as a batch's
        self._prepare_threads(self._threads)
        with parallel_guard():
            return engine.flush()
