"""Sources and sinks for jobs: where batches come from and where results go.

Sources cut their records into batches deterministically and can resume at any batch
index; sinks stage their output so that, with ``commit()`` tokens stored in a job's
checkpoints, a job that crashes and resumes still writes every record exactly once.
"""

from velokern.io.paths import PathConflictError, check_job_paths
from velokern.io.sinks import (
    ArrowIPCSink,
    CallbackSink,
    CSVSink,
    MemorySink,
    ParquetSink,
    Sink,
    SinkError,
    open_sink,
)
from velokern.io.sources import (
    DEFAULT_BATCH_SIZE,
    ArrowIPCSource,
    CSVSource,
    MemorySource,
    ParquetSource,
    ScenarioSource,
    Source,
    SourceError,
    open_source,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ArrowIPCSink",
    "ArrowIPCSource",
    "CSVSink",
    "CSVSource",
    "CallbackSink",
    "MemorySink",
    "MemorySource",
    "ParquetSink",
    "ParquetSource",
    "PathConflictError",
    "ScenarioSource",
    "Sink",
    "SinkError",
    "Source",
    "SourceError",
    "check_job_paths",
    "open_sink",
    "open_source",
]
