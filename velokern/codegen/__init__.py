"""The code generator: a bound query fused into numba kernels (generated Python source,
compiled by numba).

One pass over a batch does filter, expression evaluation and aggregate update. The
generated module holds, for a stateless query::

    project_part(C, M, R, idx, use_idx, start, end, OI, OF, OB, OC, OM, orow) -> rows written
    project_all(part, ...)  # prange over partitions, each calling project_part at `part`

and for an aggregate query::

    update_part(S, p, C, M, R, idx, use_idx, start, end, seq_base, obase) -> row it stopped at
    emit_part(S, p, R, gids, gstart, gend, OI, OF, OB, OC, OM, oseq, obase) -> rows written
    batch_part(...)    # update_part, then (EMIT CHANGES) emit the touched groups
    batch_all(part, ...)  # prange over partitions, each calling batch_part at `part`
    close_groups(S, p, R, limit, ...)  # windowed: emit and free windows ending <= limit
    init_global(S, p)  # no keys: make the one group
    key_bits(C, M, R, n, out)  # grouping bits of every key, for hash partitioning

and for ROWS window functions ``rows_part``, ``rows_all`` and ``key_bits``.

``C`` are the input columns, ``M`` the validity masks of the nullable ones (one 2-D
array), ``R`` runtime constants (string literal codes, string ranks), ``S`` the state
arrays (see :mod:`velokern.kernels.layout`; one row per partition), ``idx`` the bucketed
row order (used when ``use_idx``), ``OI``/``OF``/``OB``/``OC`` output columns packed by
type (int64, float64, bool, int32 string codes) and ``OM`` their validity. Everything
data-dependent is an argument, so the source depends only on the query, the input types
and which columns are nullable: the module is cached on disk by its hash (see
:mod:`velokern.kernels.compiler`).

Only the per-batch kernels get a ``prange`` wrapper (:mod:`velokern.codegen.parallel`).
End-of-input emission runs once per job, so ``flush`` calls the serial ``*_part``
kernels partition by partition.

The parts: :mod:`~velokern.codegen.expressions` (expressions),
:mod:`~velokern.codegen.keys` (key bits, hash, probe, direct map),
:mod:`~velokern.codegen.outputs` (row outputs), :mod:`~velokern.codegen.state` (pack
rows), :mod:`~velokern.codegen.stateless`, :mod:`~velokern.codegen.aggregate` with
:mod:`~velokern.codegen.prefetch` and :mod:`~velokern.codegen.emission` (GROUP BY),
:mod:`~velokern.codegen.rows` (ROWS windows), :mod:`~velokern.codegen.parallel` (the
prange wrappers), :mod:`~velokern.codegen.common` (header, prologue, row loop).
"""

from __future__ import annotations

from velokern.codegen.aggregate import gen_aggregate
from velokern.codegen.common import header
from velokern.codegen.keys import value_is_bits
from velokern.codegen.rows import gen_rows
from velokern.codegen.spec import KernelSpec, OutCol, StateArray
from velokern.codegen.stateless import gen_stateless
from velokern.plan import BoundQuery, Col, WinRef, is_float


def _inputs(bq: BoundQuery, types: dict[str, str]) -> list[tuple[str, str]]:
    """The kernel's input columns: every column's data, then the normalised bits of
    each float column that is a key or a COUNT(DISTINCT) argument."""
    inputs: list[tuple[str, str]] = [(c, "data") for c in bq.columns]
    for e in bq.keys + [a.arg for a in bq.aggs if a.func == "count_distinct"]:
        if isinstance(e, Col) and is_float(types[e.name]) and (e.name, "bits") not in inputs:
            inputs.append((e.name, "bits"))
    return inputs


def generate(bq: BoundQuery, nullable: set[str]) -> KernelSpec:
    """The kernel module of ``bq`` with the columns ``nullable`` nullable."""
    types = {n: t for n, t in bq.schema}
    inputs = _inputs(bq, types)
    spec = KernelSpec(
        source="",
        stateful=bq.is_aggregate,
        inputs=inputs,
        nullable=[c for c in bq.columns if c in nullable],
        literals=[],
        rank_columns=[],
        outputs=[],
        num_keys=len(bq.keys),
        num_part_keys=len(bq.keys) - (bq.window is not None),
        windowed=bq.window is not None,
    )
    part = [(e, t) for e, t in zip(bq.keys, bq.key_types) if not isinstance(e, WinRef)]
    if part and all(isinstance(e, Col) and value_is_bits(t) for e, t in part):
        spec.raw_keys = tuple((inputs.index((e.name, "data")), e.name) for e, _ in part)
    if bq.overs:
        spec.stateful = True
        spec.rows_window = True
        spec.ttl = bq.ttl_column is not None
        body = gen_rows(bq, spec, types)
    elif bq.is_aggregate:
        body = gen_aggregate(bq, spec, types)
    else:
        body = gen_stateless(bq, spec, types)
    spec.source = header() + "\n" + body
    return spec


__all__ = ["KernelSpec", "OutCol", "StateArray", "generate"]
