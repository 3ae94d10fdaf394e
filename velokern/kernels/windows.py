"""Time-window kernels shared by every windowed query: the per-record watermark, the
order of window rows, and freeing the state of closed windows.

A windowed query's group key 0 is the window start (row ``keyrow`` of the packed int64
state ``I``); see :mod:`velokern.codegen`. Slow numpy twins live in
:mod:`velokern.kernels.slow` and the tests hold each kernel to its twin.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from velokern.kernels.hashtable import distinct_hash, refill, slot_of
from velokern.kernels.layout import (
    DGID,
    DTAB,
    DVAL,
    HASHES,
    KBITS,
    KNULL,
    META,
    NGROUPS,
    NTOUCHED,
    TABLE,
    B,
    F,
    I,
)
from velokern.kernels.scalar import JIT

NO_WATERMARK = np.iinfo(np.int64).min
NO_WM = NO_WATERMARK  # the name generated kernels use
_MAX = np.iinfo(np.int64).max
_MIN = np.iinfo(np.int64).min


@njit(inline="always", **JIT)
def first_window(t, size, slide):
    """Start of the earliest window ``[s, s + size)`` (``s`` a multiple of ``slide``)
    that covers time ``t``; the record belongs to the windows ``s, s + slide, ...`` up
    to ``t``."""
    wl = t - t % slide
    if size == slide:
        # tumbling: the window holding t (the generated kernels pass constants, so the
        # test folds away; without it, a second division per record: S3a ~10% slower)
        return wl
    return wl - ((size - 1 - (t - wl)) // slide) * slide


@njit(**JIT)
def min_window(wstart, ng):
    """Smallest window start among the first ``ng`` groups (int64 max when none)."""
    m = _MAX
    for g in range(ng):
        if wstart[g] < m:
            m = wstart[g]
    return m


@njit(**JIT)
def first_outside(ts, valid, has_mask, limit):
    """The first row whose (valid) time ``t`` has ``t <= -limit`` or ``t >= limit``, or
    -1 when every time is inside."""
    for i in range(len(ts)):
        if has_mask and not valid[i]:
            continue
        t = ts[i]
        if t >= limit or t <= -limit:
            return i
    return -1


@njit(**JIT)
def watermarks(ts, valid, has_mask, carry, out):
    """``out[i]`` = the largest event time among the records before ``i`` (``carry``
    holds the largest of earlier batches); null times do not move it. Returns the
    watermark after the last record."""
    wm = carry
    for i in range(len(ts)):
        out[i] = wm
        if has_mask and not valid[i]:
            continue
        t = ts[i]
        if t > wm:
            wm = t
    return wm


@njit(**JIT)
def window_order(gids, wstart):
    """``gids`` (ascending group ids) reordered by window start; ties keep id order
    (= order of the group's first record)."""
    n = len(gids)
    for t in range(1, n):
        if wstart[gids[t]] < wstart[gids[t - 1]]:
            keys = np.empty(n, np.int64)
            for u in range(n):
                keys[u] = wstart[gids[u]]
            return gids[np.argsort(keys, kind="mergesort")]
    return gids


@njit(**JIT)
def closing_gids(wstart, ng, limit):
    """Ids of the groups whose window starts at or before ``limit``, in window order.
    One pass, which also notes whether they already are in window order (in-order time:
    groups are created window by window), else they are sorted."""
    out = np.empty(ng, np.int64)
    k = 0
    ordered = True
    last = _MIN
    for g in range(ng):
        w = wstart[g]
        if w <= limit:
            if w < last:
                ordered = False
            last = w
            out[k] = g
            k += 1
    return out[:k] if ordered else window_order(out[:k], wstart)


@njit(**JIT)
def drop_closed(S, p, w, limit, nd_cols, tlist_row):
    """Free partition ``p``'s groups whose window starts (``w``, a view of its state)
    are at or before ``limit``: the live groups move down (keeping their order), the
    hash table, the touched list and the distinct sets follow. Returns the number of
    groups freed."""
    table, hashes, kbits, knull = S[TABLE][p], S[HASHES][p], S[KBITS][p], S[KNULL][p]
    I_, F_, B_, meta = S[I][p], S[F][p], S[B][p], S[META][p]
    ng = meta[NGROUPS]
    tsave = I_[tlist_row, :meta[NTOUCHED]].copy()  # a list in a group-sized row: not per group
    newid = np.empty(ng, np.int64)
    j = 0
    for g in range(ng):
        if w[g] > limit:
            newid[g] = j
            if j != g:
                hashes[j] = hashes[g]
                kbits[j, :] = kbits[g, :]
                knull[j, :] = knull[g, :]
                I_[:, j] = I_[:, g]
                F_[:, j] = F_[:, g]
                B_[:, j] = B_[:, g]
            j += 1
        else:
            newid[g] = -1
    freed = ng - j
    if freed == 0:
        return 0
    meta[NGROUPS] = j
    tl = I_[tlist_row]
    nt = 0
    for t in range(len(tsave)):
        ng2 = newid[tsave[t]]
        if ng2 >= 0:
            tl[nt] = ng2
            nt += 1
    meta[NTOUCHED] = nt
    refill(table, hashes, j)
    for d in range(len(nd_cols)):
        col = nd_cols[d]
        dtab, dgid, dval = S[DTAB][p, d], S[DGID][p, d], S[DVAL][p, d]
        ne = 0
        for e in range(meta[col]):
            ng2 = newid[dgid[e]]
            if ng2 >= 0:
                dgid[ne] = ng2
                dval[ne] = dval[e]
                ne += 1
        meta[col] = ne
        dtab[:] = -1
        dmask = len(dtab) - 1
        for e in range(ne):
            s = slot_of(distinct_hash(dgid[e], dval[e]), dmask)
            while dtab[s] >= 0:
                s = (s + 1) & dmask
            dtab[s] = e
    return freed


@njit(inline="always", **JIT)
def _overlaps_open(s, t, hi, w, lateness, st_start, st_end, st_alive):
    """Open session ``s`` (not closed at watermark ``w``) overlaps ``[t, hi)``."""
    return (st_alive[s] != 0 and st_end[s] + lateness > w and t < st_end[s]
            and hi > st_start[s])


@njit(**JIT)
def assign_sessions(key, ts, wm, seqs, gap, lateness, st_start, st_end, st_first, st_alive,
                    st_parent, st_key, head, nxt, nsess, out):
    """Session windows, record by record in arrival order. A record at ``t`` of key
    ``key[r]`` spans ``[t, t + gap)``; it joins the key's open sessions that overlap
    that span (several merge into the one whose first record came first; the others
    point to it through ``st_parent``) or starts a new session. A session is closed for
    record r once ``end + lateness <= wm[r]``; a record that overlaps no open session
    and whose own span is closed is late (``out[r] = -1``). Sessions of a key form the
    list ``head[key] -> nxt[...]``. Returns (sessions used, late records)."""
    nlate = 0
    for r in range(len(key)):
        k = key[r]
        t = ts[r]
        w = wm[r]
        hi = t + gap
        target = -1
        s = head[k]
        while s >= 0:
            if _overlaps_open(s, t, hi, w, lateness, st_start, st_end, st_alive) and (
                    target < 0 or st_first[s] < st_first[target]):
                target = s
            s = nxt[s]
        if target < 0:
            if hi + lateness <= w:
                out[r] = -1
                nlate += 1
                continue
            target = nsess
            nsess += 1
            st_start[target] = t
            st_end[target] = hi
            st_first[target] = seqs[r]
            st_alive[target] = 1
            st_parent[target] = target
            st_key[target] = k
            nxt[target] = head[k]
            head[k] = target
            out[r] = target
            continue
        s = head[k]
        while s >= 0:
            if s != target and _overlaps_open(s, t, hi, w, lateness, st_start, st_end,
                                              st_alive):
                st_alive[s] = 0
                st_parent[s] = target
                st_start[target] = min(st_start[target], st_start[s])
                st_end[target] = max(st_end[target], st_end[s])
                st_first[target] = min(st_first[target], st_first[s])
            s = nxt[s]
        st_start[target] = min(st_start[target], t)
        st_end[target] = max(st_end[target], hi)
        out[r] = target
    return nsess, nlate


@njit(**JIT)
def session_lists(skey, n, head, nxt):
    """Rebuild the per-key session lists (``head[key] -> nxt[...]``, newest first, as
    :func:`assign_sessions` builds them) for sessions ``0..n-1`` of keys ``skey``."""
    head[:] = -1
    for s in range(n):
        nxt[s] = head[skey[s]]
        head[skey[s]] = s


__all__ = [
    "NO_WATERMARK",
    "NO_WM",
    "assign_sessions",
    "closing_gids",
    "drop_closed",
    "first_outside",
    "first_window",
    "min_window",
    "session_lists",
    "watermarks",
    "window_order",
]
