"""Slow twins of :mod:`velokern.kernels.scalar`.

Each function computes the same value as its namesake there, in the simplest exact way
(Python integers wrapped to 64 bits, Fractions and Decimals for the float arithmetic),
so the fast version can be held to it.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

_EXACT = Context(prec=800)  # enough digits for any double

MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def fold(h: int, key: int) -> int:
    return (h * 0x9FB21C651E98DF25 + (key & MASK64)) & MASK64


def group_hash(keys) -> int:
    """Hash of a group's key bits in the group-by tables: mix64 of the keys folded."""
    h = 0
    for k in keys:
        h = fold(h, k)
    return mix64(h)


def wrap64(v: int) -> int:
    """An exact integer wrapped to int64 (two's complement), as the kernels overflow."""
    return (v + 2**63) % 2**64 - 2**63


def int_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return wrap64(q if (a >= 0) == (b >= 0) else -q)


def int_mod(a: int, b: int) -> int:
    return wrap64(a - b * int_div(a, b))


def round_int(x: int, digits: int) -> int:
    """ROUND(x, digits) of an integer: half away from zero, wrapped to int64."""
    if digits >= 0:
        return x
    p = 10 ** -digits
    q, r = divmod(abs(x), p)
    if 2 * r >= p:
        q += 1
    return wrap64(q * p if x >= 0 else -q * p)


def round_half_away(x: float, digits: int) -> float:
    if not math.isfinite(x):
        return x
    q = Decimal(1).scaleb(-digits)
    return float(Decimal(x).quantize(q, rounding=ROUND_HALF_UP, context=_EXACT))


def float_to_int(x: float) -> tuple[int, bool]:
    if not math.isfinite(x):
        return 0, True
    r = int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_EXACT))
    if not -(2**63) <= r < 2**63:
        return 0, True
    return r, False


def f_lt(a: float, b: float) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b


def f_eq(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _sort_key(x: float) -> tuple:
    """DuckDB's order of doubles: numbers by value (-0.0 = 0.0), then every NaN."""
    return (1, 0.0) if math.isnan(x) else (0, x)


def f_le(a: float, b: float) -> bool:
    """a <= b in DuckDB's order (NaN above every number and equal to NaN)."""
    return _sort_key(a) <= _sort_key(b)


def two_prod_err(a: float, b: float) -> float:
    """The exact error of the rounded product: ``a * b - fl(a * b)`` (exact in a double
    while nothing overflows or underflows)."""
    return float(Fraction(a) * Fraction(b) - Fraction(a * b))


def float_key_bits(x: float) -> int:
    import struct

    if x == 0.0:
        return 0
    if math.isnan(x):
        return 0x7FF8000000000000
    return struct.unpack("<q", struct.pack("<d", x))[0]


__all__ = ["MASK64", "f_eq", "f_le", "f_lt", "float_key_bits", "float_to_int", "fold",
           "group_hash", "int_div", "int_mod", "mix64", "round_half_away", "round_int",
           "two_prod_err", "wrap64"]
