"""Engine benchmarks: the reference scenarios through V1 and V2 at several batch sizes.

Kernels compile (or load from the on-disk cache) in ``setup``, never in a timed region.
``track_`` benchmarks report throughput in records/s over one pass of the stream.
"""

from __future__ import annotations

import time

import velokern as vk
from velokern.datagen import SCENARIOS, stream_for

TOTAL = 1_000_000
BATCH_SIZES = [1_000, 10_000, 100_000]
PROCESSORS = ["v1", "v2:1", "v2:2"]


class Scenarios:
    """The reference scenarios: S0 (filter + projection), S1 (ROWS window, moving
    average), S2 (GROUP BY symbol, 5 aggregates), S3a (tumbling window + GROUP BY, EMIT
    FINAL), S3b (S3a with EMIT CHANGES)."""

    params = (["S0", "S1", "S2", "S3a", "S3b"], PROCESSORS, BATCH_SIZES)
    param_names = ["scenario", "processor", "batch_size"]
    timeout = 300

    def setup(self, scenario, processor, batch_size):
        total = TOTAL if batch_size >= 10_000 else TOTAL // 10
        self.batches = list(stream_for(scenario, total, batch_size))
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
    """V2 throughput at 2 partitions / (2 x V1 throughput), at 100k batches."""

    params = ["S2", "S1", "S3a"]
    param_names = ["scenario"]
    unit = "ratio"

    def setup(self, scenario):
        self.batches = list(stream_for(scenario, TOTAL, 100_000))
        self.sql = SCENARIOS[scenario]
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

    def track_scaling_efficiency_2(self, scenario):
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


class WindowState:
    """Engine state while 5M records of S3a stream through (closed windows are freed,
    so this stays flat as the stream grows)."""

    def setup(self):
        self.sql = SCENARIOS["S3a"]
        first = next(stream_for("S3a", 100_000, 100_000))
        vk.SimpleJobProcessor().process_batch(first, vk.StreamExecutionEngine(self.sql))

    def peakmem_window_state(self):
        engine = vk.StreamExecutionEngine(self.sql)
        proc = vk.SimpleJobProcessor()
        for b in stream_for("S3a", 5_000_000, 100_000):
            proc.process_batch(b, engine)
        proc.flush(engine)

    def track_peak_live_groups_over_5m_records(self):
        engine = vk.StreamExecutionEngine(self.sql)
        proc = vk.SimpleJobProcessor()
        peak = 0
        for b in stream_for("S3a", 5_000_000, 100_000):
            proc.process_batch(b, engine)
            peak = max(peak, engine.metrics["groups"])
        return peak

    track_peak_live_groups_over_5m_records.unit = "groups"


_FIRST_RESULT = """
import velokern as vk
from velokern.datagen import SCENARIOS, market_data
batch = next(market_data(100_000, 100_000))
vk.SimpleJobProcessor().process_batch(batch, vk.StreamExecutionEngine(SCENARIOS["S2"]))
"""


class Startup:
    """Import, plan and first result of S2 (100k records) in a new process: with the
    kernels in the on-disk cache (warm) and with an empty cache (cold: compiles)."""

    timeout = 300
    repeat = (1, 5, 60.0)

    def setup(self):
        import subprocess
        import sys
        import tempfile

        self.cache = tempfile.mkdtemp(prefix="velokern-asv-")
        warm = f"import os\nos.environ['VELOKERN_CACHE_DIR'] = {self.cache!r}\n"
        subprocess.run([sys.executable, "-c", warm + _FIRST_RESULT], check=True)

    def teardown(self):
        import shutil

        shutil.rmtree(self.cache, ignore_errors=True)

    def timeraw_first_result_warm_cache(self):
        return _FIRST_RESULT, f"import os\nos.environ['VELOKERN_CACHE_DIR'] = {self.cache!r}"

    def timeraw_first_result_cold_cache(self):
        return _FIRST_RESULT, ("import os, tempfile\nos.environ['VELOKERN_CACHE_DIR'] = "
                               f"tempfile.mkdtemp(dir={self.cache!r})")
