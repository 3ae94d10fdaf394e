"""Putting the rows that partitions wrote back into the defined output order.

Partition p writes its output rows into the shared output packs at its own base
position, each partition's rows already in order. These kernels compute the
*positions in the packs* of all the rows, in output order, in one linear pass, and
move the rows there pack by pack, so the engine never sorts:

- :func:`input_order`: rows that each belong to one input row (projections, ROWS
  windows) go back into input order. An inverse map over the batch's rows, O(rows).
- :func:`scatter_rows`: when every input row has its row, the packs are instead
  scattered into new packs in input order, all of a pack's rows in one pass.
- :func:`gather_rows`: the rows at the positions, for every row of a pack, in one call
  per pack (a take per column and per mask cost more); :func:`gather_rows_parallel`
  splits the positions over the numba workers (V2 jobs).
- :func:`concat_rows`: rows of partitions that took contiguous ranges of the batch
  (stateless queries) are in input order already, run after run: they are laid end to
  end, pack by pack (:func:`concat_rows_parallel`: a run per worker).
- :func:`take_rows_parallel`: an input column at the chosen input rows, in contiguous
  pieces on the numba workers.
- :func:`merge_runs`: group rows of windowed queries, each partition's run sorted by
  (window start, first record), merged by that key.

Scratch and output arrays are passed in (the engine reuses them across batches: a
large allocation inside a kernel page-faults on every call). Slow twins live in
:mod:`velokern.kernels.slow`; the tests hold each kernel to its twin.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from velokern.kernels.scalar import JIT, nonneg


@njit(**JIT)
def input_order(orow, starts, counts, inv, pos, sel):
    """Partition r wrote ``counts[r]`` rows at ``starts[r]``; pack row k belongs to input
    row ``orow[k]`` (each input row at most once, ``inv`` has one slot per input row).
    Writes the pack positions of the rows in input-row order to ``pos`` and their input
    rows to ``sel``; returns the number of rows. When every input row has its row, ``pos``
    is the inverse map itself (one pass) and ``sel``, which would be 0, 1, ..., is not
    written."""
    n = len(inv)
    total = 0
    for r in range(len(starts)):
        total += counts[r]
    if total == n:
        for r in range(len(starts)):
            for k in range(starts[r], starts[r] + counts[r]):
                pos[orow[k]] = k
        return n
    inv[:] = -1
    for r in range(len(starts)):
        for k in range(starts[r], starts[r] + counts[r]):
            inv[orow[k]] = k
    m = 0
    for i in range(n):
        k = inv[i]
        if k >= 0:
            pos[m] = k
            sel[m] = i
            m += 1
    return m


@njit(**JIT)
def concat_rows(src, starts, counts, dst):
    """Partition r wrote ``counts[r]`` rows at ``starts[r]`` of the pack ``src`` (``[rows,
    slots]``), in input order, and every row of run r comes before every row of run r +
    1 (partitions took contiguous ranges): ``dst`` gets the runs end to end."""
    at = 0
    for r in range(len(starts)):
        _copy_block(src, starts[r], counts[r], dst, at)
        at += counts[r]


@njit(**JIT)
def _copy_block(src, a, c, dst, at):
    for q in range(src.shape[0]):
        dst[q, at:at + c] = src[q, a:a + c]


@njit(parallel=True, **JIT)
def concat_rows_parallel(src, starts, counts, dst):
    """:func:`concat_rows` with each run copied by a numba worker."""
    P = len(starts)
    at = np.empty(P, np.int64)
    m = 0
    for r in range(P):
        at[r] = m
        m += counts[r]
    for r in prange(P):
        _copy_block(src, starts[r], counts[r], dst, at[r])


@njit(**JIT)
def _take_range(src, sel, dst, lo, hi):
    for k in range(lo, hi):
        dst[nonneg(k)] = src[nonneg(sel[nonneg(k)])]


@njit(parallel=True, **JIT)
def take_rows_parallel(src, sel, dst, chunks):
    """``dst[k] = src[sel[k]]`` (an input column at the chosen rows) on the numba
    workers, ``chunks`` contiguous pieces of ``sel`` (one thread: numpy's take)."""
    n = len(sel)
    step = (n + chunks - 1) // chunks
    for t in prange(chunks):
        lo = min(n, t * step)
        _take_range(src, sel, dst, lo, min(n, lo + step))


@njit(**JIT)
def scatter_rows(src, orow, starts, counts, dst):
    """Partition r wrote ``counts[r]`` rows at ``starts[r]`` of the pack ``src`` (``[rows,
    slots]``), and every input row has its row: column ``orow[k]`` of ``dst`` gets column
    k of ``src``. (Gathering through the inverse map costs a pass to build the map,
    then one per output column.)"""
    _scatter_range(src, orow, starts, counts, dst, 0, dst.shape[1])


@njit(**JIT)
def _scatter_range(src, orow, starts, counts, dst, lo, hi):
    """:func:`scatter_rows` for the input rows in ``[lo, hi)``: a partition's rows
    come in input order, so those of each partition are one stretch of its run."""
    for r in range(len(starts)):
        a = starts[r]
        run = orow[a:a + counts[r]]
        ka = a + np.searchsorted(run, lo)
        kb = a + np.searchsorted(run, hi)
        for q in range(src.shape[0]):
            s = src[q]
            d = dst[q]
            for k in range(ka, kb):
                d[nonneg(orow[nonneg(k)])] = s[nonneg(k)]


@njit(parallel=True, **JIT)
def scatter_rows_parallel(src, orow, starts, counts, dst, chunks):
    """:func:`scatter_rows` on the numba workers: each takes a range of input rows, so
    they write apart (and fault in the new pack's pages side by side)."""
    n = dst.shape[1]
    step = (n + chunks - 1) // chunks
    for t in prange(chunks):
        lo = min(n, t * step)
        _scatter_range(src, orow, starts, counts, dst, lo, min(n, lo + step))


@njit(**JIT)
def gather_rows(src, pos, dst):
    """Column k of ``dst`` = column ``pos[k]`` of ``src`` (``[rows, slots]`` packs), for
    all of ``src``'s rows."""
    _gather_range(src, pos, dst, 0, len(pos))


@njit(**JIT)
def _gather_range(src, pos, dst, lo, hi):
    for q in range(src.shape[0]):
        s = src[q]
        d = dst[q]
        for k in range(lo, hi):
            d[nonneg(k)] = s[nonneg(pos[nonneg(k)])]


@njit(parallel=True, **JIT)
def gather_rows_parallel(src, pos, dst, chunks):
    """:func:`gather_rows` on the numba workers: ``chunks`` contiguous ranges of the
    positions, each gathered (every pack row) by one worker."""
    n = len(pos)
    step = (n + chunks - 1) // chunks
    for t in prange(chunks):
        lo = min(n, t * step)
        _gather_range(src, pos, dst, lo, min(n, lo + step))


@njit(**JIT)
def merge_runs(win, seq, starts, ends, out, tmp):
    """Runs ``[starts[r], ends[r])`` of rows each sorted by (win, seq): writes the
    positions of all their rows ordered by (win, seq), ties in run order, to ``out``;
    returns the number of rows. Two runs merge in one pass; more merge pairwise in
    rounds (O(rows x log runs)), ping-ponging between ``out`` and the scratch ``tmp``
    (as long as ``out``)."""
    nr = len(starts)
    if nr == 2:
        return _merge_two(win, seq, starts[0], ends[0], starts[1], ends[1], out)
    total, seg, src, dst = _rounds(starts, ends, out, tmp)
    for r in range(nr):
        _copy_run(src, seg[r], starts[r], ends[r])
    width = 1
    while width < nr:
        r = 0
        while r < nr:
            a = seg[r]
            mid = seg[r + width] if r + width < nr else total
            b = seg[r + 2 * width] if r + 2 * width < nr else total
            _merge_pieces(win, seq, src, a, mid, mid, b, dst, a)
            r += 2 * width
        src, dst = dst, src
        width *= 2
    return total


@njit(parallel=True, **JIT)
def merge_runs_parallel(win, seq, starts, ends, out, tmp, chunks):
    """:func:`merge_runs` on the numba workers: each round's merges are cut into
    ``chunks`` pieces of output (a piece's first rows from either run are found by a
    binary search, the merge path), and every piece of the round is merged by a worker.
    Same result: ties in run order. ``tmp`` is scratch as long as ``out``."""
    nr = len(starts)
    total, seg, src, dst = _rounds(starts, ends, out, tmp)
    for r in prange(nr):
        _copy_run(src, seg[r], starts[r], ends[r])
    width = 1
    while width < nr:
        npairs = (nr + 2 * width - 1) // (2 * width)
        for t in prange(npairs * chunks):
            r = (t // chunks) * 2 * width
            c = t % chunks
            a = seg[r]
            mid = seg[r + width] if r + width < nr else total
            b = seg[r + 2 * width] if r + 2 * width < nr else total
            k0 = a + (b - a) * c // chunks
            k1 = a + (b - a) * (c + 1) // chunks
            i0 = _corank(win, seq, src, a, mid, b, k0)
            i1 = _corank(win, seq, src, a, mid, b, k1)
            _merge_pieces(win, seq, src, i0, i1, mid + (k0 - i0), mid + (k1 - i1), dst, k0)
        src, dst = dst, src
        width *= 2
    return total


@njit(**JIT)
def _rounds(starts, ends, out, tmp):
    """(rows, where each run begins in src, src, dst) for merging the runs pairwise in
    rounds: src is the buffer the last round does not write, so it ends in ``out``."""
    nr = len(starts)
    seg = np.empty(nr, np.int64)
    total = 0
    for r in range(nr):
        seg[r] = total
        total += ends[r] - starts[r]
    rounds = 0
    m = 1
    while m < nr:
        m *= 2
        rounds += 1
    if rounds % 2 == 1:
        return total, seg, tmp, out
    return total, seg, out, tmp


@njit(**JIT)
def _copy_run(src, k, lo, hi):
    for q in range(lo, hi):
        src[nonneg(k)] = q
        k += 1


@njit(**JIT)
def _corank(win, seq, src, a, mid, b, k):
    """Where the first ``k - a`` rows of the merge of ``src[a:mid]`` and ``src[mid:b]``
    end in the first run (ties from the first): the smallest i with the first run's row
    i not ahead of the second run's row k - i - 1."""
    na = mid - a
    nb = b - mid
    kk = k - a
    lo = max(0, kk - nb)
    hi = min(kk, na)
    while lo < hi:
        i = (lo + hi) // 2
        pa = src[nonneg(a + i)]
        pb = src[nonneg(mid + kk - i - 1)]
        wa = win[nonneg(pa)]
        wb = win[nonneg(pb)]
        if wa < wb or (wa == wb and seq[nonneg(pa)] <= seq[nonneg(pb)]):
            lo = i + 1
        else:
            hi = i
    return a + lo


@njit(**JIT)
def _merge_pieces(win, seq, src, i, ie, j, je, dst, k):
    """Merge ``src[i:ie]`` and ``src[j:je]`` (sorted positions) into ``dst[k:]``, ties
    from the first."""
    while i < ie and j < je:
        pi = src[nonneg(i)]
        pj = src[nonneg(j)]
        wi = win[nonneg(pi)]
        wj = win[nonneg(pj)]
        if wj < wi or (wj == wi and seq[nonneg(pj)] < seq[nonneg(pi)]):
            dst[nonneg(k)] = pj
            j += 1
        else:
            dst[nonneg(k)] = pi
            i += 1
        k += 1
    while i < ie:
        dst[nonneg(k)] = src[nonneg(i)]
        i += 1
        k += 1
    while j < je:
        dst[nonneg(k)] = src[nonneg(j)]
        j += 1
        k += 1


@njit(**JIT)
def _merge_two(win, seq, i, ie, j, je, out):
    k = 0
    while i < ie and j < je:
        wi = win[i]
        wj = win[j]
        if wj < wi or (wj == wi and seq[j] < seq[i]):
            out[k] = j
            j += 1
        else:
            out[k] = i
            i += 1
        k += 1
    while i < ie:
        out[k] = i
        i += 1
        k += 1
    while j < je:
        out[k] = j
        j += 1
        k += 1
    return k


__all__ = ["gather_rows", "gather_rows_parallel", "input_order", "merge_runs",
           "merge_runs_parallel", "scatter_rows", "scatter_rows_parallel"]
