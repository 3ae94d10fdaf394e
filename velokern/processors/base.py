"""The JobProcessor protocol: anything that runs batches through an engine."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from velokern.batch import RecordBatch
from velokern.exec import StreamExecutionEngine

__all__ = ["JobProcessor"]


@runtime_checkable
class JobProcessor(Protocol):
    """Runs batches of a job through a :class:`StreamExecutionEngine`.

    Every processor emits the same rows in the same order for the same input.
    """

    def process_batch(self, batch: RecordBatch, engine: StreamExecutionEngine) -> RecordBatch:
        """Push one batch through the engine; returns the rows it emits."""
        ...

    def flush(self, engine: StreamExecutionEngine) -> RecordBatch:
        """End of input: the rows still held (open windows, EMIT FINAL groups)."""
        ...

    @property
    def num_partitions(self) -> int: ...

    @property
    def processor_name(self) -> str: ...

    @property
    def processor_version(self) -> str: ...
