"""JobProcessorFactory: build a processor from a JobProcessorConfig or config string."""

from __future__ import annotations

from collections.abc import Sequence

from velokern.processors.base import JobProcessor
from velokern.processors.config import JobProcessorConfig
from velokern.processors.partitioned import PartitionedJobCoordinator
from velokern.processors.simple import SimpleJobProcessor

__all__ = ["JobProcessorFactory"]


class JobProcessorFactory:
    """Creates V1/V2 processors; every method returns a :class:`JobProcessor`."""

    @staticmethod
    def create(config: JobProcessorConfig | str | None = None, *,
               keyed_by: Sequence[str] | None = None) -> JobProcessor:
        """From a config object or string (None: ``VELOKERN_PROCESSOR`` or V2)."""
        cfg = JobProcessorConfig.coerce(config)
        if cfg.is_v1:
            return SimpleJobProcessor()
        pj = cfg.to_partitioned_job_config()
        return PartitionedJobCoordinator(pj.num_partitions, pj.enable_core_affinity,
                                         pj.strategy, keyed_by=keyed_by)

    @staticmethod
    def create_v1() -> JobProcessor:
        return SimpleJobProcessor()

    @staticmethod
    def create_v2_default() -> JobProcessor:
        return JobProcessorFactory.create(JobProcessorConfig.V2())

    @staticmethod
    def create_v2_with_partitions(n: int) -> JobProcessor:
        return JobProcessorFactory.create(JobProcessorConfig.V2(n))

    @staticmethod
    def create_from_str(text: str) -> JobProcessor:
        return JobProcessorFactory.create(JobProcessorConfig.parse(text))
