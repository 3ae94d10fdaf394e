"""ROWS window functions: ``rows_part`` and its prange wrapper ``rows_all``.

Per PARTITION BY key (a group of the hash table), ring buffers of the last rows'
values in the packed state (ring slot s of a function is row ``base + s`` of its pack,
column = the key's group id) and running sums, counts and extremes; one output row per
input row that passes WHERE.
"""

from __future__ import annotations

from dataclasses import dataclass

from velokern.codegen.common import ROW, indent, prologue_inputs, row_loop
from velokern.codegen.expressions import ExprGen
from velokern.codegen.keys import (
    direct_prologue,
    group_lookup,
    key_bits_src,
    row_keys,
    uses_direct_map,
)
from velokern.codegen.outputs import row_body
from velokern.codegen.parallel import ROWS_PART, part_signature, prange_wrapper
from velokern.codegen.spec import KernelSpec
from velokern.codegen.state import PackRows, bind_packs, bind_slots, state_type
from velokern.kernels.layout import (
    FILTERED,
    NGROUPS,
    PACKS,
    R_MARKS,
    R_WINDOW,
    ROWS_NOUT,
    WIN_LATENESS,
    rows_meta,
)
from velokern.plan import NULL, BoundQuery, Col, compute_type, is_float


@dataclass
class _Ring:
    """Where one window function keeps its frame: the last ``length`` values (dtype
    ``vt``) at rows ``base``... of pack ``pack``, their null flags at rows ``nbase``...
    of pack B (-1: no ring)."""

    vt: str
    pack: str
    base: int
    nbase: int
    length: int


def _layout(bq: BoundQuery, spec: KernelSpec) -> list[_Ring]:
    """Lay out the state (the keys, the row count, each function's ring and running
    values) into ``spec``; returns each function's ring."""
    st = PackRows()
    for j, t in enumerate(bq.key_types):
        st.add(f"kv{j}", state_type(t))
    st.add("nrows", "int64")
    if bq.ttl_column is not None:
        st.add("last_t", "int64")  # the key's latest event time (state TTL)
    rings = []
    for oi, (o, at) in enumerate(zip(bq.overs, bq.over_arg_types)):
        vt = "float64" if at is not None and is_float(at) else "int64"
        ring = o.rows if o.func not in ("lag", "row_number") else (
            o.offset if o.func == "lag" else 0)
        if o.func in ("count_star", "row_number"):
            ring = 0
        base = st.add(f"o{oi}_ring", vt, ring) if ring else -1
        nbase = st.add(f"o{oi}_null", "uint8", ring) if ring else -1
        if o.func in ("avg", "sum", "count"):
            st.add(f"o{oi}_sum", vt)
            st.add(f"o{oi}_cnt", "int64")
        if o.func in ("min", "max"):
            st.add(f"o{oi}_ext", vt)
            st.add(f"o{oi}_none", "uint8")  # no value in the frame
        rings.append(_Ring(vt, PACKS[vt], base, nbase, ring))
    spec.state = st.arrays
    spec.pack_rows = st.rows
    spec.meta_cols = rows_meta()
    spec.direct = uses_direct_map(bq)
    if spec.direct:
        spec.meta_cols["direct"] = len(spec.meta_cols)
    if bq.ttl_column is not None:
        spec.meta_cols["expired"] = len(spec.meta_cols)
    spec.rows_row = st.row("nrows")
    return rings


def _new_group(bq: BoundQuery, kvals: list[tuple[str, str]]) -> list[str]:
    """The lines that set up a new group ``g``."""
    init = ["ng += 1"]
    for j, (v, n) in enumerate(kvals):
        init.append(f"if not {n}:\n    kv{j}[g] = {v}")
    return init + _empty_frame(bq)


def _empty_frame(bq: BoundQuery) -> list[str]:
    """The lines that leave group ``g`` with no row in its frames."""
    init = ["nrows[g] = 0"]
    for oi, o in enumerate(bq.overs):
        if o.func in ("avg", "sum", "count"):
            init += [f"o{oi}_sum[g] = 0", f"o{oi}_cnt[g] = 0"]
        if o.func in ("min", "max"):
            init += [f"o{oi}_ext[g] = 0", f"o{oi}_none[g] = 1"]
    return init


def _expiry(g: ExprGen, bq: BoundQuery) -> None:
    """State TTL: a key whose latest record is more than TTL behind the record's
    watermark (the largest event time before it) starts its frames afresh, and the key
    notes the record's time (a null time: the watermark). Decided record by record, so
    neither the batch cuts nor the partitions change it."""
    tv, tn = g.gen(Col(bq.ttl_column))
    g.emit(f"tnow = np.int64({tv}) if not ({tn}) else WM[i]")
    g.emit("if nrows[g] > 0 and WM[i] != NO_WM and last_t[g] < WM[i] - TTL:")
    g.emit_block(_empty_frame(bq) + ["expired += 1"], 4)
    g.emit("if nrows[g] == 0 or tnow > last_t[g]:\n    last_t[g] = tnow")


def _valid(rg: _Ring, nulls: bool, q: str) -> str:
    """Ring slot ``q`` holds a value (not NULL)."""
    return f"B_[{rg.nbase} + {q}, g] == 0" if nulls else "True"


def _lag(g: ExprGen, o, rg: _Ring, v: str, n: str, nulls: bool) -> tuple[str, str]:
    ring_v, ring_n = f"{rg.pack}_[{rg.base} + slot, g]", f"B_[{rg.nbase} + slot, g]"
    dv, dn = ("0", "True") if o.default is None or o.default.type == NULL else (
        repr(o.default.value), "False")
    held = _valid(rg, nulls, "slot")
    g.emit(f"if r >= {rg.length}:\n    {v} = {ring_v}\n    {n} = not ({held})\n"
           f"else:\n    {v} = {dv}\n    {n} = {dn}")
    g.emit(f"{ring_v} = xv" + (f"\n{ring_n} = xn" if nulls else ""))
    return v, n


def _running_sum(g: ExprGen, oi: int, o, rg: _Ring, v: str, n: str,
                 nulls: bool) -> tuple[str, str]:
    """SUM, COUNT, AVG over the frame: a running sum and count (``ev`` left the frame)."""
    s_, c_ = f"o{oi}_sum[g]", f"o{oi}_cnt[g]"
    g.emit(f"if not evn:\n    {s_} -= ev\n    {c_} -= 1")
    g.emit(f"if not xn:\n    {s_} += xv\n    {c_} += 1")
    if rg.vt == "float64":
        # a running float sum drifts, and NaN/inf cannot be subtracted: re-add the
        # frame exactly once per frame length and when a non-finite value leaves
        g.emit(f"if slot == {rg.length} - 1 or (not evn and not np.isfinite(ev)):\n"
               "    acc = 0.0\n"
               f"    for q in range({rg.length}):\n"
               f"        if {_valid(rg, nulls, 'q')}:\n"
               f"            acc += {rg.pack}_[{rg.base} + q, g]\n    {s_} = acc")
    if o.func == "count":
        g.emit(f"{v} = {c_}\n{n} = False")
    elif o.func == "sum":
        g.emit(f"{v} = {s_}\n{n} = {c_} == 0")
    else:
        g.emit(f"{n} = {c_} == 0\n{v} = (np.float64({s_}) / {c_}) if not {n} else 0.0")
    return v, ("False" if o.func == "count" else n)


def _extreme(g: ExprGen, oi: int, o, rg: _Ring, v: str, n: str,
             nulls: bool) -> tuple[str, str]:
    """MIN / MAX over the frame: rescan it when the value leaving it was the extreme."""
    e_, none_ = f"o{oi}_ext[g]", f"o{oi}_none[g]"
    if rg.vt == "float64":
        better = ("f_lt(xv, {e})" if o.func == "min" else "f_lt({e}, xv)").format(e=e_)
        better_q = ("f_lt(cv, best)" if o.func == "min" else "f_lt(best, cv)")
        same = f"f_eq(ev, {e_})"
    else:
        better = f"xv < {e_}" if o.func == "min" else f"xv > {e_}"
        better_q = "cv < best" if o.func == "min" else "cv > best"
        same = f"ev == {e_}"
    g.emit(f"if not evn and {none_} == 0 and {same}:\n"
           f"    best = {e_}\n    found = False\n"
           f"    for q in range(min(r + 1, {rg.length})):\n"
           f"        if {_valid(rg, nulls, 'q')}:\n"
           f"            cv = {rg.pack}_[{rg.base} + q, g]\n"
           f"            if not found or {better_q}:\n"
           f"                best = cv\n                found = True\n"
           f"    {e_} = best\n    {none_} = 0 if found else 1\n"
           f"elif not xn and ({none_} != 0 or {better}):\n"
           f"    {e_} = xv\n    {none_} = 0")
    g.emit(f"{v} = {e_}\n{n} = {none_} != 0")
    return v, n


def _over(g: ExprGen, oi: int, o, rg: _Ring) -> tuple[str, str]:
    """Emit window function ``oi``'s value for the row (its group's row ``r``)."""
    v, n = f"o{oi}v", f"o{oi}n"
    if o.func == "row_number":
        g.emit(f"{v} = r + 1\n{n} = False")
        return v, "False"
    if o.func == "count_star":
        g.emit(f"{v} = min(r + 1, {o.rows})")
        return v, "False"
    x, xn = g.gen(o.arg)
    x = f"np.float64({x})" if rg.vt == "float64" else f"np.int64({x})"
    # an argument that cannot be null in this variant leaves the null ring alone: it
    # is all zeros (variants only ever become nullable), so reads of it are skipped
    nulls = xn != "False"
    g.emit(f"slot = nonneg(r % {rg.length})\nxv = {x}\nxn = {xn}")
    if o.func == "lag":
        return _lag(g, o, rg, v, n, nulls)
    ring_v, ring_n = f"{rg.pack}_[{rg.base} + slot, g]", f"B_[{rg.nbase} + slot, g]"
    g.emit(f"ev = {ring_v}\nevn = r < {rg.length}" + (f" or {ring_n} != 0" if nulls else ""))
    g.emit(f"{ring_v} = xv" + (f"\n{ring_n} = xn" if nulls else ""))
    if o.func in ("avg", "sum", "count"):
        return _running_sum(g, oi, o, rg, v, n, nulls)
    return _extreme(g, oi, o, rg, v, n, nulls)


def _row_loop_body(bq: BoundQuery, spec: KernelSpec, types, rings: list[_Ring]) -> list[str]:
    """One input row: WHERE, its group, each window function, the output row."""
    g = ExprGen(bq, spec, types)
    g.emit_where(bq.where, counted=True)
    kvals, kbs = row_keys(g, zip(bq.keys, bq.key_types))
    group_lookup(g, kbs, spec.direct)
    g.emit("if g == ng:")
    g.emit_block(_new_group(bq, kvals), 4)
    if bq.ttl_column is not None:
        _expiry(g, bq)
    g.emit("r = nrows[g]")
    for oi, o in enumerate(bq.overs):
        g.refs[f"OverRef{oi}"] = _over(g, oi, o, rings[oi])
    g.emit("nrows[g] = r + 1")
    g.env = {"over": [compute_type(t) for t in bq.over_types], "key": [], "agg": []}
    loop = row_body(g, bq, "nonneg(k)")
    g.env = None
    return [ROW] + loop


def gen_rows(bq: BoundQuery, spec: KernelSpec, types) -> str:
    rings = _layout(bq, spec)
    bind_state = bind_slots(("table", "hashes", "kbits", "knull", "meta", "dmap", "ddims"))
    bind_state += bind_packs([a for a in spec.state if "_ring_" not in a.name
                              and "_null_" not in a.name])
    body = _row_loop_body(bq, spec, types, rings)
    pro = prologue_inputs(spec) + bind_state + [
        f"ng = meta[{NGROUPS}]",
        f"k = obase + meta[{ROWS_NOUT}]",
        "filtered = 0",
        "max_groups = len(hashes)",
    ] + (direct_prologue(spec) if spec.direct else [])
    counts = [f"meta[{FILTERED}] += filtered"]
    if spec.ttl:
        pro += [f"TTL = R[{R_WINDOW}][{WIN_LATENESS}]", f"WM = R[{R_MARKS}]", "expired = 0"]
        counts.append(f"meta[{spec.meta_cols['expired']}] += expired")
    src = ["@njit(**JIT)", part_signature("rows_part", ROWS_PART)]
    src += indent(pro, 4)
    stop = [f"meta[{NGROUPS}] = ng", f"meta[{ROWS_NOUT}] = k - obase", *counts]
    src += indent(row_loop("max_groups - ng", [*stop, "return j, 0"], body), 4)
    src += indent([f"meta[{NGROUPS}] = ng", f"meta[{ROWS_NOUT}] = 0", *counts,
                   "return end, k - obase"], 4)
    src += ["", "", *prange_wrapper("rows_all", ROWS_PART), "", ""]
    src += key_bits_src(bq, spec, types, list(zip(bq.keys, bq.key_types))) + [""]
    return "\n".join(src)


__all__ = ["gen_rows"]
