"""Logical types of values in a query: the names columns and expressions are typed
with (numpy dtype names for numbers and times, ``"string"`` for dictionary-encoded
strings, ``"null"`` for a bare NULL literal), and the predicates over them."""

from __future__ import annotations

__all__ = ["BOOL", "FLOAT", "INT", "NULL", "compute_type", "is_float", "is_int",
           "is_numeric", "is_time"]

INT = "int64"
FLOAT = "float64"
BOOL = "bool"
NULL = "null"  # the type of a bare NULL literal


def is_int(t: str) -> bool:
    return t.startswith(("int", "uint"))


def is_float(t: str) -> bool:
    return t.startswith("float")


def is_numeric(t: str) -> bool:
    return is_int(t) or is_float(t)


def is_time(t: str) -> bool:
    return t.startswith("datetime64")


def compute_type(t: str) -> str:
    """The type a value of column type ``t`` has inside an expression."""
    if is_int(t):
        return INT
    if is_float(t):
        return FLOAT
    return t
