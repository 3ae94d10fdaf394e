"""The state layout by name: the one module that knows positions.

A keyed query's state (GROUP BY, time windows, ROWS windows) is one tuple ``S`` of
arrays, each with the partition as its first axis. The slots of ``S``, the columns of
its ``meta`` array and the rows of its ``I``/``F``/``B`` packs are named here; the code
generator, the hand-written kernels and the engine index them only through these names
(plain ints, not an IntEnum: numba indexes a heterogeneous tuple only with a constant
it can read at compile time, and it reads a global int but not an enum member).

A fixed, short tuple keeps numba's parallel compilation fast (its cost grows steeply
with the number of arrays in a tuple), so every per-group int64/float64/uint8 array of
a query is a row of one ``[partitions, rows, capacity]`` pack.
"""

from __future__ import annotations

# ---------------------------------------------------------------- slots of S
TABLE = 0  # [P, slots, 2] int64: (group id, hash) per hash-table slot
HASHES = 1  # [P, capacity] uint64: each group's hash
KBITS = 2  # [P, capacity, keys] int64: each group's key bits
KNULL = 3  # [P, capacity, keys] uint8: each group's key null flags
I = 4
F = 5  # [P, rows, capacity] float64 pack
B = 6  # [P, rows, capacity] uint8 pack
META = 7  # [P, columns] int64: counters (see the meta columns below)
DTAB = 8  # [P, distinct sets, slots] int64: COUNT(DISTINCT) hash tables
DGID = 9  # [P, distinct sets, capacity] int64: group of each distinct entry
DVAL = 10  # [P, distinct sets, capacity] int64: value bits of each distinct entry
DMAP = 11  # [P, slots] int64: direct map from combined key codes to group ids
DDIMS = 12  # [P, 2, keys] int64: the direct map's per-key sizes and strides

#: names of the slots of S, in order (the generated kernels bind them by these names)
STATE_SLOTS = ("table", "hashes", "kbits", "knull", "I", "F", "B", "meta", "dtab", "dgid",
               "dval", "dmap", "ddims")
#: the slot of each per-group pack
PACK_SLOTS = {"I": I, "F": F, "B": B}
#: slots past the capacity in each pack's rows (one cache line), so that the same group's
#: value in consecutive rows does not fall in one L1 cache set (see KeyedState.ensure)
PACK_PAD = {I: 8, F: 8, B: 64}
#: the pack that holds a per-group array of each storage dtype
PACKS = {"int64": "I", "int32": "I", "float64": "F", "uint8": "B"}

# ---------------------------------------------------------------- meta columns
NGROUPS = 0  # live groups of the partition
FILTERED = 2  # records WHERE dropped (kept in state: no per-batch work)
# GROUP BY and time windows
NTOUCHED = 1  # entries of the touched list (EMIT CHANGES)
NLATE = 3  # late records of the batch in flight (their rows are in LATEBUF)
NOTIME = 4  # records without an event time
NOUT = 5  # rows the batch in flight has emitted so far (windows closed mid-batch)
# ROWS windows
ROWS_NOUT = 1  # output rows the batch in flight has written so far


# ---------------------------------------------------------------- direct map dims
DIM_SIZE = 0  # ddims[p, DIM_SIZE, j]: codes key j's axis of the map holds
DIM_STRIDE = 1  # ddims[p, DIM_STRIDE, j]: slots between neighbouring codes of key j

# ---------------------------------------------------------------- runtime constants R
R_LITERALS = 0  # int64 codes of the query's string literals
R_RANKS = 1  # R[R_RANKS + k]: the dictionary ranks of rank column k (string order)
# a windowed query's R ends with three more (a ROWS query with a state TTL too: its TTL in
# ticks in place of the lateness, and no late rows)
R_WINDOW = -3  # [lateness (ROWS: TTL) in ticks, watermark after the batch]
R_MARKS = -2  # each record's watermark (the largest event time before it)
R_LATE = -1  # slots for the row numbers of the batch's late records
WIN_LATENESS = 0  # R[R_WINDOW][WIN_LATENESS]
WIN_WATERMARK = 1  # R[R_WINDOW][WIN_WATERMARK]


def aggregate_meta(windowed: bool) -> dict[str, int]:
    """The fixed meta columns of a GROUP BY query's state (a query appends a column per
    COUNT(DISTINCT) set, ``a{i}_nd``, and ``direct`` when it uses the direct map)."""
    cols = {"ngroups": NGROUPS, "ntouched": NTOUCHED, "filtered": FILTERED}
    if windowed:
        cols.update(nlate=NLATE, notime=NOTIME, nout=NOUT)
    return cols


def rows_meta() -> dict[str, int]:
    """The fixed meta columns of a ROWS-window query's state (``direct`` appended when it
    uses the direct map)."""
    return {"ngroups": NGROUPS, "nout": ROWS_NOUT, "filtered": FILTERED}


def distinct_column(prefix: str) -> str:
    """The meta column holding the entry count of aggregate ``prefix``'s distinct set."""
    return f"{prefix}_nd"


__all__ = [
    "DDIMS",
    "DGID",
    "DIM_SIZE",
    "DIM_STRIDE",
    "DMAP",
    "DTAB",
    "DVAL",
    "FILTERED",
    "HASHES",
    "KBITS",
    "KNULL",
    "META",
    "NGROUPS",
    "NLATE",
    "NOTIME",
    "NOUT",
    "NTOUCHED",
    "PACKS",
    "PACK_PAD",
    "PACK_SLOTS",
    "ROWS_NOUT",
    "R_LATE",
    "R_LITERALS",
    "R_MARKS",
    "R_RANKS",
    "R_WINDOW",
    "STATE_SLOTS",
    "TABLE",
    "WIN_LATENESS",
    "WIN_WATERMARK",
    "B",
    "F",
    "I",
    "aggregate_meta",
    "distinct_column",
    "rows_meta",
]
