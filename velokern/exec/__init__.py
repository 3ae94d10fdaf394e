"""The execution engine, by stage.

- :mod:`~velokern.exec.context`: what the stages share (the job's counters and clock,
  the batch in flight, its routing, scratch memory)
- :mod:`~velokern.exec.input`: schema check and conversion of a batch to kernel inputs,
  the job's string dictionaries, the kernel variants
- :mod:`~velokern.exec.state`: each partition's hash table and per-group arrays
- :mod:`~velokern.exec.driver`: the per-batch call path V1 and V2 take, and end of input
- :mod:`~velokern.exec.output`: output buffers and the assembly of output batches in the
  defined order (EMIT CHANGES / FINAL rows, per-record rows)
- :mod:`~velokern.exec.windows`, :mod:`~velokern.exec.sessions`: time and session windows
- :mod:`~velokern.exec.payload`: the checkpoint payload
- :mod:`~velokern.exec.engine`: :class:`StreamExecutionEngine`, the facade over them
"""

from velokern.exec.context import LateSinkError, Prepared, Routing, SchemaError
from velokern.exec.engine import StreamExecutionEngine

__all__ = ["LateSinkError", "Prepared", "Routing", "SchemaError", "StreamExecutionEngine"]
