"""SimpleJobProcessor (V1): one partition, kernels run serially on the calling thread."""

from __future__ import annotations

from velokern.batch import RecordBatch
from velokern.exec import Routing, StreamExecutionEngine

__all__ = ["SimpleJobProcessor"]


class SimpleJobProcessor:
    """V1: the whole batch is one partition processed serially."""

    def __init__(self):
        self._engines: set[int] = set()

    @property
    def num_partitions(self) -> int:
        return 1

    @property
    def processor_name(self) -> str:
        return "SimpleJobProcessor"

    @property
    def processor_version(self) -> str:
        return "V1"

    def __repr__(self) -> str:
        return "SimpleJobProcessor(V1)"

    def process_batch(self, batch: RecordBatch, engine: StreamExecutionEngine) -> RecordBatch:
        prep = engine.prepare(batch)
        engine.bind_partitions(1)
        return engine.execute(prep, Routing.single(prep.n))

    def flush(self, engine: StreamExecutionEngine) -> RecordBatch:
        if engine.num_partitions is None:
            engine.bind_partitions(1)
        return engine.flush()
