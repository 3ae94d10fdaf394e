"""The aggregation registry: per-group state, update, and finalisation of each aggregate.

Each entry gives, for the code generator, the state arrays one aggregate keeps per group,
the code that initialises them for a new group, the code that folds one value in, and
the code that produces the final value and its null flag; and, for the tests, a slow
pure-Python reference (``reference(values)``, with None for null, in arrival order).

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AggKind:
    name: str
    state: Callable[[str], list[tuple[str, str]]]  # arg compute type -> [(suffix, dtype)]
    init: str
    update: str
    final: str
    reference: Callable[[list], object]


def _sum_dtype(t: str) -> str:
    return "float64" if t.startswith("float") else "int64"


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


COUNT_STAR = AggKind(
    "count_star",
    lambda t: [],
    "",
    "",
    "{a}v = {nn}[{g}]\n{a}n = False",
    lambda vals: len(vals),
)

COUNT = AggKind(
    "count",
    lambda t: [],
    "",
    "",
    "{a}v = {nn}[{g}]\n{a}n = False",
    lambda vals: len(_nonnull(vals)),
)

SUM = AggKind(
    "sum",
    lambda t: [("s", _sum_dtype(t))],
    "{a}_s[{g}] = 0",
    "if not {xn}:\n    {a}_s[{g}] += {x}",
    "{a}v = {a}_s[{g}]\n{a}n = {nn_zero}",
    _ref_sum,
)

AVG = AggKind(
    "avg",
    lambda t: [("s", _sum_dtype(t))],
    "{a}_s[{g}] = 0",
    "if not {xn}:\n    {a}_s[{g}] += {x}",
    "{a}n = {nn_zero}\n{a}v = (np.float64({a}_s[{g}]) / {nn}[{g}]) if not {a}n else 0.0",
    _ref_avg,
)

# Numeric MIN/MAX start from the identity of their order (NaN sorts above every number,
# so MIN starts at NaN and MAX at -inf; integers at their extremes): no "seen" flag to
# test per row. Whether any value was seen comes from the argument's non-null count.
MIN = AggKind(
    "min",
    lambda t: [("v", t)],
    "{a}_v[{g}] = {top}",
    "if not {xn}:\n    if {x_lt_v}:\n        {a}_v[{g}] = {x}",
    "{a}v = {a}_v[{g}]\n{a}n = {nn_zero}",
    _ref_min,
)

MAX = AggKind(
    "max",
    lambda t: [("v", t)],
    "{a}_v[{g}] = {bottom}",
    "if not {xn}:\n    if {v_lt_x}:\n        {a}_v[{g}] = {x}",
    "{a}v = {a}_v[{g}]\n{a}n = {nn_zero}",
    _ref_max,
)

# String MIN/MAX compare dictionary ranks, which have no identity value: keep a flag.
MIN_FLAGGED = AggKind(
    "min",
    lambda t: [("v", t), ("h", "uint8")],
    "{a}_h[{g}] = 0",
    "if not {xn}:\n    if {a}_h[{g}] == 0 or {x_lt_v}:\n"
    "        {a}_v[{g}] = {x}\n        {a}_h[{g}] = 1",
    "{a}v = {a}_v[{g}]\n{a}n = {a}_h[{g}] == 0",
    _ref_min,
)

MAX_FLAGGED = AggKind(
    "max",
    lambda t: [("v", t), ("h", "uint8")],
    "{a}_h[{g}] = 0",
    "if not {xn}:\n    if {a}_h[{g}] == 0 or {v_lt_x}:\n"
    "        {a}_v[{g}] = {x}\n        {a}_h[{g}] = 1",
    "{a}v = {a}_v[{g}]\n{a}n = {a}_h[{g}] == 0",
    _ref_max,
)

_WELFORD_STATE = lambda t: [("c", "int64"), ("mu", "float64"), ("m2", "float64")]  # noqa: E731
_WELFORD_INIT = "{a}_c[{g}] = 0\n{a}_mu[{g}] = 0.0\n{a}_m2[{g}] = 0.0"
_WELFORD_UPDATE = (
    "if not {xn}:\n"
    "    {a}_c[{g}] += 1\n"
    "    {a}_d = np.float64({x}) - {a}_mu[{g}]\n"
    "    {a}_mu[{g}] += {a}_d / {a}_c[{g}]\n"
    "    {a}_m2[{g}] += {a}_d * (np.float64({x}) - {a}_mu[{g}])"
)


def _welford(name, ddof, root):
    val = f"{{a}}_m2[{{g}}] / ({{a}}_c[{{g}}] - {ddof})"
    if root:
        val = f"np.sqrt({val})"
    # as DuckDB: the population forms of a single value are 0 (even for NaN/inf)
    single = "0.0" if ddof == 0 else val
    return AggKind(
        name,
        _WELFORD_STATE,
        _WELFORD_INIT,
        _WELFORD_UPDATE,
        f"{{a}}n = {{a}}_c[{{g}}] <= {ddof}\n"
        f"{{a}}v = (({single}) if {{a}}_c[{{g}}] == 1 else ({val})) if not {{a}}n else 0.0",
        _ref_var(ddof, root),
    )


def _first_last(name, first):
    cond = "{a}_h[{g}] == 0" if first else "True"
    return AggKind(
        name,
        lambda t: [("v", t), ("h", "uint8"), ("vn", "uint8")],
        "{a}_h[{g}] = 0\n{a}_vn[{g}] = 1",
        f"if {{keep}} and {cond}:\n    {{a}}_h[{{g}}] = 1\n    {{a}}_vn[{{g}}] = {{xn}}\n"
        "    if not {xn}:\n        {a}_v[{g}] = {x}",
        "{a}n = {a}_vn[{g}] != 0\n{a}v = {a}_v[{g}]",
        (lambda vals: vals[0] if vals else None) if first else
        (lambda vals: vals[-1] if vals else None),
    )


COUNT_DISTINCT = AggKind(
    "count_distinct",
    lambda t: [("cnt", "int64")],
    "{a}_cnt[{g}] = 0",
    "if not {xn}:\n"
    "    if distinct_insert({a}_dtab, {a}_dgid, {a}_dval, {g}, {bits}, {a}_nd):\n"
    "        {a}_nd += 1\n        {a}_cnt[{g}] += 1",
    "{a}v = {a}_cnt[{g}]\n{a}n = False",
    _ref_count_distinct,
)

REGISTRY: dict[str, AggKind] = {
    k.name: k
    for k in (
        COUNT_STAR,
        COUNT,
        SUM,
        AVG,
        MIN,
        MAX,
        _welford("var_samp", 1, False),
        _welford("var_pop", 0, False),
        _welford("stddev_samp", 1, True),
        _welford("stddev_pop", 0, True),
        _first_last("first_value", True),
        _first_last("last_value", False),
        COUNT_DISTINCT,
    )
}


#: Variants used for string arguments (ordered by dictionary rank).
STRING_VARIANTS: dict[str, AggKind] = {"min": MIN_FLAGGED, "max": MAX_FLAGGED}


def kind_for(func: str, arg_type: str | None) -> AggKind:
    """The registry entry for ``func`` over an argument of logical type ``arg_type``."""
    if arg_type == "string" and func in STRING_VARIANTS:
        return STRING_VARIANTS[func]
    return REGISTRY[func]


def reference(func: str, values: list, ignore_nulls: bool = False):
    """Slow reference of aggregate ``func`` over ``values`` (None = null), in order."""
    if ignore_nulls:
        values = _nonnull(values)
    return REGISTRY[func].reference(values)
