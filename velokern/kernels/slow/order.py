"""Slow twins of :mod:`velokern.kernels.order`: output orders by sorting, packs as
lists of rows."""

from __future__ import annotations


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


def concat_rows(src, runs):
    """The rows of ``src`` with the columns of the runs ``[(a, b), ...]``, run after run
    (the runs hold contiguous ranges of input rows, in order)."""
    cols = [k for a, b in runs for k in range(a, b)]
    return [[row[k] for k in cols] for row in src]


def take_rows(src, sel):
    """``src`` at the rows ``sel``."""
    return [src[i] for i in sel]


def gather_rows(src, pos):
    """The rows of ``src`` with column k taken from column ``pos[k]``."""
    return [[row[p] for p in pos] for row in src]


def scatter_rows(src, orow, runs):
    """The rows of ``src`` with column k moved to column ``orow[k]``, for the columns k
    of the runs ``[(a, b), ...]`` (which cover every input row once)."""
    cols = {orow[k]: k for a, b in runs for k in range(a, b)}
    return [[row[cols[i]] for i in range(len(cols))] for row in src]


__all__ = ["concat_rows", "gather_rows", "input_order", "merge_runs", "scatter_rows",
           "take_rows"]
