"""The per-batch driver: the one call path V1 and V2 take through the kernels.

A processor routes a prepared batch to partitions (:class:`Routing`); the driver runs
every partition's kernel over its rows (one prange call, or one call per partition),
grows the state and resumes the partitions that stopped for room, and hands the rows
the partitions wrote to the output stage. At end of input, :meth:`Driver.flush` emits
what is still held.
"""

from __future__ import annotations

import numpy as np

from velokern.batch import RecordBatch
from velokern.codegen import KernelSpec
from velokern.exec.context import JobContext, Prepared, Routing
from velokern.exec.input import InputStage
from velokern.exec.output import OutputStage, alloc_outputs
from velokern.exec.state import KeyedState
from velokern.exec.windows import close_all_windows, take_late
from velokern.kernels import layout as L
from velokern.kernels.calls import part_address
from velokern.kernels.hashtable import collect_all

__all__ = ["Driver"]

_EMPTY_I64 = np.empty(0, dtype=np.int64)
_ZERO_I64 = np.zeros(1, dtype=np.int64)  # one partition's output offset (read only)
_ZERO_I64.flags.writeable = False


class Driver:
    """Runs prepared batches through the kernels of one job."""

    def __init__(self, ctx: JobContext, inputs: InputStage, state: KeyedState,
                 output: OutputStage, emit_mode: str):
        self.ctx = ctx
        self.inputs = inputs
        self.state = state
        self.output = output
        self.emit_mode = emit_mode

    # ---------------------------------------------------------------- helpers
    def _ready(self, spec: KernelSpec, module) -> None:
        """State allocated, direct map sized to the dictionaries."""
        self.state.ensure(spec, module, self.ctx.num_partitions)
        if spec.direct:
            self.state.ensure_direct(spec, self.inputs.bound, self.inputs.dicts)

    def _groups(self, spec, packs, oseq, obases, counts) -> RecordBatch:
        return self.output.groups_in_order(spec, self.inputs.bound, self.inputs.dicts,
                                           packs, oseq, obases, counts)

    def _in_input_order(self, spec, packs, orow, starts, counts, prep,
                        ranged: bool = False) -> RecordBatch:
        return self.output.in_input_order(spec, self.inputs.bound, self.inputs.dicts,
                                          packs, orow, starts, counts, prep, ranged)

    def empty(self, spec: KernelSpec) -> RecordBatch:
        return self.output.empty(spec, self.inputs.bound, self.inputs.dicts)

    def _run_partitions(self, starts, ends, run_all, run_part, parallel: bool) -> np.ndarray:
        """Run every partition's kernel over ``[starts[p], ends[p])`` (one prange call, or
        one call per partition), growing the state and resuming the partitions that
        stopped because it was full. Returns the output rows of each partition."""
        P = len(ends)
        starts = np.asarray(starts, np.int64).copy()
        stops = starts.copy()
        counts = np.zeros(P, np.int64)
        active = np.ones(P, np.uint8)
        while True:
            S = self.state.tuple()
            if parallel:
                run_all(S, starts, active, stops, counts)
            else:
                for p in range(P):
                    if active[p]:
                        stops[p], counts[p] = run_part(S, p, int(starts[p]))
            unfinished = stops < ends
            if not unfinished.any():
                return counts
            self.state.grow()
            active = unfinished.astype(np.uint8)
            starts = stops.copy()

    # ---------------------------------------------------------------- batches
    def run(self, prep: Prepared, r: Routing) -> RecordBatch:
        """The output of one batch (the caller holds the job's lock)."""
        spec = prep.spec
        if spec.rows_window:
            return self._rows(prep, r)
        if spec.stateful:
            return self._stateful(prep, r)
        return self._stateless(prep, r)

    def _stateless(self, prep: Prepared, r: Routing) -> RecordBatch:
        spec = prep.spec
        n = prep.n
        OI, OF, OB, OC, OM, orow = self.output.buffers(spec, n)
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        P = len(r.starts)
        counts = np.zeros(P, dtype=np.int64)
        if r.parallel and P > 1:
            args = (prep.C, prep.M, prep.R, idx, use_idx, r.starts, r.ends, OI, OF, OB, OC, OM,
                    orow, counts)
            part = part_address(prep.module.project_part, "int", args, lambda: (
                prep.C, prep.M, prep.R, idx, use_idx, r.starts[0], r.ends[0], OI, OF, OB, OC, OM,
                orow))
            prep.module.project_all(part, *args)
        else:
            for p in range(P):
                counts[p] = prep.module.project_part(prep.C, prep.M, prep.R, idx, use_idx,
                                                     int(r.starts[p]), int(r.ends[p]), OI, OF,
                                                     OB, OC, OM, orow)
        self.ctx.metrics["records_filtered"] += n - int(counts.sum())
        return self._in_input_order(spec, (OI, OF, OB, OC, OM), orow, r.starts, counts, prep,
                                    ranged=not use_idx)

    def _rows(self, prep: Prepared, r: Routing) -> RecordBatch:
        """ROWS window functions: partition p updates its keys' frames and writes one row
        per record at ``r.starts[p]``; rows are put back in input order."""
        spec = prep.spec
        module = prep.module
        self._ready(spec, module)
        OI, OF, OB, OC, OM, orow = self.output.buffers(spec, prep.n)
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        P = len(r.starts)
        obases = r.starts.astype(np.int64, copy=False)
        ends = r.ends.astype(np.int64, copy=False)

        def run_all(S, starts, active, stops, counts):
            args = (S, prep.C, prep.M, prep.R, idx, use_idx, starts, ends, obases, active, OI,
                    OF, OB, OC, OM, orow, stops, counts)
            part = part_address(module.rows_part, "pair", args, lambda: (
                S, starts[0], prep.C, prep.M, prep.R, idx, use_idx, starts[0], ends[0],
                obases[0], OI, OF, OB, OC, OM, orow))
            module.rows_all(part, *args)

        def run_part(S, p, start):
            return module.rows_part(S, p, prep.C, prep.M, prep.R, idx, use_idx, start,
                                    int(ends[p]), int(obases[p]), OI, OF, OB, OC, OM, orow)

        counts = self._run_partitions(obases, ends, run_all, run_part, r.parallel and P > 1)
        if spec.ttl:  # keys past their TTL go (they would start afresh if they came back)
            before = self.ctx.watermark
            self.ctx.watermark = max(before, prep.watermark)
            self.state.evict_expired(before, self.ctx.watermark, self.inputs.bound.ttl)
        return self._in_input_order(spec, (OI, OF, OB, OC, OM), orow, obases, counts, prep)

    def _stateful(self, prep: Prepared, r: Routing) -> RecordBatch:
        """Update every partition's state and (EMIT CHANGES) emit its touched groups in
        one fused kernel call per partition; partition p writes its output rows at
        ``obases[p]``: ``r.starts[p]`` (it touched at most ``ends[p] - starts[p]``
        groups), or for a windowed query after its live groups plus its records times
        the windows a record can belong to (closing windows emit them)."""
        spec = prep.spec
        self._ready(spec, prep.module)
        P = len(r.starts)
        R = prep.R
        if spec.windowed:
            if P == 1:  # (plain ints: this is most of the work at small batches)
                obases = _ZERO_I64
                cap = int(self.state.meta[0, L.NGROUPS]) + prep.n * spec.max_windows
            else:
                sizes = self.state.meta[:, L.NGROUPS] + (r.ends - r.starts) * spec.max_windows
                obases = np.zeros(P, np.int64)
                np.cumsum(sizes[:-1], out=obases[1:])
                cap = int(sizes.sum())
            R = R[:L.R_LATE] + (self.ctx.scratch.get("late", cap),)
        else:
            obases = r.starts if P == 1 else r.starts.astype(np.int64, copy=False)
            cap = prep.n
        OI, OF, OB, OC, OM, oseq = self.output.buffers(spec, cap, seq_rows=P > 1)
        out = (OI, OF, OB, OC, OM, oseq)
        if P == 1:
            base = 0 if spec.windowed else int(r.starts[0])
            k = self._stateful_one(prep, r, R, base, out)
        else:
            counts = self._stateful_many(prep, r, R, obases, out)
        packs = out[:5]
        if spec.windowed:
            take_late(self.ctx, self.state, prep, R[L.R_LATE], obases)
            self.ctx.watermark = max(self.ctx.watermark, prep.watermark)
        elif self.emit_mode != "changes":
            return self.empty(spec)
        if P == 1:  # (the common path at small batches: plain ints, no more numpy)
            return self.output.assemble(spec, self.inputs.bound, self.inputs.dicts, packs,
                                        (base, base + k))
        return self._groups(spec, packs, oseq, obases, counts)

    def _stateful_one(self, prep: Prepared, r: Routing, R, base: int, out) -> int:
        """One partition: call its fused kernel until it has taken every row (growing
        the state between calls); returns the rows it wrote at ``base``."""
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        emit = self.emit_mode == "changes"
        start, end = int(r.starts[0]), int(r.ends[0])
        while True:
            stop, k = prep.module.batch_part(tuple(self.state.arrays), 0, prep.C, prep.M, R, idx,
                                             use_idx, start, end, base, self.ctx.seq, emit,
                                             *out)
            if stop >= end:
                return k
            self.state.grow()
            start = stop

    def _stateful_many(self, prep: Prepared, r: Routing, R, obases, out) -> np.ndarray:
        """Every partition's fused kernel (one prange call when ``r.parallel``)."""
        idx = r.idx if r.idx is not None else _EMPTY_I64
        use_idx = r.idx is not None
        emit = self.emit_mode == "changes"
        module = prep.module
        seq = self.ctx.seq
        ends = r.ends.astype(np.int64, copy=False)

        def run_all(S, starts, active, stops, counts):
            args = (S, prep.C, prep.M, R, idx, use_idx, starts, ends, obases, active,
                    seq, emit, *out, stops, counts)
            part = part_address(module.batch_part, "pair", args, lambda: (
                S, starts[0], prep.C, prep.M, R, idx, use_idx, starts[0], ends[0],
                obases[0], seq, emit, *out))
            module.batch_all(part, *args)

        def run_part(S, p, start):
            return module.batch_part(S, p, prep.C, prep.M, R, idx, use_idx, start, ends[p],
                                     obases[p], seq, emit, *out)

        return self._run_partitions(r.starts, ends, run_all, run_part, r.parallel)

    # ---------------------------------------------------------------- end of input
    def flush(self) -> RecordBatch:
        """End of input: emit what is still held (final group rows for EMIT FINAL).
        Once per job, so partitions are emitted one after another (no parallel kernel
        to compile for it)."""
        inputs, state = self.inputs, self.state
        spec, module = inputs.variant()
        if spec.windowed and state.allocated and self.emit_mode != "final":
            # EMIT CHANGES already emitted every row: free the open windows
            close_all_windows(state, self.output, inputs.bound, inputs.dicts, module,
                              inputs.end_runtime(spec))
        if not spec.stateful or self.emit_mode != "final":
            return self.empty(spec)
        if not state.allocated:
            state.ensure(spec, module, self.ctx.num_partitions)
        R = inputs.end_runtime(spec)
        if spec.windowed:
            return close_all_windows(state, self.output, inputs.bound, inputs.dicts,
                                     module, R)
        return self._emit_all(module, R)

    def _emit_all(self, module, R) -> RecordBatch:
        """End of input, EMIT FINAL without a window: every group, in creation order."""
        spec = self.state.spec
        meta = self.state.meta
        P = meta.shape[0]
        total = self.state.meta_sum(L.NGROUPS)
        gids = np.empty(total, dtype=np.int64)
        goffs = np.empty(P + 1, dtype=np.int64)
        collect_all(meta, L.NGROUPS, gids, goffs)
        packs = alloc_outputs(spec, total, self.output.pool)
        oseq = np.empty(total if P > 1 else 0, dtype=np.int64)  # (one partition: no merge)
        counts = np.zeros(P, dtype=np.int64)
        obases = goffs[:P].copy()
        S = self.state.tuple()
        for p in range(P):  # once per job: serial (see velokern.codegen)
            counts[p] = module.emit_part(S, p, R, gids, int(goffs[p]), int(goffs[p + 1]),
                                         *packs, oseq, int(obases[p]))
        return self._groups(spec, packs, oseq, obases, counts)
