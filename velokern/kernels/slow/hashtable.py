"""Slow twins of :mod:`velokern.kernels.hashtable`: the group-by hash table as what it is
observed to do, a dict.

The kernels' tables are open addressing with linear probing; the exact slot a group
lands in depends on the order of insertion and is nobody's business. What the tables
promise, and what these twins give for the tests to check the kernels against, is:

- :func:`probe`: a key gets the id of the group holding an equal key, or becomes the
  next group (ids dense, in order of first occurrence), and the group keeps its hash,
  key bits and null flags;
- a table (:func:`refill`, :func:`rebuild_table`, :func:`table_of`, and the distinct
  tables of :func:`distinct_insert`, :func:`rebuild_distinct`) holds exactly its groups
  (entries), each once and beside its hash, and each is found on the probe path of its
  hash (:func:`probe_path`);
- :func:`collect_all` lists every group id per partition; :func:`rebuild_direct` maps
  each group's combined key code to it.
"""

from __future__ import annotations

import numpy as np

from velokern.kernels.layout import NGROUPS
from velokern.kernels.slow.scalar import MASK64, mix64


def slot_of(h: int, mask: int) -> int:
    """Home slot of hash ``h`` in a table of ``mask + 1`` slots (a power of two): the
    hash's bits from bit 20 up, modulo the table size."""
    return ((int(h) & MASK64) // 2**20) % (int(mask) + 1)


def probe_path(ids, h: int) -> list[int]:
    """What a search for hash ``h`` sees in a table whose slot s holds entry ``ids[s]``
    (-1: empty): the entries from h's home slot on, wrapping around, up to the first
    empty slot. An entry of the table is found when it is on the path of its hash."""
    ids = [int(e) for e in ids]
    n = len(ids)
    s = slot_of(h, n - 1)
    path = []
    for k in range(n):
        e = ids[(s + k) % n]
        if e < 0:
            break
        path.append(e)
    return path


def probe(keys, nulls: bool = True) -> tuple[list[int], list[tuple]]:
    """Group ids of ``keys`` (``(bits, null flags)`` tuples), probed one after another
    into an empty table: a key equal to an earlier one gets its group, a new key becomes
    the next group. With ``nulls`` False no key is null and the flags are not compared
    (the groups' flags stay 0). Returns (the ids, each group's key in id order)."""
    groups: dict[tuple, int] = {}
    out = []
    for bits, flags in keys:
        key = (tuple(int(b) for b in bits),
               tuple(int(f) for f in flags) if nulls else (0,) * len(bits))
        out.append(groups.setdefault(key, len(groups)))
    return out, list(groups)


def refill(hashes, ng: int) -> dict[int, int]:
    """The entries (group id -> its hash, as int64 bits) a table refilled with groups
    ``0..ng-1`` holds."""
    return {g: _int64(hashes[g]) for g in range(int(ng))}


def rebuild_table(hashes, meta, ng_col: int) -> list[dict[int, int]]:
    """Each partition's entries: its groups ``0..meta[p, ng_col]-1`` with their hashes."""
    return [refill(hashes[p], meta[p, ng_col]) for p in range(len(meta))]


def table_of(hashes, meta, slots: int) -> list[dict[int, int]]:
    """Each partition's entries in a new table of ``slots`` slots (group counts in
    ``meta[:, NGROUPS]``)."""
    return rebuild_table(hashes, meta, 0)


def distinct_hash(g: int, v: int) -> int:
    """Hash of the pair (group g, value bits v): mix64 of g's mix64 xor the bits."""
    return mix64(mix64(int(g) & MASK64) ^ (int(v) & MASK64))


def distinct_insert(pairs) -> tuple[list[bool], list[tuple[int, int]]]:
    """(for each (group, value bits) pair, whether it was new; the new pairs in order,
    entry e being the e-th new pair)."""
    seen: dict[tuple[int, int], int] = {}
    new = []
    for g, v in pairs:
        key = (int(g), int(v))
        new.append(key not in seen)
        seen.setdefault(key, len(seen))
    return new, list(seen)


def rebuild_distinct(dgid, dval, meta, nd_col: int) -> list[dict[int, int]]:
    """Each partition's distinct entries ``0..meta[p, nd_col]-1`` (entry -> the hash of
    its pair), all of which its rebuilt table holds."""
    return [{e: distinct_hash(dgid[p][e], dval[p][e]) for e in range(int(meta[p, nd_col]))}
            for p in range(len(meta))]


def collect_all(meta, ng_col: int) -> tuple[list[int], list[int]]:
    """(every partition's group ids, in creation order, one partition after another;
    where each partition's ids begin, and the total at the end)."""
    gids, offsets = [], []
    for p in range(len(meta)):
        offsets.append(len(gids))
        gids += list(range(int(meta[p, ng_col])))
    return gids, offsets + [len(gids)]


def rebuild_direct(kbits, knull, meta, ddims) -> list[np.ndarray]:
    """Each partition's direct map: -1 everywhere except at each group's combined key
    code, which holds the group. A key's code is 0 when null, else its bits + 1; the
    codes of a group's keys combine in row-major order over the key sizes
    ``ddims[p, 0]`` (whose row-major strides ``ddims[p, 1]`` are)."""
    maps = []
    for p in range(len(meta)):
        dims = [int(d) for d in ddims[p, 0]]
        assert [int(s) for s in ddims[p, 1]] == [int(np.prod(dims[j + 1:]))
                                                 for j in range(len(dims))]
        m = np.full(int(np.prod(dims)), -1, np.int64)
        for g in range(int(meta[p, NGROUPS])):
            codes = [0 if knull[p][g][j] else int(kbits[p][g][j]) + 1
                     for j in range(len(dims))]
            m[np.ravel_multi_index(codes, dims)] = g
        maps.append(m)
    return maps


def _int64(h) -> int:
    """A 64-bit hash as the int64 the tables store beside a group."""
    h = int(h) & MASK64
    return h - 2**64 if h >= 2**63 else h


__all__ = ["collect_all", "distinct_hash", "distinct_insert", "probe", "probe_path",
           "rebuild_direct", "rebuild_distinct", "rebuild_table", "refill", "slot_of",
           "table_of"]
