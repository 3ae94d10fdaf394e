"""Job processors: V1 (SimpleJobProcessor) and V2 (PartitionedJobCoordinator) behind one
protocol, chosen at run time by JobProcessorConfig / JobProcessorFactory."""

from velokern.processors.base import JobProcessor
from velokern.processors.config import ConfigError, JobProcessorConfig, PartitionedJobConfig
from velokern.processors.factory import JobProcessorFactory
from velokern.processors.partitioned import PartitionedJobCoordinator
from velokern.processors.simple import SimpleJobProcessor
from velokern.processors.strategies import PARTITION_COLUMN, StrategyError

__all__ = [
    "PARTITION_COLUMN",
    "ConfigError",
    "JobProcessor",
    "JobProcessorConfig",
    "JobProcessorFactory",
    "PartitionedJobConfig",
    "PartitionedJobCoordinator",
    "SimpleJobProcessor",
    "StrategyError",
]
