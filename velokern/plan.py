"""The logical plan of a streaming query and its typed expression tree.

The SQL front end (:mod:`velokern.sql`) builds a :class:`Query` from SQL text; it is
validated against a :class:`~velokern.batch.Schema` with :func:`bind`, which types every
expression and rejects what velokern cannot run (with an error naming the construct).
Kernels (:mod:`velokern.kernels`) are generated from a bound plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from velokern import config
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
    #: the ORDER BY expression (one, else None): not the frame's order, which is arrival
    #: order, but the event time a state TTL (WITH (state_ttl = ...)) is measured in
    order: Expr | None = None

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
    state_ttl_ms: int | None = None  # from WITH (state_ttl = ...): ROWS windows

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
    #: ROWS windows with a state TTL: the ORDER BY column it is measured in, and the TTL
    #: in that column's ticks (a key's frame expires once the stream's event time is
    #: more than ``ttl`` past the key's last record)
    ttl_column: str | None = None
    ttl: int = 0

    @property
    def is_aggregate(self) -> bool:
        return (bool(self.aggs) or bool(self.keys)) and not self.overs


# --------------------------------------------------------------------------- typing
def _err(q: Query, e: Expr, msg: str) -> PlanError:
    pos = q.positions.get(id(e))
    where = f" (line {pos[0]}, column {pos[1]})" if pos else ""
    return PlanError(msg + where)


@dataclass(frozen=True)
class _Typing:
    """What typing an expression needs: column types, the query, KeyRef/AggRef/OverRef types."""

    types: dict[str, str]
    q: Query
    env: dict | None

    def of(self, e: Expr) -> str:
        """The type of sub-expression ``e``."""
        return type_of(e, self.types, self.q, self.env)

    def err(self, e: Expr, msg: str) -> PlanError:
        """A PlanError about ``e``, with its position in the SQL."""
        return _err(self.q, e, msg)


def type_of(e: Expr, types: dict[str, str], q: Query, env: dict | None = None) -> str:
    """Infer (and check) the type of ``e``; ``types`` maps column names to types and
    ``env`` gives the types of KeyRef/AggRef ({'key': [...], 'agg': [...]})."""
    rule = _rule_for(_TYPE_RULES, e)
    if rule is None:
        raise _err(q, e, f"unsupported expression {type(e).__name__}")
    return rule(e, _Typing(types, q, env))


def _rule_for(rules: dict, e: Expr):
    """The rule for ``e``'s class (or the nearest base class that has one), else None."""
    for cls in type(e).__mro__:
        if cls in rules:
            return rules[cls]
    return None


def _type_col(e: Col, tp: _Typing) -> str:
    """An input column: its schema type."""
    if e.name not in tp.types:
        raise tp.err(e, f"unknown column {e.name!r} (columns: {sorted(tp.types)})")
    return tp.types[e.name]


def _type_lit(e: Lit, tp: _Typing) -> str:
    """A literal: the type the parser gave it (an integer within int64)."""
    _check_int_literal(e, tp.q, e)
    return e.type


_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def _check_int_literal(lit: Lit, q: Query, at: Expr) -> None:
    """An integer literal outside int64 is refused (it would wrap)."""
    if lit.type == INT and not _INT64_MIN <= lit.value <= _INT64_MAX:
        raise _err(q, at, f"integer literal {lit.value} is outside the int64 range "
                          f"[{_INT64_MIN}, {_INT64_MAX}]; write it as a float "
                          f"({float(lit.value)!r}) to compare with it as one")


def _type_win_ref(e: WinRef, tp: _Typing) -> str:
    """window_start / window_end: the type of the window's time column."""
    if tp.q.window is None:
        raise tp.err(e, "window_start / window_end need a time window (WINDOW ...)")
    return tp.types[tp.q.window.time_column]


def _type_key_ref(e: KeyRef, tp: _Typing) -> str:
    """A reference to GROUP BY key ``e.i``: its type from ``env``."""
    return tp.env["key"][e.i]


def _type_agg_ref(e: AggRef, tp: _Typing) -> str:
    """A reference to aggregate ``e.i``: its type from ``env``."""
    return tp.env["agg"][e.i]


def _type_over_ref(e: OverRef, tp: _Typing) -> str:
    """A reference to window function ``e.i``: its type from ``env``."""
    return tp.env["over"][e.i]


def _type_nested_over(e: Over, tp: _Typing) -> str:
    """A window function where none may be (bind takes the allowed ones out first)."""
    raise tp.err(e, "a window function OVER (...) cannot be nested here")


def _type_nested_agg(e: Agg, tp: _Typing) -> str:
    """An aggregate where none may be (bind takes the allowed ones out first)."""
    raise tp.err(e, "an aggregate cannot be nested here")


def _type_unary(e: Unary, tp: _Typing) -> str:
    """NOT (a boolean) and unary minus (a number)."""
    xt = tp.of(e.x)
    if e.op == "not":
        if xt not in (BOOL, NULL):
            raise tp.err(e, f"NOT needs a boolean operand, got {xt}")
        return BOOL
    if not is_numeric(xt) and xt != NULL:
        raise tp.err(e, f"unary minus needs a number, got {xt}")
    return compute_type(xt) if xt != NULL else NULL


_COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")


def _type_binary(e: Binary, tp: _Typing) -> str:
    """AND / OR, comparisons and arithmetic (both sides typed first, left then right)."""
    lt, rt = tp.of(e.l), tp.of(e.r)
    if e.op in ("and", "or"):
        return _type_logical(e, tp, lt, rt)
    if e.op in _COMPARISONS:
        _check_comparable(tp.q, e, lt, rt, e.op)
        return BOOL
    return _type_arithmetic(e, tp, lt, rt)


def _type_logical(e: Binary, tp: _Typing, lt: str, rt: str) -> str:
    """AND / OR: both sides boolean (or NULL)."""
    for side, st in (("left", lt), ("right", rt)):
        if st not in (BOOL, NULL):
            raise tp.err(e, f"{e.op.upper()} needs boolean operands; {side} side is {st}")
    return BOOL


def _type_arithmetic(e: Binary, tp: _Typing, lt: str, rt: str) -> str:
    """+ - * / // %: both sides numbers (or NULL); / always gives a float."""
    for side, st in (("left", lt), ("right", rt)):
        if not (is_numeric(st) or st == NULL):
            raise tp.err(e, f"operator {e.op} needs numbers; {side} side is {st}")
    if e.op == "/":
        return FLOAT
    if NULL in (lt, rt):
        return compute_type(rt if lt == NULL else lt) if (lt, rt) != (NULL, NULL) else NULL
    if is_float(lt) or is_float(rt):
        return FLOAT
    return INT


def _type_is_null(e: IsNull, tp: _Typing) -> str:
    """IS [NOT] NULL: any operand, a boolean result."""
    tp.of(e.x)
    return BOOL


def _type_in_list(e: InList, tp: _Typing) -> str:
    """x [NOT] IN (literals): each literal comparable with x."""
    xt = tp.of(e.x)
    for v in e.values:
        _check_int_literal(v, tp.q, e)
        _check_comparable(tp.q, e, xt, v.type, "IN")
    return BOOL


def _type_case(e: Case, tp: _Typing) -> str:
    """CASE: boolean conditions; the branches' values unified into one type."""
    rtypes = []
    for cond, val in e.whens:
        ct = tp.of(cond)
        if ct not in (BOOL, NULL):
            raise tp.err(e, f"CASE WHEN condition must be boolean, got {ct}")
        rtypes.append(tp.of(val))
    if e.default is not None:
        rtypes.append(tp.of(e.default))
    return unify(tp.q, e, rtypes, "CASE")


def _type_cast(e: Cast, tp: _Typing) -> str:
    """CAST to INT / FLOAT / BOOL (not from strings or timestamps)."""
    xt = tp.of(e.x)
    if xt == STRING or is_time(xt):
        raise tp.err(e, f"CAST from {xt} to {e.to} is not supported")
    return e.to


def _type_func(e: Func, tp: _Typing) -> str:
    """COALESCE (arguments unified) and ABS, ROUND, FLOOR, CEIL (numbers; NULL in, NULL out)."""
    ats = [tp.of(a) for a in e.args]
    if e.name == "coalesce":
        return unify(tp.q, e, ats, "COALESCE")
    name = e.name.upper()
    _check_func_arity(e, tp, ats)
    if not (is_numeric(ats[0]) or ats[0] == NULL):
        raise tp.err(e, f"{name} needs a number, got {ats[0]}")
    if ats[0] == NULL:
        return NULL
    if e.name in ("floor", "ceil"):
        return FLOAT
    return compute_type(ats[0])


def _check_func_arity(e: Func, tp: _Typing, ats: list[str]) -> None:
    """ROUND takes 1 or 2 arguments (the second an integer literal); the others take 1."""
    if e.name == "round":
        if len(ats) not in (1, 2):
            raise tp.err(e, f"ROUND takes 1 or 2 arguments, got {len(ats)}")
        if len(ats) == 2 and not (is_int(ats[1]) and isinstance(e.args[1], Lit)):
            raise tp.err(e, "ROUND's second argument must be an integer literal")
    elif len(ats) != 1:
        raise tp.err(e, f"{e.name.upper()} takes 1 argument, got {len(ats)}")


#: expression class -> the function that types (and checks) it
_TYPE_RULES = {
    Col: _type_col,
    Lit: _type_lit,
    WinRef: _type_win_ref,
    KeyRef: _type_key_ref,
    OverRef: _type_over_ref,
    AggRef: _type_agg_ref,
    Over: _type_nested_over,
    Unary: _type_unary,
    Binary: _type_binary,
    IsNull: _type_is_null,
    InList: _type_in_list,
    Case: _type_case,
    Cast: _type_cast,
    Func: _type_func,
    Agg: _type_nested_agg,
}


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
    select = _select_list(q, schema)
    where = q.where
    if where is not None:
        _check_where(q, where, types)
    if q.has_over:
        return _bind_over(q, schema, types, select, where)
    if not q.is_aggregate:
        return _bind_rows(q, schema, types, select, where)
    return _bind_aggregate(q, schema, types, select, where)


def _select_list(q: Query, schema: Schema) -> list[tuple[str, Expr]]:
    """The SELECT list with ``*`` spelled out; output names must be unique."""
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
    return select


def _check_where(q: Query, where: Expr, types: dict[str, str]) -> None:
    """WHERE: a boolean condition without aggregates."""
    if any(isinstance(n, Agg) for n in walk(where)):
        raise _err(q, where, "aggregates are not allowed in WHERE (use HAVING)")
    wt = type_of(where, types, q)
    if wt not in (BOOL, NULL):
        raise _err(q, where, f"WHERE must be a boolean condition, got {wt}")


def _bind_rows(q: Query, schema: Schema, types: dict[str, str], select, where) -> BoundQuery:
    """A stateless query: one output row per input row that passes WHERE."""
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


def _bind_aggregate(q: Query, schema: Schema, types: dict[str, str], select,
                    where) -> BoundQuery:
    """A GROUP BY / aggregate / time-window query: outputs over keys and aggregates."""
    window = q.window
    size = slide = 0
    ticks = 1.0
    having_expr = q.having
    if window is not None:
        ticks, size, slide = _bind_window(q, window, types)
        select = [(n, _window_refs(e, types)) for n, e in select]
        having_expr = None if q.having is None else _window_refs(q.having, types)
    keys, key_types = _bind_group_keys(q, types)
    aggs: list[Agg] = []
    outputs = [(n, _group_refs(q, e, keys, aggs, "SELECT")) for n, e in select]
    having = None if having_expr is None else _group_refs(q, having_expr, keys, aggs, "HAVING")
    agg_arg_types, agg_types = _type_aggs(q, aggs, types)
    env = {"key": [compute_type(t) for t in key_types], "agg": [compute_type(t) for t in agg_types]}
    out_types = _aggregate_output_types(q, outputs, types, env, key_types, agg_types)
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


def _bind_group_keys(q: Query, types: dict[str, str]) -> tuple[list[Expr], list[str]]:
    """The GROUP BY keys and their types; a windowed query's key 0 is the window start."""
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
    if q.window is not None:
        keys.insert(0, WinRef(False))
        key_types.insert(0, types[q.window.time_column])
    return keys, key_types


def _group_refs(q: Query, e: Expr, keys: list[Expr], aggs: list[Agg], ctx: str) -> Expr:
    """``e`` over the groups: keys -> KeyRef, aggregates -> AggRef (new ones added to ``aggs``)."""
    # any other column is an error; ``ctx`` (SELECT or HAVING) names the clause
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
    return _rebuild(e, lambda c: _group_refs(q, c, keys, aggs, ctx))


def _type_aggs(q: Query, aggs: list[Agg],
               types: dict[str, str]) -> tuple[list[str | None], list[str]]:
    """The argument type and result type of each aggregate."""
    agg_arg_types: list[str | None] = []
    agg_types = []
    for a in aggs:
        at = None if a.arg is None else type_of(a.arg, types, q)
        agg_arg_types.append(at)
        agg_types.append(agg_result_type(q, a, at))
    return agg_arg_types, agg_types


def _aggregate_output_types(q: Query, outputs, types: dict[str, str], env: dict,
                            key_types: list[str], agg_types: list[str]) -> list[str]:
    """The type of each output of an aggregate query (computed strings are refused)."""
    # a key or an aggregate keeps its own type; a computed NULL is a float
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
    return out_types


def _bind_over(q: Query, schema: Schema, types: dict[str, str], select, where) -> BoundQuery:
    """A ROWS-window query: one output row per input row that passes WHERE."""
    if q.is_aggregate:
        node = next((e for _, e in select for e in walk(e) if isinstance(e, Over)), None)
        raise _err(q, node, "window functions OVER (...) cannot be combined with GROUP BY, "
                            "aggregates or time windows in one query")
    overs: list[Over] = []
    outputs = [(n, _over_refs(e, overs)) for n, e in select]
    keys, key_types = _bind_partition(q, overs, types)
    over_arg_types, over_types = [], []
    for o in overs:
        at, ot = _type_over(q, o, types)
        over_arg_types.append(at)
        over_types.append(ot)
    env = {"over": [compute_type(t) for t in over_types], "key": [], "agg": []}
    out_types = _over_output_types(q, outputs, types, env, over_types)
    cols = _collect_columns([e for _, e in select] + ([where] if where else []))
    ttl_column, ttl = _bind_ttl(q, overs, types)
    if ttl_column is not None and ttl_column not in cols:
        cols.append(ttl_column)
    return BoundQuery(q, schema, cols, where, outputs, out_types, keys, key_types, [], [], [],
                      None, "rows", overs=overs, over_types=over_types,
                      over_arg_types=over_arg_types, ttl_column=ttl_column, ttl=ttl)


def _bind_ttl(q: Query, overs: list[Over], types: dict[str, str]) -> tuple[str | None, int]:
    """(the event-time column, the TTL in its ticks) of ``WITH (state_ttl = ...)``."""
    if not q.state_ttl_ms:
        return None, 0
    orders = {o.order for o in overs}
    order = orders.pop() if len(orders) == 1 else None
    if not isinstance(order, Col) or order.name not in types or not (
            is_int(types[order.name]) or is_time(types[order.name])):
        raise _err(q, overs[0], "state_ttl measures how long a key has not been seen in "
                                "event time: every window function needs the same ORDER BY "
                                "column, of integers (epoch ms) or timestamps")
    t = types[order.name]
    ticks = 1.0 if is_int(t) else _TICKS_PER_MS.get(np.datetime_data(np.dtype(t))[0])
    if ticks is None:
        raise _err(q, order, f"time column {order.name!r} has unsupported unit {t}")
    ttl = q.state_ttl_ms * ticks
    if ttl < 1 or ttl != int(ttl) or ttl >= config.MAX_WINDOW_TICKS:
        raise PlanError(f"state_ttl {q.state_ttl_ms} ms is not a whole number of {t} ticks "
                        f"of column {order.name!r} under 2**60 "
                        "(velokern.config.MAX_WINDOW_TICKS)")
    return order.name, int(ttl)


def _over_refs(e: Expr, overs: list[Over]) -> Expr:
    """``e`` with each window function replaced by an OverRef (new ones added to ``overs``)."""
    if isinstance(e, Over):
        if e not in overs:
            overs.append(e)
        return OverRef(overs.index(e))
    return _rebuild(e, lambda c: _over_refs(c, overs))


def _bind_partition(q: Query, overs: list[Over],
                    types: dict[str, str]) -> tuple[list[Expr], list[str]]:
    """The PARTITION BY keys (the same for every window function) and their types."""
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
    return keys, key_types


def _type_over(q: Query, o: Over, types: dict[str, str]) -> tuple[str | None, str]:
    """The argument type and result type of window function ``o`` (checked)."""
    at = None if o.arg is None else type_of(o.arg, types, q)
    if o.arg is not None and any(isinstance(n, (Over, Agg)) for n in walk(o.arg)):
        raise _err(q, o, "window functions and aggregates cannot be nested")
    if o.func in ("avg", "sum") and not (at is not None and is_numeric(at)):
        raise _err(q, o, f"{o.func.upper()} needs a number, got {at}")
    if o.func in ("min", "max", "lag") and at in (STRING, BOOL, NULL):
        raise _err(q, o, f"{o.func.upper()} OVER (...) of a {at} is not supported")
    _check_frame(q, o)
    if o.default is not None:
        _check_int_literal(o.default, q, o)
    ot = _over_result_type(o, at)
    if o.func == "lag" and o.default is not None and o.default.type not in (NULL,) and \
            not (is_numeric(o.default.type) and (is_numeric(at) or is_time(at))):
        raise _err(q, o, f"LAG's default must be a number, got {o.default.type}")
    return at, ot


def _check_frame(q: Query, o: Over) -> None:
    """A ROWS frame or LAG offset within config.MAX_ROWS_FRAME rows per key."""
    limit = config.MAX_ROWS_FRAME
    if o.func == "lag" and o.offset > limit:
        raise _err(q, o, f"LAG offset {o.offset} is over the limit of {limit} rows per key "
                         "(velokern.config.MAX_ROWS_FRAME)")
    if o.func not in ("lag", "row_number") and o.rows > limit:
        raise _err(q, o, f"a ROWS frame of {o.rows} rows ({o.rows - 1} PRECEDING and the "
                         f"current row) is over the limit of {limit} rows per key "
                         "(velokern.config.MAX_ROWS_FRAME)")


def _over_result_type(o: Over, at: str | None) -> str:
    """The result type of window function ``o`` over an argument of type ``at``."""
    if o.func in ("count", "count_star", "row_number"):
        return INT
    if o.func == "avg":
        return FLOAT
    if o.func == "sum":
        return INT if is_int(at) else FLOAT
    return at if isinstance(o.arg, Col) else compute_type(at)


def _over_output_types(q: Query, outputs, types: dict[str, str], env: dict,
                       over_types: list[str]) -> list[str]:
    """The type of each output of a ROWS-window query (computed strings are refused)."""
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
    return out_types


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
        if v >= config.MAX_WINDOW_TICKS:
            raise PlanError(f"{w.describe()}: the window {what} is {int(v)} ticks of column "
                            f"{tc!r}, over the limit of 2**60 "
                            "(velokern.config.MAX_WINDOW_TICKS)")
        out.append(int(v))
    per_record = -(-out[0] // out[1])
    if per_record > config.MAX_WINDOWS_PER_RECORD:
        raise PlanError(f"{w.describe()}: a record would belong to {per_record} windows, "
                        f"over the limit of {config.MAX_WINDOWS_PER_RECORD} "
                        "(velokern.config.MAX_WINDOWS_PER_RECORD); use a larger slide")
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
