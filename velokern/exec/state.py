"""State: each partition's hash table, packed per-group arrays and counters.

:class:`KeyedState` owns the state tuple of a keyed query (GROUP BY, time windows,
ROWS windows; layout: :mod:`velokern.kernels.layout`): allocating it, doubling what is
full when a kernel stops for room, keeping the direct map sized to the dictionaries,
and moving it to the nullable kernel variant.
"""

from __future__ import annotations

import numpy as np

from velokern import config
from velokern.batch import STRING, StringDictionary
from velokern.codegen import KernelSpec
from velokern.exec.reshard import resharded
from velokern.kernels import layout as L
from velokern.kernels.hashtable import new_table, rebuild_direct, rebuild_distinct, table_of
from velokern.kernels.windows import NO_WATERMARK, drop_closed
from velokern.plan import BoundQuery

__all__ = ["KeyedState"]

_NO_SETS = np.empty(0, np.int64)  # (ROWS state has no distinct sets)
_PACK_DTYPES = {L.I: np.int64, L.F: np.float64, L.B: np.uint8}


class KeyedState:
    """The per-partition state arrays of one job (None until its first keyed batch)."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] | None = None
        self.spec: KernelSpec | None = None  # the variant the arrays are laid out for
        self._direct_fits: list | None = None
        self.layout: int | None = None  # partitions to allocate (None: the job's count)

    @property
    def partitions(self) -> int | None:
        """The partitions the state is laid out in (or will be allocated in)."""
        return self.meta.shape[0] if self.arrays is not None else self.layout

    def reshard(self, partitions: int, part_keys: list[int]) -> None:
        """Lay the groups out in ``partitions`` partitions (see velokern.exec.reshard);
        ``part_keys``: the key columns hash partitioning routes by."""
        self.layout = partitions
        if self.arrays is not None and self.meta.shape[0] != partitions:
            self.arrays = resharded(self.spec, self.arrays, part_keys, partitions)

    def arrays_in(self, partitions: int, part_keys: list[int]) -> list[np.ndarray]:
        """Copies of the arrays laid out in ``partitions`` partitions (a snapshot's)."""
        if self.meta.shape[0] != partitions:
            return resharded(self.spec, self.arrays, part_keys, partitions)
        return [a.copy() for a in self.arrays]

    @property
    def allocated(self) -> bool:
        return self.arrays is not None

    @property
    def meta(self) -> np.ndarray:
        return self.arrays[L.META]

    def tuple(self) -> tuple:
        return tuple(self.arrays)

    # ---------------------------------------------------------------- counters
    def meta_sum(self, col: int) -> int:
        """A meta counter summed over partitions."""
        return int(self.meta[:, col].sum())

    def counters(self) -> dict[str, int]:
        """The counters the kernels keep in the meta columns, summed over partitions:
        records WHERE dropped, records without an event time (windows), keys expired
        (a ROWS state TTL)."""
        if not self.allocated:
            return {}
        out = {"records_filtered": self.meta_sum(L.FILTERED)}
        if self.spec.windowed:
            out["records_without_time"] = self.meta_sum(L.NOTIME)
        if self.spec.ttl:
            out["keys_expired"] = self.meta_sum(self.spec.meta_cols["expired"])
        return out

    def num_groups(self) -> int:
        return 0 if self.arrays is None else self.meta_sum(L.NGROUPS)

    # ---------------------------------------------------------------- allocation
    def ensure(self, spec: KernelSpec, module, partitions: int) -> None:
        """Allocate the state for ``partitions`` partitions (once)."""
        if self.arrays is not None:
            return
        cap = config.INITIAL_GROUPS
        k = max(spec.num_keys, 1)
        nd = max(len(spec.distinct), 1)
        rows = spec.pack_rows
        P = self.layout or partitions
        arrays: list = [None] * len(L.STATE_SLOTS)
        arrays[L.TABLE] = new_table(P, 2 * cap)  # (group id, hash) per slot
        arrays[L.HASHES] = np.zeros((P, cap), dtype=np.uint64)
        arrays[L.KBITS] = np.zeros((P, cap, k), dtype=np.int64)
        arrays[L.KNULL] = np.zeros((P, cap, k), dtype=np.uint8)
        # pack rows are padded by one cache line so that the same group's value in
        # consecutive rows (ring buffers, aggregate states) does not fall in one L1
        # cache set (a power-of-two row stride aliases; measured: a keyless AVG over
        # 100 rows, 2.61 -> 1.67 ms per 100k-record batch)
        for name, slot in L.PACK_SLOTS.items():
            arrays[slot] = np.zeros((P, max(rows[name], 1), cap + L.PACK_PAD[slot]),
                                    dtype=_PACK_DTYPES[slot])
        arrays[L.META] = np.zeros((P, len(spec.meta_cols)), dtype=np.int64)
        arrays[L.DTAB] = np.full((P, nd, 2 * cap), -1, dtype=np.int64)
        arrays[L.DGID] = np.zeros((P, nd, cap), dtype=np.int64)
        arrays[L.DVAL] = np.zeros((P, nd, cap), dtype=np.int64)
        arrays[L.DMAP] = np.full((P, 1), -1, dtype=np.int64)  # sized by ensure_direct
        arrays[L.DDIMS] = np.zeros((P, 2, k), dtype=np.int64)  # per-key sizes, strides
        self.arrays = arrays
        self.spec = spec
        if spec.direct:
            self.meta[:, spec.meta_cols["direct"]] = 1
        if spec.num_keys == 0 and not spec.rows_window:
            module.init_global(tuple(arrays), 0)

    def adopt(self, spec: KernelSpec, arrays: list[np.ndarray],
              code_limits: dict[tuple[str, int], int] | None = None) -> None:
        """Take over restored arrays (a checkpoint's), laid out for ``spec``, once
        :func:`check_arrays` finds them consistent (ValueError naming the array)."""
        if len(arrays) == len(L.STATE_SLOTS) and all(
                isinstance(a, np.ndarray) and a.ndim >= 2 for a in arrays):
            want = (len(spec.meta_cols), *(max(spec.pack_rows[k], 1) for k in "IFB"))
            got = (arrays[L.META].shape[1], arrays[L.I].shape[1], arrays[L.F].shape[1],
                   arrays[L.B].shape[1])
            if got != want:
                raise ValueError(
                    "this snapshot's state layout (meta columns and I/F/B pack rows "
                    f"{got}) is not the one this velokern's kernels use {want}: it was "
                    "written by another version")
        check_arrays(spec, arrays, code_limits or {})
        # the table is rebuilt from the groups' hashes: it is an index, and this keeps
        # snapshots written with another table layout readable
        arrays[L.TABLE] = table_of(arrays[L.HASHES], arrays[L.META],
                                   arrays[L.TABLE].shape[1])
        self.spec = spec
        self.arrays = arrays

    def switch_to_nullable(self, new: KernelSpec) -> None:
        """Moving to the nullable kernel variant: the non-null counts it maintains were
        not kept by the non-null variant, where they equal the row count."""
        old = self.spec
        I_ = self.arrays[L.I]
        for row in set(old.unmaintained_counts) - set(new.unmaintained_counts):
            I_[:, row, :] = I_[:, old.rows_row, :]
        self.spec = new

    # ---------------------------------------------------------------- direct map
    def ensure_direct(self, spec: KernelSpec, bound: BoundQuery,
                      dicts: dict[str, StringDictionary]) -> None:
        """Size the direct map so every current dictionary code fits (GROUP BY or ROWS
        PARTITION BY keys that are all string/bool columns); past
        config.DIRECT_MAP_LIMIT slots, turn it off for good."""
        fits = self._direct_fits  # fast path: every key's dictionary still fits
        if fits is not None:
            for d, lim in fits:
                if len(d) >= lim:
                    break
            else:
                return
        meta = self.meta
        col = spec.meta_cols["direct"]
        if meta[0, col] == 0:
            self._direct_fits = []  # turned off for good: nothing to check any more
            return
        ddims = self.arrays[L.DDIMS]
        need = [3 if t != STRING else len(dicts[k.name]) + 1
                for k, t in zip(bound.keys, bound.key_types)]
        have = ddims[0, L.DIM_SIZE]
        if all(n <= d for n, d in zip(need, have)):
            return
        dims = [max(int(d), 1 << max(3, (n - 1).bit_length())) if n > d else int(d)
                for n, d in zip(need, have)]
        total = int(np.prod(dims, dtype=np.float64))
        if total > config.DIRECT_MAP_LIMIT:
            meta[:, col] = 0
            self.arrays[L.DMAP] = np.full((meta.shape[0], 1), -1, dtype=np.int64)
            return
        ddims[:, L.DIM_SIZE] = dims
        ddims[:, L.DIM_STRIDE] = [int(np.prod(dims[j + 1:], dtype=np.int64))
                                  for j in range(len(dims))]
        self._direct_fits = [(dicts[k.name], dims[j]) for j, (k, t) in
                             enumerate(zip(bound.keys, bound.key_types)) if t == STRING]
        if meta[:, L.NGROUPS].any():
            self.arrays[L.DMAP] = np.empty((meta.shape[0], total), dtype=np.int64)
            rebuild_direct(self.arrays[L.DMAP], self.arrays[L.KBITS], self.arrays[L.KNULL],
                           meta, ddims)
        else:  # no group yet (a new job): nothing to map, and no kernel to load
            self.arrays[L.DMAP] = np.full((meta.shape[0], total), -1, dtype=np.int64)

    # ---------------------------------------------------------------- state TTL
    def evict_expired(self, before: int, watermark: int, ttl: int) -> int:
        """ROWS windows with a state TTL: free the keys whose latest event time is more
        than ``ttl`` behind ``watermark`` (a record of such a key would start its frames
        afresh, as a new key's do, so freeing it changes no output), counted in the
        ``expired`` meta column. A pass over every key: it runs when the cutoff crosses
        a multiple of a quarter of the TTL between the watermark ``before`` the batch
        and after it (the stream alone decides when, not a restore). Returns the keys
        freed."""
        if watermark == NO_WATERMARK or not self.allocated:
            return 0
        step = max(ttl // 4, 1)
        cutoff = watermark - ttl
        if before != NO_WATERMARK and (before - ttl) // step == cutoff // step:
            return 0
        spec, meta = self.spec, self.meta
        row = next(a.row for a in spec.state if a.name == "last_t")
        col = spec.meta_cols["expired"]
        S = self.tuple()
        freed = 0
        for p in range(meta.shape[0]):
            if meta[p, L.NGROUPS]:
                # (drop_closed frees the groups whose value is at or before the limit;
                # ROWS state has no touched list: its meta column 1 is 0 between batches)
                k = drop_closed(S, p, self.arrays[L.I][p, row], cutoff - 1, _NO_SETS, row)
                meta[p, col] += k
                freed += k
        if freed and spec.direct and meta[0, spec.meta_cols["direct"]]:
            rebuild_direct(self.arrays[L.DMAP], self.arrays[L.KBITS], self.arrays[L.KNULL],
                           meta, self.arrays[L.DDIMS])
        return freed

    # ---------------------------------------------------------------- growth
    def grow(self) -> None:
        """Double whatever is full (groups and/or distinct sets), rebuild its tables.
        Full means: one more record could not get its groups (as many as the windows a
        record belongs to), which is when the kernels stop."""
        spec, st = self.spec, self.arrays
        meta = self.meta
        room = spec.max_windows
        if meta[:, L.NGROUPS].max() + room > st[L.HASHES].shape[1]:
            for slot in (L.HASHES, L.KBITS, L.KNULL):
                st[slot] = _double(st[slot], 1)
            for slot in L.PACK_SLOTS.values():
                st[slot] = _double(st[slot], 2)
            st[L.TABLE] = table_of(st[L.HASHES], meta, 2 * st[L.TABLE].shape[1])
        cols = [spec.meta_cols[L.distinct_column(a)] for a in spec.distinct]
        if cols and max(meta[:, c].max() for c in cols) + room > st[L.DGID].shape[2]:
            st[L.DGID] = _double(st[L.DGID], 2)
            st[L.DVAL] = _double(st[L.DVAL], 2)
            dtab = st[L.DTAB]
            st[L.DTAB] = np.full(dtab.shape[:2] + (dtab.shape[2] * 2,), -1, np.int64)
            for d, c in enumerate(cols):
                rebuild_distinct(st[L.DTAB][:, d], st[L.DGID][:, d], st[L.DVAL][:, d], meta, c)


# ---------------------------------------------------------------- restored state
# dtype and ndim of each slot of S (the table is rebuilt from the hashes on restore: any
# int64 [P, slots] or [P, slots, 2] array of the right size will do)
_SLOT_TYPES = {L.HASHES: ("uint64", 2), L.KBITS: ("int64", 3),
               L.KNULL: ("uint8", 3), L.I: ("int64", 3), L.F: ("float64", 3),
               L.B: ("uint8", 3), L.META: ("int64", 2), L.DTAB: ("int64", 3),
               L.DGID: ("int64", 3), L.DVAL: ("int64", 3), L.DMAP: ("int64", 2),
               L.DDIMS: ("int64", 3)}
# meta columns that count entries of a batch in flight: 0 between batches
_TRANSIENT = {"nlate", "nout"}


def _refuse(slot: int | str, what: str) -> None:
    name = slot if isinstance(slot, str) else f"state[{L.STATE_SLOTS[slot]}]"
    raise ValueError(f"checkpoint state is refused: {name} {what}")


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_arrays(spec: KernelSpec, arrays: list, code_limits: dict[tuple[str, int], int]
                 ) -> None:
    """Refuse (ValueError naming the array) restored state arrays that the kernels could
    not run on safely: numba does not check bounds, so every count must fit its arrays,
    every stored group id or dictionary code its range, every probe loop must end.
    ``code_limits``: ("key", j) / ("I", row) -> the size of the dictionary whose codes
    key j / pack row I[row] hold."""
    if not isinstance(arrays, list) or len(arrays) != len(L.STATE_SLOTS):
        _refuse("state", f"is not a list of {len(L.STATE_SLOTS)} arrays")
    for slot, (dtype, ndim) in _SLOT_TYPES.items():
        a = arrays[slot]
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.ndim != ndim:
            _refuse(slot, f"is not a {ndim}-D {dtype} array")
    _check_shapes(spec, arrays)
    meta = arrays[L.META]
    cap, dcap = arrays[L.HASHES].shape[1], arrays[L.DGID].shape[2]
    ngroups = meta[:, L.NGROUPS]
    for name, col in spec.meta_cols.items():
        top = {"ngroups": cap, "ntouched": cap, "direct": 1}.get(name)
        if name.endswith("_nd"):
            top = dcap
        if name in _TRANSIENT:
            top = 0
        v = meta[:, col]
        if (v < 0).any() or (top is not None and (v > top).any()):
            _refuse(L.META, f"column {name} holds {v.min()}..{v.max()}, outside "
                            f"[0, {'any' if top is None else top}]")
    _check_groups(spec, arrays, ngroups, code_limits)
    _check_distinct(spec, arrays, ngroups, code_limits)
    _check_direct(spec, arrays, ngroups)


def _check_shapes(spec: KernelSpec, st: list) -> None:
    P = st[L.META].shape[0]
    cap, dcap = st[L.HASHES].shape[1], st[L.DGID].shape[2]
    k, nd = max(spec.num_keys, 1), max(len(spec.distinct), 1)
    rows = {p: max(spec.pack_rows[p], 1) for p in "IFB"}
    table = st[L.TABLE]
    if not isinstance(table, np.ndarray) or table.dtype != np.int64 or \
            table.shape not in ((P, 2 * cap), (P, 2 * cap, 2)):
        _refuse(L.TABLE, f"is not an int64 array of shape ({P}, {2 * cap}, 2)")
    want = {L.HASHES: (P, cap), L.KBITS: (P, cap, k),
            L.KNULL: (P, cap, k), L.I: (P, rows["I"], cap + 8),
            L.F: (P, rows["F"], cap + 8), L.B: (P, rows["B"], cap + 64),
            L.META: (P, len(spec.meta_cols)), L.DTAB: (P, nd, 2 * dcap),
            L.DGID: (P, nd, dcap), L.DVAL: (P, nd, dcap), L.DDIMS: (P, 2, k)}
    for slot, shape in want.items():
        got = st[slot].shape
        if slot in L.PACK_SLOTS.values():  # padded past the capacity (grown: twice that)
            ok = got[:2] == shape[:2] and got[2] >= shape[2]
        else:
            ok = got == shape
        if not ok:
            _refuse(slot, f"has shape {got}; the others make it {shape}")
    if P < 1 or not _pow2(cap) or not _pow2(dcap):
        _refuse(L.HASHES, f"has {P} partitions and capacities {cap}, {dcap} (a positive "
                          "count and powers of two)")
    if st[L.DMAP].shape[0] != P or st[L.DMAP].shape[1] < 1:
        _refuse(L.DMAP, f"has shape {st[L.DMAP].shape}")


def _check_groups(spec: KernelSpec, st: list, ngroups: np.ndarray,
                  code_limits: dict[tuple[str, int], int]) -> None:
    """Group-indexed contents: the touched list, key codes, dictionary codes in packs."""
    live = np.arange(st[L.HASHES].shape[1])[None, :] < ngroups[:, None]  # [P, cap]
    _check_touched(spec, st, ngroups, live)
    knull = st[L.KNULL]
    if ((knull > 1) & live[:, :, None]).any():
        _refuse(L.KNULL, "holds a null flag other than 0 or 1")
    for (kind, j), n in code_limits.items():
        if kind == "D":
            continue  # (the distinct sets': _check_distinct)
        if kind == "key":
            v, ok = st[L.KBITS][:, :, j], live & (knull[:, :, j] == 0)
        else:
            v, ok = st[L.I][:, j, :live.shape[1]], live
        if (((v < -1) | (v >= n)) & ok).any():
            _refuse(L.KBITS if kind == "key" else L.I,
                    f"holds a dictionary code outside [-1, {n}) ({kind} {j})")


def _check_touched(spec: KernelSpec, st: list, ngroups: np.ndarray,
                   live: np.ndarray) -> None:
    """EMIT CHANGES: the touched list names distinct live groups, exactly those whose
    touched flag is set (a group is appended when its flag is 0: a flag out of step
    would let the list outgrow its row)."""
    rows = {s.name: s.row for s in spec.state}
    if "tlist" not in rows or "touched" not in rows or "ntouched" not in spec.meta_cols:
        return
    cap = st[L.HASHES].shape[1]
    nt = st[L.META][:, spec.meta_cols["ntouched"]]
    flags = st[L.B][:, rows["touched"], :cap]
    if ((flags > 1) & live).any():
        _refuse(L.B, "holds a touched flag other than 0 or 1")
    for p in range(len(nt)):
        lst = st[L.I][p, rows["tlist"], :int(nt[p])]
        if len(lst) and (lst.min() < 0 or lst.max() >= ngroups[p]
                         or len(np.unique(lst)) != len(lst)
                         or (flags[p, lst] != 1).any()
                         or int(flags[p, :ngroups[p]].sum()) != len(lst)):
            _refuse(L.I, "holds a touched list that is not the partition's touched groups")
        if not len(lst) and flags[p, :ngroups[p]].any():
            _refuse(L.B, "flags a group as touched that the touched list lacks")


def _check_distinct(spec: KernelSpec, st: list, ngroups: np.ndarray,
                    code_limits: dict[tuple[str, int], int]) -> None:
    """Each distinct set: its entries' groups live (their values dictionary codes, for a
    string column), its table a permutation of them."""
    for d, a in enumerate(spec.distinct):
        count = st[L.META][:, spec.meta_cols[L.distinct_column(a)]]
        codes = code_limits.get(("D", d))
        for p in range(len(count)):
            n = int(count[p])
            gid, tab = st[L.DGID][p, d, :n], st[L.DTAB][p, d]
            if n and (gid.min() < 0 or gid.max() >= ngroups[p]):
                _refuse(L.DGID, f"holds a group id outside [0, {ngroups[p]}) (set {a})")
            val = st[L.DVAL][p, d, :n]
            if n and codes is not None and (val.min() < -1 or val.max() >= codes):
                _refuse(L.DVAL, f"holds a dictionary code outside [-1, {codes}) (set {a})")
            full = tab[tab >= 0]
            if len(full) != n or (n and (full.max() >= n or
                                         len(np.unique(full)) != n)) or (tab < -1).any():
                _refuse(L.DTAB, f"is not a table of the set's {n} entries (set {a})")


def _check_direct(spec: KernelSpec, st: list, ngroups: np.ndarray) -> None:
    """The direct map: its sizes and strides agree, every code of a live group fits."""
    dmap, ddims = st[L.DMAP], st[L.DDIMS]
    if ((dmap < -1) | (dmap >= ngroups[:, None])).any():
        _refuse(L.DMAP, "holds a group id outside the partition's groups")
    if not spec.direct or not (st[L.META][:, spec.meta_cols["direct"]] == 1).any():
        return
    sizes, strides = ddims[0, L.DIM_SIZE], ddims[0, L.DIM_STRIDE]
    if (ddims != ddims[:1]).any() or (sizes < 0).any():
        _refuse(L.DDIMS, "differs between partitions or holds a negative size")
    if not sizes.any():
        return  # not sized yet: the map is one empty slot
    total = int(np.prod(sizes.astype(np.float64)))
    want = [int(np.prod(sizes[j + 1:])) for j in range(len(sizes))]
    if (sizes < 1).any() or total > config.DIRECT_MAP_LIMIT or \
            dmap.shape[1] != total or list(strides) != want:
        _refuse(L.DDIMS, f"sizes {sizes.tolist()} / strides {strides.tolist()} do not "
                         f"describe the {dmap.shape[1]}-slot direct map")
    live = np.arange(st[L.HASHES].shape[1])[None, :] < ngroups[:, None]
    code = np.where(st[L.KNULL] != 0, 0, st[L.KBITS] + 1)[:, :, :len(sizes)]
    if (((code < 0) | (code >= sizes)) & live[:, :, None]).any():
        _refuse(L.KBITS, "holds a key code the direct map has no room for")


def _double(a: np.ndarray, axis: int) -> np.ndarray:
    """Copy of ``a`` with twice the capacity along ``axis`` (new slots zeroed)."""
    shape = list(a.shape)
    shape[axis] *= 2
    out = np.zeros(shape, dtype=a.dtype)
    out[(slice(None),) * axis + (slice(0, a.shape[axis]),)] = a
    return out
