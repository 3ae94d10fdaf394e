"""Slow twins of :mod:`velokern.kernels.windows`: windows by enumeration, orders by
sorting, sessions by keeping every session in a list."""

from __future__ import annotations

INT64_MAX = 2**63 - 1
NO_WATERMARK = -(2**63)


def first_outside(ts, valid, limit) -> int:
    """The first row whose valid time is not strictly between -limit and limit, or -1."""
    return next((i for i, (t, ok) in enumerate(zip(ts, valid)) if ok and abs(t) >= limit),
                -1)


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


def first_window(t: int, size: int, slide: int) -> int:
    """Start of the earliest window that covers ``t``."""
    return min(window_starts(t, size, slide))


def min_window(wstart, ng: int) -> int:
    """Smallest window start of the first ``ng`` groups (int64 max when none)."""
    return min((int(w) for w in wstart[:ng]), default=INT64_MAX)


def window_order(gids, wstart) -> list[int]:
    """The groups ``gids`` by window start, ties in id order."""
    return sorted(gids, key=lambda g: (wstart[g], g))


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


def session_lists(skey, n: int) -> dict[int, list[int]]:
    """Each key's sessions among ``0..n-1`` (session s has key ``skey[s]``), newest first."""
    lists: dict[int, list[int]] = {}
    for s in range(n):
        lists.setdefault(int(skey[s]), []).insert(0, s)
    return lists


__all__ = ["NO_WATERMARK", "assign_sessions", "closing_gids", "drop_closed", "first_outside",
           "first_window", "min_window", "session_lists", "watermarks", "window_order",
           "window_starts"]
