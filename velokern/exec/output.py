"""Output: the kernels' output packs and the batches assembled from them.

Kernels write output rows into packs by type (OI int64, OF float64, OB bool, OC int32
string codes, OM validity; see :mod:`velokern.codegen`). :class:`OutputStage` owns
those buffers (reused across batches; large ones carved from recycled blocks, see
:mod:`velokern.pool`) and turns the rows partitions wrote into one RecordBatch in the
defined order: group rows merged by (window start, first record), per-record rows
put back in input order.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from velokern import config
from velokern.batch import STRING, RecordBatch
from velokern.codegen import KernelSpec
from velokern.exec.context import JobContext, Prepared
from velokern.kernels.order import (
    concat_rows,
    concat_rows_parallel,
    gather_rows,
    gather_rows_parallel,
    input_order,
    merge_runs,
    merge_runs_parallel,
    scatter_rows,
    scatter_rows_parallel,
    take_rows_parallel,
)
from velokern.plan import AggRef, BoundQuery, Col, KeyRef, PlanError, is_time
from velokern.pool import BlockPool

__all__ = ["OutputStage", "alloc_outputs", "alloc_seq"]

#: the output packs the kernels write, in argument order
PACKS = ("OI", "OF", "OB", "OC", "OM")
PACK_DTYPES = (np.dtype(np.int64), np.dtype(np.float64), np.dtype(np.bool_),
               np.dtype(np.int32), np.dtype(np.bool_))
MASKS = PACKS.index("OM")
PASSTHROUGH = len(PACKS)  # an assembly plan's "pack" of an input column passed through


class OutputStage:
    """Output buffers, assembly plans and the assembly of output batches."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        # output packs are carved from recycled blocks (velokern.pool): a block comes
        # back once no output uses it, so a job whose consumer drops its outputs writes
        # into memory that is already mapped instead of page-faulting new memory
        self.pool = BlockPool()
        self._bufs: dict = {}
        self._plans: dict[int, list] = {}
        self._pack_uses: dict[int, tuple[bool, bool]] = {}  # see _pack_use

    # ---------------------------------------------------------------- buffers
    def buffers(self, spec: KernelSpec, n: int, seq_rows: bool = True):
        """(OI, OF, OB, OC, OM, seq): output packs and order keys for ``n`` rows, reused
        across batches (the packs are new again after an output took them over).
        ``seq_rows`` False: an empty ``seq`` (group rows of one partition are in order
        already; their emit kernel then writes no order keys)."""
        key = id(spec)
        packs = self._bufs.get(key)
        if not seq_rows:
            seq = self._bufs.get((key, "noseq"))
            if seq is None:
                seq = self._bufs[(key, "noseq")] = alloc_seq(spec, 0)
        else:
            seq = self._bufs.get((key, "seq"))
            if seq is None or seq.shape[-1] < n:
                seq = self._bufs[(key, "seq")] = alloc_seq(spec, max(n, 1024))
        if packs is None or packs[0].shape[-1] < n:
            packs = self._bufs[key] = alloc_outputs(spec, max(n, 1024), self.pool)
        return packs + (seq,)

    def worker_threads(self, rows: int) -> int:
        """numba workers to put ``rows`` output rows in order on (merge, gather,
        scatter): a V2 job's (its processor sets them for its parallel kernel) for
        config.PARALLEL_MIN_ROWS rows and more, else 1."""
        P = self.ctx.num_partitions
        if rows < config.PARALLEL_MIN_ROWS or not P or P < 2:
            return 1
        return numba.get_num_threads()

    # ---------------------------------------------------------------- order
    def in_input_order(self, spec: KernelSpec, bound: BoundQuery, dicts, packs, orow,
                       starts, counts, prep: Prepared, ranged: bool = False) -> RecordBatch:
        """The output of rows that each belong to one input row (partition p wrote
        ``counts[p]`` rows at ``starts[p]`` of ``packs``, pack row k belongs to input row
        ``orow[k]``), in input order; passthrough columns come from ``prep``.
        ``ranged``: the partitions took contiguous ranges of the batch in order, so
        their rows are in input order run after run (laid end to end, no sort)."""
        n = prep.n
        segs = [(int(s), int(s) + int(c)) for s, c in zip(starts, counts) if c > 0]
        total = sum(b - a for a, b in segs)
        if len(segs) <= 1:  # one partition's rows: already in input order
            rows = segs[0] if segs else (0, 0)
            sel = None if total == n else orow[rows[0]:rows[1]].copy()
            return self.assemble(spec, bound, dicts, packs, rows, prep, sel)
        starts = np.asarray(starts, np.int64)
        counts = np.asarray(counts, np.int64)
        scratch = self.ctx.scratch
        threads = self.worker_threads(n)
        if ranged:
            if total == n:  # every range kept every row: the packs are in order
                return self.assemble(spec, bound, dicts, packs, (0, n), prep)
            concat = concat_rows_parallel if threads > 1 else concat_rows
            out = _repacked(spec, packs, total, lambda src, dst: concat(src, starts, counts,
                                                                        dst), self.pool)
            sel = None
            if self._pack_use(spec)[1]:  # input columns passed through: their rows
                sel = scratch.get("sel", total)[:total]
                concat(orow[None, :], starts, counts, sel[None, :])
            return self.assemble(spec, bound, dicts, out, (0, total), prep, sel)
        if total == n:
            # every input row has its row: the packs' rows are scattered into new packs
            # in input order (one pass per pack; gathering through the inverse map took
            # a pass to build it, then one per column: S1, V2:2, ~200 -> ~60 us)
            out = _repacked(spec, packs, n, (
                lambda src, dst: scatter_rows_parallel(src, orow, starts, counts, dst,
                                                       threads)) if threads > 1 else (
                lambda src, dst: scatter_rows(src, orow, starts, counts, dst)), self.pool)
            return self.assemble(spec, bound, dicts, out, (0, n), prep)
        pos, sel = scratch.get("pos", total), scratch.get("sel", total)
        input_order(orow, starts, counts, scratch.get("inv", n)[:n], pos, sel)
        return self.assemble(spec, bound, dicts, packs, pos[:total], prep, sel[:total])

    def groups_in_order(self, spec: KernelSpec, bound: BoundQuery, dicts, packs, oseq,
                        obases, counts) -> RecordBatch:
        """Group rows written by partitions (partition p: ``counts[p]`` rows at
        ``obases[p]``), merged into the defined order: by the position of each group's
        first record in the stream."""
        segs = [(int(a), int(a) + int(c)) for a, c in zip(obases, counts) if c > 0]
        if len(segs) <= 1:
            return self.assemble(spec, bound, dicts, packs, segs[0] if segs else (0, 0))
        # each partition's run is sorted: windowed by (window start, first record),
        # otherwise by first record (groups are numbered in creation order)
        win, seq = (oseq[0], oseq[1]) if oseq.ndim == 2 else (oseq, oseq)
        total = sum(b - a for a, b in segs)
        scratch = self.ctx.scratch
        pos = scratch.get("pos", total)
        starts = np.array([a for a, _ in segs], np.int64)
        ends = np.array([b for _, b in segs], np.int64)
        threads = self.worker_threads(total)
        if threads > 1:
            merge_runs_parallel(win, seq, starts, ends, pos,
                                scratch.get("merge_scratch", total), threads)
        else:
            merge_runs(win, seq, starts, ends, pos,
                       scratch.get("merge_scratch", total) if len(segs) > 2 else pos)
        return self.assemble(spec, bound, dicts, packs, pos[:total])

    def empty(self, spec: KernelSpec, bound: BoundQuery, dicts) -> RecordBatch:
        """No rows, with the columns the query emits (cached per variant)."""
        key = f"empty:{id(spec)}"
        out = self._bufs.get(key)
        if out is None:
            out = self.assemble(spec, bound, dicts, alloc_outputs(spec, 0), (0, 0))
            self._bufs[key] = out
        return out

    # ---------------------------------------------------------------- assembly
    def _plan(self, spec: KernelSpec, bound: BoundQuery, dicts) -> list:
        """Per output column: (name, pack, row, mask row, conversion, passthrough dtype)."""
        plan = self._plans.get(id(spec))
        if plan is None:
            plan = self._plans[id(spec)] = [
                _column_plan(oc, t, e, bound, dicts)
                for oc, t, (_, e) in zip(spec.outputs, bound.output_types, bound.outputs)]
        return plan

    def assemble(self, spec: KernelSpec, bound: BoundQuery, dicts, packs, rows,
                 prep: Prepared | None = None, sel: np.ndarray | None = None) -> RecordBatch:
        """Output batch from the output packs' rows ``rows``: ``(a, b)`` the rows a..b-1,
        or an int64 array of positions in output order (velokern.kernels.order);
        passthrough columns come from ``prep``'s inputs at rows ``sel`` (None: all)."""
        from_packs = self._pack_use(spec)[0]
        if not isinstance(rows, tuple):
            packs, rows = self._gathered(spec, packs, rows, from_packs)
        OM = packs[MASKS]
        a, b = rows
        n = b - a
        blocks = [None] * MASKS  # one block per output pack; columns are its rows
        # rows filling at least half the packs: the output takes the packs themselves
        # (no copy) and the next batch gets new ones; fewer rows are copied out, so an
        # output never holds much more memory than its rows
        give = 2 * n >= packs[0].shape[-1] and n > 0 and from_packs
        if give and self._bufs.get(id(spec), (None,))[0] is packs[0]:
            del self._bufs[id(spec)]
        names, cols, masks, out_dicts = [], {}, {}, {}
        threads = 1 if sel is None else self.worker_threads(len(sel))
        for name, pack, row, mask_row, conv, dtype in self._plan(spec, bound, dicts):
            if pack == PASSTHROUGH:
                arr, m = _passthrough(spec, prep, row, sel, dtype, threads, self.pool)
            else:
                block = blocks[pack]
                if block is None:
                    block = packs[pack][:, a:b]
                    block = blocks[pack] = block if give else block.copy()
                arr = block[row]
                m = None
                if mask_row >= 0:
                    mv = OM[mask_row, a:b]
                    if not _all_true(mv):
                        m = mv if give else mv.copy()
            if conv is not None:
                how, arg = conv
                if how == "view":
                    arr = arr.view(arg)
                elif how == "astype":
                    arr = arr.astype(arg)
                else:  # "dict": int32 codes of this dictionary
                    out_dicts[name] = arg
            names.append(name)
            cols[name] = arr
            masks[name] = m
        return RecordBatch._trusted(names, cols, masks, out_dicts, n)

    def _pack_use(self, spec: KernelSpec) -> tuple[bool, bool]:
        """(some output column is read from the packs, some is passed through from the
        input), cached per variant (out_rows builds a dict)."""
        got = self._pack_uses.get(id(spec))
        if got is None:
            through = spec.out_rows()["C"]
            got = self._pack_uses[id(spec)] = (through < len(spec.outputs), through > 0)
        return got

    def _gathered(self, spec: KernelSpec, packs, pos: np.ndarray, from_packs: bool) -> tuple:
        """(new packs holding rows ``pos`` in order, their row range); the packs as they
        are when no output column is read from them (all passed through)."""
        if not from_packs:
            return packs, (0, len(pos))
        # gathered pack by pack (a take per column and per mask cost more: S3a, V2:2,
        # 3.99-4.51 -> 3.83-4.43 ms per batch), on the numba workers of a V2 job
        # (16-core machine, S3a 100k batches: 782 -> 407 us at 4 threads, 831 -> 234
        # at 16; 2-core machine, S3a V2:2 with outputs kept 3.95-4.01 -> 2.90-3.03 ms
        # per batch: the workers fault in the new packs' pages side by side)
        threads = self.worker_threads(len(pos))
        packs = _repacked(spec, packs, len(pos), (
            lambda src, dst: gather_rows_parallel(src, pos, dst, threads))
            if threads > 1 else (lambda src, dst: gather_rows(src, pos, dst)), self.pool)
        return packs, (0, len(pos))


def _passthrough(spec: KernelSpec, prep: Prepared | None, row: int, sel, dtype,
                 threads: int = 1, pool: BlockPool | None = None):
    """(values, validity) of input column ``C[row]`` passed through to the output, at
    the input rows ``sel`` (None: all), taken on ``threads`` numba workers into memory
    from ``pool``."""
    if prep is None:  # no input: an empty column
        return np.empty(0, dtype=dtype), None
    src = prep.C[row]
    vm = prep.batch.validity(spec.inputs[row][0])
    if sel is None:
        return src, vm
    m = None if vm is None else vm[sel]
    if m is not None and _all_true(m):
        m = None
    return _take(src, sel, threads, pool), m


def _take(src: np.ndarray, sel: np.ndarray, threads: int, pool: BlockPool | None):
    """``src[sel]``: into recycled memory (a new array of a large output page-faults on
    its first write), on the numba workers when ``threads`` > 1."""
    nbytes = len(sel) * src.dtype.itemsize
    if pool is None or nbytes < pool.min_bytes:
        return src[sel]
    out = pool.take(nbytes)[:nbytes].view(src.dtype)
    if threads > 1:
        take_rows_parallel(src, sel, out, threads)
    else:
        np.take(src, sel, out=out)
    return out


def _column_plan(oc, t: str, e, bound: BoundQuery, dicts) -> tuple:
    """How output column ``oc`` (logical type ``t``, expression ``e``) is read from the
    packs: (name, pack, row, mask row, conversion, passthrough dtype)."""
    if oc.pack == "C":
        conv = None
        if is_time(t):
            conv = ("view", np.dtype(t))
        elif t == STRING:
            conv = ("dict", dicts[_owner(bound, e)])
        return (oc.name, PASSTHROUGH, oc.row, oc.mask_row, conv, np.dtype(oc.dtype))
    pack = PACKS.index(oc.pack)
    if is_time(t):
        conv = ("view", np.dtype(t))
    elif t == STRING:  # int32 codes in pack OC
        conv = ("dict", dicts[_owner(bound, e)])
    elif np.dtype(oc.dtype).kind == "u" and np.dtype(oc.dtype).itemsize == 8:
        conv = ("view", np.dtype(np.uint64))
    elif np.dtype(oc.dtype) != PACK_DTYPES[pack]:
        conv = ("astype", np.dtype(oc.dtype))
    else:
        conv = None
    return (oc.name, pack, oc.row, oc.mask_row, conv, None)


def _owner(b: BoundQuery, e) -> str:
    """The input column whose dictionary a string expression's codes come from."""
    if isinstance(e, Col):
        return e.name
    if isinstance(e, KeyRef):
        return _owner(b, b.keys[e.i])
    if isinstance(e, AggRef):
        return _owner(b, b.aggs[e.i].arg)
    raise PlanError(f"no dictionary for string expression {e}")


def alloc_seq(spec: KernelSpec, n: int) -> np.ndarray:
    """Order keys of emitted group rows: first-record positions, with the window start
    in front for a windowed query."""
    return np.empty((2, n) if spec.windowed else n, dtype=np.int64)


def _repacked(spec: KernelSpec, packs, n: int, fill: Callable, pool: BlockPool) -> tuple:
    """New output packs of ``n`` rows, each filled by ``fill(src, dst)`` from the same
    pack of ``packs`` (only the rows the query's outputs use)."""
    out = alloc_outputs(spec, n, pool)
    used = spec.out_rows()
    for src, dst, name in zip(packs, out, PACKS):
        if used[name]:
            fill(src[:used[name]], dst[:used[name]])
    return out


def _all_true(m: np.ndarray) -> bool:
    """``m.all()`` for a bool array: a count for up to config.MASK_COUNT_MAX entries
    (numpy's reduction costs ~1.4 us a call, the count ~0.4 us; an output of 1k-record
    batches checks a mask per nullable column), the reduction beyond (faster on long
    arrays)."""
    if m.size <= config.MASK_COUNT_MAX:
        return np.count_nonzero(m) == m.size
    return bool(m.all())


def alloc_outputs(spec: KernelSpec, n: int, pool: BlockPool | None = None):
    """Output packs (OI int64, OF float64, OB bool, OC int32 string codes, OM bool
    masks), ``n`` rows each (none for a pack other than OI that no output uses: the
    kernels never index it). With a ``pool``, the large packs are carved from one of
    its blocks (64-byte aligned), which comes back once no output refers to it; small
    packs are plain arrays, which the C allocator serves from memory it keeps (carved
    from the block, S1's mask row was ~25 new pages every batch)."""
    min_bytes = pool.min_bytes if pool is not None else None
    layout = spec.layouts.get((n, min_bytes))
    if layout is None:
        layout = spec.layouts[(n, min_bytes)] = _pack_layout(spec, n, min_bytes)
    packs, total = layout
    if not total:
        return tuple(np.empty(sh, dtype=dt) for sh, dt, _, _ in packs)
    block = pool.take(total)
    return tuple(np.empty(sh, dtype=dt) if o < 0 else block[o:o + size].view(dt).reshape(sh)
                 for sh, dt, size, o in packs)


def _pack_layout(spec: KernelSpec, n: int, min_bytes: int | None) -> tuple:
    """(per pack: shape, dtype, bytes, offset in the pooled block or -1 for a plain
    array), block bytes: the layout :func:`alloc_outputs` reuses for each size."""
    rows = spec.out_rows()
    if len(spec.layouts) > config.PACK_LAYOUT_CACHE_SIZE:  # sizes a job sees are few
        spec.layouts.clear()
    packs, total = [], 0
    for name, dt in zip(PACKS, PACK_DTYPES):
        # OI always has the width: the engine reads the packs' room from it
        sh = (max(rows[name], 1), n if rows[name] or name == "OI" else 0)
        size = sh[0] * sh[1] * dt.itemsize
        if min_bytes is None or size < min_bytes:
            packs.append((sh, dt, size, -1))
        else:
            packs.append((sh, dt, size, total))
            total += (size + 63) // 64 * 64
    return tuple(packs), total
