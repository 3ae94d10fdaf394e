"""GROUP BY queries (hash table, direct map or one global group; time windows): the
state layout, the update loop and the ``update_part`` kernel, in named steps.

The kernels that emit rows from the state (``emit_part``, the fused ``batch_part``,
``close_groups``) are in :mod:`velokern.codegen.emission`, the prefetcher of large
hash tables in :mod:`velokern.codegen.prefetch`; :func:`gen_aggregate` puts the module
together.
"""

from __future__ import annotations

from velokern.aggregates import kind_for
from velokern.batch import STRING
from velokern.codegen.common import ROW, indent, prologue_inputs, row_loop
from velokern.codegen.emission import batch_kernels, close_groups, emit_kernel
from velokern.codegen.expressions import ExprGen
from velokern.codegen.keys import (
    bits_code,
    direct_prologue,
    group_lookup,
    key_bits_src,
    probe_lines,
    row_keys,
    uses_direct_map,
    value_is_bits,
)
from velokern.codegen.prefetch import prefetch_parts
from velokern.codegen.spec import KernelSpec
from velokern.codegen.state import PackRows, bind_packs, bind_slots, state_type
from velokern.kernels.layout import (
    DGID,
    DTAB,
    DVAL,
    FILTERED,
    KBITS,
    NGROUPS,
    NLATE,
    NOTIME,
    NOUT,
    NTOUCHED,
    R_LATE,
    R_MARKS,
    R_WINDOW,
    WIN_LATENESS,
    I,
    aggregate_meta,
    distinct_column,
)
from velokern.plan import (
    NULL,
    BoundQuery,
    Col,
    Expr,
    WinRef,
    is_float,
    is_int,
    is_time,
)


class AggregateGen:
    """The source of one GROUP BY query's module, step by step (each step a method, in
    the order the module is written: expressions register string literals and ranks in
    the spec as they are generated, so the order is part of the source)."""

    def __init__(self, bq: BoundQuery, spec: KernelSpec, types: dict[str, str]):
        self.bq, self.spec, self.types = bq, spec, types
        self.K = len(bq.keys)
        self.track = bq.emit == "changes"  # EMIT CHANGES: emit the touched groups
        self.win = bq.window
        self.st = PackRows()
        # a key whose value is its int64 grouping bits (string codes, integers, times,
        # the window start) is read back from the hash table's key bits: storing it again
        # in a row of its own cost a store per new group (S3a: three per record)
        self.in_bits = [value_is_bits(t) for t in bq.key_types]
        self.arg_exprs: list[Expr] = []
        self.nn_of: dict[Expr, str] = {}  # argument -> its non-null count array
        self.distinct = [ai for ai, a in enumerate(bq.aggs) if a.func == "count_distinct"]
        self.direct = uses_direct_map(bq)
        self.key_vals: list[tuple[str, str]] = []  # (value, null) of each key
        self.kbs: list[tuple[str, str]] = []  # (bits, null) of each key

    def gen(self) -> ExprGen:
        return ExprGen(self.bq, self.spec, self.types)

    # ------------------------------------------------------------ state layout
    def layout(self) -> None:
        """Lay out the per-group arrays (see :mod:`velokern.codegen.state`) and the meta
        columns into the spec."""
        st, bq, spec = self.st, self.bq, self.spec
        st.add("first_seq", "int64")
        st.add("tlist", "int64")
        st.add("touched", "uint8")
        meta_cols = aggregate_meta(self.win is not None)
        for j, t in enumerate(bq.key_types):
            if not self.in_bits[j]:
                st.add(f"kv{j}", state_type(t))
        st.add("rows", "int64")
        self._count_rows()
        spec.rows_row = st.row("rows")
        for ai, (a, at) in enumerate(zip(bq.aggs, bq.agg_arg_types)):
            for suffix, dt in kind_for(a.func, at).state(state_type(at)):
                st.add(f"a{ai}_{suffix}", dt)
            if a.func == "count_distinct":
                meta_cols[distinct_column(f"a{ai}")] = len(meta_cols)
        spec.state = st.arrays
        spec.pack_rows = st.rows
        spec.meta_cols = meta_cols
        spec.distinct = [f"a{ai}" for ai in self.distinct]
        spec.direct = self.direct
        if self.direct:
            meta_cols["direct"] = len(meta_cols)

    def _count_rows(self) -> None:
        """Every group counts its rows; every nullable aggregate argument gets one non-null
        count, shared by all aggregates over that argument.

        The layout is the same in both kernel variants (without / with nullable inputs):
        every argument has a count row, maintained only where the argument can be null
        (elsewhere it equals the row count; the engine copies the row count into it when
        a job switches to the nullable variant)."""
        for a in self.bq.aggs:
            if a.arg is not None and a.arg not in self.arg_exprs:
                self.arg_exprs.append(a.arg)
        scratch = self.gen()
        for k, ae in enumerate(self.arg_exprs):
            _, xn = scratch.gen(ae)
            row = self.st.add(f"nn{k}", "int64")
            self.nn_of[ae] = "rows" if xn == "False" else f"nn{k}"
            if xn == "False":
                self.spec.unmaintained_counts.append(row)

    def agg_fmt(self, ai: int, **extra) -> dict:
        """The template names of aggregate ``ai`` (see :mod:`velokern.aggregates`)."""
        a, at = self.bq.aggs[ai], self.bq.agg_arg_types[ai]
        top = bottom = "0"
        if (at is not None and is_float(at)) or at == NULL:
            top, bottom = "np.nan", "-np.inf"
        elif at is not None and (is_int(at) or is_time(at)):
            top, bottom = "np.int64(9223372036854775807)", "np.int64(-9223372036854775808)"
        nn = "rows" if a.arg is None else self.nn_of[a.arg]
        # a group made by a record has rows >= 1; a global aggregate's one group exists
        # before any record, so its row count can be 0 (nothing passed WHERE): NULL then
        nn_zero = "False" if nn == "rows" and self.K > 0 else f"{nn}[g] == 0"
        return dict(a=f"a{ai}", g="g", nn=nn, nn_zero=nn_zero, top=top, bottom=bottom,
                    **extra)

    def wstart(self) -> str:
        """A windowed query's window starts (key 0) in partition ``p``."""
        if self.win is None:
            return ""
        if self.in_bits[0]:
            return f"S[{KBITS}][p][:, 0]"
        return f"S[{I}][p][{self.st.row('kv0')}]"

    def bind_state(self) -> list[str]:
        """Locals for partition ``p``'s state: its slots, packs, arrays, distinct sets."""
        lines = bind_slots(("table", "hashes", "kbits", "knull", "meta"))
        lines += bind_packs(self.st.arrays)
        lines += [f"kv{j} = kbits[:, {j}]" for j in range(self.K) if self.in_bits[j]]
        lines += bind_slots(("dmap", "ddims"))
        for d, ai in enumerate(self.distinct):
            a = f"a{ai}"
            lines += [f"{a}_dtab = S[{DTAB}][p, {d}]", f"{a}_dgid = S[{DGID}][p, {d}]",
                      f"{a}_dval = S[{DVAL}][p, {d}]"]
        return lines

    def state_init(self) -> list[str]:
        """The lines that zero a new group ``g``'s counts and initialise its aggregates."""
        lines = ["rows[g] = 0"]
        lines += [f"{nn}[g] = 0" for nn in sorted(set(self.nn_of.values()) - {"rows"})]
        for ai, a in enumerate(self.bq.aggs):
            init = kind_for(a.func, self.bq.agg_arg_types[ai]).init
            if init:
                lines.append(init.format(**self.agg_fmt(ai)))
        return lines

    # ------------------------------------------------------------ update loop
    def update_loop(self) -> list[str]:
        """The body of the update loop for input row ``i``: WHERE, the record's windows,
        its group (made when new), the aggregates folded in."""
        g = self.gen()
        g.emit_where(self.bq.where, counted=True)
        tv = self._windows(g)
        self.key_vals, self.kbs = row_keys(g, zip(self.bq.keys, self.bq.key_types))
        pre = []
        if not self.direct:  # the probe and all after it run once per window
            pre, g.lines = g.lines, []
        group_lookup(g, self.kbs, self.direct)
        g.emit("if g == ng:")
        g.emit_block(self._new_group(), 4)
        if self.track:
            g.emit("if touched[g] == 0:\n    touched[g] = 1\n    tlist[nt] = g\n    nt += 1")
        g.emit("rows[g] += 1")
        self._fold_aggregates(g)
        if self.direct:
            return g.lines
        if self.win is None:
            return pre + g.lines
        if self.bq.slide == self.bq.size:  # tumbling: one window per record
            return pre + ["ws = wf"] + g.lines
        return pre + ["ws = wf", f"while ws <= {tv}:"] + indent(
            g.lines + [f"ws += {self.bq.slide}"], 4)

    def _windows(self, g: ExprGen) -> str | None:
        """Windowed: emit the record's first window ``wf`` (starts wf, wf + slide, ... up
        to the one holding the event time, which is returned) or skip the record."""
        if self.win is None:
            return None
        tv, tn = g.gen(Col(self.win.time_column))
        if tn != "False":
            g.emit(f"if {tn}:\n    notime += 1\n    continue")
        g.emit(f"wf = first_window({tv}, {self.bq.size}, {self.bq.slide})")
        # late: the record's first window had closed when it arrived (record watermark)
        g.emit(f"if wf + {self.bq.size} + LATENESS <= WM[i]:\n"
               "    LATEBUF[obase + nlate] = i\n    nlate += 1\n    continue")
        return tv

    def _new_group(self) -> list[str]:
        """The lines that make group ``g`` (= ``ng``) for the row's keys."""
        lines = ["ng += 1", "first_seq[g] = seq_base + i", "touched[g] = 0"]
        if self.win is not None:
            lines.append("if ws < minws:\n    minws = ws")
        for j, (v, n) in enumerate(self.key_vals):
            if not self.in_bits[j]:
                lines.append(f"if not {n}:\n    kv{j}[g] = {v}")
        return lines + self.state_init()

    def _fold_aggregates(self, g: ExprGen) -> None:
        """Fold the row into its group's non-null counts and aggregates."""
        arg_vals: dict[Expr, tuple[str, str]] = {}
        for ae in self.arg_exprs:
            x, xn = g.gen(ae)
            arg_vals[ae] = (x, xn)
            if self.nn_of[ae] != "rows":
                g.emit(f"if not {xn}:\n    {self.nn_of[ae]}[g] += 1")
        for ai, (a, at) in enumerate(zip(self.bq.aggs, self.bq.agg_arg_types)):
            kind = kind_for(a.func, at)
            if a.arg is None:
                x, xn = "0", "False"
            else:
                x, xn = arg_vals[a.arg]
                if at == NULL:
                    x = "np.float64(0.0)"
            x_lt_v, v_lt_x = _order(g, a, at, x, f"a{ai}_v[g]")  # (registers ranks)
            keep = "True" if not a.ignore_nulls else f"not {xn}"
            bits = "0"
            if a.func == "count_distinct" and at is not None:
                bits = bits_code(g, a.arg, at, x)
            if kind.update:
                g.emit(kind.update.format(**self.agg_fmt(
                    ai, x=x, xn=xn, x_lt_v=x_lt_v, v_lt_x=v_lt_x, keep=keep, bits=bits)))

    # ------------------------------------------------------------ update kernel
    def stop_call(self) -> str:
        """The call that saves the loop's counters into meta and returns the row."""
        nds = ", ".join(f"a{ai}_nd" for ai in self.distinct) or "0"
        extra = "" if self.win is None else ", nlate, notime, nout"
        return f"stop(meta, j, ng, nt, filtered, ({nds},){extra})"

    def stop_fn(self) -> list[str]:
        """``stop``: the update loop's counters back into meta."""
        extra = "" if self.win is None else ", nlate, notime, nout"
        src = ["@njit(**JIT)",
               f"def stop(meta, j, ng, nt, filtered, nds{extra}):",
               f"    meta[{NGROUPS}] = ng",
               f"    meta[{NTOUCHED}] = nt",
               f"    meta[{FILTERED}] += filtered"]
        if self.win is not None:
            src += [f"    meta[{NLATE}] = nlate", f"    meta[{NOTIME}] += notime",
                    f"    meta[{NOUT}] = nout"]
        for k, ai in enumerate(self.distinct):
            src.append(f"    meta[{self.nd_col(ai)}] = nds[{k}]")
        return src + ["    return j", "", ""]

    def nd_col(self, ai: int) -> int:
        """The meta column of aggregate ``ai``'s distinct set's entry count."""
        return self.spec.meta_cols[distinct_column(f"a{ai}")]

    def update_prologue(self, bind_state: list[str], pf_pro: list[str]) -> list[str]:
        """The locals ``update_part`` sets up before its loop."""
        pro = prologue_inputs(self.spec) + bind_state + [
            f"ng = meta[{NGROUPS}]",
            f"nt = meta[{NTOUCHED}]",
            "filtered = 0",
            "max_groups = len(hashes)",
        ] + pf_pro
        if self.direct:
            pro += direct_prologue(self.spec)
        pro += [f"a{ai}_nd = meta[{self.nd_col(ai)}]" for ai in self.distinct]
        if self.win is not None:
            pro += [f"LATENESS = R[{R_WINDOW}][{WIN_LATENESS}]", f"WM = R[{R_MARKS}]",
                    f"LATEBUF = R[{R_LATE}]",
                    f"nlate = meta[{NLATE}]", "notime = 0", f"nout = meta[{NOUT}]",
                    "minws = min_window(kv0, ng)", "close_at = CLOSE_AT"]
        return pro

    def close_check(self) -> list[str]:
        """Windowed: windows close as the record watermark passes them (end + lateness),
        in the middle of a batch too, so state stays as small as the open windows.
        (Closing earlier or later never changes a result: lateness is decided by each
        record's watermark; it only bounds the state, so it waits for CLOSE_AT groups.)"""
        if self.win is None:
            return []
        size = self.bq.size
        return [
            f"if ng >= close_at and WM[i] != NO_WM and WM[i] - LATENESS - {size} >= minws:",
            f"    meta[{NGROUPS}] = ng",
            f"    meta[{NTOUCHED}] = nt",
            f"    nout += close_groups(S, p, R, WM[i] - LATENESS - {size}, OI, OF, OB, OC, OM, "
            "oseq, obase + nout)",
            f"    ng = meta[{NGROUPS}]",
            f"    nt = meta[{NTOUCHED}]",
            "    minws = min_window(kv0, ng)",
            "    close_at = max(CLOSE_AT, 2 * ng)",
        ]

    def out_args(self) -> str:
        """``update_part``'s output arguments (windowed: it emits closing windows)."""
        return "" if self.win is None else ", OI, OF, OB, OC, OM, oseq"

    def update_kernel(self, loop: list[str], pro: list[str], pf_loop: list[str]) -> list[str]:
        """``update_part``: the row loop in stretches that fit the state."""
        # a record adds at most nwin groups, and nwin values to each distinct set
        nwin = self.spec.max_windows
        room = [f"(max_groups - ng) // {nwin}"]
        room += [f"(len(a{ai}_dgid) - a{ai}_nd) // {nwin}" for ai in self.distinct]
        room_code = room[0] if len(room) == 1 else f"min({', '.join(room)})"
        stop = self.stop_call()
        src = ["@njit(inline=\"always\", **JIT)",
               "def update_part(S, p, C, M, R, idx, use_idx, start, end, seq_base, obase"
               f"{self.out_args()}):"]
        src += indent(pro, 4)
        src += indent(row_loop(room_code, [f"return {stop}"],
                               [ROW] + self.close_check() + pf_loop + loop), 4)
        src += indent([f"return {stop.replace('(meta, j,', '(meta, end,')}"], 4)
        return src + ["", ""]

    # ------------------------------------------------------------ global aggregate
    def init_global(self, bind_state: list[str]) -> list[str]:
        """``init_global``: a global aggregate's one group, made before any record."""
        init = [f"ng = meta[{NGROUPS}]", *probe_lines([]), "if g == ng:",
                f"    meta[{NGROUPS}] = ng + 1"]
        init += indent("\n".join(["first_seq[g] = 0", "touched[g] = 0",
                                  *self.state_init()]).split("\n"), 4)
        src = ["@njit(**JIT)", "def init_global(S, p):"]
        return src + indent(bind_state + init + ["return 0"], 4) + [""]

    def partition_keys_src(self) -> list[str]:
        """``key_bits`` over the keys hash partitioning uses (not the window)."""
        keys = [(e, t) for e, t in zip(self.bq.keys, self.bq.key_types)
                if not isinstance(e, WinRef)]
        return key_bits_src(self.bq, self.spec, self.types, keys) + ["", ""]


def _order(g: ExprGen, a, at: str | None, x: str, held: str) -> tuple[str, str]:
    """The comparisons ``x < held`` and ``held < x`` in the order of type ``at``."""
    if at == STRING:
        rk = g.rank_array(g.owner(a.arg))
        return f"{rk}[{x}] < {rk}[{held}]", f"{rk}[{held}] < {rk}[{x}]"
    if at is not None and is_float(at):
        # NaN sorts above every number. MIN starts at NaN, MAX at -inf, so "x < held
        # or held is NaN" / "held < x or x is NaN" decide like f_lt (they differ only
        # when both are NaN, where replacing NaN by NaN changes nothing)
        return f"({x} < {held} or {held} != {held})", f"({held} < {x} or {x} != {x})"
    return f"{x} < {held}", f"{held} < {x}"


def gen_aggregate(bq: BoundQuery, spec: KernelSpec, types) -> str:
    """The module of a GROUP BY query (see :mod:`velokern.codegen`)."""
    ag = AggregateGen(bq, spec, types)
    ag.layout()
    bind_state = ag.bind_state()
    loop = ag.update_loop()
    pf_src, pf_pro, pf_loop = prefetch_parts(ag)
    # windows per record (a record creates at most this many groups)
    spec.max_windows = 1 if ag.win is None else -(-bq.size // bq.slide)
    pro = ag.update_prologue(bind_state, pf_pro)
    src = ag.stop_fn() + pf_src + ag.update_kernel(loop, pro, pf_loop)
    src += emit_kernel(ag, bind_state)
    src += batch_kernels(ag)
    src += close_groups(ag)
    src += ag.partition_keys_src()
    if ag.K == 0:
        src += ag.init_global(bind_state)
    return "\n".join(src)


__all__ = ["AggregateGen", "gen_aggregate"]
