"""ROWS windows with a state TTL (issue 24, item 9): ``WITH (state_ttl = '...')``. A key
whose latest record is more than the TTL behind a record's watermark (the largest event
time before it, in the ORDER BY column) starts its frames afresh, as a new key would;
keys past their TTL are freed from the state (counted in ``keys_expired``), so an
endless stream of ever-new keys runs in bounded state. Decided record by record: the
batch cuts and the partitions change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_batches_identical, cut, run_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import velokern as vk
from velokern.plan import PlanError
from velokern.sql import parse_sql

FRAME = "PARTITION BY k ORDER BY t ROWS BETWEEN 2 PRECEDING AND CURRENT ROW"
SQL = (f"SELECT k, t, SUM(x) OVER ({FRAME}) AS s, COUNT(x) OVER ({FRAME}) AS c, "
       f"MIN(x) OVER ({FRAME}) AS lo, LAG(x) OVER (PARTITION BY k ORDER BY t) AS px "
       "FROM s WITH (state_ttl = '{ttl}ms')")


def reference(k, t, x, ttl: int) -> list[tuple]:
    """One output row per record: the frames of the key's records since it last went
    more than ``ttl`` unseen (behind the largest earlier time)."""
    frames: dict[int, list] = {}
    last: dict[int, int] = {}
    wm = None
    out = []
    for kk, tt, xx in zip(k.tolist(), t.tolist(), x.tolist()):
        rows = frames.setdefault(kk, [])
        if rows and wm is not None and last[kk] < wm - ttl:
            rows.clear()
        last[kk] = tt if not rows else max(last[kk], tt)
        rows.append(xx)
        win = rows[-3:]
        out.append((kk, tt, sum(win), len(win), min(win), rows[-2] if len(rows) > 1 else None))
        wm = tt if wm is None else max(wm, tt)
    return out


def _stream(seed: int, n: int, keys: int, jitter: int):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, 4, n)) + rng.integers(-jitter, jitter + 1, n)
    return (rng.integers(0, keys, n).astype(np.int64), t.astype(np.int64),
            rng.integers(-50, 50, n).astype(np.int64))


def _rows(outs) -> list[tuple]:
    return [r for o in outs for r in zip(*(o.to_pydict()[c] for c in o.column_names))]


def test_a_key_unseen_for_longer_than_the_ttl_starts_afresh():
    k, t, x = np.array([1, 2, 1, 1, 3, 1, 2]), np.array([0, 1, 5, 8, 30, 31, 40]), \
        np.array([1, 10, 2, 3, 100, 4, 20])
    b = vk.RecordBatch({"k": k, "t": t, "x": x})
    outs, e = run_job(SQL.format(ttl=10), [b], "v1")
    assert [r[2] for r in _rows(outs)] == [1, 10, 3, 6, 100, 4, 20]
    assert e.metrics["keys_expired"] == 2  # key 1 at t=31, key 2 at t=40
    no_ttl, _ = run_job(SQL.replace(" WITH (state_ttl = '{ttl}ms')", ""), [b], "v1")
    assert [r[2] for r in _rows(no_ttl)] == [1, 10, 3, 6, 100, 9, 30]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 600), keys=st.sampled_from([1, 4, 60]),
       ttl=st.sampled_from([1, 7, 40, 400]), jitter=st.sampled_from([0, 3, 30]),
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_ttl_matches_the_reference_for_any_cut_and_partitions(seed, n, keys, ttl, jitter, cuts):
    k, t, x = _stream(seed, n, keys, jitter)
    batch = vk.RecordBatch({"k": k, "t": t, "x": x})
    sql = SQL.format(ttl=ttl)
    whole, _ = run_job(sql, [batch], "v1")
    assert _rows(whole) == reference(k, t, x, ttl)
    parts = cut(batch, cuts)
    v1, e1 = run_job(sql, parts, "v1")
    assert _rows(v1) == _rows(whole)
    v2, e2 = run_job(sql, parts, "v2:3")
    assert_batches_identical(v1, v2, "v1 vs v2:3")
    assert e1.metrics["keys_expired"] == e2.metrics["keys_expired"]


def test_ever_new_keys_run_in_bounded_state():
    """Keys that never come back are freed as the stream's time moves past their TTL."""
    rng = np.random.default_rng(1)
    sql = SQL.format(ttl=1_000)
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create("v2:2")
    groups = []
    for i in range(40):  # 40 batches of 2,000 new keys, 250 ms of event time each
        k = np.arange(i * 2_000, (i + 1) * 2_000, dtype=np.int64)
        t = np.sort(rng.integers(i * 250, (i + 1) * 250, 2_000)).astype(np.int64)
        p.process_batch(vk.RecordBatch({"k": k, "t": t, "x": np.ones(2_000, np.int64)}), e)
        groups.append(e.metrics["groups"])
    assert max(groups[10:]) <= 6 * 2_000  # the keys of the last TTL and a quarter, or so
    assert e.metrics["keys_expired"] == 80_000 - groups[-1]
    ref = vk.StreamExecutionEngine(SQL.replace(" WITH (state_ttl = '{ttl}ms')", ""))
    assert ref.num_groups == 0


def test_ttl_with_string_keys_and_timestamps_survives_a_restore():
    n = 3_000
    rng = np.random.default_rng(4)
    ts = (np.datetime64("2026-01-01T00:00", "ms")
          + np.cumsum(rng.integers(0, 50, n)).astype("timedelta64[ms]")).astype("datetime64[us]")
    keys = [f"k{j}" for j in rng.integers(0, 300, n)]
    batch = vk.RecordBatch.from_pydict({"k": keys, "t": ts, "x": rng.integers(0, 9, n)})
    sql = SQL.format(ttl=2_000)
    parts = cut(batch, [700, 900, 400])
    ref, e_ref = run_job(sql, parts, "v1")
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create("v1")
    first = [p.process_batch(b, e) for b in parts[:2]]
    restored = vk.StreamExecutionEngine.restore(e.snapshot())
    rest = [p.process_batch(b, restored) for b in parts[2:]] + [p.flush(restored)]
    assert_batches_identical(ref, first + rest, "restored")
    assert restored.metrics["keys_expired"] == e_ref.metrics["keys_expired"] > 0
    assert restored.metrics["groups"] == e_ref.metrics["groups"]


@pytest.mark.parametrize("sql,message", [
    ("SELECT k, COUNT(*) AS n FROM s GROUP BY k WITH (state_ttl = '1h')",
     "state_ttl applies to ROWS window functions"),
    ("SELECT k, SUM(x) OVER (PARTITION BY k ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s "
     "FROM s WITH (state_ttl = '1h')", "the same ORDER BY column"),
    ("SELECT k, SUM(x) OVER (PARTITION BY k ORDER BY f ROWS BETWEEN 2 PRECEDING AND CURRENT "
     "ROW) AS s FROM s WITH (state_ttl = '1h')", "of integers .* or timestamps"),
    (f"SELECT k, SUM(x) OVER ({FRAME}) AS s FROM s WITH (state_ttl = '{2**60 + 1}ms')",
     "under 2\\*\\*60"),
])
def test_a_ttl_that_cannot_be_kept_is_refused_when_planned(sql, message):
    with pytest.raises(PlanError, match=message):
        vk.StreamExecutionEngine(sql, {"k": "int64", "t": "int64", "x": "int64",
                                       "f": "float64"})


def test_the_parsed_query_keeps_its_ttl():
    sql = SQL.format(ttl=5_000)
    assert parse_sql(sql).state_ttl_ms == 5_000
    assert parse_sql(sql).state_ttl_ms == 5_000  # (the second from the query cache)
    assert "state TTL" in vk.StreamExecutionEngine(sql, {"k": "int64", "t": "int64",
                                                         "x": "int64"}).explain()
