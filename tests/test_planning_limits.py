"""Sizes that would allocate gigabytes, and literals that would wrap or overflow, are
refused when the query (or processor) is planned, naming the construct and the limit
(issue 24, items 10 and 12)."""

from __future__ import annotations

import pytest

import velokern as vk
from velokern import config
from velokern.plan import PlanError
from velokern.processors.config import ConfigError, JobProcessorConfig

SCHEMA = {"k": "int64", "x": "float64", "t": "int64"}
ROWS = "SELECT k, AVG(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN {} PRECEDING AND " \
       "CURRENT ROW) AS a FROM s"
LAG = "SELECT k, LAG(x, {}) OVER (PARTITION BY k ORDER BY t) AS a FROM s"
SLIDING = ("SELECT k, COUNT(*) AS n FROM s GROUP BY k WINDOW SLIDING(t, INTERVAL '{}' "
           "SECOND, INTERVAL '1' SECOND)")


def plan(sql: str) -> vk.StreamExecutionEngine:
    return vk.StreamExecutionEngine(sql, SCHEMA)


@pytest.mark.parametrize("sql,limit,message", [
    (ROWS, config.MAX_ROWS_FRAME, "ROWS frame of {} rows"),
    (LAG, config.MAX_ROWS_FRAME + 1, "LAG offset {} is over the limit"),
    (SLIDING, config.MAX_WINDOWS_PER_RECORD + 1, "belong to {} windows"),
])
def test_sizes_past_the_limits_are_refused_when_planned(sql, limit, message):
    # at the limit: planned (ROWS n PRECEDING keeps n + 1 rows)
    plan(sql.format(limit - 1))
    with pytest.raises(PlanError, match=message.format(limit + 1 if "ROWS" in message
                                                      else limit)):
        plan(sql.format(limit))
    with pytest.raises(PlanError, match=r"velokern\.config\.MAX_"):
        plan(sql.format(10 ** 9))


def test_a_limit_is_a_setting(monkeypatch):
    monkeypatch.setattr(config, "MAX_ROWS_FRAME", 20_000)
    plan(ROWS.format(15_000))
    with pytest.raises(PlanError, match="limit of 20000 rows per key"):
        plan(ROWS.format(20_000))


def test_partition_counts_past_the_limit_are_refused():
    top = config.MAX_PARTITIONS
    assert JobProcessorConfig.parse(f"v2:{top}").num_partitions == top
    with pytest.raises(ConfigError, match=f"over the limit of {top}"):
        JobProcessorConfig.parse(f"v2:{top + 1}")
    with pytest.raises(ConfigError, match=r"velokern\.config\.MAX_PARTITIONS"):
        JobProcessorConfig.V2(num_partitions=1_000_000)


@pytest.mark.parametrize("sql", [
    "SELECT k, x + 9223372036854775808 AS y FROM s",
    "SELECT k FROM s WHERE k IN (1, 99999999999999999999)",
    "SELECT k, -9223372036854775809 AS y FROM s",
    "SELECT k, LAG(t, 1, 9223372036854775808) OVER (PARTITION BY k ORDER BY t) AS a FROM s",
])
def test_integer_literals_outside_int64_are_refused(sql):
    with pytest.raises(PlanError, match="outside the int64 range"):
        plan(sql)


def test_int64_extremes_are_literals():
    b = vk.RecordBatch.from_pydict({"k": [1], "x": [0.5], "t": [0]})
    out = vk.run_sql("SELECT -9223372036854775808 AS lo, 9223372036854775807 AS hi FROM s",
                     [b], processor="v1")
    assert out.to_pydict() == {"lo": [-(2 ** 63)], "hi": [2 ** 63 - 1]}


def test_float_literals_that_overflow_are_refused():
    with pytest.raises(PlanError, match="1e400 is outside the float64 range"):
        plan("SELECT k, x + 1e400 AS y FROM s")
