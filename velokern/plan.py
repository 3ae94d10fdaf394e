"""The logical plan of a streaming query and its typed expression tree.

The SQL front end (:mod:`velokern.sql`) builds a :class:`Query` from SQL text; it is
validated against a :class:`~velokern.batch.Schema` with :func:`bind`, which types every
expression and rejects what velokern cannot run (with an error naming the construct).
Kernels (:mod:`velokern.kernels`) are generated from a bound plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from velokern.aggregates import REGISTRY, AggTypeError
from velokern.batch import STRING, Schema
from velokern.types import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    compute_type,
    is_float,
    is_int,
    is_numeric,
    is_time,
)

__all__ = [
    "WINDOW_COLUMNS",
    "Agg",
    "AggRef",
    "Binary",
    "BoundQuery",
    "Case",
    "Cast",
    "Col",
    "Expr",
    "Func",
    "InList",
    "IsNull",
    "KeyRef",
    "Lit",
    "Over",
    "OverRef",
    "PlanError",
    "Query",
    "Unary",
    "WinRef",
    "WindowSpec",
    "bind",
]


class PlanError(ValueError):
    """A query that velokern cannot run as written (the message names the construct)."""


# --------------------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Expr:
    """Base of the expression tree. ``pos`` is (line, column) in the SQL, when known."""

    def children(self) -> tuple[Expr, ...]:
        return ()


@dataclass(frozen=True)
class Col(Expr):
    name: str


@dataclass(frozen=True)
class Lit(Expr):
    value: object  # int | float | bool | str | None
    type: str


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # "neg" | "not"
    x: Expr

    def children(self):
        return (self.x,)


@dataclass(frozen=True)
class Binary(Expr):
    op: str  # + - * / // % = <> < <= > >= and or
    l: Expr
    r: Expr

    def children(self):
        return (self.l, self.r)


@dataclass(frozen=True)
class IsNull(Expr):
    x: Expr
    negated: bool = False

    def children(self):
        return (self.x,)


@dataclass(frozen=True)
class InList(Expr):
    x: Expr
    values: tuple[Lit, ...]
    negated: bool = False

    def children(self):
        return (self.x, *self.values)


@dataclass(frozen=True)
class Case(Expr):
    whens: tuple[tuple[Expr, Expr], ...]
    default: Expr | None

    def children(self):
        out = [e for w in self.whens for e in w]
        if self.default is not None:
            out.append(self.default)
        return tuple(out)


@dataclass(frozen=True)
class Cast(Expr):
    x: Expr
    to: str  # INT | FLOAT | BOOL

    def children(self):
        return (self.x,)


@dataclass(frozen=True)
class Func(Expr):
    name: str  # abs | round | floor | ceil | coalesce
    args: tuple[Expr, ...]

    def children(self):
        return self.args


@dataclass(frozen=True)
class Agg(Expr):
    """An aggregate call. ``func`` is a key of :data:`velokern.aggregates.REGISTRY`
    (which says its types, kernels, merge and NULL rule)."""

    func: str
    arg: Expr | None  # None for COUNT(*)
    distinct: bool = False
    ignore_nulls: bool = False

    def children(self):
        return () if self.arg is None else (self.arg,)


@dataclass(frozen=True)
class AggRef(Expr):
    """Reference to aggregate ``i`` of a query (after aggregation)."""

    i: int


@dataclass(frozen=True)
class KeyRef(Expr):
    """Reference to GROUP BY key ``i`` of a query (after aggregation)."""

    i: int


@dataclass(frozen=True)
class Over(Expr):
    """A ROWS window function: ``func`` over the last ``rows`` rows (the current one
    included) of the rows sharing its PARTITION BY key, in arrival order. ``func`` is
    avg, sum, min, max, count, count_star (frame aggregates), lag (``offset`` rows back,
    else ``default``) or row_number."""

    func: str
    arg: Expr | None
    partition: tuple[Expr, ...]
    rows: int = 0
    offset: int = 1
    default: Lit | None = None

    def children(self):
        return (() if self.arg is None else (self.arg,)) + self.partition


@dataclass(frozen=True)
class OverRef(Expr):
    """Reference to ROWS window function ``i`` of a query."""

    i: int


@dataclass(frozen=True)
class WinRef(Expr):
    """The start (``end=False``) or end of the time window a row belongs to
    (``window_start`` / ``_window_start``, ``window_end`` / ``_window_end`` in SQL)."""

    end: bool = False


#: Output names that refer to the window of a windowed query (when not input columns).
WINDOW_COLUMNS = {"window_start": False, "_window_start": False, "window_end": True,
                  "_window_end": True}

#: The event-time column a window uses when the SQL names none (stamped with the
#: ingestion time, in epoch milliseconds, when a batch lacks it).
PROCESSING_TIME = "_timestamp"


@dataclass(frozen=True)
class WindowSpec:
    """A time window: ``kind`` is "tumbling", "sliding" (hopping) or "session";
    durations are in milliseconds (a tumbling window has ``slide_ms == size_ms``; a
    session window's ``size_ms`` is its gap)."""

    kind: str
    time_col: str | None  # None: PROCESSING_TIME
    size_ms: int
    slide_ms: int

    @property
    def time_column(self) -> str:
        return self.time_col or PROCESSING_TIME

    def describe(self) -> str:
        t = self.time_column
        if self.kind == "tumbling":
            return f"TUMBLING({t}, {self.size_ms} ms)"
        if self.kind == "session":
            return f"SESSION({t}, gap {self.size_ms} ms)"
        return f"SLIDING({t}, size {self.size_ms} ms, slide {self.slide_ms} ms)"


def walk(e: Expr):
    yield e
    for c in e.children():
        yield from walk(c)


def columns_of(e: Expr) -> list[str]:
    seen: list[str] = []
    for n in walk(e):
        if isinstance(n, Col) and n.name not in seen:
            seen.append(n.name)
    return seen


# --------------------------------------------------------------------------- query
@dataclass
class Query:
    """A parsed streaming query (unbound: column types are not known yet)."""

    source: str
    select: list[tuple[str, Expr]]  # output name, expression over input columns/aggregates
    where: Expr | None = None
    group_by: list[Expr] = field(default_factory=list)
    having: Expr | None = None
    emit: str | None = None  # "changes" | "final" | None (default)
    star: bool = False  # SELECT * (stateless only)
    sql: str = ""
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)
    window: WindowSpec | None = None
    allowed_lateness_ms: int | None = None  # from WITH (allowed_lateness = ...)

    @property
    def has_over(self) -> bool:
        """The query has ROWS window functions (one output row per input row)."""
        return any(isinstance(n, Over) for _, e in self.select for n in walk(e))

    @property
    def is_aggregate(self) -> bool:
        return self.window is not None or bool(self.group_by) or any(
            isinstance(n, Agg) for _, e in self.select for n in walk(e)
        ) or (self.having is not None)


@dataclass
class BoundQuery:
    """A query validated against a schema, ready for code generation.

    For an aggregate query, ``outputs`` are expressions over :class:`KeyRef` and
    :class:`AggRef`; ``having`` likewise. ``keys`` and aggregate arguments are over
    input columns.
    """

    query: Query
    schema: Schema
    columns: list[str]  # input columns the kernels read
    where: Expr | None
    outputs: list[tuple[str, Expr]]
    output_types: list[str]
    keys: list[Expr]
    key_types: list[str]
    aggs: list[Agg]
    agg_types: list[str]  # result type of each aggregate
    agg_arg_types: list[str | None]
    having: Expr | None
    emit: str  # "changes" | "final" | "rows"
    #: the time window (key 0 is then the window start, computed by the kernels)
    window: WindowSpec | None = None
    #: the window's sizes in the time column's own units (int64 or datetime64 ticks)
    size: int = 0
    slide: int = 0
    ticks_per_ms: float = 1.0
    #: ROWS window functions (``keys`` are then their PARTITION BY expressions)
    overs: list = field(default_factory=list)
    over_types: list = field(default_factory=list)
    over_arg_types: list = field(default_factory=list)

    @property
    def is_aggregate(self) -> bool:
        return (bool(self.aggs) or bool(self.keys)) and not self.overs


# --------------------------------------------------------------------------- typing
def _err(q: Query, e: Expr, msg: str) -> PlanError:
    pos = q.positions.get(id(e))
    where = f" (line {pos[0]}, column {pos[1]})" if pos else ""
    return PlanError(msg + where)


def type_of(e: Expr, types: dict[str, str], q: Query, env: dict | None = None) -> str:
    """Infer (and check) the type of ``e``; ``types`` maps column names to types and
    ``env`` gives the types of KeyRef/AggRef ({'key': [...], 'agg': [...]})."""
    t = lambda x: type_of(x, types, q, env)  # noqa: E731
    if isinstance(e, Col):
        if e.name not in types:
            raise _err(q, e, f"unknown column {e.name!r} (columns: {sorted(types)})")
        return types[e.name]
    if isinstance(e, Lit):
        return e.type
    if isinstance(e, WinRef):
        if q.window is None:
            raise _err(q, e, "window_start / window_end need a time window (WINDOW ...)")
        return types[q.window.time_column]
    if isinstance(e, KeyRef):
        return env["key"][e.i]
    if isinstance(e, OverRef):
        return env["over"][e.i]
    if isinstance(e, Over):
        raise _err(q, e, "a window function OVER (...) cannot be nested here")
    if isinstance(e, AggRef):
        return env["agg"][e.i]
    if isinstance(e, Unary):
        xt = t(e.x)
        if e.op == "not":
            if xt not in (BOOL, NULL):
                raise _err(q, e, f"NOT needs a boolean operand, got {xt}")
            return BOOL
        if not is_numeric(xt) and xt != NULL:
            raise _err(q, e, f"unary minus needs a number, got {xt}")
        return compute_type(xt) if xt != NULL else NULL
    if isinstance(e, Binary):
        lt, rt = t(e.l), t(e.r)
        op = e.op
        if op in ("and", "or"):
            for side, st in (("left", lt), ("right", rt)):
                if st not in (BOOL, NULL):
                    raise _err(q, e, f"{op.upper()} needs boolean operands; {side} side is {st}")
            return BOOL
        if op in ("=", "<>", "<", "<=", ">", ">="):
            _check_comparable(q, e, lt, rt, op)
            return BOOL
        # arithmetic
        for side, st in (("left", lt), ("right", rt)):
            if not (is_numeric(st) or st == NULL):
                raise _err(q, e, f"operator {op} needs numbers; {side} side is {st}")
        if op == "/":
            return FLOAT
        if NULL in (lt, rt):
            return compute_type(rt if lt == NULL else lt) if (lt, rt) != (NULL, NULL) else NULL
        if is_float(lt) or is_float(rt):
            return FLOAT
        return INT
    if isinstance(e, IsNull):
        t(e.x)
        return BOOL
    if isinstance(e, InList):
        xt = t(e.x)
        for v in e.values:
            _check_comparable(q, e, xt, v.type, "IN")
        return BOOL
    if isinstance(e, Case):
        rtypes = []
        for cond, val in e.whens:
            ct = t(cond)
            if ct not in (BOOL, NULL):
                raise _err(q, e, f"CASE WHEN condition must be boolean, got {ct}")
            rtypes.append(t(val))
        if e.default is not None:
            rtypes.append(t(e.default))
        return unify(q, e, rtypes, "CASE")
    if isinstance(e, Cast):
        xt = t(e.x)
        if xt == STRING or is_time(xt):
            raise _err(q, e, f"CAST from {xt} to {e.to} is not supported")
        return e.to
    if isinstance(e, Func):
        ats = [t(a) for a in e.args]
        if e.name == "coalesce":
            return unify(q, e, ats, "COALESCE")
        name = e.name.upper()
        if e.name == "round":
            if len(ats) not in (1, 2):
                raise _err(q, e, f"ROUND takes 1 or 2 arguments, got {len(ats)}")
            if len(ats) == 2 and not (is_int(ats[1]) and isinstance(e.args[1], Lit)):
                raise _err(q, e, "ROUND's second argument must be an integer literal")
        elif len(ats) != 1:
            raise _err(q, e, f"{name} takes 1 argument, got {len(ats)}")
        if not (is_numeric(ats[0]) or ats[0] == NULL):
            raise _err(q, e, f"{name} needs a number, got {ats[0]}")
        if ats[0] == NULL:
            return NULL
        if e.name in ("floor", "ceil"):
            return FLOAT
        return compute_type(ats[0])
    if isinstance(e, Agg):
        raise _err(q, e, "an aggregate cannot be nested here")
    raise _err(q, e, f"unsupported expression {type(e).__name__}")


def _check_comparable(q: Query, e: Expr, lt: str, rt: str, op: str) -> None:
    if NULL in (lt, rt):
        return
    if (lt == STRING) != (rt == STRING):
        raise _err(q, e, f"cannot compare {lt} with {rt} ({op})")
    if lt == STRING and op not in ("=", "<>", "IN"):
        raise _err(q, e, f"strings can be compared with = , <> and IN only, not {op}")
    time_vs_int = (is_time(lt) and is_int(rt)) or (is_time(rt) and is_int(lt))
    if is_time(lt) != is_time(rt) and not time_vs_int:
        raise _err(q, e, f"cannot compare {lt} with {rt} ({op})")
    if BOOL in (lt, rt) and lt != rt:
        raise _err(q, e, f"cannot compare {lt} with {rt} ({op})")


def unify(q: Query, e: Expr, ts: list[str], what: str) -> str:
    real = [x for x in ts if x != NULL]
    if not real:
        return NULL
    if all(x == STRING for x in real):
        raise _err(q, e, f"{what} producing strings is not supported")
    if any(x == STRING for x in real) or any(is_time(x) for x in real):
        kinds = sorted(set(real))
        if len(kinds) > 1:
            raise _err(q, e, f"{what} mixes incompatible types {kinds}")
        return real[0]
    if all(x == BOOL for x in real):
        return BOOL
    if any(x == BOOL for x in real):
        raise _err(q, e, f"{what} mixes booleans and numbers")
    return FLOAT if any(is_float(x) for x in real) else INT


def agg_result_type(q: Query, a: Agg, at: str | None) -> str:
    """The result type of aggregate call ``a`` over an argument of type ``at``: the
    registry entry's rule (:mod:`velokern.aggregates`); a refused argument type is a
    PlanError pointing at the call."""
    try:
        return REGISTRY[a.func].result_type(at, isinstance(a.arg, Col))
    except AggTypeError as exc:
        raise _err(q, a, str(exc)) from None


# --------------------------------------------------------------------------- bind
def bind(q: Query, schema: Schema) -> BoundQuery:
    """Validate ``q`` against ``schema`` and return the typed plan."""
    types = {n: t for n, t in schema}
    if q.star:
        if q.is_aggregate:
            raise PlanError("SELECT * cannot be combined with GROUP BY or aggregates")
        select = [(n, Col(n)) for n in schema.names] + q.select
    else:
        select = q.select
    names = [n for n, _ in select]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlanError(f"duplicate output column names {dup}: give each one its own alias")
    where = q.where
    if where is not None:
        if any(isinstance(n, Agg) for n in walk(where)):
            raise _err(q, where, "aggregates are not allowed in WHERE (use HAVING)")
        wt = type_of(where, types, q)
        if wt not in (BOOL, NULL):
            raise _err(q, where, f"WHERE must be a boolean condition, got {wt}")

    if q.has_over:
        return _bind_over(q, schema, types, select, where)
    if not q.is_aggregate:
        out_types = []
        for name, e in select:
            et = type_of(e, types, q)
            out_types.append(_output_type(e, et, types))
            if et == STRING and not isinstance(e, Col):
                raise _err(q, e, f"output {name!r}: string expressions other than a column "
                                 "are not supported")
        cols = _collect_columns([e for _, e in select] + ([where] if where else []))
        return BoundQuery(q, schema, cols, where, list(select), out_types, [], [], [], [], [],
                          None, "rows")

    window = q.window
    size = slide = 0
    ticks = 1.0
    if window is not None:
        ticks, size, slide = _bind_window(q, window, types)
        select = [(n, _window_refs(e, types)) for n, e in select]
    having_expr = None if q.having is None else (
        _window_refs(q.having, types) if window is not None else q.having)
    keys = list(q.group_by)
    key_types = []
    for k in keys:
        if any(isinstance(n, Agg) for n in walk(k)):
            raise _err(q, k, "aggregates are not allowed in GROUP BY")
        kt = type_of(k, types, q)
        if kt == NULL:
            raise _err(q, k, "GROUP BY a NULL literal is not supported")
        if is_float(kt) and not isinstance(k, Col):
            raise _err(q, k, "GROUP BY a computed floating-point expression is not supported; "
                             "group by a column or CAST the expression to BIGINT")
        key_types.append(_output_type(k, kt, types))
    if window is not None:
        keys.insert(0, WinRef(False))
        key_types.insert(0, types[window.time_column])

    aggs: list[Agg] = []

    def rewrite(e: Expr, ctx: str) -> Expr:
        for i, k in enumerate(keys):
            if e == k:
                return KeyRef(i)
        if isinstance(e, Agg):
            if e.arg is not None and any(isinstance(n, Agg) for n in walk(e.arg)):
                raise _err(q, e, "aggregates cannot be nested")
            if e not in aggs:
                aggs.append(e)
            return AggRef(aggs.index(e))
        if isinstance(e, Col):
            raise _err(q, e, f"column {e.name!r} in {ctx} must appear in GROUP BY or be used "
                             "in an aggregate function")
        return _rebuild(e, lambda c: rewrite(c, ctx))

    outputs = [(n, rewrite(e, "SELECT")) for n, e in select]
    having = rewrite(having_expr, "HAVING") if having_expr is not None else None

    agg_arg_types: list[str | None] = []
    agg_types = []
    for a in aggs:
        at = None if a.arg is None else type_of(a.arg, types, q)
        agg_arg_types.append(at)
        agg_types.append(agg_result_type(q, a, at))
    env = {"key": [compute_type(t) for t in key_types], "agg": [compute_type(t) for t in agg_types]}
    out_types = []
    for name, e in outputs:
        et = type_of(e, types, q, env)
        if isinstance(e, KeyRef):
            out_types.append(key_types[e.i])
        elif isinstance(e, AggRef):
            out_types.append(agg_types[e.i])
        else:
            if et == STRING:
                raise _err(q, e, f"output {name!r}: string expressions other than a key or an "
                                 "aggregate are not supported")
            out_types.append(et if et != NULL else FLOAT)
    if having is not None:
        ht = type_of(having, types, q, env)
        if ht not in (BOOL, NULL):
            raise _err(q, q.having, f"HAVING must be a boolean condition, got {ht}")
    cols = _collect_columns(keys + [a.arg for a in aggs if a.arg is not None]
                            + ([where] if where else []))
    if window is not None and window.time_column not in cols:
        cols.append(window.time_column)
    emit = q.emit or ("final" if window is not None else "changes")
    return BoundQuery(q, schema, cols, where, outputs, out_types, keys, key_types, aggs,
                      agg_types, agg_arg_types, having, emit, window, size, slide, ticks)


def _bind_over(q: Query, schema: Schema, types: dict[str, str], select, where) -> BoundQuery:
    """A ROWS-window query: one output row per input row that passes WHERE."""
    if q.is_aggregate:
        node = next((e for _, e in select for e in walk(e) if isinstance(e, Over)), None)
        raise _err(q, node, "window functions OVER (...) cannot be combined with GROUP BY, "
                            "aggregates or time windows in one query")
    overs: list[Over] = []

    def rewrite(e: Expr) -> Expr:
        if isinstance(e, Over):
            if e not in overs:
                overs.append(e)
            return OverRef(overs.index(e))
        return _rebuild(e, rewrite)

    outputs = [(n, rewrite(e)) for n, e in select]
    parts = {o.partition for o in overs}
    if len(parts) > 1:
        raise _err(q, overs[1], "every window function of a query must use the same "
                                "PARTITION BY")
    keys = list(overs[0].partition)
    key_types = []
    for k in keys:
        kt = type_of(k, types, q)
        if kt == NULL or (is_float(kt) and not isinstance(k, Col)):
            raise _err(q, k, "PARTITION BY needs a column or an integer/string expression")
        key_types.append(_output_type(k, kt, types))
    over_arg_types, over_types = [], []
    for o in overs:
        at = None if o.arg is None else type_of(o.arg, types, q)
        if o.arg is not None and any(isinstance(n, (Over, Agg)) for n in walk(o.arg)):
            raise _err(q, o, "window functions and aggregates cannot be nested")
        if o.func in ("avg", "sum") and not (at is not None and is_numeric(at)):
            raise _err(q, o, f"{o.func.upper()} needs a number, got {at}")
        if o.func in ("min", "max", "lag") and at in (STRING, BOOL, NULL):
            raise _err(q, o, f"{o.func.upper()} OVER (...) of a {at} is not supported")
        over_arg_types.append(at)
        if o.func in ("count", "count_star", "row_number"):
            over_types.append(INT)
        elif o.func == "avg":
            over_types.append(FLOAT)
        elif o.func == "sum":
            over_types.append(INT if is_int(at) else FLOAT)
        else:
            over_types.append(at if isinstance(o.arg, Col) else compute_type(at))
        if o.func == "lag" and o.default is not None and o.default.type not in (NULL,) and \
                not (is_numeric(o.default.type) and (is_numeric(at) or is_time(at))):
            raise _err(q, o, f"LAG's default must be a number, got {o.default.type}")
    env = {"over": [compute_type(t) for t in over_types], "key": [], "agg": []}
    out_types = []
    for name, e in outputs:
        et = type_of(e, types, q, env)
        if isinstance(e, OverRef):
            out_types.append(over_types[e.i])
        else:
            if et == STRING and not isinstance(e, Col):
                raise _err(q, e, f"output {name!r}: string expressions other than a column "
                                 "are not supported")
            out_types.append(_output_type(e, et, types))
    cols = _collect_columns([e for _, e in select] + ([where] if where else []))
    return BoundQuery(q, schema, cols, where, outputs, out_types, keys, key_types, [], [], [],
                      None, "rows", overs=overs, over_types=over_types,
                      over_arg_types=over_arg_types)


#: ticks of a datetime64 unit per millisecond
_TICKS_PER_MS = {"ns": 1e6, "us": 1e3, "ms": 1.0, "s": 1e-3, "m": 1 / 60e3, "h": 1 / 3600e3,
                 "D": 1 / 86400e3}


def _bind_window(q: Query, w: WindowSpec, types: dict[str, str]) -> tuple[float, int, int]:
    """(ticks per ms, size, slide) of a window over its time column's type."""
    tc = w.time_column
    if tc not in types:
        where = ("the window's time column" if w.time_col else
                 f"the processing-time column {PROCESSING_TIME!r}")
        raise PlanError(f"unknown column {tc!r}: {where} is not in the stream (columns: "
                        f"{sorted(types)})")
    t = types[tc]
    if is_int(t):
        ticks = 1.0
    elif is_time(t):
        unit = np.datetime_data(np.dtype(t))[0]
        if unit not in _TICKS_PER_MS:
            raise PlanError(f"time column {tc!r} has unsupported unit {t}")
        ticks = _TICKS_PER_MS[unit]
    else:
        raise PlanError(f"time column {tc!r} must hold epoch milliseconds (an integer) or "
                        f"timestamps (datetime64), got {t}")
    out = []
    for what, ms in (("size", w.size_ms), ("slide", w.slide_ms)):
        v = ms * ticks
        if v < 1 or v != int(v):
            raise PlanError(f"window {what} {ms} ms is not a whole number of {t} ticks of "
                            f"column {tc!r}")
        out.append(int(v))
    return ticks, out[0], out[1]


def _window_refs(e: Expr, types: dict[str, str]) -> Expr:
    """``window_start`` / ``window_end`` (and the ``_``-prefixed names) -> WinRef, unless
    the stream has a column of that name."""
    if isinstance(e, Col) and e.name in WINDOW_COLUMNS and e.name not in types:
        return WinRef(WINDOW_COLUMNS[e.name])
    return _rebuild(e, lambda c: _window_refs(c, types))


def _output_type(e: Expr, et: str, types: dict[str, str]) -> str:
    """A plain column keeps its own type; computed values use int64/float64/bool."""
    if isinstance(e, Col):
        return types[e.name]
    return FLOAT if et == NULL else et


def _collect_columns(exprs: list[Expr]) -> list[str]:
    out: list[str] = []
    for e in exprs:
        for c in columns_of(e):
            if c not in out:
                out.append(c)
    return out


def _rebuild(e: Expr, f) -> Expr:
    """Copy of ``e`` with every direct child replaced by ``f(child)``."""
    if isinstance(e, (Col, Lit, KeyRef, AggRef, WinRef, OverRef, Over)):
        return e
    if isinstance(e, Unary):
        return replace(e, x=f(e.x))
    if isinstance(e, Binary):
        return replace(e, l=f(e.l), r=f(e.r))
    if isinstance(e, IsNull):
        return replace(e, x=f(e.x))
    if isinstance(e, InList):
        return replace(e, x=f(e.x))
    if isinstance(e, Case):
        return replace(
            e,
            whens=tuple((f(c), f(v)) for c, v in e.whens),
            default=None if e.default is None else f(e.default),
        )
    if isinstance(e, Cast):
        return replace(e, x=f(e.x))
    if isinstance(e, Func):
        return replace(e, args=tuple(f(a) for a in e.args))
    if isinstance(e, Agg):
        return e if e.arg is None else replace(e, arg=f(e.arg))
    raise TypeError(type(e))


def numpy_dtype(t: str) -> np.dtype:
    """Storage dtype of a value of logical type ``t`` in a RecordBatch."""
    if t == STRING:
        return np.dtype(np.int32)
    if t == NULL:
        return np.dtype(np.float64)
    return np.dtype(t)
