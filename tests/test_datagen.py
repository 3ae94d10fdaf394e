"""The reference streams are defined record by record: any batch cutting gives the same
stream, so benchmarks at 1k and 100k-record batches see the same data."""

from __future__ import annotations

import pytest

from velokern.batch import RecordBatch
from velokern.datagen import stream_for, trades


@pytest.mark.parametrize("scenario", ["S0", "S1", "S2", "S3a"])
@pytest.mark.parametrize("random", [False, True])
def test_any_cutting_gives_the_same_stream(scenario, random):
    whole = RecordBatch.concat(list(stream_for(scenario, 10_000, 10_000, random=random)))
    for size in (1, 777, 4096, 5000):
        cut = list(stream_for(scenario, 10_000 if size > 1 else 300, size, random=random))
        got = RecordBatch.concat(cut)
        assert got.equals(whole.slice(0, len(got)), bitwise=True), (scenario, size)


def test_the_demo_stream_too():
    whole = RecordBatch.concat(list(trades(9_000, 9_000)))
    assert RecordBatch.concat(list(trades(9_000, 1_234))).equals(whole, bitwise=True)


def test_seeds_give_other_streams():
    a = RecordBatch.concat(list(stream_for("S2", 2_000, 2_000, random=True, seed=1)))
    b = RecordBatch.concat(list(stream_for("S2", 2_000, 2_000, random=True, seed=2)))
    assert not a.equals(b)
