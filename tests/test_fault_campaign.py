"""A few runs of the fault campaign (tests/fault_campaign.py; the full one, 200 runs with
kill -9 as well, runs outside CI: docs/reliability.md): faults injected in the sink and
in checkpoint writes at random points, restarts from the checkpoint, and an output equal
byte for byte to the run without faults."""

from __future__ import annotations

import numpy as np
from fault_campaign import QUERIES, Tally, one_run


def test_faults_at_random_points_lose_and_repeat_nothing(tmp_path):
    tally = Tally()
    rng = np.random.default_rng(5)
    refs: dict = {}
    for k in (0, 1, 2):  # the GROUP BY, the tumbling window, the filter
        one_run(k, rng, tmp_path, tally, refs, kills=False)
    assert list(QUERIES)[:3] == ["group_by", "tumbling", "filter"]
    assert tally.failures == []
    assert tally.runs == 3 and tally.restarts >= 2
    assert sum(tally.faults.values()) == tally.restarts
