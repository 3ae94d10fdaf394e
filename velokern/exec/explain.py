"""``explain``: a job's plan as text (printed by ``velokern explain``)."""

from __future__ import annotations

from velokern.plan import (
    Agg,
    AggRef,
    Binary,
    BoundQuery,
    Case,
    Cast,
    Col,
    Func,
    InList,
    IsNull,
    KeyRef,
    Lit,
    Over,
    OverRef,
    Query,
    Unary,
)

__all__ = ["explain"]


def explain(query: Query, bound: BoundQuery | None, sessions: bool, allowed_lateness_ms: int,
            num_partitions: int | None) -> str:
    """The plan as text (also printed by ``velokern explain``)."""
    q = query
    lines = [f"StreamExecutionEngine: FROM {q.source}"]
    if sessions:
        lines.append(f"  window: {q.window.describe()}, allowed lateness "
                     f"{allowed_lateness_ms} ms (a session closes when the "
                     "watermark passes its end + lateness)")
        lines.append("  kernels: WHERE and keys fused; sessions assigned record by "
                     "record; a closed session's records aggregated by the query's "
                     "GROUP BY kernel (serial: V2 partitions do not split sessions)")
        lines.append("  output: " + ", ".join(n for n, _ in q.select))
        return "\n".join(lines)
    if bound is not None:
        b = bound
        lines.append(f"  input columns: {', '.join(f'{c} {b.schema[c]}' for c in b.columns)}")
        if b.where is not None:
            lines.append(f"  filter: {_fmt(b.where)}")
        if b.window is not None:
            lines.append(f"  window: {b.window.describe()}, allowed lateness "
                         f"{allowed_lateness_ms} ms (closes when the watermark "
                         "passes end + lateness)")
        if b.is_aggregate:
            lines.append(f"  group by: {', '.join(_fmt(k) for k in b.keys) or '(all rows)'}")
            lines.append("  aggregates: " + ", ".join(
                f"a{i}={_fmt(a)}" for i, a in enumerate(b.aggs)))
            if b.having is not None:
                lines.append(f"  having: {_fmt(b.having)}")
            lines.append(f"  emit: {b.emit.upper()}")
        if b.overs:
            lines.append(f"  window functions: partition by "
                         f"{', '.join(_fmt(k) for k in b.keys) or '(all rows)'}; " + ", ".join(
                             f"w{i}={_over(o)}" for i, o in enumerate(b.overs)))
            if b.ttl_column is not None:
                lines.append(f"  state TTL: {q.state_ttl_ms} ms of {b.ttl_column} (a key "
                             "unseen that long behind the watermark starts afresh, and is "
                             "freed)")
        lines.append("  output: " + ", ".join(
            f"{n} {t} = {_fmt(e)}" for (n, e), t in zip(b.outputs, b.output_types)))
        kind = ("stateful (hash table per partition)" if b.is_aggregate or b.overs
                else "stateless")
        lines.append(f"  kernels: fused, {kind}")
    else:
        lines.append("  (schema not bound yet: it is taken from the first batch)")
        if q.where is not None:
            lines.append(f"  filter: {_fmt(q.where)}")
        if q.group_by:
            lines.append(f"  group by: {', '.join(_fmt(k) for k in q.group_by)}")
        star = " *" if q.star else ""
        lines.append("  output: " + ", ".join(n for n, _ in q.select) + star)
    if num_partitions is not None:
        lines.append(f"  partitions: {num_partitions}")
    return "\n".join(lines)


def _fmt(e) -> str:
    """An expression as SQL-like text."""
    f = _FORMATS.get(type(e))
    return str(e) if f is None else f(e)


def _over(o: Over) -> str:
    arg = "*" if o.arg is None else _fmt(o.arg)
    if o.func == "lag":
        return f"LAG({arg}, {o.offset})"
    if o.func == "row_number":
        return "ROW_NUMBER()"
    return f"{o.func.upper().replace('_STAR', '')}({arg}) over {o.rows} rows"


def _case(e: Case) -> str:
    parts = " ".join(f"WHEN {_fmt(c)} THEN {_fmt(v)}" for c, v in e.whens)
    d = f" ELSE {_fmt(e.default)}" if e.default is not None else ""
    return f"CASE {parts}{d} END"


def _not(negated: bool) -> str:
    return "NOT " if negated else ""


_FORMATS = {
    Col: lambda e: e.name,
    Lit: lambda e: "NULL" if e.value is None else repr(e.value),
    OverRef: lambda e: f"w{e.i}",
    KeyRef: lambda e: f"key{e.i}",
    AggRef: lambda e: f"a{e.i}",
    Unary: lambda e: f"(NOT {_fmt(e.x)})" if e.op == "not" else f"(-{_fmt(e.x)})",
    Binary: lambda e: (f"({_fmt(e.l)} {e.op.upper() if e.op in ('and', 'or') else e.op} "
                       f"{_fmt(e.r)})"),
    IsNull: lambda e: f"({_fmt(e.x)} IS {_not(e.negated)}NULL)",
    InList: lambda e: (f"({_fmt(e.x)} {_not(e.negated)}IN "
                       f"({', '.join(_fmt(v) for v in e.values)}))"),
    Case: _case,
    Cast: lambda e: f"CAST({_fmt(e.x)} AS {e.to})",
    Func: lambda e: f"{e.name.upper()}({', '.join(_fmt(a) for a in e.args)})",
    Agg: lambda e: f"{e.func.upper()}({'*' if e.arg is None else _fmt(e.arg)})",
}
