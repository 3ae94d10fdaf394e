"""JobProcessorConfig: which processor runs a job, from an object or a config string.

Config strings (case and surrounding space ignored)::

    v1                      SimpleJobProcessor: one partition, serial
    v2                      PartitionedJobCoordinator, one partition per available CPU
    v2:N                    ... with N partitions
    v2:affinity             ... with each worker thread pinned to its own core
    v2:N:affinity
    v2[:N][:affinity]:S     ... with partitioning strategy S (hash, sticky, smart,
                            round_robin, fan_in)

``VELOKERN_PROCESSOR`` gives the default config string; without it the default is V2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from velokern import config
from velokern.processors.threading import available_cpus

__all__ = [
    "STRATEGIES",
    "ConfigError",
    "JobProcessorConfig",
    "PartitionedJobConfig",
    "default_num_partitions",
]

#: Names of the partitioning strategies (see velokern.processors.strategies).
STRATEGIES = ("hash", "sticky", "smart", "round_robin", "fan_in")

ENV_VAR = "VELOKERN_PROCESSOR"
FALLBACK_PARTITIONS = 8


class ConfigError(ValueError):
    """An invalid processor configuration (the message names the bad part)."""


def default_num_partitions() -> int:
    """The number of CPUs this process may run on, or 8 when that cannot be known."""
    n = len(available_cpus())
    if n <= 0:
        n = os.cpu_count() or 0
    return n if n > 0 else FALLBACK_PARTITIONS


def _v2_options(where: str, opts: list[str]) -> tuple[int | None, bool, str | None]:
    """The partition count, affinity flag and strategy of v2's options; errors name ``where``."""
    n = None
    affinity = False
    strategy = None
    for opt in opts:
        if opt.lstrip("+-").isdigit():
            n = _partition_count(where, opt, n, affinity or strategy is not None)
        elif opt == "affinity":
            if affinity:
                raise ConfigError(f"{where!r}: 'affinity' given twice")
            if strategy is not None:
                raise ConfigError(f"{where!r}: 'affinity' must come before the strategy")
            affinity = True
        elif opt in STRATEGIES:
            if strategy is not None:
                raise ConfigError(f"{where!r}: strategy given twice ({strategy} and {opt})")
            strategy = opt
        else:
            raise ConfigError(
                f"{where!r}: unknown option {opt!r}; expected a partition count, "
                f"'affinity' or a strategy ({', '.join(STRATEGIES)})"
            )
    return n, affinity, strategy


def _partition_count(where: str, opt: str, n: int | None, after_others: bool) -> int:
    """v2's partition count option ``opt``: given once, right after v2, at least 1."""
    if n is not None:
        raise ConfigError(f"{where!r}: partition count given twice ({n} and {opt})")
    if after_others:
        raise ConfigError(f"{where!r}: the partition count must come right after v2")
    val = int(opt)
    if val < 1:
        raise ConfigError(f"{where!r}: number of partitions must be >= 1, got {val}")
    if val > config.MAX_PARTITIONS:
        raise ConfigError(f"{where!r}: {val} partitions is over the limit of "
                          f"{config.MAX_PARTITIONS} (velokern.config.MAX_PARTITIONS)")
    return val


@dataclass(frozen=True)
class PartitionedJobConfig:
    """The resolved settings of a V2 job."""

    num_partitions: int
    enable_core_affinity: bool = False
    strategy: str | None = None


@dataclass(frozen=True)
class JobProcessorConfig:
    """``JobProcessorConfig.V1()`` or ``JobProcessorConfig.V2(num_partitions=None,
    enable_core_affinity=False, strategy=None)``; ``parse(text)`` reads a config
    string and ``str(config)`` writes the normalised one back."""

    version: str = "V2"
    num_partitions: int | None = None
    enable_core_affinity: bool = False
    strategy: str | None = None

    def __post_init__(self):
        if self.version not in ("V1", "V2"):
            raise ConfigError(f"unknown processor version {self.version!r}: expected V1 or V2")
        if self.version == "V1":
            if self.num_partitions not in (None, 1) or self.enable_core_affinity or (
                self.strategy is not None
            ):
                raise ConfigError("V1 runs one partition serially: it takes no partition "
                                  "count, affinity or strategy")
            return
        n = self.num_partitions
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"number of partitions must be a positive integer, got {n!r}")
        if n is not None and n > config.MAX_PARTITIONS:
            raise ConfigError(f"{n} partitions is over the limit of {config.MAX_PARTITIONS} "
                              "(velokern.config.MAX_PARTITIONS)")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown partitioning strategy {self.strategy!r}: expected one "
                              f"of {', '.join(STRATEGIES)}")

    # ------------------------------------------------------------ constructors
    @classmethod
    def V1(cls) -> JobProcessorConfig:
        return cls("V1")

    @classmethod
    def V2(
        cls,
        num_partitions: int | None = None,
        enable_core_affinity: bool = False,
        strategy: str | None = None,
    ) -> JobProcessorConfig:
        return cls("V2", num_partitions, bool(enable_core_affinity), strategy)

    @classmethod
    def default(cls) -> JobProcessorConfig:
        """From ``VELOKERN_PROCESSOR`` when set, else V2."""
        text = os.environ.get(ENV_VAR)
        if text is not None and text.strip():
            try:
                return cls.parse(text)
            except ConfigError as exc:
                raise ConfigError(f"{ENV_VAR}={text!r}: {exc}") from exc
        return cls.V2()

    @classmethod
    def parse(cls, text: str) -> JobProcessorConfig:
        """Read a config string (see the module docstring)."""
        if not isinstance(text, str):
            raise ConfigError(f"processor config must be a string, got {type(text).__name__}")
        norm = text.strip().lower()
        if not norm:
            raise ConfigError("empty processor config: expected v1, v2, v2:N, v2:affinity or "
                              "v2:N:affinity")
        parts = [p.strip() for p in norm.split(":")]
        head, opts = parts[0], parts[1:]
        if head == "v1":
            if opts:
                raise ConfigError(f"{text.strip()!r}: v1 takes no options, got "
                                  f"{':'.join(opts)!r}")
            return cls.V1()
        if head != "v2":
            raise ConfigError(f"{text.strip()!r}: unknown processor {head!r}, expected v1 or v2")
        n, affinity, strategy = _v2_options(text.strip(), opts)
        return cls.V2(n, affinity, strategy)

    @classmethod
    def coerce(cls, value: JobProcessorConfig | str | None) -> JobProcessorConfig:
        if value is None:
            return cls.default()
        if isinstance(value, JobProcessorConfig):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise ConfigError(f"expected a JobProcessorConfig or a config string, got {value!r}")

    # ------------------------------------------------------------ views
    @property
    def is_v1(self) -> bool:
        return self.version == "V1"

    def __str__(self) -> str:
        if self.is_v1:
            return "v1"
        parts = ["v2"]
        if self.num_partitions is not None:
            parts.append(str(self.num_partitions))
        if self.enable_core_affinity:
            parts.append("affinity")
        if self.strategy is not None:
            parts.append(self.strategy)
        return ":".join(parts)

    def description(self) -> str:
        """A human sentence, e.g. 'V2 (8 partitions, core affinity)'."""
        if self.is_v1:
            return "V1 (single partition, serial)"
        if self.num_partitions is None:
            n = default_num_partitions()
            parts = [f"{n} partition{'s' if n != 1 else ''}, one per available CPU"]
        else:
            n = self.num_partitions
            parts = [f"{n} partition{'s' if n != 1 else ''}"]
        parts.append("core affinity" if self.enable_core_affinity else "no core affinity")
        if self.strategy is not None:
            parts.append(f"{self.strategy} strategy")
        return f"V2 ({', '.join(parts)})"

    def to_partitioned_job_config(self) -> PartitionedJobConfig:
        """The resolved V2 settings (V1 resolves to one partition, no affinity)."""
        if self.is_v1:
            return PartitionedJobConfig(1, False, None)
        n = self.num_partitions if self.num_partitions is not None else default_num_partitions()
        return PartitionedJobConfig(n, self.enable_core_affinity, self.strategy)
