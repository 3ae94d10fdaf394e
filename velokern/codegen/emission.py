"""Emission of a GROUP BY query's rows: ``emit_part`` (the output rows of a list of
groups), the fused per-batch kernel ``batch_part`` (update, then emit what the batch
changed or closed) with its prange wrapper ``batch_all``, and, for windows,
``close_groups`` (emit and free the windows a watermark closed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velokern.aggregates import kind_for
from velokern.codegen.common import indent, runtime_prologue
from velokern.codegen.outputs import out_lines
from velokern.codegen.parallel import BATCH_PART, part_signature, prange_wrapper
from velokern.kernels.layout import (
    META,
    NGROUPS,
    NOUT,
    NTOUCHED,
    R_WINDOW,
    WIN_LATENESS,
    WIN_WATERMARK,
    B,
    I,
)
from velokern.plan import compute_type

if TYPE_CHECKING:
    from velokern.codegen.aggregate import AggregateGen

_EMIT = "emit_part(S, p, R, {gids}, 0, {n}, OI, OF, OB, OC, OM, oseq, {obase})"


def _group_values(ag: AggregateGen):
    """An expression generator whose key, window and aggregate references read group
    ``g``'s state (its statements: the aggregates' final values)."""
    bq = ag.bq
    e = ag.gen()
    e.env = {"key": [compute_type(t) for t in bq.key_types],
             "agg": [compute_type(t) for t in bq.agg_types]}
    for j in range(ag.K):
        v, n = e.tmp(), e.tmp()
        if ag.key_vals[j][1] == "False":  # this key cannot be null in this variant
            e.emit(f"{v} = kv{j}[g]")
            n = "False"
        else:
            e.emit(f"{n} = knull[g, {j}] != 0\n{v} = kv{j}[g]")
        e.refs[f"KeyRef{j}"] = (v, n)
    if ag.win is not None:
        e.emit(f"wend = kv0[g] + {bq.size}")
        e.refs["WinEnd"] = ("wend", "False")
        e.refs["WinStart"] = e.refs["KeyRef0"]
    for ai, a in enumerate(bq.aggs):
        final = kind_for(a.func, bq.agg_arg_types[ai]).final.format(**ag.agg_fmt(ai))
        e.emit(final)
        never_null = f"a{ai}n = False" in final.split("\n")
        e.refs[f"AggRef{ai}"] = (f"a{ai}v", "False" if never_null else f"a{ai}n")
    return e


def emit_kernel(ag: AggregateGen, bind_state: list[str]) -> list[str]:
    """``emit_part``: the output rows (HAVING applied) of groups ``gids[gstart:gend]``
    at ``obase``, with their order keys in ``oseq``."""
    e = _group_values(ag)
    if ag.bq.having is not None:
        hv, hn = e.gen(ag.bq.having)
        e.emit(f"if not ({hv} and not {hn}):\n    continue")
    stores = out_lines(e, list(zip(ag.bq.outputs, ag.bq.output_types)), "nonneg(obase + k)")
    if ag.win is None:
        seq_store = ["oseq[nonneg(obase + k)] = first_seq[g]"]
    else:  # rows are ordered by (window start, first record)
        seq_store = ["oseq[0, nonneg(obase + k)] = kv0[g]",
                     "oseq[1, nonneg(obase + k)] = first_seq[g]"]
    # order keys are read only to merge the runs of several partitions: with one
    # partition the engine passes an empty ``oseq`` and they are not written (S3a, V1:
    # 16 of a row's 56 bytes)
    body = e.lines + stores + ["if want_seq:"] + indent(seq_store, 4) + ["k += 1"]
    src = ["@njit(inline=\"always\", **JIT)",
           "def emit_part(S, p, R, gids, gstart, gend, OI, OF, OB, OC, OM, oseq, obase):"]
    src += indent(runtime_prologue(ag.spec) + bind_state, 4)
    src += indent(["k = 0", "want_seq = oseq.shape[-1] != 0",
                   "for t in range(gstart, gend):", "    g = nonneg(gids[t])"], 4)
    src += indent(body, 8)
    return src + indent(["return k"], 4) + ["", ""]


def _untouch(ag: AggregateGen, sel: str, n: str) -> list[str]:
    """Clear the touched flags of groups ``sel[:n]``."""
    return [f"touched = S[{B}][p][{ag.st.row('touched')}]",
            f"for t in range({n}):",
            f"    touched[{sel}[t]] = 0"]


def _emit_touched(ag: AggregateGen, gids: str) -> list[str]:
    """EMIT CHANGES: order the ``nt`` touched groups (``gids``), forget them."""
    return [f"gids = {gids}", *_untouch(ag, "gids", "nt"), f"meta[{NTOUCHED}] = 0"]


def _touched_list(ag: AggregateGen) -> str:
    return f"np.sort(S[{I}][p][{ag.st.row('tlist')}][:nt])"


def _batch_windowed(ag: AggregateGen) -> list[str]:
    """A windowed ``batch_part``'s end: close what the batch's last watermark passed;
    EMIT CHANGES: emit the rest of the touched rows (rows of windows closed in the batch
    were emitted on closing)."""
    src = ["if stop < end:",
           "    return stop, 0",
           f"meta = S[{META}][p]",
           f"k = meta[{NOUT}]",
           f"meta[{NOUT}] = 0",
           f"W = R[{R_WINDOW}][{WIN_WATERMARK}]",
           "if W != NO_WM:",
           f"    k += close_groups(S, p, R, W - R[{R_WINDOW}][{WIN_LATENESS}] - {ag.bq.size}, "
           "OI, OF, OB, OC, OM, oseq, obase + k)"]
    if ag.track:
        gids = f"window_order({_touched_list(ag)}, {ag.wstart()})"
        src += [f"nt = meta[{NTOUCHED}]",
                "if emit and nt > 0:",
                *indent(_emit_touched(ag, gids), 4),
                "    k += " + _EMIT.format(gids="gids", n="nt", obase="obase + k")]
    return src + ["return stop, k"]


def _batch_changes(ag: AggregateGen) -> list[str]:
    """A ``batch_part``'s end without windows, EMIT CHANGES: emit the touched groups."""
    return ["if stop < end or not emit:",
            "    return stop, 0",
            f"meta = S[{META}][p]",
            f"nt = meta[{NTOUCHED}]",
            "if nt == 0:",
            "    return stop, 0",
            *_emit_touched(ag, _touched_list(ag)),
            "k = " + _EMIT.format(gids="gids", n="nt", obase="obase"),
            "return stop, k"]


def batch_kernels(ag: AggregateGen) -> list[str]:
    """``batch_part`` (update, then emit) and its prange wrapper ``batch_all``."""
    src = ["@njit(**JIT)", part_signature("batch_part", BATCH_PART),
           "    stop = update_part(S, p, C, M, R, idx, use_idx, start, end, seq_base, obase"
           f"{ag.out_args()})"]
    if ag.win is not None:
        src += indent(_batch_windowed(ag), 4)
    elif ag.track:
        src += indent(_batch_changes(ag), 4)
    else:
        # EMIT FINAL: nothing is emitted per batch (and no emit code is compiled here)
        src += ["    return stop, np.int64(0)"]  # (int64, int64) as call_pair expects
    return src + ["", "", *prange_wrapper("batch_all", BATCH_PART), "", ""]


def close_groups(ag: AggregateGen) -> list[str]:
    """Windowed: ``close_groups``, which emits (EMIT FINAL: every closing row; EMIT
    CHANGES: the touched ones, their last change) and frees the groups of the windows
    ending at or before ``limit``."""
    if ag.win is None:
        return []
    nd = [str(ag.nd_col(ai)) for ai in ag.distinct]
    nd_cols = f"np.array([{', '.join(nd)}], np.int64)" if nd else "np.empty(0, np.int64)"
    brow = ag.st.row("touched")
    pick = "gids" if not ag.track else f"gids[S[{B}][p][{brow}][gids] != 0]"
    src = ["@njit(**JIT)",
           "def close_groups(S, p, R, limit, OI, OF, OB, OC, OM, oseq, obase):",
           f"    wstart = {ag.wstart()}",
           f"    gids = closing_gids(wstart, S[{META}][p][{NGROUPS}], limit)",
           "    if len(gids) == 0:",
           "        return 0",
           f"    sel = {pick}"]
    if ag.track:  # (EMIT FINAL never sets the flags)
        src += indent(_untouch(ag, "sel", "len(sel)"), 4)
    return src + [
        "    k = " + _EMIT.format(gids="sel", n="len(sel)", obase="obase"),
        f"    drop_closed(S, p, wstart, limit, {nd_cols}, {ag.st.row('tlist')})",
        "    return k",
        "",
        "",
    ]


__all__ = ["batch_kernels", "close_groups", "emit_kernel"]
