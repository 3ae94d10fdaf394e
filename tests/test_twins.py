"""Every numba kernel beside its slow twin, in one table (numbagg/bottleneck style).

``TWINS`` says, for every kernel of :mod:`velokern.kernels` (by module and name), which
pure-Python twin of :mod:`velokern.kernels.slow` it is held to, the inputs it is tried
on (a hypothesis strategy of cases) and how the two are compared (a check that runs
both on a case and asserts they agree). ``test_kernel_matches_twin`` runs every row.
``test_every_kernel_has_a_twin`` finds every numba kernel defined in the kernel modules
(any new module under ``velokern/kernels/`` included) and fails naming each one that is
neither in ``TWINS`` nor in ``EXEMPT`` (with its reason).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import dealt_rows_of, runs_at_gaps
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core.dispatcher import Dispatcher
from numba.core.extending import _Intrinsic
from numba.np.ufunc.ufunc_base import UfuncBase

import velokern.kernels
from velokern.kernels import hashtable, slow
from velokern.kernels import layout as L

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MASK64 = (1 << 64) - 1
int64s = st.one_of(st.integers(INT64_MIN, INT64_MAX),
                   st.sampled_from([INT64_MIN, INT64_MAX, -1, 0, 1]))
uint64s = st.one_of(st.integers(0, MASK64), st.sampled_from([0, 1, MASK64, 2**63]))
times = st.integers(-(10**12), 10**12)


@dataclass(frozen=True)
class Twin:
    """A kernel's slow twin, the cases it is tried on, and ``check(kernel, twin, case)``,
    which runs both on one case and asserts they agree."""

    twin: Callable
    cases: st.SearchStrategy
    check: Callable[[Callable, Callable, Any], None]
    examples: int = 50
    pinned: tuple = ()  # cases tried every run, before the generated ones


def _int64(h: int) -> int:
    h &= MASK64
    return h - 2**64 if h >= 2**63 else h


def _table_holds(ids, entries: dict[int, int]) -> None:
    """The table whose slot s holds entry ``ids[s]`` (-1: empty) holds exactly
    ``entries`` (entry -> its hash), each once, each found on its hash's probe path."""
    held = [int(e) for e in ids if e >= 0]
    assert sorted(held) == sorted(entries)
    for e, h in entries.items():
        assert e in slow.probe_path(ids, h), (e, h)


def _group_table_holds(table, entries: dict[int, int]) -> None:
    """A group table (slots of (group id, hash)) holds ``entries``, each beside its hash."""
    _table_holds(table[:, 0], entries)
    assert {int(g): int(h) for g, h in table if g >= 0} == {g: _int64(h) for g, h in
                                                              entries.items()}


def _pow2_above(n: int) -> int:
    """Slots for ``n`` entries at most half full."""
    return 1 << max(1, (2 * n).bit_length())


# ----------------------------------------------------------------------------- scalar
def _eq(got, want, case) -> None:
    if isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), case
    else:
        assert got == want, (case, got, want)


def _check_mix64(kernel, twin, x):
    _eq(int(kernel(np.uint64(x))), twin(x), x)


def _check_fold(kernel, twin, case):
    h, k = case
    _eq(int(kernel(np.uint64(h), np.int64(k))), twin(h, k), case)


def _check_float_key_bits(kernel, twin, x):
    bits = np.array([x]).view(np.int64)[0]
    _eq(int(kernel(x, bits)), twin(x), x)


def _check_binary(kernel, twin, case):
    got = kernel(*case)
    _eq(tuple(got) if isinstance(got, tuple) else got, twin(*case), case)


def _check_float_to_int(kernel, twin, x):
    v, null = kernel(x)
    _eq((int(v), bool(null)), twin(x), x)


nonzero = st.one_of(int64s, st.sampled_from([-1, 1])).filter(lambda b: b != 0)
# |x| in [1e-120, 1e140] or 0: the product's error is a double (no under- or overflow)
moderate = st.one_of(st.just(0.0), st.floats(1e-120, 1e140), st.floats(-1e140, -1e-120),
                     st.sampled_from([1.0 + 2**-52, 3.0, 0.1, -0.1, 134217729.0]))
round_inputs = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).filter(lambda x: abs(x) < 1e12),
    st.sampled_from([0.5, -0.5, 2.5, -2.5, 0.15, -0.15, 2.675, 1.005, 0.125, -0.125, 1e-300,
                     0.0, -0.0, math.nan, math.inf, -math.inf, 25.0, 250.0, 1234.5]))
any_floats = st.one_of(st.floats(width=64), st.sampled_from([math.nan, 0.0, -0.0, math.inf]))

# ------------------------------------------------------------------------- hash table


def _hash_of(mode: str, slots: int):
    """The caller's hash of a key's bits: ``mix`` the engine's (null keys have bits 0,
    so they share their hash with key 0), ``clash`` three hashes in the last slots of
    the table (equal hashes of different keys, probes that wrap around)."""
    if mode == "mix":
        return lambda bits: slow.group_hash(bits)
    return lambda bits: (((slow.group_hash(bits) % 3) + slots - 2) % slots) << 20


@st.composite
def probe_cases(draw):
    unique = draw(st.booleans())
    nk = 1 if unique else draw(st.integers(1, 3))
    nulls = False if unique else draw(st.booleans())
    mode = "mix" if unique else draw(st.sampled_from(["mix", "clash"]))
    value = st.one_of(st.integers(-3, 3), int64s)
    col = st.tuples(value, st.booleans() if nulls else st.just(False))
    rows = draw(st.lists(st.lists(col, min_size=nk, max_size=nk), max_size=40))
    keys = [(tuple(0 if n else v for v, n in row), tuple(int(n) for _, n in row))
            for row in rows]
    return {"unique": unique, "nulls": nulls, "mode": mode, "nk": nk, "keys": keys}


def _check_probe(kernel, twin, case):
    """The keys probed one by one into an empty table (``unique``: one non-null key, a
    bijective hash): the kernel's group ids, and the groups' hashes, key bits and null
    flags, are the twin's; the table holds every group, and probing again finds them."""
    keys, nk, nulls, unique = case["keys"], case["nk"], case["nulls"], case["unique"]
    slots = _pow2_above(len(keys))
    h = _hash_of(case["mode"], slots)
    cap = len(keys) + 1
    table = hashtable.new_table(1, slots)[0]
    hashes = np.zeros(cap, np.uint64)
    kbits = np.zeros((cap, nk), np.int64)
    knull = np.zeros((cap, nk), np.uint8)

    def run(ng):
        out = []
        for bits, flags in keys:
            g = int(kernel(table, hashes, kbits, knull, tuple(np.int64(b) for b in bits),
                           tuple(np.uint8(f) for f in flags), np.uint64(h(bits)), ng, unique,
                           nulls))
            ng += g == ng
            out.append(g)
        return out, ng

    got, ng = run(0)
    want, groups = twin(keys, nulls)
    assert got == want
    assert ng == len(groups)
    assert kbits[:ng].tolist() == [list(b) for b, _ in groups]
    assert knull[:ng].tolist() == [list(f) for _, f in groups]
    assert hashes[:ng].tolist() == [h(b) for b, _ in groups]
    _group_table_holds(table, {g: h(b) for g, (b, _) in enumerate(groups)})
    assert run(ng) == (want, ng)  # every group found again, nothing inserted


@st.composite
def group_hashes(draw, ng: int, slots: int):
    """Hashes of ``ng`` groups: random ones, and ones whose home slots crowd the end of
    the table (equal hashes, probe paths that wrap around)."""
    crowd = st.integers(slots - 3, slots - 1).map(lambda s: (s % slots) << 20)
    return draw(st.lists(st.one_of(uint64s, crowd), min_size=ng, max_size=ng))


@st.composite
def partition_tables(draw):
    """Partitions' group counts and stored hashes, a garbage table to refill, the meta
    column that counts the groups."""
    parts = draw(st.integers(1, 3))
    slots = draw(st.sampled_from([2, 4, 8, 64]))
    ncol, ng_col = 3, draw(st.integers(0, 2))
    meta = np.array(draw(st.lists(st.lists(st.integers(0, slots // 2), min_size=ncol,
                                           max_size=ncol), min_size=parts, max_size=parts)),
                    np.int64)
    cap = slots // 2 + 2
    hashes = np.array([draw(group_hashes(cap, slots)) for _ in range(parts)], np.uint64)
    garbage = draw(st.integers(-2, 9))
    table = np.full((parts, slots, 2), garbage, np.int64)
    return {"table": table, "hashes": hashes, "meta": meta, "ng_col": ng_col, "slots": slots}


def _check_refill(kernel, twin, case):
    t = case["table"][0]
    ng = int(case["meta"][0, case["ng_col"]])
    kernel(t, case["hashes"][0], ng)
    _group_table_holds(t, twin(case["hashes"][0], ng))


def _check_rebuild_table(kernel, twin, case):
    kernel(case["table"], case["hashes"], case["meta"], case["ng_col"])
    for t, want in zip(case["table"], twin(case["hashes"], case["meta"], case["ng_col"]),
                       strict=True):
        _group_table_holds(t, want)


def _check_table_of(kernel, twin, case):
    meta = case["meta"][:, [case["ng_col"]]]
    table = kernel(case["hashes"], meta, case["slots"])
    assert table.shape == (len(meta), case["slots"], 2)
    for t, want in zip(table, twin(case["hashes"], meta, case["slots"]), strict=True):
        _group_table_holds(t, want)


def _check_slot_of(kernel, twin, case):
    h, bits = case
    _eq(int(kernel(np.uint64(h), np.int64(2**bits - 1))), twin(h, 2**bits - 1), case)


def _check_distinct_hash(kernel, twin, case):
    g, v = case
    _eq(int(kernel(np.int64(g), np.int64(v))), twin(g, v), case)


pairs = st.lists(st.tuples(st.integers(0, 4), st.one_of(st.integers(-2, 3), int64s)),
                 max_size=40)


def _check_distinct_insert(kernel, twin, pairs):
    """(group, value) pairs inserted one by one into an empty distinct set: new or not as
    the twin says, the new pairs stored as its entries, each found in the table."""
    slots = _pow2_above(len(pairs))
    dtab = np.full(slots, -1, np.int64)
    dgid = np.zeros(len(pairs) + 1, np.int64)
    dval = np.zeros(len(pairs) + 1, np.int64)
    nd, got = 0, []
    for g, v in pairs:
        new = bool(kernel(dtab, dgid, dval, np.int64(g), np.int64(v), nd))
        nd += new
        got.append(new)
    want, entries = twin(pairs)
    assert got == want
    assert list(zip(dgid[:nd].tolist(), dval[:nd].tolist())) == entries
    _table_holds(dtab, {e: slow.distinct_hash(g, v) for e, (g, v) in enumerate(entries)})


@st.composite
def distinct_tables(draw):
    parts = draw(st.integers(1, 3))
    slots = draw(st.sampled_from([2, 4, 16, 64]))
    cap = slots // 2
    nd_col = draw(st.integers(0, 2))
    meta = np.zeros((parts, 3), np.int64)
    meta[:, nd_col] = draw(st.lists(st.integers(0, cap), min_size=parts, max_size=parts))
    entry = st.tuples(st.integers(0, 5), st.one_of(st.integers(-2, 3), int64s))
    ent = [draw(st.lists(entry, min_size=cap, max_size=cap)) for _ in range(parts)]
    return {"dtab": np.full((parts, slots), draw(st.integers(-2, 5)), np.int64),
            "dgid": np.array([[g for g, _ in e] for e in ent], np.int64).reshape(parts, cap),
            "dval": np.array([[v for _, v in e] for e in ent], np.int64).reshape(parts, cap),
            "meta": meta, "nd_col": nd_col}


def _check_rebuild_distinct(kernel, twin, c):
    kernel(c["dtab"], c["dgid"], c["dval"], c["meta"], c["nd_col"])
    for t, want in zip(c["dtab"], twin(c["dgid"], c["dval"], c["meta"], c["nd_col"]),
                       strict=True):
        _table_holds(t, want)


@st.composite
def collect_cases(draw):
    parts = draw(st.integers(1, 5))
    ng_col = draw(st.integers(0, 1))
    meta = np.array(draw(st.lists(st.lists(st.integers(0, 6), min_size=2, max_size=2),
                                  min_size=parts, max_size=parts)), np.int64)
    return meta, ng_col


def _check_collect_all(kernel, twin, case):
    meta, ng_col = case
    total = int(meta[:, ng_col].sum())
    gids = np.full(total + 3, -9, np.int64)
    offsets = np.full(len(meta) + 1, -9, np.int64)
    kernel(meta, ng_col, gids, offsets)
    want, want_offsets = twin(meta, ng_col)
    assert gids[:total].tolist() == want
    assert offsets.tolist() == want_offsets


@st.composite
def direct_cases(draw):
    """Groups with distinct key codes (0: null, c: bits c - 1) that fit the key sizes,
    strides row-major (as the engine sets them)."""
    parts = draw(st.integers(1, 3))
    dims = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    nk = len(dims)
    strides = [int(np.prod(dims[j + 1:])) for j in range(nk)]
    code = st.tuples(*[st.integers(0, d - 1) for d in dims])
    groups = [draw(st.lists(code, unique=True, max_size=12)) for _ in range(parts)]
    cap = max(map(len, groups)) + 1
    kbits = np.array(draw(st.lists(st.integers(-5, 50), min_size=parts * cap * nk,
                                   max_size=parts * cap * nk)), np.int64).reshape(parts, cap, nk)
    knull = np.zeros((parts, cap, nk), np.uint8)
    meta = np.zeros((parts, 2), np.int64)
    for p, gs in enumerate(groups):
        meta[p, 0] = len(gs)
        for g, codes in enumerate(gs):
            for j, c in enumerate(codes):
                knull[p, g, j] = c == 0  # a null key's bits are whatever they are
                if c:
                    kbits[p, g, j] = c - 1
    ddims = np.array([[dims, strides]] * parts, np.int64)
    dmap = np.full((parts, int(np.prod(dims))), 7, np.int64)
    return dmap, kbits, knull, meta, ddims


def _check_rebuild_direct(kernel, twin, case):
    dmap, kbits, knull, meta, ddims = case
    kernel(dmap, kbits, knull, meta, ddims)
    assert dmap.tolist() == [m.tolist() for m in twin(kbits, knull, meta, ddims)]


# ---------------------------------------------------------------------------- windows
def _check_first_window(kernel, twin, case):
    t, slide, mult, half = case
    size = slide * mult if not half else slide * mult + slide // 2
    _eq(int(kernel(np.int64(t), size, slide)), twin(t, size, slide), (t, size, slide))


def _check_min_window(kernel, twin, case):
    w, ng = case
    ng = min(ng, len(w))
    _eq(int(kernel(np.array(w, np.int64), ng)), twin(w, ng), case)


def _check_watermarks(kernel, twin, case):
    rows, carry, has_mask = case
    ts = np.array([t for t, _ in rows], np.int64)
    valid = np.array([v for _, v in rows], np.bool_)
    out = np.full(len(rows), -7, np.int64)
    wm = kernel(ts, valid, has_mask, carry, out)
    ref, ref_wm = twin(ts.tolist(), valid.tolist() if has_mask else [True] * len(rows), carry)
    assert out.tolist() == ref and wm == ref_wm


def _check_first_outside(kernel, twin, case):
    rows, has_mask, limit = case
    ts = np.array([t for t, _ in rows], np.int64)
    valid = np.array([v for _, v in rows], np.bool_)
    got = kernel(ts, valid, has_mask, limit)
    assert got == twin(ts.tolist(), valid.tolist() if has_mask else [True] * len(rows), limit)


@st.composite
def window_order_cases(draw):
    w = draw(st.lists(st.integers(-3, 5), max_size=40))
    gids = sorted(draw(st.sets(st.integers(0, len(w) - 1))) if w else set())
    return gids, w


def _check_window_order(kernel, twin, case):
    gids, w = case
    got = kernel(np.array(gids, np.int64), np.array(w, np.int64)).tolist()
    assert got == twin(gids, w)


def _check_closing_gids(kernel, twin, case):
    starts, limit = case
    w = np.array(starts, np.int64)
    assert kernel(w, len(w), limit).tolist() == twin(starts, len(w), limit)


@st.composite
def drop_closed_cases(draw):
    groups = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 5)), min_size=1,
                           max_size=40, unique=True))
    ng = len(groups)
    touched = draw(st.lists(st.integers(0, ng - 1), unique=True, max_size=ng))
    entries = draw(st.lists(st.tuples(st.integers(0, ng - 1), st.integers(0, 9)),
                            unique=True, max_size=2 * ng))
    return groups, draw(st.integers(0, 6)), touched, entries


def _check_drop_closed(kernel, twin, case):
    """Closing windows frees the groups whose window starts at or before ``limit``: the
    kept groups move down in order with their hashes, key bits, null flags and packed
    states, the touched list and a distinct set are renumbered (as the twin says), and
    the refilled tables hold every kept group and entry."""
    groups, limit, touched, entries = case
    ng, cap = len(groups), 64
    S = [hashtable.new_table(1, 2 * cap), np.zeros((1, cap), np.uint64),
         np.zeros((1, cap, 2), np.int64), np.zeros((1, cap, 2), np.uint8),
         np.zeros((1, 3, cap + 8), np.int64), np.zeros((1, 1, cap + 8), np.float64),
         np.zeros((1, 1, cap + 64), np.uint8), np.zeros((1, 4), np.int64),
         np.full((1, 1, 2 * cap), -1, np.int64), np.zeros((1, 1, cap), np.int64),
         np.zeros((1, 1, cap), np.int64), np.full((1, 1), -1, np.int64),
         np.zeros((1, 2, 2), np.int64)]
    for g, (w, k) in enumerate(groups):
        # (w, k) are distinct keys; k = -1 stands for a null key 1 (its bits 0)
        S[L.HASHES][0, g] = np.uint64(slow.group_hash([w, max(k, 0)]))
        S[L.KBITS][0, g] = (w, max(k, 0))
        S[L.KNULL][0, g, 1] = k < 0
        S[L.I][0, :, g] = (1000 + g, w, -g)  # rows: a value, the window start, the tlist
        S[L.F][0, 0, g] = g / 2
        S[L.B][0, 0, g] = g % 7
    S[L.I][0, 2, :len(touched)] = touched
    for e, (g, v) in enumerate(entries):
        S[L.DGID][0, 0, e], S[L.DVAL][0, 0, e] = g, v
    S[L.META][0] = (ng, len(touched), len(entries), 0)
    hashtable.refill(S[L.TABLE][0], S[L.HASHES][0], ng)
    hashtable.rebuild_distinct(S[L.DTAB][:, 0], S[L.DGID][:, 0], S[L.DVAL][:, 0], S[L.META], 2)
    before = [a.copy() for a in S]
    freed = kernel(tuple(S), 0, S[L.KBITS][0][:, 0], limit, np.array([2], np.int64), 2)
    kept, tl, ent = twin([w for w, _ in groups], ng, limit, touched, entries)
    n = len(kept)
    assert freed == ng - n and S[L.META][0, 0] == n
    j = np.array(kept, np.int64)
    for a in (L.HASHES, L.KBITS, L.KNULL):
        assert (S[a][0, :n] == before[a][0, j]).all()
    assert (S[L.I][0, :2, :n] == before[L.I][0, :2, j].T).all()
    for a in (L.F, L.B):
        assert (S[a][0, :, :n] == before[a][0, :, j].T).all()
    assert S[L.I][0, 2, :S[L.META][0, 1]].tolist() == tl
    nd = S[L.META][0, 2]
    assert list(zip(S[L.DGID][0, 0, :nd].tolist(), S[L.DVAL][0, 0, :nd].tolist())) == ent
    _group_table_holds(S[L.TABLE][0], slow.refill(S[L.HASHES][0], n))
    _table_holds(S[L.DTAB][0, 0], {e: slow.distinct_hash(g, v) for e, (g, v) in enumerate(ent)})
    for g in range(n):  # the refilled table finds every kept group, by its key
        kv = (np.int64(S[L.KBITS][0, g, 0]), np.int64(S[L.KBITS][0, g, 1]))
        kn = (np.uint8(0), np.uint8(S[L.KNULL][0, g, 1]))
        assert hashtable.probe(S[L.TABLE][0], S[L.HASHES][0], S[L.KBITS][0], S[L.KNULL][0],
                               kv, kn, S[L.HASHES][0, g], n, False, True) == g


session_rows = st.tuples(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60)),
                                  max_size=40), st.integers(1, 12), st.integers(0, 10))


def _check_assign_sessions(kernel, twin, case):
    rows, gap, lateness = case
    keys = np.array([k for k, _ in rows], np.int64)
    ts = np.array([t for _, t in rows], np.int64)
    wm = np.concatenate([[slow.NO_WATERMARK], np.maximum.accumulate(ts)[:-1]]).astype(
        np.int64) if len(rows) else np.zeros(0, np.int64)
    n = len(rows)
    arrs = [np.zeros(n + 1, np.int64) for _ in range(3)]
    alive = np.zeros(n + 1, np.uint8)
    parent, skey = np.zeros(n + 1, np.int64), np.zeros(n + 1, np.int64)
    head, nxt = np.full(3, -1, np.int64), np.full(n + 1, -1, np.int64)
    out = np.empty(n, np.int64)
    _, nlate = kernel(keys, ts, wm, np.arange(n, dtype=np.int64), gap, lateness, *arrs,
                      alive, parent, skey, head, nxt, 0, out)
    roots = []
    for s in out.tolist():
        while s >= 0 and parent[s] != s:
            s = parent[s]
        roots.append(s)
    ref = twin(keys.tolist(), ts.tolist(), wm.tolist(), gap, lateness)
    assert roots == ref
    assert nlate == ref.count(-1)


def _check_session_lists(kernel, twin, skey):
    n = len(skey)
    head, nxt = np.zeros(5, np.int64), np.zeros(n + 1, np.int64)
    kernel(np.array(skey + [0], np.int64), n, head, nxt)
    want = twin(skey, n)
    for k in range(5):
        got, s = [], int(head[k])
        while s >= 0:
            got.append(s)
            s = int(nxt[s])
        assert got == want.get(k, []), k


# ------------------------------------------------------------------------------ order
@st.composite
def dealt_rows(draw, filtered: bool):
    n = draw(st.integers(0, 60))
    parts = draw(st.integers(1, 5))
    pid = draw(st.lists(st.integers(-1 if filtered else 0, parts - 1), min_size=n,
                        max_size=n))
    gaps = draw(st.lists(st.integers(0, 3), min_size=parts, max_size=parts))
    return (n, *dealt_rows_of(pid, gaps, n), draw(st.integers(1, 3)),
            draw(st.sampled_from([1, 2, 7])))


def _check_input_order(kernel, twin, case):
    n, orow, starts, counts, runs, _, _ = case
    pos = np.full(len(orow), -7, np.int64)
    sel = np.full(len(orow), -7, np.int64)
    m = kernel(np.array(orow, np.int64), np.array(starts, np.int64),
               np.array(counts, np.int64), np.zeros(n, np.int64), pos, sel)
    ref_pos, ref_sel = twin(orow, runs)
    assert pos[:m].tolist() == ref_pos
    if m < n:  # else every input row has its row: sel is not written (0, 1, ...)
        assert sel[:m].tolist() == ref_sel


@st.composite
def ranged_rows(draw):
    """Rows 0..n-1 cut into contiguous ranges, one per partition, some rows filtered out
    (what partitions of a stateless query leave)."""
    n = draw(st.integers(0, 60))
    parts = draw(st.integers(1, 5))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=parts - 1,
                                max_size=parts - 1)))
    bounds = [0, *cuts, n]
    kept = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    pid = [-1 if not kept[i] else next(p for p in range(parts) if i < bounds[p + 1])
           for i in range(n)]
    gaps = draw(st.lists(st.integers(0, 3), min_size=parts, max_size=parts))
    return (n, *dealt_rows_of(pid, gaps, n))


def _check_concat_rows(kernel, twin, case):
    n, orow, starts, counts, runs = case
    rng = np.random.default_rng(n)
    args = (np.array(starts, np.int64), np.array(counts, np.int64))
    for dtype in _DTYPES:
        src = _pack(rng, dtype, (2, len(orow)))
        dst = np.zeros((2, sum(counts)), dtype)
        kernel(src, *args, dst)
        assert dst.tolist() == twin(src.tolist(), runs)
    # runs in input order: the same as putting the rows back into input order
    sel = np.zeros((1, sum(counts)), np.int64)
    kernel(np.array([orow], np.int64), *args, sel)
    assert sel[0].tolist() == slow.input_order(orow, runs)[1]


take_cases = st.tuples(st.lists(st.integers(0, 39), max_size=50), st.integers(1, 40),
                       st.sampled_from([1, 3, 64]))


def _check_take_rows_parallel(kernel, twin, case):
    sel, n, chunks = case
    sel = [i % n for i in sel]
    rng = np.random.default_rng(n)
    for dtype in (*_DTYPES, np.int32, np.uint8):
        src = _pack(rng, dtype, n)
        dst = np.zeros(len(sel), dtype)
        args = (src, np.array(sel, np.int64), dst)
        kernel(*args, chunks)
        assert dst.tolist() == twin(src.tolist(), sel)


_DTYPES = (np.int64, np.float64, np.bool_)


def _pack(rng, dtype, shape):
    return rng.integers(0, 2 if dtype is np.bool_ else 1000, shape).astype(dtype)


def _check_scatter_rows(kernel, twin, case, parallel=False):
    n, orow, starts, counts, runs, nrows, chunks = case
    rng = np.random.default_rng(n)
    for dtype in _DTYPES:
        src = _pack(rng, dtype, (nrows, len(orow)))
        dst = np.zeros((nrows, n), dtype)
        args = (src, np.array(orow, np.int64), np.array(starts, np.int64),
                np.array(counts, np.int64), dst)
        kernel(*args, chunks) if parallel else kernel(*args)
        assert dst.tolist() == twin(src.tolist(), orow, runs)


def _check_scatter_rows_parallel(kernel, twin, case):
    _check_scatter_rows(kernel, twin, case, parallel=True)


gather_cases = st.tuples(st.lists(st.integers(0, 39), max_size=50), st.integers(1, 40),
                         st.integers(1, 3), st.sampled_from([1, 3, 64]))


def _check_gather_rows(kernel, twin, case, parallel=False):
    pos, slots, nrows, chunks = case
    pos = [p % slots for p in pos]
    rng = np.random.default_rng(slots)
    for dtype in _DTYPES:
        src = _pack(rng, dtype, (nrows, slots))
        dst = np.zeros((nrows, len(pos)), dtype)
        args = (src, np.array(pos, np.int64), dst)
        kernel(*args, chunks) if parallel else kernel(*args)
        assert dst.tolist() == twin(src.tolist(), pos)


def _check_gather_rows_parallel(kernel, twin, case):
    _check_gather_rows(kernel, twin, case, parallel=True)


merge_cases = st.tuples(
    st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)), max_size=12),
                       st.integers(0, 3)), min_size=1, max_size=9),
    st.sampled_from([1, 2, 3, 7]))


def _check_merge_runs(kernel, twin, case, parallel=False):
    """Runs written at gaps in the packs (as partitions do), each sorted by (win, seq):
    the positions come back in (win, seq) order, ties in run order."""
    runs, chunks = case
    win, seq, bounds = runs_at_gaps(runs)
    out, tmp = np.full(len(win), -7, np.int64), np.full(len(win), -7, np.int64)
    args = (np.array(win, np.int64), np.array(seq, np.int64),
            np.array([a for a, _ in bounds], np.int64),
            np.array([b for _, b in bounds], np.int64), out, tmp)
    k = kernel(*args, chunks) if parallel else kernel(*args)
    assert out[:k].tolist() == twin(win, seq, bounds)


def _check_merge_runs_parallel(kernel, twin, case):
    _check_merge_runs(kernel, twin, case, parallel=True)


# ------------------------------------------------------------------------------ table
#: (kernel module, kernel name) -> its twin, its cases, the comparison. The one place
#: that says which twin belongs to which kernel.
TWINS: dict[tuple[str, str], Twin] = {
    ("scalar", "mix64"): Twin(slow.mix64, uint64s, _check_mix64),
    ("scalar", "fold"): Twin(slow.fold, st.tuples(uint64s, int64s), _check_fold),
    ("scalar", "float_key_bits"): Twin(slow.float_key_bits, any_floats,
                                       _check_float_key_bits),
    ("scalar", "int_div"): Twin(slow.int_div, st.tuples(int64s, nonzero), _check_binary,
                                pinned=((INT64_MIN, -1), (-7, 2), (7, -2))),
    ("scalar", "int_mod"): Twin(slow.int_mod, st.tuples(int64s, nonzero), _check_binary,
                                pinned=((INT64_MIN, -1), (-7, 2), (7, -2))),
    ("scalar", "two_prod_err"): Twin(slow.two_prod_err, st.tuples(moderate, moderate),
                                     _check_binary),
    ("scalar", "round_half_away"): Twin(
        slow.round_half_away, st.tuples(round_inputs, st.integers(-4, 6)), _check_binary,
        # ax / 10**-d just below a half, rounded up to it (gave 100.0, -1000.0, 100000.0);
        # 10**-d past the largest double (gave NaN)
        pinned=((49.99999999999999, -2), (-499.99999999999994, -3), (49999.99999999999, -5),
                (0.49999999999999994, 0), (25.0, -1), (-250.0, -2), (3.0, -400), (-1e308, -309))),
    ("scalar", "round_int"): Twin(slow.round_int, st.tuples(int64s, st.integers(-25, 3)),
                                  _check_binary),
    ("scalar", "float_to_int"): Twin(slow.float_to_int, st.one_of(
        any_floats, st.sampled_from([0.5, 1.5, 2.5, -0.5, -2.5, 9.3e18, -9.3e18, 2.0**63,
                                     -(2.0**63)])), _check_float_to_int),
    ("scalar", "f_lt"): Twin(slow.f_lt, st.tuples(any_floats, any_floats), _check_binary),
    ("scalar", "f_eq"): Twin(slow.f_eq, st.tuples(any_floats, any_floats), _check_binary),
    ("scalar", "f_le"): Twin(slow.f_le, st.tuples(any_floats, any_floats), _check_binary),
    ("hashtable", "slot_of"): Twin(slow.slot_of, st.tuples(uint64s, st.integers(0, 40)),
                                   _check_slot_of),
    ("hashtable", "probe"): Twin(slow.probe, probe_cases(), _check_probe),
    ("hashtable", "refill"): Twin(slow.refill, partition_tables(), _check_refill),
    ("hashtable", "rebuild_table"): Twin(slow.rebuild_table, partition_tables(),
                                         _check_rebuild_table),
    ("hashtable", "table_of"): Twin(slow.table_of, partition_tables(), _check_table_of),
    ("hashtable", "distinct_hash"): Twin(slow.distinct_hash,
                                         st.tuples(st.integers(0, 2**40), int64s),
                                         _check_distinct_hash),
    ("hashtable", "distinct_insert"): Twin(slow.distinct_insert, pairs,
                                           _check_distinct_insert),
    ("hashtable", "rebuild_distinct"): Twin(slow.rebuild_distinct, distinct_tables(),
                                            _check_rebuild_distinct),
    ("hashtable", "collect_all"): Twin(slow.collect_all, collect_cases(),
                                       _check_collect_all),
    ("hashtable", "rebuild_direct"): Twin(slow.rebuild_direct, direct_cases(),
                                          _check_rebuild_direct),
    ("windows", "first_window"): Twin(slow.first_window, st.tuples(
        times, st.integers(1, 10**6), st.integers(1, 40), st.booleans()),
        _check_first_window),
    ("windows", "min_window"): Twin(slow.min_window, st.tuples(
        st.lists(st.one_of(times, int64s), max_size=30), st.integers(0, 30)),
        _check_min_window),
    ("windows", "watermarks"): Twin(slow.watermarks, st.tuples(
        st.lists(st.tuples(times, st.booleans()), max_size=60), times, st.booleans()),
        _check_watermarks),
    ("windows", "first_outside"): Twin(slow.first_outside, st.tuples(
        st.lists(st.tuples(int64s, st.booleans()), max_size=30), st.booleans(),
        st.sampled_from([1, 2**40, 2**62, 2**63 - 1])), _check_first_outside),
    ("windows", "window_order"): Twin(slow.window_order, window_order_cases(),
                                      _check_window_order),
    ("windows", "closing_gids"): Twin(slow.closing_gids, st.tuples(
        st.lists(st.integers(0, 8), max_size=50), st.integers(-1, 9)), _check_closing_gids),
    ("windows", "drop_closed"): Twin(slow.drop_closed, drop_closed_cases(),
                                     _check_drop_closed),
    ("windows", "assign_sessions"): Twin(slow.assign_sessions, session_rows,
                                         _check_assign_sessions, examples=200),
    ("windows", "session_lists"): Twin(slow.session_lists,
                                       st.lists(st.integers(0, 4), max_size=30),
                                       _check_session_lists),
    ("order", "input_order"): Twin(slow.input_order, dealt_rows(True), _check_input_order),
    ("order", "scatter_rows"): Twin(slow.scatter_rows, dealt_rows(False),
                                    _check_scatter_rows),
    ("order", "scatter_rows_parallel"): Twin(slow.scatter_rows, dealt_rows(False),
                                             _check_scatter_rows_parallel, examples=25),
    ("order", "concat_rows"): Twin(slow.concat_rows, ranged_rows(), _check_concat_rows),
    ("order", "concat_rows_parallel"): Twin(slow.concat_rows, ranged_rows(),
                                            _check_concat_rows, examples=25),
    ("order", "take_rows_parallel"): Twin(slow.take_rows, take_cases,
                                          _check_take_rows_parallel, examples=25),
    ("order", "gather_rows"): Twin(slow.gather_rows, gather_cases, _check_gather_rows),
    ("order", "gather_rows_parallel"): Twin(slow.gather_rows, gather_cases,
                                            _check_gather_rows_parallel, examples=25),
    ("order", "merge_runs"): Twin(slow.merge_runs, merge_cases, _check_merge_runs),
    ("order", "merge_runs_parallel"): Twin(slow.merge_runs, merge_cases,
                                           _check_merge_runs_parallel, examples=25),
}

#: Kernels held to no twin, each with the reason.
EXEMPT: dict[tuple[str, str], str] = {
    ("scalar", "nonneg"): "intrinsic: an llvm.assume hint, the value passes unchanged "
                          "(test_kernels.py::test_nonneg_index_reads_the_same_elements)",
    ("hashtable", "prefetch"): "intrinsic: a cache hint (llvm.prefetch) that computes and "
                               "changes nothing",
    ("calls", "call_pair"): "intrinsic: calls a compiled kernel through its address; it "
                            "computes nothing itself (the queries that run through it are "
                            "checked against DuckDB in test_differential.py)",
    ("calls", "call_int"): "intrinsic: as call_pair, for a kernel returning an int64",
}

#: Modules under velokern/kernels/ that hold no hand-written kernels: the code generator
#: and its compiler, the aggregate registry (held to its reference in test_kernels.py),
#: and the twins themselves.
NOT_KERNEL_MODULES = {"codegen", "compiler", "aggregates", "slow"}


def kernel_modules() -> list[str]:
    """Every module under velokern/kernels/ (subpackages too) but NOT_KERNEL_MODULES."""
    out = []
    for info in pkgutil.walk_packages(velokern.kernels.__path__, "velokern.kernels."):
        short = info.name.removeprefix("velokern.kernels.")
        if short.split(".")[0] not in NOT_KERNEL_MODULES:
            out.append(short)
    return sorted(out)


def kernels_defined_in(module: types.ModuleType) -> list[str]:
    """Names of the public numba kernels (jitted functions, ufuncs, intrinsics) that
    ``module`` defines (not those it imports)."""
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, Dispatcher):
            origin = obj.py_func.__module__
        elif isinstance(obj, (UfuncBase, _Intrinsic)):
            origin = getattr(obj, "__module__", module.__name__)
        else:
            continue
        if origin == module.__name__:
            out.append(name)
    return out


def missing_twins(modules: dict[str, types.ModuleType]) -> list[str]:
    return [f"{short}.{name}" for short, mod in modules.items()
            for name in kernels_defined_in(mod)
            if (short, name) not in TWINS and (short, name) not in EXEMPT]


def _kernel(key: tuple[str, str]):
    return getattr(importlib.import_module(f"velokern.kernels.{key[0]}"), key[1])


@pytest.mark.parametrize("key", list(TWINS), ids=[f"{m}.{n}" for m, n in TWINS])
def test_kernel_matches_twin(key):
    kernel, row = _kernel(key), TWINS[key]
    for case in row.pinned:
        row.check(kernel, row.twin, case)

    @settings(max_examples=row.examples, deadline=None)
    @given(row.cases)
    def holds(case):
        row.check(kernel, row.twin, case)

    # each row its own examples in hypothesis's database
    holds.hypothesis.inner_test._hypothesis_internal_add_digest = repr(key).encode()
    holds()


def test_every_kernel_has_a_twin():
    names = kernel_modules()
    assert {"scalar", "hashtable", "windows", "order", "calls"} <= set(names)
    modules = {n: importlib.import_module(f"velokern.kernels.{n}") for n in names}
    missing = missing_twins(modules)
    assert not missing, (f"kernels with no slow twin in TWINS (tests/test_twins.py) nor "
                         f"a reason in EXEMPT: {', '.join(missing)}")


def test_table_rows_name_kernels():
    """No stale row: each names an existing function, a twin of velokern.kernels.slow,
    and no kernel is both twinned and exempt."""
    assert not set(TWINS) & set(EXEMPT)
    for key in [*TWINS, *EXEMPT]:
        assert callable(_kernel(key)), key
    for key, row in TWINS.items():
        assert row.twin.__module__.startswith("velokern.kernels.slow"), key
        assert getattr(slow, row.twin.__name__) is row.twin, key


def test_a_new_kernel_without_a_twin_is_named():
    """The check above catches a kernel it has never seen: a jitted function and a ufunc
    in a new module are named, one imported from elsewhere and a private one are not."""
    from numba import vectorize

    mod = types.ModuleType("velokern.kernels.fresh")

    def shout(x):
        return x + 1

    def _helper(x):
        return x

    shout.__module__ = _helper.__module__ = mod.__name__
    mod.shout, mod._helper = njit(shout), njit(_helper)
    mod.twice = vectorize(lambda x: 2 * x)
    mod.twice.__module__ = mod.__name__
    mod.group_hash = slow.group_hash  # a plain function: not a kernel
    mod.probe = hashtable.probe  # imported: belongs to hashtable
    assert missing_twins({"fresh": mod}) == ["fresh.shout", "fresh.twice"]
