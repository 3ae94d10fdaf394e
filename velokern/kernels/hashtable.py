"""The group-by hash table: open addressing with linear probing over numpy arrays.

Per partition: ``table`` (int64 ``[slots, 2]``, slots a power of two) maps a slot to a
group id ``table[s, 0]`` (-1 = empty) and holds that group's 64-bit hash beside it in
``table[s, 1]``, so a probe compares hashes in the slot's own cache line (with the hash
in a per-group array, the dependent load of ``hashes[g]`` was the largest stall of a
GROUP BY over 1M keys). Groups are numbered densely in order of creation (= order of
first record) and also keep their ``hashes`` (to rebuild the table) and key bits
``kbits[g, j]`` / null flags ``knull[g, j]``. The table is kept at most half full: the
update kernel stops before a batch would overfill it, the engine grows the arrays and
rebuilds the table with :func:`rebuild_table`, and the kernel resumes where it stopped.

Distinct sets (COUNT(DISTINCT x)) use the same scheme over (group, value) pairs.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from velokern.kernels.layout import NGROUPS
from velokern.kernels.scalar import JIT, mix64, nonneg

_SHIFT = np.uint64(20)


@njit(**JIT)
def slot_of(h, mask):
    return np.int64((h >> _SHIFT) & np.uint64(mask))


# inline="always": a call would pass six arrays and pay NRT reference counting on each
# of them per row (measured: ~60 ns/row, 6x the rest of a GROUP BY kernel)
@njit(inline="always", **JIT)
def probe(table, hashes, kbits, knull, kv, kn, h, ng, unique, nulls):
    """Group id of key (kv, kn) with hash h; inserts it as group ``ng`` when absent.

    ``kv``: the key bits and ``kn`` the null flags, as tuples (their length is known when
    the kernel compiles, so the key loops unroll and the values stay in registers; with
    arrays written and read back for every row, S3a was ~7% slower). ``unique`` and
    ``nulls`` are constants in the generated code, so their tests are compiled away:

    - ``unique``: the hash is a bijection of the key (one non-null key: ``mix64`` of its
      bits), so equal hashes mean equal keys and a hit reads only the slot, not the key
      bits (a cache line fewer per row once the table no longer fits in cache);
    - ``nulls`` False: no key can be null (the kernel variant of a job that has seen no
      null key), so the null flags are neither written nor compared; every group's
      flags then keep the 0 they were created with, as a null-free key's are."""
    mask = len(table) - 1
    s = slot_of(h, mask)
    hb = np.int64(h)
    nk = len(kv)
    while True:
        g = table[s, 0]
        if g < 0:
            n = nonneg(ng)
            table[s, 0] = n
            table[s, 1] = hb
            hashes[n] = h
            for j in range(nk):
                kbits[n, j] = kv[j]
                if nulls:
                    knull[n, j] = kn[j]
            return n
        if table[s, 1] == hb:
            if unique:
                return g
            same = True
            for j in range(nk):
                if kbits[g, j] != kv[j] or (nulls and knull[g, j] != kn[j]):
                    same = False
                    break
            if same:
                return g
        s = (s + 1) & mask


@njit(**JIT)
def refill(table, hashes, ng):
    """Empty one partition's ``table`` and insert its groups ``0..ng-1`` (their stored
    hashes) again."""
    table[:] = -1
    mask = len(table) - 1
    for g in range(ng):
        s = slot_of(hashes[g], mask)
        while table[s, 0] >= 0:
            s = (s + 1) & mask
        table[s, 0] = g
        table[s, 1] = np.int64(hashes[g])


@njit(**JIT)
def rebuild_table(table, hashes, meta, ng_col):
    """Refill ``table[p]`` from the stored hashes of partition p's groups (all p; the
    table's previous contents do not matter: each partition's is emptied first)."""
    for p in range(table.shape[0]):
        refill(table[p], hashes[p], meta[p, ng_col])


def new_table(partitions: int, slots: int) -> np.ndarray:
    """An empty table per partition: ``slots`` (a power of two) x (group id, hash)."""
    return np.full((partitions, slots, 2), -1, dtype=np.int64)


def table_of(hashes: np.ndarray, meta: np.ndarray, slots: int) -> np.ndarray:
    """A table of ``slots`` slots per partition holding each partition's groups
    ``0..meta[p, NGROUPS]-1`` from their stored ``hashes`` (growth, restore)."""
    table = np.empty((hashes.shape[0], slots, 2), dtype=np.int64)  # the rebuild empties it
    rebuild_table(table, hashes, meta, 0)
    return table


@njit(**JIT)
def distinct_hash(g, v):
    return mix64(mix64(np.uint64(g)) ^ np.uint64(v))


@njit(inline="always", **JIT)
def distinct_insert(dtab, dgid, dval, g, v, nd):
    """Insert (group g, value bits v) into a distinct set; True when it was new."""
    mask = len(dtab) - 1
    s = slot_of(distinct_hash(g, v), mask)
    while True:
        e = dtab[s]
        if e < 0:
            dtab[s] = nd
            dgid[nd] = g
            dval[nd] = v
            return True
        if dgid[e] == g and dval[e] == v:
            return False
        s = (s + 1) & mask


@njit(**JIT)
def rebuild_distinct(dtab, dgid, dval, meta, nd_col):
    for p in range(dtab.shape[0]):
        t = dtab[p]
        t[:] = -1
        mask = len(t) - 1
        for e in range(meta[p, nd_col]):
            s = slot_of(distinct_hash(dgid[p, e], dval[p, e]), mask)
            while t[s] >= 0:
                s = (s + 1) & mask
            t[s] = e


@njit(**JIT)
def collect_all(meta, ng_col, gids, offsets):
    """Every group id of every partition, in creation order."""
    pos = 0
    for p in range(meta.shape[0]):
        offsets[p] = pos
        for g in range(meta[p, ng_col]):
            gids[pos + g] = g
        pos += meta[p, ng_col]
    offsets[meta.shape[0]] = pos


@njit(**JIT)
def rebuild_direct(dmap, kbits, knull, meta, ddims):
    """Refill every partition's direct map (combined key code -> group id)."""
    nk = ddims.shape[2]
    for p in range(dmap.shape[0]):
        m = dmap[p]
        m[:] = -1
        for g in range(meta[p, NGROUPS]):
            idx = 0
            for j in range(nk):
                c = 0 if knull[p, g, j] != 0 else kbits[p, g, j] + 1
                idx += c * ddims[p, 1, j]
            m[idx] = g


@intrinsic
def prefetch(typingctx, arr, flat):
    """Ask the CPU to start loading ``arr.flat[flat]`` into cache (LLVM's prefetch: it
    never faults and changes no value). Large GROUP BY tables miss the cache on every
    row; the update kernels prefetch the slots and group state a few rows ahead."""
    if not isinstance(arr, types.Array) or not isinstance(flat, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(arr, flat), codegen
