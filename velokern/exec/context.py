"""What the engine's stages share: the job's counters and clock, the batch in flight
(:class:`Prepared`), how its rows reach partitions (:class:`Routing`), scratch memory.

The stages (input, state, driver, output, windows, sessions, checkpoint payload) each
own their own fields; what more than one of them reads or writes is here, as public
fields of :class:`JobContext`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from velokern import config
from velokern.batch import RecordBatch
from velokern.kernels.windows import NO_WATERMARK

__all__ = ["JobContext", "LateSinkError", "Prepared", "Routing", "SchemaError", "Scratch"]


class SchemaError(ValueError):
    """A batch that does not fit the job's schema (missing column, wrong type)."""


class LateSinkError(RuntimeError):
    """The late sink raised while taking a batch's late records; ``__cause__`` is its
    exception. The batch was processed in full: ``output`` is what it emits (exactly
    what :meth:`~velokern.StreamExecutionEngine.execute` would have returned) and
    ``late`` the late records the sink did not take (counted in ``late_records`` and
    ``late_undelivered``). The engine goes on with the next batch as usual."""

    def __init__(self, output: RecordBatch, late: RecordBatch, cause: BaseException):
        super().__init__(f"late sink failed on {len(late)} late records "
                         f"({type(cause).__name__}: {cause}); the batch's "
                         f"{len(output)} output rows are on this error's .output")
        self.output = output
        self.late = late


@dataclass
class Prepared:
    """A validated batch, converted to kernel inputs. Making one changes no state."""

    batch: RecordBatch
    n: int
    spec: Any  # the KernelSpec of the variant the batch runs through
    module: Any  # its compiled module
    C: tuple
    M: np.ndarray
    R: tuple
    watermark: int = NO_WATERMARK  # after this batch (windowed queries)
    session: tuple | None = None  # session windows: (batch, record watermarks, final)


_SINGLE: dict[int, Routing] = {}


@dataclass
class Routing:
    """How a batch's rows reach partitions.

    Partition p processes ``idx[starts[p]:ends[p]]`` (rows in bucketed order) when
    ``idx`` is given, else the contiguous rows ``starts[p]:ends[p]``.
    """

    starts: np.ndarray
    ends: np.ndarray
    idx: np.ndarray | None = None
    parallel: bool = False  # the partitions run in one prange call
    threads: int = 1  # the worker threads the batch runs on

    @staticmethod
    def single(n: int) -> Routing:
        """All ``n`` rows, in order, as one partition (cached: routings are not mutated)."""
        r = _SINGLE.get(n)
        if r is None:
            if len(_SINGLE) > config.ROUTING_CACHE_SIZE:
                _SINGLE.clear()
            r = _SINGLE[n] = Routing(np.zeros(1, np.int64), np.array([n], np.int64))
        return r


class Scratch:
    """Reusable int64 scratch arrays by name (watermarks, late rows, merge positions)."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int) -> np.ndarray:
        """An int64 array of at least ``n`` entries (contents undefined)."""
        b = self._bufs.get(name)
        if b is None or len(b) < n:
            b = self._bufs[name] = np.empty(max(n, 1024), np.int64)
        return b


def new_metrics() -> dict[str, Any]:
    return {
        "records_in": 0,
        "records_filtered": 0,
        "records_emitted": 0,
        "records_rejected": 0,
        "late_records": 0,
        "late_undelivered": 0,
        "batches": 0,
        "batches_parallel": 0,  # run on more than one worker thread (V2)
        "batches_rejected": 0,
        "partition_records": [],
    }


@dataclass
class JobContext:
    """The job-wide fields the stages share."""

    sql: str
    allowed_lateness_ms: int
    late_sink: Callable[[RecordBatch], object] | None
    late: RecordBatch | None = None  # the batch's late records, for the sink once it is done
    watermark: int = NO_WATERMARK  # largest event time seen (windowed queries)
    seq: int = 0  # stream position of the next batch's first record
    num_partitions: int | None = None
    metrics: dict[str, Any] = field(default_factory=new_metrics)
    scratch: Scratch = field(default_factory=Scratch)
    lock: threading.Lock = field(default_factory=threading.Lock)
