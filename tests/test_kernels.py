"""Every scalar kernel held to its slow twin (the aggregates and their references:
tests/test_aggregates.py)."""

from __future__ import annotations

import math

import numpy as np
from conftest import dealt_rows_of, runs_at_gaps
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from velokern import _shim
from velokern.kernels import order, scalar, slow, windows

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
ints = st.integers(-(2**62), 2**62)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
int64s = st.one_of(st.integers(INT64_MIN, INT64_MAX),
                   st.sampled_from([INT64_MIN, INT64_MAX, -1, 0, 1]))


@given(int64s, st.one_of(int64s, st.sampled_from([-1, 1])).filter(lambda b: b != 0))
def test_int_div_mod(a, b):
    # INT64_MIN // -1 wraps to INT64_MIN (it was 0, with remainder INT64_MIN)
    assert scalar.int_div(a, b) == slow.int_div(a, b)
    assert scalar.int_mod(a, b) == slow.int_mod(a, b)


@given(int64s, st.integers(-25, 3))
def test_round_int(x, digits):
    # 10**19 and more do not fit in int64 (digits <= -19 returned garbage)
    assert scalar.round_int(x, digits) == slow.round_int(x, digits)


@settings(max_examples=300)
@given(st.one_of(finite.filter(lambda x: abs(x) < 1e12), st.sampled_from(
    [0.5, -0.5, 2.5, -2.5, 0.15, -0.15, 2.675, 1.005, 0.125, -0.125, 1e-300, 0.0, -0.0])),
    st.integers(0, 6))
def test_round_half_away(x, d):
    assert scalar.round_half_away(x, d) == slow.round_half_away(x, d)


@settings(max_examples=300)
@given(st.one_of(finite, st.sampled_from([0.5, 1.5, 2.5, -0.5, -2.5, 9.3e18, -9.3e18,
                                          math.nan, math.inf])))
def test_float_to_int(x):
    assert tuple(scalar.float_to_int(x)) == slow.float_to_int(x)


@given(st.floats(width=64), st.floats(width=64))
def test_float_order(a, b):
    assert scalar.f_lt(a, b) == slow.f_lt(a, b)
    assert scalar.f_eq(a, b) == slow.f_eq(a, b)


@njit
def _nonneg_gather(a, ix, out):
    for t in range(len(ix)):
        out[t] = a[scalar.nonneg(ix[t])]
        a[scalar.nonneg(ix[t])] += 1


@given(st.lists(st.integers(0, 63), max_size=40), st.sampled_from([np.int64, np.int32]))
def test_nonneg_index_reads_the_same_elements(idx, dtype):
    """``nonneg`` (an index the kernels know is >= 0) changes no value it passes: a
    gather and update through it touch what numpy's indexing touches."""
    a = np.arange(64, dtype=np.int64) * 3
    ix = np.array(idx, dtype=dtype)
    out = np.empty(len(ix), np.int64)
    ref_a = a.copy()
    ref = []
    for k in idx:
        ref.append(ref_a[k])
        ref_a[k] += 1
    _nonneg_gather(a, ix, out)
    assert out.tolist() == ref and a.tolist() == ref_a.tolist()


@given(st.floats(width=64))
def test_float_key_bits(x):
    bits = np.array([x]).view(np.int64)[0]
    assert scalar.float_key_bits(x, bits) == slow.float_key_bits(x)


@given(st.lists(ints, min_size=1, max_size=4))
def test_group_hash(keys):
    """The group-by tables' key hash (folded keys, one mix64) against its twin; one key
    hashes as the shim does."""
    h = np.uint64(0)
    for k in keys:
        h = np.uint64(scalar.fold(np.uint64(h), np.int64(k)))
    assert int(scalar.mix64(h)) == slow.group_hash(keys)
    if len(keys) == 1:
        assert slow.group_hash(keys) == int(_shim.hash_keys([np.array(keys, np.int64)])[0])


# ------------------------------------------------------------------ window kernels
times = st.integers(-(10**12), 10**12)


@given(times, st.integers(1, 10**6), st.integers(1, 40))
def test_first_window(t, slide, mult):
    size = slide * mult  # sizes are whole slides for HOP/SLIDING with mult > 1
    for sz in (size, slide + (size - slide) // 2 + 1) if mult > 1 else (size,):
        starts = slow.window_starts(t, sz, slide)
        assert windows.first_window(np.int64(t), sz, slide) == starts[0]
        assert starts[-1] == t - t % slide


@given(st.lists(st.tuples(times, st.booleans()), max_size=60), times)
def test_watermarks(rows, carry):
    ts = np.array([t for t, _ in rows], np.int64)
    valid = np.array([v for _, v in rows], np.bool_)
    out = np.empty(len(rows), np.int64)
    wm = windows.watermarks(ts, valid, True, carry, out)
    ref, ref_wm = slow.watermarks(ts, valid, carry)
    assert out.tolist() == ref and wm == ref_wm


@given(st.lists(st.integers(0, 8), max_size=50), st.integers(-1, 9))
def test_closing_gids(starts, limit):
    w = np.array(starts, np.int64)
    got = windows.closing_gids(w, len(w), limit).tolist()
    assert got == slow.closing_gids(w, len(w), limit)


@given(st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)),
                                   max_size=12), st.integers(0, 3)),
                min_size=1, max_size=9))
def test_merge_runs(runs):
    """Runs written at gaps in the packs (as partitions do), each sorted by (win, seq):
    the positions come back in (win, seq) order, ties in run order."""
    win, seq, bounds = runs_at_gaps(runs)
    out, tmp = np.full(len(win), -7, np.int64), np.full(len(win), -7, np.int64)
    k = order.merge_runs(np.array(win, np.int64), np.array(seq, np.int64),
                         np.array([a for a, _ in bounds], np.int64),
                         np.array([b for _, b in bounds], np.int64), out, tmp)
    want = slow.merge_runs(win, seq, bounds)
    assert out[:k].tolist() == want
    for chunks in (1, 2, 3, 7):  # on the workers: each round cut into pieces of output
        out, tmp = np.full(len(win), -7, np.int64), np.full(len(win), -7, np.int64)
        k = order.merge_runs_parallel(np.array(win, np.int64), np.array(seq, np.int64),
                                      np.array([a for a, _ in bounds], np.int64),
                                      np.array([b for _, b in bounds], np.int64), out, tmp,
                                      chunks)
        assert out[:k].tolist() == want, chunks


@settings(max_examples=200)
@given(st.data(), st.integers(0, 60), st.integers(1, 5))
def test_input_order(data, n, parts):
    """Input rows dealt to partitions (each keeping arrival order, some rows filtered
    out), written at gaps: back in input order, with their input rows."""
    pid = data.draw(st.lists(st.integers(-1, parts - 1), min_size=n, max_size=n))
    gaps = data.draw(st.lists(st.integers(0, 3), min_size=parts, max_size=parts))
    orow, starts, counts, runs = dealt_rows_of(pid, gaps, n)
    pos = np.full(len(orow), -7, np.int64)
    sel = np.full(len(orow), -7, np.int64)
    m = order.input_order(np.array(orow, np.int64), np.array(starts, np.int64),
                          np.array(counts, np.int64), np.zeros(n, np.int64), pos, sel)
    ref_pos, ref_sel = slow.input_order(orow, runs)
    assert ref_sel == [i for i in range(n) if pid[i] >= 0]
    assert pos[:m].tolist() == ref_pos
    if m < n:  # else every input row has its row: sel is not written (0, 1, ...)
        assert sel[:m].tolist() == ref_sel


@settings(max_examples=200)
@given(st.lists(st.integers(0, 39), max_size=50), st.integers(1, 40), st.integers(1, 3))
def test_gather_rows(pos, slots, nrows):
    """Any positions (repeats too): each pack row's values at those positions, for every
    dtype of a pack."""
    pos = [p % slots for p in pos]
    rng = np.random.default_rng(slots)
    for dtype in (np.int64, np.float64, np.bool_):
        src = rng.integers(0, 2 if dtype is np.bool_ else 1000, (nrows, slots)).astype(dtype)
        dst = np.zeros((nrows, len(pos)), dtype)
        order.gather_rows(src, np.array(pos, np.int64), dst)
        assert dst.tolist() == slow.gather_rows(src.tolist(), pos)
        for chunks in (1, 3, 64):  # on the workers: ranges of the positions, any count
            par = np.zeros_like(dst)
            order.gather_rows_parallel(src, np.array(pos, np.int64), par, chunks)
            assert par.tolist() == dst.tolist()


@settings(max_examples=200)
@given(st.data(), st.integers(0, 60), st.integers(1, 5), st.integers(1, 3))
def test_scatter_rows(data, n, parts, nrows):
    """Every input row dealt to a partition (each keeping arrival order), written at
    gaps: each pack row's values land at their input rows, for every dtype of a pack."""
    pid = data.draw(st.lists(st.integers(0, parts - 1), min_size=n, max_size=n))
    gaps = data.draw(st.lists(st.integers(0, 3), min_size=parts, max_size=parts))
    orow, starts, counts, runs = dealt_rows_of(pid, gaps, n)
    rng = np.random.default_rng(n)
    for dtype in (np.int64, np.float64, np.bool_):
        src = rng.integers(0, 2 if dtype is np.bool_ else 1000, (nrows, len(orow))).astype(dtype)
        dst = np.zeros((nrows, n), dtype)
        order.scatter_rows(src, np.array(orow, np.int64), np.array(starts, np.int64),
                           np.array(counts, np.int64), dst)
        assert dst.tolist() == slow.scatter_rows(src.tolist(), orow, runs)
        for chunks in (1, 2, 7):  # on the workers: ranges of input rows
            par = np.zeros_like(dst)
            order.scatter_rows_parallel(src, np.array(orow, np.int64),
                                        np.array(starts, np.int64),
                                        np.array(counts, np.int64), par, chunks)
            assert par.tolist() == dst.tolist()


@given(st.lists(st.integers(0, 4), max_size=30))
def test_session_lists(skey):
    n = len(skey)
    head, nxt = np.zeros(5, np.int64), np.zeros(n + 1, np.int64)
    windows.session_lists(np.array(skey + [0], np.int64), n, head, nxt)
    for k in range(5):  # each key's list: its sessions, newest first
        got, s = [], head[k]
        while s >= 0:
            got.append(int(s))
            s = nxt[s]
        assert got == [i for i in range(n - 1, -1, -1) if skey[i] == k]


@given(st.lists(st.one_of(st.integers(-3, 3), ints), max_size=60))
def test_unique_probe_finds_the_groups_the_full_probe_finds(keys):
    """One non-null key: the probe that compares only hashes (a bijection of the key)
    numbers the groups as the full probe does, first occurrence first; a small table
    makes every probe walk collisions. A table refilled from the groups' stored hashes
    (as after growing, closing windows or a restore) finds every group again."""
    from velokern.kernels import hashtable

    def groups(unique):
        table = hashtable.new_table(1, 128)[0]
        hashes = np.zeros(64, np.uint64)
        kbits = np.zeros((64, 1), np.int64)
        knull = np.zeros((64, 1), np.uint8)
        ng, out = 0, []

        def probe(k, ng):
            h = np.uint64(scalar.mix64(np.uint64(scalar.fold(np.uint64(0), np.int64(k)))))
            return int(hashtable.probe(table, hashes, kbits, knull, (np.int64(k),),
                                       (np.uint8(0),), h, ng, unique, False))

        for k in keys:
            g = probe(k, ng)
            ng += g == ng
            out.append(g)
        hashtable.refill(table, hashes, ng)
        assert [probe(k, ng) for k in keys] == out
        assert (table[:, 0] >= 0).sum() == ng
        return out

    first = {}
    expect = [first.setdefault(k, len(first)) for k in keys]
    assert groups(True) == groups(False) == expect
