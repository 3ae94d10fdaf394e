"""The windowed reference scenarios (S1, S3a, S3b) over their random, out-of-order
streams: V1 = V2 at 1, 2, 3 and 8 partitions bit for bit, for several batch cuttings;
S3a = DuckDB over the records that were not late; S3b's changes end at S3a's answer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_batches_identical, assert_rows_match, cut, duckdb_rows, rows_of, run_job
from test_windows import reference_late

from velokern.batch import RecordBatch
from velokern.datagen import SCENARIOS, stream_for

N = 12_000
CUTS = {"one": [10**9], "odd": [1, 7, 1000, 333, 4999], "even": [2000] * 6}
CONFIGS = ("v2:1", "v2:2", "v2:3", "v2:8")



@pytest.fixture(scope="module")
def s3_stream():
    return RecordBatch.concat(list(stream_for("S3a", N, N, seed=4, random=True)))


def _with_late(b: RecordBatch) -> RecordBatch:
    d = {c: b.column(c) for c in b.column_names}
    d["late"] = reference_late(b.column("trade_time"), 60_000, 60_000, 0)
    d["seq"] = np.arange(len(b))
    return RecordBatch(d, dictionaries=b.dictionaries)


def test_s3a_matches_duckdb_and_v1_equals_v2(s3_stream):
    data = _with_late(s3_stream)
    ref = duckdb_rows(
        "SELECT trader_id, symbol, COUNT(*), AVG(price), SUM(quantity), SUM(price * quantity) "
        "FROM t WHERE NOT late GROUP BY trader_id, symbol, trade_time // 60000 "
        "ORDER BY trade_time // 60000, MIN(seq)", data)
    late = int(data.column("late").sum())
    assert late > 0
    base = None
    for cname, sizes in CUTS.items():
        batches = cut(s3_stream, sizes)
        v1, engine = run_job(SCENARIOS["S3a"], batches, "v1")
        final = RecordBatch.concat(v1)
        assert_rows_match(rows_of(final), ref, f"S3a {cname}")
        assert engine.metrics["late_records"] == late
        if base is None:
            base = final
        else:
            assert final.equals(base, bitwise=True), cname
        for cfg in CONFIGS:
            assert_batches_identical(run_job(SCENARIOS["S3a"], batches, cfg)[0], v1,
                                     f"S3a {cname} {cfg}")


def test_s3b_changes_end_at_the_s3a_answer(s3_stream):
    batches = cut(s3_stream, [1500] * 8)
    sql = SCENARIOS["S3b"].replace(" FROM market_data", ", window_start FROM market_data")
    changes, _ = run_job(sql, batches, "v1")
    for cfg in CONFIGS:
        assert_batches_identical(run_job(sql, batches, cfg)[0], changes, f"S3b {cfg}")
    plain, _ = run_job(SCENARIOS["S3b"], batches, "v2:2")
    assert [rows_of(o) for o in plain] == [[r[:-1] for r in rows_of(o)] for o in changes]
    last = {}
    for out in changes:
        for r in rows_of(out):
            last[(r[-1], r[0], r[1])] = r[:-1]
    final = rows_of(RecordBatch.concat(run_job(SCENARIOS["S3a"], batches, "v1")[0]))
    assert sorted(last.values()) == sorted(final)


def test_s1_random_stream_v1_equals_v2():
    stream = RecordBatch.concat(list(stream_for("S1", N, N, seed=2, random=True)))
    ref = duckdb_rows(
        "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY rn ROWS BETWEEN "
        "99 PRECEDING AND CURRENT ROW) FROM (SELECT *, row_number() OVER () AS rn FROM t) "
        "ORDER BY rn", stream)
    for cname, sizes in CUTS.items():
        batches = cut(stream, sizes)
        v1, _ = run_job(SCENARIOS["S1"], batches, "v1")
        assert_rows_match(rows_of(RecordBatch.concat(v1)), ref, f"S1 {cname}")
        for cfg in CONFIGS:
            assert_batches_identical(run_job(SCENARIOS["S1"], batches, cfg)[0], v1,
                                     f"S1 {cname} {cfg}")
