"""Engine benchmarks: the reference scenarios through V1 and V2 at several batch sizes.

Kernels compile (or load from the on-disk cache) in ``setup``, never in a timed region.
``track_`` benchmarks report throughput in records/s over one pass of the stream.
"""

from __future__ import annotations

import time

import velokern as vk
from velokern.datagen import SCENARIOS, market_data, orders

TOTAL = 1_000_000
BATCH_SIZES = [1_000, 10_000, 100_000]
PROCESSORS = ["v1", "v2:1", "v2:2"]
_STREAMS = {"S0": orders, "S2": market_data}


class Scenarios:
    """S0 (filter + projection) and S2 (GROUP BY symbol, 5 aggregates)."""

    params = (list(_STREAMS), PROCESSORS, BATCH_SIZES)
    param_names = ["scenario", "processor", "batch_size"]
    timeout = 300

    def setup(self, scenario, processor, batch_size):
        total = TOTAL if batch_size >= 10_000 else TOTAL // 10
        self.batches = list(_STREAMS[scenario](total, batch_size))
        self.records = total
        self.sql = SCENARIOS[scenario]
        self.processor = processor
        self._run()  # compile / load kernels

    def _run(self):
        proc = vk.JobProcessorFactory.create(self.processor)
        engine = vk.StreamExecutionEngine(self.sql)
        for b in self.batches:
            proc.process_batch(b, engine)
        proc.flush(engine)

    def time_stream(self, scenario, processor, batch_size):
        self._run()

    def track_throughput(self, scenario, processor, batch_size):
        t0 = time.perf_counter()
        self._run()
        return self.records / (time.perf_counter() - t0)

    track_throughput.unit = "records/s"


class ScalingEfficiency:
    """V2 throughput at 2 partitions / (2 x V1 throughput), S2 at 100k batches."""

    unit = "ratio"

    def setup(self):
        self.batches = list(market_data(TOTAL, 100_000))
        self.sql = SCENARIOS["S2"]
        for cfg in ("v1", "v2:2"):
            self._run(cfg)

    def _run(self, cfg):
        proc = vk.JobProcessorFactory.create(cfg)
        engine = vk.StreamExecutionEngine(self.sql)
        t0 = time.perf_counter()
        for b in self.batches:
            proc.process_batch(b, engine)
        proc.flush(engine)
        return time.perf_counter() - t0

    def track_scaling_efficiency_2(self):
        v1 = min(self._run("v1") for _ in range(3))
        v2 = min(self._run("v2:2") for _ in range(3))
        return v1 / (2 * v2)

    track_scaling_efficiency_2.unit = "ratio"


class PeakMemory:
    """Engine state after 1M records of S2 with 100k distinct int keys."""

    def setup(self):
        import numpy as np

        rng = np.random.default_rng(0)
        self.batches = [
            vk.RecordBatch.from_pydict({"k": rng.integers(0, 100_000, 100_000),
                                        "v": rng.normal(size=100_000)})
            for _ in range(10)
        ]

    def peakmem_group_state(self):
        engine = vk.StreamExecutionEngine("SELECT k, COUNT(*), SUM(v) FROM t GROUP BY k EMIT FINAL")
        proc = vk.SimpleJobProcessor()
        for b in self.batches:
            proc.process_batch(b, engine)
        proc.flush(engine)
