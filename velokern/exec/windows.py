"""Time windows: late records of a batch, and closing every open window at the end.

Windows close inside the kernels as the record watermark passes them (see
:mod:`velokern.codegen`); what is left to Python is handing a batch's late records to
the late sink and, at end of input, closing what is still open.

The late sink is called once the batch is done (its output built, its state and
counters final): a sink that raises then loses nothing (:func:`deliver_late`).
"""

from __future__ import annotations

import numpy as np

from velokern.batch import RecordBatch
from velokern.exec.context import JobContext, LateSinkError, Prepared
from velokern.exec.output import OutputStage, alloc_outputs, alloc_seq
from velokern.exec.state import KeyedState
from velokern.kernels import layout as L

__all__ = ["close_all_windows", "deliver_late", "hold_late", "take_late"]

_MAX_I64 = int(np.iinfo(np.int64).max)


def take_late(ctx: JobContext, state: KeyedState, prep: Prepared, late: np.ndarray,
              obases: np.ndarray) -> None:
    """Count the batch's late records and hold them, in input order, for the late sink
    (partition p left their row numbers in ``late[obases[p]:]``)."""
    meta = state.meta
    if not (meta[0, L.NLATE] if len(meta) == 1 else meta[:, L.NLATE].any()):
        return  # (one partition: a scalar test, most batches have no late record)
    nlate = meta[:, L.NLATE].copy()
    meta[:, L.NLATE] = 0
    rows = np.sort(np.concatenate([late[int(b):int(b) + int(c)]
                                   for b, c in zip(obases, nlate)]))
    hold_late(ctx, prep.batch, rows)


def hold_late(ctx: JobContext, batch: RecordBatch, rows: np.ndarray) -> None:
    """Count the late ``rows`` of ``batch`` and keep them for :func:`deliver_late`."""
    ctx.metrics["late_records"] += len(rows)
    if ctx.late_sink is not None:
        ctx.late = batch.take(rows)


def deliver_late(ctx: JobContext, out: RecordBatch) -> RecordBatch:
    """Hand the late records held for the batch to the late sink; returns ``out``, the
    batch's output. When the sink raises, the records are counted in
    ``late_undelivered`` and :class:`LateSinkError` carries ``out`` and them (a
    BaseException that is not an Exception, e.g. KeyboardInterrupt, goes through)."""
    late = ctx.late
    if late is None:
        return out
    ctx.late = None
    try:
        ctx.late_sink(late)
    except BaseException as exc:
        ctx.metrics["late_undelivered"] += len(late)
        if not isinstance(exc, Exception):
            raise
        raise LateSinkError(out, late, exc) from exc
    return out


def close_all_windows(state: KeyedState, output: OutputStage, bound, dicts, module,
                      R) -> RecordBatch:
    """End of input: close every open window (EMIT FINAL: emit its rows in (window
    start, first record) order) and free its state."""
    spec = state.spec
    meta = state.meta
    P = meta.shape[0]
    sizes = meta[:, L.NGROUPS].copy()
    obases = np.zeros(P, np.int64)
    np.cumsum(sizes[:-1], out=obases[1:])
    total = int(sizes.sum())
    packs = alloc_outputs(spec, total, output.pool)
    oseq = alloc_seq(spec, total if P > 1 else 0)  # (one partition: no merge)
    counts = np.zeros(P, np.int64)
    S = state.tuple()
    for p in range(P):  # once per job: serial (see velokern.codegen)
        if sizes[p]:
            counts[p] = module.close_groups(S, p, R, _MAX_I64, *packs, oseq, int(obases[p]))
    return output.groups_in_order(spec, bound, dicts, packs, oseq, obases, counts)
