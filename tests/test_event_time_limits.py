"""Event times near the int64 limits (issue 24, item 12): window arithmetic (a window's
end, the watermark less the lateness and the size, a session's gap) must never leave
int64. Event times lie strictly between -2**62 and 2**62 ticks and window sizes,
slides, gaps and the lateness are under 2**60 ticks; a batch with a time outside is
refused naming the column, the value and the row, and changes no state."""

from __future__ import annotations

import numpy as np
import pytest

import velokern as vk
from velokern import config
from velokern.plan import PlanError

I64 = np.iinfo(np.int64)
TUMBLING = "SELECT k, COUNT(*) AS n, window_start FROM t GROUP BY k " \
           "WINDOW TUMBLING(ts, INTERVAL '1' SECOND)"
SESSION = "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(ts, INTERVAL '1' SECOND)"


def _batch(ts, dtype=np.int64, k=None):
    ts = np.asarray(ts, dtype=dtype)
    return vk.RecordBatch({"k": np.ones(len(ts), np.int64) if k is None else np.asarray(k),
                           "ts": ts})


def _job(sql, batches, proc="v1"):
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create(proc)
    outs = [p.process_batch(b, e) for b in batches]
    return outs + [p.flush(e)], e


@pytest.mark.parametrize("sql", [TUMBLING, SESSION])
@pytest.mark.parametrize("bad,row", [
    ([0, 5, I64.max - 10], 2),  # before: the window's end wrapped; the next records late
    ([I64.min, 0], 0),  # before: a sliding window's start wrapped
    ([7, 2**62], 1),
    ([-(2**62), 7], 0),
])
@pytest.mark.parametrize("proc", ["v1", "v2:2"])
def test_a_time_outside_the_range_is_refused_and_changes_nothing(sql, bad, row, proc):
    good = _batch([1_000, 1_500, 2_500])
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create(proc)
    with pytest.raises(ValueError, match=rf"event time {bad[row]} of column 'ts' at row "
                                         rf"{row} is outside the range"):
        p.process_batch(_batch(bad), e)
    assert e.metrics["records_rejected"] == len(bad)
    assert e.metrics["records_in"] == 0 and e.metrics["late_records"] == 0
    outs = [p.process_batch(good, e), p.flush(e)]
    ref, _ = _job(sql, [good])
    for x, y in zip(outs, ref):
        assert x.equals(y, bitwise=True)


def test_times_just_inside_the_range_are_windowed_exactly():
    top = 2**62 - 1
    outs, e = _job(TUMBLING, [_batch([top - 1, top]), _batch([-(2**62) + 1, 0])])
    start = top - top % 1000  # the window [start, start + 1000) of both records
    assert outs[0].to_pydict() == {"k": [], "n": [], "window_start": []}
    assert e.metrics["late_records"] == 2  # far behind the watermark: late, as they are
    assert outs[-1].to_pydict() == {"k": [1], "n": [2], "window_start": [start]}


def test_unsigned_and_datetime_times_outside_the_range():
    e = vk.StreamExecutionEngine(TUMBLING)
    p = vk.JobProcessorFactory.create("v1")
    with pytest.raises(ValueError, match="event time 18446744073709551615 of column 'ts'"):
        p.process_batch(_batch([1, 2**64 - 1], dtype=np.uint64), e)
    assert e.metrics["records_rejected"] == 2
    assert e.prepare(_batch([1, 2], dtype=np.uint64)).n == 2  # inside: taken
    ns = np.array(["2026-12-06T10:00", "2200-01-01"], dtype="datetime64[ns]")
    e = vk.StreamExecutionEngine(TUMBLING)
    with pytest.raises(ValueError, match="at row 1 is outside"):
        p.process_batch(vk.RecordBatch({"k": np.ones(2, np.int64), "ts": ns}), e)
    far = ns[1:].repeat(2)
    ok = vk.RecordBatch({"k": np.ones(2, np.int64), "ts": far},
                        masks={"ts": np.array([False, False])})
    assert e.prepare(ok).n == 2  # a null time is no event time, whatever its bits


@pytest.mark.parametrize("sql,message", [
    ("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, INTERVAL "
     f"'{2**60 // 86_400_000 + 1}' DAY)", "window size is .* over the limit of 2\\*\\*60"),
    ("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(ts, INTERVAL "
     f"'{2**60 // 86_400_000 + 1}' DAY)", "over the limit of 2\\*\\*60"),
])
def test_window_sizes_over_the_limit_are_refused_when_planned(sql, message):
    with pytest.raises(PlanError, match=message):
        vk.StreamExecutionEngine(sql, {"k": "int64", "ts": "int64"})


def test_a_lateness_over_the_limit_is_refused():
    limit = config.MAX_WINDOW_TICKS // 1_000_000
    vk.StreamExecutionEngine(TUMBLING, allowed_lateness_ms=limit - 1)
    with pytest.raises(PlanError, match=r"allowed_lateness_ms \d+ is over the limit"):
        vk.StreamExecutionEngine(TUMBLING, allowed_lateness_ms=limit)
