"""The aggregate registry: every aggregate velokern runs, each declared in one place.

An entry (:class:`Aggregate`) says everything the rest of velokern needs to know:

* ``sql`` / ``sqlglot`` / ``form``: how SQL spells it. sqlglot parses some function
  names into typed expressions (``SUM`` into ``exp.Sum``, ``BOOL_AND`` into
  ``exp.LogicalAnd``; the class names are listed in ``sqlglot``) and names it does not
  know into ``exp.Anonymous`` (matched by the lower-case names in ``sql``). ``form``
  tells the three COUNTs apart: ``"*"`` for ``COUNT(*)``, ``"distinct"`` for
  ``COUNT(DISTINCT x)``, ``""`` for a plain call. The parser reads these.
* ``kernel``: the code generator's templates (:class:`Kernel`: state slots, init,
  update, final), with ``by_type`` variants for some argument types (string MIN/MAX).
  Read through :func:`kind_for`.
* ``result_type(arg_type, arg_is_column)``: the result's logical type, or
  :class:`AggTypeError` for an argument it refuses (the planner names the call).
* ``null_rule``: when the result is NULL (documentation; the kernels' ``final``
  templates and the merges below implement it, the tests hold them to it).
* ``partial``: how it runs distributed (:class:`Partial`): the partial aggregate
  columns each part computes, the numpy merge of those columns over groups of rows,
  and the final value from the merged columns. ``velokern.distributed`` dispatches here.
* ``reference(values)``: a slow pure-Python reference (None for null, arrival order),
  for the tests.
* ``ignore_nulls``: whether ``IGNORE NULLS`` is accepted on it.

Every group keeps a row count, and every nullable aggregate argument a non-null count
shared by the aggregates over it (``{nn}``): COUNT, SUM, AVG, MIN and MAX need no count
of their own.

Names in templates: ``{a}`` the aggregate's prefix, ``{g}`` the group id variable,
``{nn}`` the non-null count array of the argument (the row count for COUNT(*) and
non-nullable arguments) and ``{nn_zero}`` the test that it is zero (constant False for
the row count: a group has at least one row), ``{top}``/``{bottom}`` the identities of MIN/MAX,
``{x}``/``{xn}`` the argument value and null flag, ``{x_lt_v}``/``{v_lt_x}`` the comparisons of
the argument with the held value in the argument type's order, ``{keep}`` whether a value
is taken (FIRST/LAST with IGNORE NULLS), ``{bits}`` its grouping bits (COUNT DISTINCT).

Adding an aggregate: one :class:`Aggregate` in :data:`REGISTRY` (and a row in
``tests/test_aggregates.py``); nothing else names aggregates one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from velokern.batch import STRING, StringDictionary
from velokern.types import BOOL, FLOAT, INT, NULL, compute_type, is_float, is_int, is_time

if TYPE_CHECKING:
    from velokern.plan import Agg

__all__ = ["REGISTRY", "AggTypeError", "Aggregate", "Column", "Groups", "Kernel", "Partial",
           "kind_for", "reference"]


# --------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class Kernel:
    """The code generator's view of an aggregate (template names: the module docstring)."""

    state: Callable[[str], list[tuple[str, str]]]  # arg storage type -> [(suffix, dtype)]
    init: str
    update: str
    final: str


class AggTypeError(ValueError):
    """An aggregate refuses its argument's type (the planner turns it into a PlanError
    pointing at the call)."""


@dataclass(frozen=True)
class Column:
    """One partial column over the rows being merged: ``values``, ``valid`` (None: no
    NULL) and, for a string column (values are dictionary codes), its ``dictionary``."""

    values: np.ndarray
    valid: np.ndarray | None = None
    dictionary: StringDictionary | None = None

    def have(self) -> np.ndarray:
        return np.ones(len(self.values), bool) if self.valid is None else self.valid

    def filled(self, fill) -> np.ndarray:
        return self.values if self.valid is None else np.where(self.valid, self.values, fill)


@dataclass(frozen=True)
class Groups:
    """Rows of partial tables grouped: group ``j`` is rows ``starts[j]`` up to the next
    start (``n`` rows in all); within a group rows are in stream order (the parts are
    neighbouring ranges of the stream)."""

    starts: np.ndarray
    n: int

    def reduce(self, ufunc, x: np.ndarray) -> np.ndarray:
        return ufunc.reduceat(x, self.starts)

    def per_row(self, per_group: np.ndarray) -> np.ndarray:
        return np.repeat(per_group, np.diff(np.r_[self.starts, self.n]))


Merged = tuple[np.ndarray, "np.ndarray | None"]  # (values, valid or None)


@dataclass(frozen=True)
class Partial:
    """How an aggregate runs distributed.

    ``columns(agg)``: the partial aggregates each part computes per group, as
    ``[(suffix, Agg)]`` (column ``__vk_a<i><suffix>``). ``merge(cols, groups, agg)``:
    merges those columns (by suffix, :class:`Column`) over the groups of rows
    (:class:`Groups`), returning ``{suffix: (values, valid)}``; associative over
    neighbouring ranges of the stream. ``final(merged, n)``: the aggregate's value
    ``(values, valid)`` for the ``n`` merged groups.

    ``distinct``: the partial is instead the set of distinct (group, argument value)
    pairs (a query of its own, merged by union); ``final`` then gets ``{"": (group,
    valid)}``: each distinct pair's merged group (-1: none) and whether its value is
    non-null.
    """

    columns: Callable[[Agg], list[tuple[str, Agg]]] | None
    merge: Callable[[Mapping[str, Column], Groups, Agg], dict[str, Merged]] | None
    final: Callable[[Mapping[str, Merged], int], Merged]
    distinct: bool = False


@dataclass(frozen=True)
class Aggregate:
    """One aggregate, all of it (the fields: the module docstring). ``name`` is what
    :class:`velokern.plan.Agg` carries."""

    name: str
    sql: tuple[str, ...]  # lower-case SQL names (matched when sqlglot leaves exp.Anonymous)
    sqlglot: tuple[str, ...]  # sqlglot expression classes that parse to it
    kernel: Kernel
    result_type: Callable[[str | None, bool], str]  # (arg type, arg is a column) -> type
    null_rule: str
    partial: Partial
    reference: Callable[[list], object]
    form: str = ""  # "" | "*" (COUNT(*)) | "distinct" (COUNT(DISTINCT x))
    by_type: Mapping[str, Kernel] = field(default_factory=dict)  # arg type -> variant
    ignore_nulls: bool = False  # accepts IGNORE NULLS


def _mask(ok: np.ndarray) -> np.ndarray | None:
    return None if ok.all() else ok


# --------------------------------------------------------------------------- result types
def _count_type(at, is_col):
    return INT


def _count_distinct_type(at, is_col):
    if at is not None and is_float(at) and not is_col:
        raise AggTypeError("COUNT(DISTINCT) of a computed floating-point expression is not "
                           "supported; use a column")
    return INT


def _same_type(name: str, booleans: bool) -> Callable[[str | None, bool], str]:
    """MIN/MAX/FIRST/LAST: the argument's type (a column's own width)."""

    def f(at, is_col):
        if not booleans and at == BOOL:
            raise AggTypeError(f"{name.upper()} of a boolean is not supported")
        if at == NULL:
            return FLOAT
        return at if is_col else compute_type(at)

    return f


def _numeric_type(name: str, integer_stays: bool) -> Callable[[str | None, bool], str]:
    """SUM (integers stay integers), AVG and the variances (FLOAT)."""

    def f(at, is_col):
        if at in (STRING, BOOL) or is_time(at):
            raise AggTypeError(f"{name.upper()} needs a number, got {at}")
        return INT if integer_stays and is_int(at) else FLOAT

    return f


def _boolean_type(name: str) -> Callable[[str | None, bool], str]:
    def f(at, is_col):
        if at not in (BOOL, NULL):
            raise AggTypeError(f"{name.upper()} needs a boolean argument, got {at}")
        return BOOL

    return f


# --------------------------------------------------------------------------- references
def _nonnull(vals):
    return [v for v in vals if v is not None]


def _ref_sum(vals):
    v = _nonnull(vals)
    return math.fsum(v) if v and isinstance(v[0], float) else (sum(v) if v else None)


def _ref_avg(vals):
    v = _nonnull(vals)
    return (math.fsum(v) / len(v)) if v else None


def _nan_key(x):
    # DuckDB orders NaN above every number
    return (1, 0.0) if isinstance(x, float) and math.isnan(x) else (0, x)


def _ref_min(vals):
    v = _nonnull(vals)
    return min(v, key=_nan_key) if v else None


def _ref_max(vals):
    v = _nonnull(vals)
    return max(v, key=_nan_key) if v else None


def _ref_var(ddof, root):
    def f(vals):
        v = _nonnull(vals)
        if len(v) <= ddof:
            return None
        if len(v) == 1:
            return 0.0
        arr = np.asarray(v, dtype=np.float64)
        out = float(np.var(arr, ddof=ddof))
        return math.sqrt(out) if root else out

    return f


def _ref_count_distinct(vals):
    seen = set()
    for v in _nonnull(vals):
        if isinstance(v, float):
            v = "nan" if math.isnan(v) else (0.0 if v == 0.0 else v)
        seen.add(v)
    return len(seen)


def _ref_bool(every: bool):
    def f(vals):
        v = _nonnull(vals)
        if not v:
            return None
        return all(v) if every else any(v)

    return f


# --------------------------------------------------------------------------- merges
def _itself(a: Agg) -> list[tuple[str, Agg]]:
    return [("", a)]


def _as_merged(merged, n):
    return merged[""]


def _merge_count(cols, g, a):
    return {"": (g.reduce(np.add, cols[""].values), None)}


def _merge_sum(cols, g, a):
    c = cols[""]
    return {"": (g.reduce(np.add, c.filled(0)), _mask(g.reduce(np.logical_or, c.have())))}


def _string_extreme(c: Column, have: np.ndarray, g: Groups, is_min: bool) -> np.ndarray:
    """MIN/MAX of a string partial, compared by dictionary rank (string order)."""
    rank = c.dictionary.ranks().astype(np.int64)  # a permutation of the codes
    n = len(rank)
    r = np.where(have, rank[np.where(have, c.values, 0)], n if is_min else -1)
    best = g.reduce(np.minimum if is_min else np.maximum, r)
    code_of_rank = np.argsort(rank)
    return code_of_rank[np.clip(best, 0, max(n - 1, 0))].astype(np.int32) if n else \
        np.zeros(len(g.starts), np.int32)


def _merge_extreme(is_min: bool):
    def merge(cols, g, a):
        c = cols[""]
        x, valid, have = c.values, c.valid, c.have()
        any_ = g.reduce(np.logical_or, have)
        if c.dictionary is not None:
            out = _string_extreme(c, have, g, is_min)
        elif x.dtype.kind == "f":
            # MIN is NaN only when every value is; MAX is NaN when any value is
            xf = c.filled(np.nan if is_min else -np.inf)
            ext = g.reduce(np.fmin if is_min else np.maximum, xf)
            # equal extremes (0.0 and -0.0) keep the first one, as the kernels do
            per_row = g.per_row(ext)
            hit = have & ((xf == per_row) | (np.isnan(xf) & np.isnan(per_row)))
            pick = g.reduce(np.minimum, np.where(hit, np.arange(g.n), g.n))
            out = np.where(pick < g.n, x[np.minimum(pick, g.n - 1)], ext)
        else:
            xi = x.view(np.int64) if x.dtype.kind == "M" else x
            if xi.dtype.kind == "b":
                fill = is_min
            else:
                info = np.iinfo(xi.dtype)
                fill = info.max if is_min else info.min
            r = g.reduce(np.minimum if is_min else np.maximum,
                         xi if valid is None else np.where(valid, xi, fill))
            out = r.view(x.dtype) if x.dtype.kind == "M" else r
        return {"": (out, _mask(any_))}

    return merge


def _merge_first_last(first: bool):
    def merge(cols, g, a):
        c = cols[""]
        x, valid = c.values, c.valid
        idx = np.arange(g.n)
        take = np.ones(g.n, bool) if (not a.ignore_nulls or valid is None) else valid
        if first:
            pick = g.reduce(np.minimum, np.where(take, idx, g.n))
        else:
            pick = g.reduce(np.maximum, np.where(take, idx, -1))
        found = (pick >= 0) & (pick < g.n)
        pick = np.where(found, pick, g.starts)
        ok = found if valid is None else found & valid[pick]
        return {"": (x[pick], _mask(ok))}

    return merge


def _merge_bool(every: bool):
    def merge(cols, g, a):
        c = cols[""]
        x = c.filled(every).astype(bool)  # a NULL changes nothing
        out = g.reduce(np.logical_and if every else np.logical_or, x)
        return {"": (out, _mask(g.reduce(np.logical_or, c.have())))}

    return merge


def _over_arg(a: Agg, func: str) -> Agg:
    """Aggregate ``func`` over ``a``'s argument (a plain call: no DISTINCT, no IGNORE
    NULLS)."""
    return replace(a, func=func, distinct=False, ignore_nulls=False)


def _avg_columns(a: Agg):
    return [("s", _over_arg(a, "sum")), ("c", _over_arg(a, "count"))]


def _merge_avg(cols, g, a):
    return {s: (g.reduce(np.add, cols[s].filled(0)), None) for s in ("s", "c")}


def _final_avg(merged, n):
    s, c = merged["s"][0], merged["c"][0]
    return s.astype(np.float64) / np.where(c > 0, c, 1), _mask(c > 0)


def _welford_columns(a: Agg):
    return [("c", _over_arg(a, "count")), ("m", _over_arg(a, "avg")),
            ("v", _over_arg(a, "var_pop"))]


def _merge_welford(cols, g, a):
    """Welford triples (n, mean, population variance), merged with the combined-variance
    formula."""
    n = cols["c"].values
    have = n > 0
    mu = np.where(have, cols["m"].filled(0.0), 0.0)
    var = np.where(have, cols["v"].filled(0.0), 0.0)
    tot = g.reduce(np.add, n)
    safe = np.where(tot > 0, tot, 1)
    mean = g.reduce(np.add, n * mu) / safe
    dev = mu - g.per_row(mean)
    m2 = g.reduce(np.add, n * var + n * dev * dev * have)
    ok = _mask(tot > 0)
    return {"c": (tot, None), "m": (mean, ok), "v": (np.where(tot > 0, m2 / safe, 0.0), ok)}


def _final_welford(ddof: int, root: bool):
    def final(merged, n):
        cnt, var = merged["c"][0], merged["v"][0]
        m2 = var * cnt
        denom = np.where(cnt - ddof > 0, cnt - ddof, 1)
        val = np.where(cnt == 1, 0.0 if ddof == 0 else m2 / denom, m2 / denom)
        if root:
            val = np.sqrt(val)
        return val.astype(np.float64), _mask(cnt > ddof)

    return final


def _final_count_distinct(merged, n):
    group, valid = merged[""]
    counts = np.zeros(n, np.int64)
    keep = group >= 0 if valid is None else (group >= 0) & valid
    np.add.at(counts, group[keep], 1)
    return counts, None


def _partial(merge) -> Partial:
    return Partial(_itself, merge, _as_merged)


# --------------------------------------------------------------------------- kernels
def _sum_dtype(t: str) -> str:
    return "float64" if t.startswith("float") else "int64"


_COUNT_KERNEL = Kernel(lambda t: [], "", "", "{a}v = {nn}[{g}]\n{a}n = False")

_SUM_KERNEL = Kernel(
    lambda t: [("s", _sum_dtype(t))],
    "{a}_s[{g}] = 0",
    "if not {xn}:\n    {a}_s[{g}] += {x}",
    "{a}v = {a}_s[{g}]\n{a}n = {nn_zero}",
)

_AVG_KERNEL = Kernel(
    lambda t: [("s", _sum_dtype(t))],
    "{a}_s[{g}] = 0",
    "if not {xn}:\n    {a}_s[{g}] += {x}",
    "{a}n = {nn_zero}\n{a}v = (np.float64({a}_s[{g}]) / {nn}[{g}]) if not {a}n else 0.0",
)

def _extreme_kernel(start: str, better: str) -> Kernel:
    """Numeric MIN (``start`` {top}, ``better`` {x_lt_v}) or MAX ({bottom}, {v_lt_x}).
    They start from the identity of their order (NaN sorts above every number, so MIN
    starts at NaN and MAX at -inf; integers at their extremes): no "seen" flag to test
    per row. Whether any value was seen comes from the argument's non-null count."""
    return Kernel(
        lambda t: [("v", t)],
        f"{{a}}_v[{{g}}] = {start}",
        f"if not {{xn}}:\n    if {better}:\n        {{a}}_v[{{g}}] = {{x}}",
        "{a}v = {a}_v[{g}]\n{a}n = {nn_zero}",
    )


def _flagged_kernel(better: str) -> Kernel:
    """String MIN/MAX: they compare dictionary ranks, which have no identity value, so
    they keep a flag of whether a value was seen."""
    return Kernel(
        lambda t: [("v", t), ("h", "uint8")],
        "{a}_h[{g}] = 0",
        f"if not {{xn}}:\n    if {{a}}_h[{{g}}] == 0 or {better}:\n"
        "        {a}_v[{g}] = {x}\n        {a}_h[{g}] = 1",
        "{a}v = {a}_v[{g}]\n{a}n = {a}_h[{g}] == 0",
    )


_MIN_KERNEL = _extreme_kernel("{top}", "{x_lt_v}")
_MAX_KERNEL = _extreme_kernel("{bottom}", "{v_lt_x}")
_MIN_FLAGGED = _flagged_kernel("{x_lt_v}")
_MAX_FLAGGED = _flagged_kernel("{v_lt_x}")

_WELFORD_STATE = lambda t: [("c", "int64"), ("mu", "float64"), ("m2", "float64")]  # noqa: E731
_WELFORD_INIT = "{a}_c[{g}] = 0\n{a}_mu[{g}] = 0.0\n{a}_m2[{g}] = 0.0"
_WELFORD_UPDATE = (
    "if not {xn}:\n"
    "    {a}_c[{g}] += 1\n"
    "    {a}_d = np.float64({x}) - {a}_mu[{g}]\n"
    "    {a}_mu[{g}] += {a}_d / {a}_c[{g}]\n"
    "    {a}_m2[{g}] += {a}_d * (np.float64({x}) - {a}_mu[{g}])"
)


def _welford(name: str, ddof: int, root: bool, sql: tuple[str, ...],
             classes: tuple[str, ...]) -> Aggregate:
    val = f"{{a}}_m2[{{g}}] / ({{a}}_c[{{g}}] - {ddof})"
    if root:
        val = f"np.sqrt({val})"
    # as DuckDB: the population forms of a single value are 0 (even for NaN/inf)
    single = "0.0" if ddof == 0 else val
    kernel = Kernel(
        _WELFORD_STATE,
        _WELFORD_INIT,
        _WELFORD_UPDATE,
        f"{{a}}n = {{a}}_c[{{g}}] <= {ddof}\n"
        f"{{a}}v = (({single}) if {{a}}_c[{{g}}] == 1 else ({val})) if not {{a}}n else 0.0",
    )
    return Aggregate(
        name, sql, classes, kernel, _numeric_type(name, False),
        "NULL for fewer than two non-null values" if ddof else
        "NULL when no non-null value; 0 for a single value (even NaN or inf)",
        Partial(_welford_columns, _merge_welford, _final_welford(ddof, root)),
        _ref_var(ddof, root),
    )


def _first_last(name: str, first: bool, sql: tuple[str, ...],
                classes: tuple[str, ...]) -> Aggregate:
    cond = "{a}_h[{g}] == 0" if first else "True"
    kernel = Kernel(
        lambda t: [("v", t), ("h", "uint8"), ("vn", "uint8")],
        "{a}_h[{g}] = 0\n{a}_vn[{g}] = 1",
        f"if {{keep}} and {cond}:\n    {{a}}_h[{{g}}] = 1\n    {{a}}_vn[{{g}}] = {{xn}}\n"
        "    if not {xn}:\n        {a}_v[{g}] = {x}",
        "{a}n = {a}_vn[{g}] != 0\n{a}v = {a}_v[{g}]",
    )
    which = "first" if first else "last"
    return Aggregate(
        name, sql, classes, kernel, _same_type(name, True),
        f"the {which} row's value, NULL if that is NULL; IGNORE NULLS: the {which} non-null "
        "value, NULL when there is none",
        _partial(_merge_first_last(first)),
        (lambda vals: vals[0] if vals else None) if first else
        (lambda vals: vals[-1] if vals else None),
        ignore_nulls=True,
    )


def _boolean(name: str, every: bool, sql: tuple[str, ...],
             classes: tuple[str, ...]) -> Aggregate:
    # one uint8 per group, starting at the identity (true for AND, false for OR); a value
    # equal to the identity changes nothing, so only the other one is stored
    kernel = Kernel(
        lambda t: [("v", "uint8")],
        f"{{a}}_v[{{g}}] = {int(every)}",
        f"if not {{xn}}:\n    if {'not ' if every else ''}{{x}}:\n"
        f"        {{a}}_v[{{g}}] = {int(not every)}",
        "{a}v = {a}_v[{g}] != 0\n{a}n = {nn_zero}",
    )
    return Aggregate(name, sql, classes, kernel, _boolean_type(name),
                     "NULL when no non-null value", _partial(_merge_bool(every)),
                     _ref_bool(every))


# --------------------------------------------------------------------------- the registry
_ENTRIES = (
    Aggregate("count_star", ("count",), ("Count",), _COUNT_KERNEL, _count_type,
              "never NULL: the number of rows (0 over no rows)",
              _partial(_merge_count), lambda vals: len(vals), form="*"),
    Aggregate("count", ("count",), ("Count",), _COUNT_KERNEL, _count_type,
              "never NULL: 0 when no non-null value",
              _partial(_merge_count), lambda vals: len(_nonnull(vals))),
    Aggregate("sum", ("sum",), ("Sum",), _SUM_KERNEL, _numeric_type("sum", True),
              "NULL when no non-null value", _partial(_merge_sum), _ref_sum),
    Aggregate("avg", ("avg", "mean"), ("Avg",), _AVG_KERNEL, _numeric_type("avg", False),
              "NULL when no non-null value", Partial(_avg_columns, _merge_avg, _final_avg),
              _ref_avg),
    Aggregate("min", ("min",), ("Min",), _MIN_KERNEL, _same_type("min", False),
              "NULL when no non-null value (NaN only when every value is NaN)",
              _partial(_merge_extreme(True)), _ref_min, by_type={STRING: _MIN_FLAGGED}),
    Aggregate("max", ("max",), ("Max",), _MAX_KERNEL, _same_type("max", False),
              "NULL when no non-null value (NaN when any value is NaN)",
              _partial(_merge_extreme(False)), _ref_max, by_type={STRING: _MAX_FLAGGED}),
    _welford("var_samp", 1, False, ("var_samp", "variance"), ("Variance", "VarianceSamp")),
    _welford("var_pop", 0, False, ("var_pop",), ("VariancePop",)),
    _welford("stddev_samp", 1, True, ("stddev_samp", "stddev"), ("Stddev", "StddevSamp")),
    _welford("stddev_pop", 0, True, ("stddev_pop",), ("StddevPop",)),
    _first_last("first_value", True, ("first_value", "first"), ("FirstValue", "First")),
    _first_last("last_value", False, ("last_value", "last"), ("LastValue", "Last")),
    Aggregate(
        "count_distinct", ("count",), ("Count",),
        Kernel(
            lambda t: [("cnt", "int64")],
            "{a}_cnt[{g}] = 0",
            "if not {xn}:\n"
            "    if distinct_insert({a}_dtab, {a}_dgid, {a}_dval, {g}, {bits}, {a}_nd):\n"
            "        {a}_nd += 1\n        {a}_cnt[{g}] += 1",
            "{a}v = {a}_cnt[{g}]\n{a}n = False",
        ),
        _count_distinct_type, "never NULL: 0 when no non-null value",
        Partial(None, None, _final_count_distinct, distinct=True),
        _ref_count_distinct, form="distinct"),
    _boolean("bool_and", True, ("bool_and", "every", "logical_and"), ("LogicalAnd",)),
    _boolean("bool_or", False, ("bool_or", "logical_or"), ("LogicalOr",)),
)

#: Every aggregate, by the name :class:`velokern.plan.Agg` carries.
REGISTRY: dict[str, Aggregate] = {a.name: a for a in _ENTRIES}


def kind_for(func: str, arg_type: str | None) -> Kernel:
    """The code generator's templates for ``func`` over an argument of logical type
    ``arg_type``."""
    agg = REGISTRY[func]
    return agg.by_type.get(arg_type, agg.kernel) if arg_type is not None else agg.kernel


def reference(func: str, values: list, ignore_nulls: bool = False):
    """Slow reference of aggregate ``func`` over ``values`` (None = null), in order."""
    if ignore_nulls:
        values = _nonnull(values)
    return REGISTRY[func].reference(values)
