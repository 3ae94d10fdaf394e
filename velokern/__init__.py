"""velokern: streaming SQL over columnar record batches, compiled to numba kernels."""

from velokern._version import __version__
from velokern.api import as_batch, run_sql
from velokern.batch import RecordBatch, Schema, StringDictionary
from velokern.exec import LateSinkError, StreamExecutionEngine
from velokern.plan import PlanError
from velokern.processors import (
    ConfigError,
    JobProcessor,
    JobProcessorConfig,
    JobProcessorFactory,
    PartitionedJobCoordinator,
    SimpleJobProcessor,
    StrategyError,
)
from velokern.server import StreamJob, StreamJobServer

__all__ = [
    "ConfigError",
    "JobProcessor",
    "JobProcessorConfig",
    "JobProcessorFactory",
    "LateSinkError",
    "PartitionedJobCoordinator",
    "PlanError",
    "RecordBatch",
    "Schema",
    "SimpleJobProcessor",
    "StrategyError",
    "StreamExecutionEngine",
    "StreamJob",
    "StreamJobServer",
    "StringDictionary",
    "__version__",
    "as_batch",
    "run_sql",
]
