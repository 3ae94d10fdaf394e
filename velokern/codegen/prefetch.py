"""Prefetching for GROUP BY over a large hash table (no window, no direct map).

Row ``j + PF_AHEAD``'s key is hashed (``row_hash``) and its table slot prefetched; at
row ``j + PF_AHEAD / 2`` the slot is read (in cache by then) and that group's state
prefetched. Hints only: a wrong guess (a filtered row, a new key, a collision) costs a
wasted load, never a result. Prefetching runs only from PF_MIN_SLOTS table slots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velokern.codegen.common import indent, prologue_inputs
from velokern.codegen.keys import hash_lines, key_bits, unique_hash

if TYPE_CHECKING:
    from velokern.codegen.aggregate import AggregateGen

_RING = "ring[{j} % (2 * PF_AHEAD)]"  # the hash of row j, kept PF_AHEAD rows


def _row_hash(ag: AggregateGen) -> list[str]:
    """``row_hash(C, M, R, i)``: the hash table's hash of row ``i``'s keys."""
    h = ag.gen()
    hbits = [key_bits(h, e, t)[0] for e, t in zip(ag.bq.keys, ag.bq.key_types)]
    for ln in hash_lines(hbits):
        h.emit(ln)
    src = ["@njit(inline=\"always\", **JIT)", "def row_hash(C, M, R, i):"]
    return src + indent(prologue_inputs(ag.spec) + h.lines + ["return h"], 4) + ["", ""]


def _per_row_arrays(ag: AggregateGen) -> list[str]:
    """The arrays the update loop reads for every row of a known group."""
    return [a.name for a in ag.st.arrays if a.name not in ("first_seq", "tlist", "touched")
            and not a.name.startswith("kv")
            and not (a.pack == "I" and a.row in ag.spec.unmaintained_counts)]


def prefetch_parts(ag: AggregateGen) -> tuple[list[str], list[str], list[str]]:
    """(the ``row_hash`` function, ``update_part``'s prologue lines, its loop lines);
    all empty where the query does not prefetch."""
    if ag.K == 0 or ag.direct or ag.win is not None:
        return [], [], []
    pro = [
        "pf_on = len(table) >= PF_MIN_SLOTS",
        "tmask = len(table) - 1",
        "ring = np.empty(2 * PF_AHEAD, np.uint64)",
        "if pf_on:",
        "    for jj in range(start, min(start + PF_AHEAD, end)):",
        f"        {_RING.format(j='jj')} = row_hash(C, M, R, idx[jj] if use_idx else jj)",
    ]
    loop = [
        "if pf_on:",
        "    ja = j + PF_AHEAD",
        "    if ja < end:",
        "        ha = row_hash(C, M, R, idx[ja] if use_idx else ja)",
        f"        {_RING.format(j='ja')} = ha",
        "        prefetch(table, 2 * slot_of(ha, tmask))",
        "    jb = j + PF_AHEAD // 2",
        "    if jb < end:",
        f"        gb = table[slot_of({_RING.format(j='jb')}, tmask), 0]",
        "        if gb >= 0:",
    ] + ([] if unique_hash(ag.kbs) else [  # a unique hash's probe reads no key bits
        f"            prefetch(kbits, gb * {ag.K})",
        f"            prefetch(knull, gb * {ag.K})",
    ]) + [f"            prefetch({name}, gb)" for name in _per_row_arrays(ag)]
    return _row_hash(ag), pro, loop


__all__ = ["prefetch_parts"]
