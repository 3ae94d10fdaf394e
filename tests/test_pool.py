"""velokern.pool: output blocks are recycled only once nothing refers to them."""

import gc
import threading

import numpy as np
import pytest

import velokern as vk
from velokern.datagen import SCENARIOS, stream_for
from velokern.pool import BlockPool


def test_a_block_comes_back_only_when_unused():
    pool = BlockPool(max_free_bytes=1 << 30, min_bytes=1024)
    a = pool.take(1 << 20)
    b = pool.take(1 << 20)
    assert b is not a  # a is held: a new block
    ida, idb = id(a), id(b)
    del b
    view = a[10:20].view(np.int16)[1:]  # a view of a view holds the block too
    del a
    gc.collect()
    c = pool.take(1 << 20)
    assert id(c) == idb  # the free one, not the one the view holds
    d = pool.take(1 << 20)
    assert id(d) not in (ida, idb) and pool.stats()["blocks"] == 3
    del view
    e = pool.take(1 << 20)
    assert id(e) == ida and pool.stats()["blocks"] == 3
    del c, d, e


def test_sizes_small_requests_and_the_limit():
    pool = BlockPool(max_free_bytes=3 << 20, min_bytes=1 << 20)
    small = pool.take(1000)
    assert small.nbytes == 1000 and pool.stats()["blocks"] == 0  # not pooled
    big = pool.take(4 << 20)
    del big
    # a free block more than twice the request is not handed out; the new block's
    # take drops it, since unused blocks may hold 3 MiB at most
    one = pool.take(1 << 20)
    assert one.nbytes == 1 << 20
    assert pool.stats() == {"blocks": 1, "unused_blocks": 0, "unused_bytes": 0}
    big = pool.take(2 << 20)  # in use: not counted against the limit
    two = pool.take(2 << 20)
    assert pool.stats()["blocks"] == 3
    del one, big, two


def test_outputs_released_in_bulk_are_not_all_kept():
    """A consumer that held many outputs, then dropped them: the pool keeps its limit
    of them (plus the block it handed out last, released since), even when every
    later request is served by reuse."""
    pool = BlockPool(max_free_bytes=4 << 20, min_bytes=1024)
    held = [pool.take(1 << 20) for _ in range(20)]
    del held
    for _ in range(3):
        b = pool.take(1 << 20)
        del b
    assert pool.stats()["unused_bytes"] == 5 << 20


def test_threads_never_share_a_block():
    pool = BlockPool(max_free_bytes=1 << 30, min_bytes=1024)
    errors = []

    def work(k):
        for i in range(200):
            b = pool.take(1 << 16)
            b[:] = k
            if not (b == k).all():
                errors.append((k, i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("cfg", ["v1", "v2:2"])
@pytest.mark.parametrize("keep", ["batches", "one column"])
def test_kept_outputs_are_never_overwritten(cfg, keep):
    """Outputs (or a single column of each) held while the job goes on keep their
    values: a block is not recycled while any part of it is alive."""
    batches = list(stream_for("S3a", 60_000, 10_000, seed=3, random=True))
    proc = vk.JobProcessorFactory.create(cfg)
    engine = vk.StreamExecutionEngine(SCENARIOS["S3a"])
    held, copies = [], []
    for b in batches:
        out = proc.process_batch(b, engine)
        if out.num_rows == 0:
            continue
        copies.append({c: out.column(c).copy() for c in out.column_names})
        held.append(out if keep == "batches" else out.column("total_value"))
        del out
        gc.collect()
    assert len(held) > 2
    for h, c in zip(held, copies):
        if keep == "batches":
            for name, col in c.items():
                np.testing.assert_array_equal(h.column(name), col)
        else:
            np.testing.assert_array_equal(h, c["total_value"])
