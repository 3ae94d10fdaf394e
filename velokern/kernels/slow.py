"""Slow pure-Python twins of the scalar, window and output-order kernels
(bottleneck-style), for the tests.

Each function computes the same value as its namesake in
:mod:`velokern.kernels.scalar`, in the simplest exact way (Decimal arithmetic for
rounding), so the fast version can be held to it.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal

_EXACT = Context(prec=800)  # enough digits for any double

MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def fold(h: int, key: int) -> int:
    return (h * 0x9FB21C651E98DF25 + (key & MASK64)) & MASK64


def group_hash(keys) -> int:
    """Hash of a group's key bits in the group-by tables: mix64 of the keys folded."""
    h = 0
    for k in keys:
        h = fold(h, k)
    return mix64(h)


def wrap64(v: int) -> int:
    """An exact integer wrapped to int64 (two's complement), as the kernels overflow."""
    return (v + 2**63) % 2**64 - 2**63


def int_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return wrap64(q if (a >= 0) == (b >= 0) else -q)


def int_mod(a: int, b: int) -> int:
    return wrap64(a - b * int_div(a, b))


def round_int(x: int, digits: int) -> int:
    """ROUND(x, digits) of an integer: half away from zero, wrapped to int64."""
    if digits >= 0:
        return x
    p = 10 ** -digits
    q, r = divmod(abs(x), p)
    if 2 * r >= p:
        q += 1
    return wrap64(q * p if x >= 0 else -q * p)


def round_half_away(x: float, digits: int) -> float:
    if not math.isfinite(x):
        return x
    q = Decimal(1).scaleb(-digits)
    return float(Decimal(x).quantize(q, rounding=ROUND_HALF_UP, context=_EXACT))


def float_to_int(x: float) -> tuple[int, bool]:
    if not math.isfinite(x):
        return 0, True
    r = int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_EXACT))
    if not -(2**63) <= r < 2**63:
        return 0, True
    return r, False


def f_lt(a: float, b: float) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b


def f_eq(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def float_key_bits(x: float) -> int:
    import struct

    if x == 0.0:
        return 0
    if math.isnan(x):
        return 0x7FF8000000000000
    return struct.unpack("<q", struct.pack("<d", x))[0]


# --------------------------------------------------------------------------- windows
NO_WATERMARK = -(2**63)


def watermarks(ts, valid, carry):
    """(per-record watermark, final watermark): the largest earlier valid time."""
    out, wm = [], carry
    for t, ok in zip(ts, valid):
        out.append(wm)
        if ok:
            wm = max(wm, int(t))
    return out, wm


def window_starts(t: int, size: int, slide: int) -> list[int]:
    """Starts of the windows [s, s + size) that cover time ``t``, s a multiple of slide."""
    return [s for s in range((t // slide - size // slide - 1) * slide, t + 1, slide)
            if s <= t < s + size]


def closing_gids(wstart, ng: int, limit: int) -> list[int]:
    """Groups whose window starts at or before ``limit``, by (window start, id)."""
    return sorted((g for g in range(ng) if wstart[g] <= limit), key=lambda g: (wstart[g], g))


def drop_closed(wstart, ng: int, limit: int, touched: list[int], entries) -> tuple:
    """Groups kept when the windows starting at or before ``limit`` close, as (old ids
    of the kept groups in order, the touched list renumbered, distinct entries
    ``[(group, value), ...]`` of kept groups renumbered, in order)."""
    kept = [g for g in range(ng) if wstart[g] > limit]
    new = {g: j for j, g in enumerate(kept)}
    return (kept, [new[g] for g in touched if g in new],
            [(new[g], v) for g, v in entries if g in new])


def merge_runs(win, seq, runs) -> list[int]:
    """Positions of the rows of the runs ``[(a, b), ...]`` ordered by (win, seq), ties in
    run order."""
    rows = [k for a, b in runs for k in range(a, b)]
    return sorted(rows, key=lambda k: (win[k], seq[k]))  # stable: ties in run order


def input_order(orow, runs) -> tuple[list[int], list[int]]:
    """(positions, input rows) of the rows of the runs ``[(a, b), ...]`` (pack row k
    belongs to input row ``orow[k]``), by input row: a sort."""
    rows = sorted((orow[k], k) for a, b in runs for k in range(a, b))
    return [k for _, k in rows], [i for i, _ in rows]


def gather_rows(src, pos):
    """The rows of ``src`` with column k taken from column ``pos[k]``."""
    return [[row[p] for p in pos] for row in src]


def scatter_rows(src, orow, runs):
    """The rows of ``src`` with column k moved to column ``orow[k]``, for the columns k
    of the runs ``[(a, b), ...]`` (which cover every input row once)."""
    cols = {orow[k]: k for a, b in runs for k in range(a, b)}
    return [[row[cols[i]] for i in range(len(cols))] for row in src]


def assign_sessions(keys, ts, wm, gap: int, lateness: int) -> list[int]:
    """Session of every record (-1: late), sessions numbered in order of creation, a
    merged session keeping the number of the one whose first record came first."""
    sessions: list[dict] = []  # key, start, end, first, alive, parent
    out = []
    for r, (k, t, w) in enumerate(zip(keys, ts, wm)):
        hits = [s for s in sessions if s["key"] == k and s["alive"] and
                s["end"] + lateness > w and t < s["end"] and t + gap > s["start"]]
        if not hits:
            if t + gap + lateness <= w:
                out.append(-1)
                continue
            sessions.append({"id": len(sessions), "key": k, "start": t, "end": t + gap,
                             "first": r, "alive": True, "parent": None})
            out.append(len(sessions) - 1)
            continue
        target = min(hits, key=lambda s: s["first"])
        for s in hits:
            if s is not target:
                s["alive"], s["parent"] = False, target["id"]
        target["start"] = min([t] + [s["start"] for s in hits])
        target["end"] = max([t + gap] + [s["end"] for s in hits])
        target["first"] = min(s["first"] for s in hits)
        out.append(target["id"])

    def root(i):
        while sessions[i]["parent"] is not None:
            i = sessions[i]["parent"]
        return i

    return [root(i) if i >= 0 else -1 for i in out]
