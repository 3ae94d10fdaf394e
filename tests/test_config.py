"""velokern.config: tunables read where they are used, overridable from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import velokern as vk
from velokern import config
from velokern.kernels.layout import HASHES
from velokern.pool import BlockPool


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_environment_overrides_a_tunable():
    r = _python("from velokern import config; print(config.PARALLEL_MIN_ROWS)",
                VELOKERN_PARALLEL_MIN_ROWS="65_536")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "65536"


def test_a_bad_environment_value_names_the_variable():
    r = _python("import velokern", VELOKERN_POOL_MAX_FREE_BYTES="lots")
    assert r.returncode != 0
    assert "VELOKERN_POOL_MAX_FREE_BYTES must be an integer, got 'lots'" in r.stderr
    r = _python("import velokern", VELOKERN_PARALLEL_MIN_ROWS="-1")
    assert "VELOKERN_PARALLEL_MIN_ROWS must be >= 0, got -1" in r.stderr


def test_values_are_read_when_used(monkeypatch):
    monkeypatch.setattr(config, "POOL_MIN_BYTES", 1 << 20)
    monkeypatch.setattr(config, "POOL_MAX_FREE_BYTES", 3 << 20)
    pool = BlockPool()
    assert (pool.min_bytes, pool.max_free_bytes) == (1 << 20, 3 << 20)
    monkeypatch.setattr(config, "INITIAL_GROUPS", 16)
    e = vk.StreamExecutionEngine("SELECT k, COUNT(*) AS n FROM t GROUP BY k")
    out = vk.JobProcessorFactory.create("v1").process_batch(
        vk.RecordBatch.from_pydict({"k": list(range(40))}), e)
    assert len(out) == 40  # grew past 16 groups
    assert e.state.arrays[HASHES].shape[1] >= 40
