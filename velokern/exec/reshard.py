"""Moving a keyed state between partition counts (V2 running on one worker or on all).

Between batches a keyed state holds its groups (their hash, key bits, packed state) and
the distinct sets' entries; nothing of a batch in flight. :func:`resharded` lays the
same groups out over another number of partitions: with one partition, in the order of
their first record (the order V1 creates them in, so V2 on one partition runs exactly
V1's kernels on V1's layout); with several, each group in the partition the hash
strategy routes its key to (the shim's hash of the key bits), in the same order within
a partition. The tables, the distinct sets' tables and the direct map are rebuilt from
what they index. No answer changes: a group's values move with it.
"""

from __future__ import annotations

import numpy as np

from velokern import _shim
from velokern.codegen import KernelSpec
from velokern.kernels import layout as L
from velokern.kernels.hashtable import rebuild_direct, rebuild_distinct, table_of
from velokern.plan import BoundQuery, WinRef

__all__ = ["partition_key_columns", "resharded"]

# meta columns of a batch in flight (0 between batches) and per-partition sizes
_TRANSIENT = {"ntouched", "nlate", "nout"}


def partition_key_columns(bound: BoundQuery) -> list[int]:
    """The key columns (of the key bits) hash partitioning routes by: all but the
    window."""
    return [j for j, e in enumerate(bound.keys) if not isinstance(e, WinRef)]


def _pow2_at_least(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


def resharded(spec: KernelSpec, arrays: list[np.ndarray], part_keys: list[int],
              partitions: int) -> list[np.ndarray]:
    """New state arrays holding ``arrays``' groups in ``partitions`` partitions.
    ``part_keys``: the key columns (of the key bits) hash partitioning routes by."""
    meta = arrays[L.META]
    P, ng = meta.shape[0], meta[:, L.NGROUPS]
    for name in _TRANSIENT & set(spec.meta_cols):
        if meta[:, spec.meta_cols[name]].any():
            raise RuntimeError(f"cannot move a state with a batch in flight ({name})")
    src_p = np.repeat(np.arange(P), ng)
    src_g = np.concatenate([np.arange(n) for n in ng]) if P else np.zeros(0, np.int64)
    dest = _destinations(arrays, src_p, src_g, part_keys, partitions)
    first = next((a.row for a in spec.state if a.name == "first_seq"), None)
    # within a partition: by first record (V1's creation order), else as they were
    key = arrays[L.I][src_p, first, src_g] if first is not None else np.arange(len(src_p))
    order = np.lexsort((key, dest))
    src_p, src_g, dest = src_p[order], src_g[order], dest[order]
    counts = np.bincount(dest, minlength=partitions).astype(np.int64)
    new_g = np.arange(len(dest)) - np.repeat(np.cumsum(counts) - counts, counts)
    cap = max(arrays[L.HASHES].shape[1],
              _pow2_at_least(int(counts.max(initial=0)) + spec.max_windows + 1))
    out: list = [None] * len(L.STATE_SLOTS)
    out[L.HASHES] = np.zeros((partitions, cap), np.uint64)
    out[L.KBITS] = np.zeros((partitions, cap, arrays[L.KBITS].shape[2]), np.int64)
    out[L.KNULL] = np.zeros((partitions, cap, arrays[L.KNULL].shape[2]), np.uint8)
    for slot in (L.HASHES, L.KBITS, L.KNULL):
        out[slot][dest, new_g] = arrays[slot][src_p, src_g]
    for slot, pad in L.PACK_PAD.items():
        a = arrays[slot]
        out[slot] = np.zeros((partitions, a.shape[1], cap + pad), a.dtype)
        out[slot][dest, :, new_g] = a[src_p, :, src_g]
    new_meta = np.zeros((partitions, meta.shape[1]), np.int64)
    new_meta[:, L.NGROUPS] = counts
    for name, col in spec.meta_cols.items():
        if name == "direct":
            new_meta[:, col] = meta[0, col]
        elif name not in _TRANSIENT and name != "ngroups" and not name.endswith("_nd"):
            new_meta[0, col] = meta[:, col].sum()  # counters: the total, in partition 0
    out[L.META] = new_meta
    out[L.TABLE] = table_of(out[L.HASHES], new_meta, 2 * cap)
    _move_distinct(spec, arrays, out, ng, dest, src_p, src_g, new_g, partitions)
    out[L.DDIMS] = np.repeat(arrays[L.DDIMS][:1], partitions, axis=0)
    if spec.direct and meta[0, spec.meta_cols["direct"]]:
        out[L.DMAP] = np.empty((partitions, arrays[L.DMAP].shape[1]), np.int64)
        rebuild_direct(out[L.DMAP], out[L.KBITS], out[L.KNULL], new_meta, out[L.DDIMS])
    else:
        out[L.DMAP] = np.full((partitions, arrays[L.DMAP].shape[1]), -1, np.int64)
    return out


def _destinations(arrays, src_p, src_g, part_keys: list[int], partitions: int) -> np.ndarray:
    """The partition the hash strategy routes each group's key to (a null key's bits are
    0, as routing reads them)."""
    if partitions == 1 or not part_keys or not len(src_p):
        return np.zeros(len(src_p), np.int64)
    bits = arrays[L.KBITS][src_p, src_g]
    nulls = arrays[L.KNULL][src_p, src_g]
    cols = [np.where(nulls[:, j] != 0, 0, bits[:, j]).astype(np.int64) for j in part_keys]
    return _shim.partition_ids(cols, partitions).astype(np.int64)


def _move_distinct(spec: KernelSpec, arrays, out, ng, dest, src_p, src_g, new_g,
                   partitions: int) -> None:
    """The distinct sets' entries follow their groups; their tables are rebuilt."""
    P = len(ng)
    nd = arrays[L.DGID].shape[1]
    cols = [spec.meta_cols[L.distinct_column(a)] for a in spec.distinct]
    # the new place of each old group: (partition, id) by (old partition, old id)
    where_p = [np.zeros(int(n), np.int64) for n in ng]
    where_g = [np.zeros(int(n), np.int64) for n in ng]
    for p in range(P):
        sel = src_p == p
        where_p[p][src_g[sel]] = dest[sel]
        where_g[p][src_g[sel]] = new_g[sel]
    dcap = arrays[L.DGID].shape[2]
    entries = []
    for d, c in enumerate(cols):
        per = [[] for _ in range(partitions)]
        for p in range(P):
            n = int(arrays[L.META][p, c])
            gid, val = arrays[L.DGID][p, d, :n], arrays[L.DVAL][p, d, :n]
            np_, ng_ = where_p[p][gid], where_g[p][gid]
            for q in range(partitions):
                m = np_ == q
                per[q].append((ng_[m], val[m]))
        entries.append(per)
        dcap = max(dcap, _pow2_at_least(max(
            (sum(len(g) for g, _ in per[q]) for q in range(partitions)), default=0) + 1))
    out[L.DGID] = np.zeros((partitions, nd, dcap), np.int64)
    out[L.DVAL] = np.zeros((partitions, nd, dcap), np.int64)
    out[L.DTAB] = np.full((partitions, nd, max(arrays[L.DTAB].shape[2], 2 * dcap)), -1,
                          np.int64)
    for d, c in enumerate(cols):
        for q in range(partitions):
            gid = np.concatenate([g for g, _ in entries[d][q]]) if entries[d][q] else \
                np.zeros(0, np.int64)
            val = np.concatenate([v for _, v in entries[d][q]]) if entries[d][q] else \
                np.zeros(0, np.int64)
            out[L.DGID][q, d, :len(gid)] = gid
            out[L.DVAL][q, d, :len(val)] = val
            out[L.META][q, c] = len(gid)
        rebuild_distinct(out[L.DTAB][:, d], out[L.DGID][:, d], out[L.DVAL][:, d],
                         out[L.META], c)
