"""RecordBatch: the columnar unit of data everywhere in velokern.

A batch is an ordered set of named, equal-length, 1-D numpy columns. Each column has an
optional boolean validity mask (True = valid; ``None`` means no nulls). String columns
are held dictionary-encoded: int32 codes into a :class:`StringDictionary` that a job
keeps for its whole life, so a string has the same code in every batch of the job.
"""

from __future__ import annotations

import datetime as _dt
import operator
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np

__all__ = ["STRING", "RecordBatch", "Schema", "StringDictionary"]

#: The logical type name of a dictionary-encoded string column.
STRING = "string"

_NUMERIC_KINDS = "iufb"
_SUPPORTED_NUMERIC = {
    np.dtype(t)
    for t in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float32", "float64", "bool",
    )
}  # fmt: skip


class _Untyped(np.ndarray):
    """The storage (float64 zeros) of a column whose type nothing told: every value is
    null, or there are none, and the source gave no type (a list of None, Arrow's
    ``null`` type, an object column of missing values). The class marks the column; it
    rides along with the array through slices, ``take`` and the engine's internal batches.
    A job reads such a column as its schema's type (nothing to convert) and never takes
    its schema from it."""


def _untyped_column(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.float64).view(_Untyped)


def _has_no_value(data: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether a stored column has no valid value (no rows, or all null)."""
    return len(data) == 0 or (mask is not None and not mask.any())


def _is_untyped(data: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether a stored column (data, validity) has no type: marked, and no valid value."""
    return type(data) is _Untyped and _has_no_value(data, mask)


def _optional_import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"this needs the optional dependency '{module}': "
            f"install it with `pip install velokern[{extra}]`"
        ) from exc


# --------------------------------------------------------------------------- strings
class StringDictionary:
    """An append-only mapping between strings and int32 codes.

    Codes are given in order of first appearance and never change, so a job that keeps
    one dictionary per string column sees the same code for the same string in every
    batch. Encoding is vectorised: Python-level work happens once per distinct value of
    a batch, and a dictionary entry is created only for values never seen before.
    """

    __slots__ = ("_array", "_index", "_ranks", "_values")

    def __init__(self, values: Iterable[str] = ()):
        self._values: list[str] = []
        self._index: dict[str, int] = {}
        self._array: np.ndarray | None = None
        self._ranks: np.ndarray | None = None
        for v in values:
            self.code_of(v)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self._values[:5])
        more = ", ..." if len(self._values) > 5 else ""
        return f"StringDictionary([{head}{more}], size={len(self)})"

    def __contains__(self, value: object) -> bool:
        return value in self._index

    @property
    def values(self) -> list[str]:
        """The strings, in code order (a copy)."""
        return list(self._values)

    def as_array(self) -> np.ndarray:
        """The strings as an object array indexed by code (cached; do not mutate)."""
        if self._array is None or len(self._array) != len(self._values):
            arr = np.empty(len(self._values), dtype=object)
            arr[:] = self._values
            self._array = arr
        return self._array

    def ranks(self) -> np.ndarray:
        """int32 rank of each code in lexicographic order of the strings.

        Comparing ``ranks()[a] < ranks()[b]`` orders codes as their strings order; the
        ranks of old codes may change as values are added, but their relative order
        never does, so a comparison is always right with the current ranks.
        """
        if self._ranks is None or len(self._ranks) != len(self._values):
            # an object array sorts with Python's str comparison (code point order);
            # a numpy unicode array would drop trailing NULs and tie "a" with "a\0"
            order = np.argsort(self.as_array(), kind="stable")
            ranks = np.empty(len(order), dtype=np.int32)
            ranks[order] = np.arange(len(order), dtype=np.int32)
            self._ranks = ranks
        return self._ranks

    def code_of(self, value: str) -> int:
        """The code of ``value``, adding it when it is new."""
        code = self._index.get(value)
        if code is None:
            if not isinstance(value, str):
                raise TypeError(f"a string dictionary holds str values, got {value!r}")
            code = len(self._values)
            if code >= 2**31 - 1:
                raise OverflowError("string dictionary is full (2**31 - 1 values)")
            self._values.append(value)
            self._index[value] = code
        return code

    def get(self, value: str, default: int = -1) -> int:
        """The code of ``value`` or ``default`` when it has none (adds nothing)."""
        return self._index.get(value, default)

    def encode_unique(self, uniques: Sequence[str]) -> np.ndarray:
        """Codes (int32) of distinct values, adding the new ones (in the given order)."""
        codes = list(map(self._index.get, uniques))  # C-speed lookups
        if None in codes:
            for j, c in enumerate(codes):
                if c is None:
                    codes[j] = self.code_of(uniques[j])
        return np.array(codes, dtype=np.int32)

    def encode(self, values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Codes (int32) for an array of strings; null positions get code -1.

        New values get codes in order of their first appearance in ``values``.
        """
        values = np.asarray(values)
        sel = values if valid is None else values[valid]
        uniques, inverse = _factorize(sel)
        return _PendingStrings(uniques, inverse, valid, len(values), self).encode()[0]

    def decode(self, codes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Object array of strings for ``codes`` (None where not valid)."""
        arr = self.as_array()
        codes = np.asarray(codes)
        if valid is None:
            return arr[codes]
        out = np.empty(len(codes), dtype=object)
        out[valid] = arr[codes[valid]]
        return out

    def mapping_from(self, other: StringDictionary) -> np.ndarray:
        """int32 array mapping every code of ``other`` to this dictionary's code."""
        if other is self:
            return np.arange(len(self), dtype=np.int32)
        return self.encode_unique(other._values)

    def copy(self) -> StringDictionary:
        return StringDictionary(self._values)


class _PendingStrings:
    """A string column that has been checked but not yet encoded.

    Encoding adds new values to a job's dictionary, so constructors encode only once
    every column of a batch has been checked: a constructor that fails leaves the
    dictionaries it was given untouched.
    """

    __slots__ = ("dictionary", "first_seen", "inverse", "num_rows", "uniques", "valid")

    def __init__(
        self,
        uniques: Sequence[str],
        inverse: np.ndarray,
        valid: np.ndarray | None,
        num_rows: int,
        dictionary: StringDictionary | None,
        *,
        first_seen: bool = True,
    ):
        self.uniques = uniques  # str values
        self.inverse = inverse  # index into uniques of every valid row
        self.valid = valid  # None when no nulls
        self.num_rows = num_rows
        self.dictionary = dictionary
        # True when uniques are exactly the values used, in order of first appearance
        # (a factorisation done here); False for a dictionary that came with the data
        # (Arrow dictionary arrays, categoricals), which may hold unused values
        self.first_seen = first_seen

    def _used_in_order(self) -> tuple[Sequence[str], np.ndarray]:
        uniques, inverse = self.uniques, self.inverse
        if self.first_seen:
            return uniques, inverse
        n, k = len(inverse), len(uniques)
        first = np.full(k, n, dtype=np.intp)
        np.minimum.at(first, inverse, np.arange(n, dtype=np.intp))
        used = np.flatnonzero(first < n)
        order = used[np.argsort(first[used], kind="stable")]
        remap = np.empty(k, dtype=np.intp)
        remap[order] = np.arange(len(order), dtype=np.intp)
        return [uniques[j] for j in order.tolist()], remap[inverse]

    def encode(self) -> tuple[np.ndarray, StringDictionary]:
        """Codes (int32, -1 at nulls) in the dictionary, which gains only the values the
        rows use, new ones in order of first appearance."""
        d = self.dictionary if self.dictionary is not None else StringDictionary()
        codes = np.full(self.num_rows, -1, dtype=np.int32)
        if len(self.uniques) and len(self.inverse):
            uniques, inverse = self._used_in_order()
            mapped = d.encode_unique(uniques)[inverse]
            if self.valid is None:
                codes[:] = mapped
            else:
                codes[self.valid] = mapped
        return codes, d


def _factorize(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct strings of a 1-D array of strings (object, unicode or bytes) in order of
    first appearance, and the index into them of every value."""
    if values.dtype == object:
        return _unique_objects(values)
    if values.dtype.kind == "S":
        try:
            values = np.char.decode(values, "utf-8")
        except UnicodeDecodeError as exc:
            raise TypeError(f"bytes values are not valid UTF-8: {exc}") from exc
    if values.dtype.kind == "T":
        values = values.astype(object)
        return _unique_objects(values)
    if values.dtype.kind != "U":
        raise TypeError(f"expected strings, got dtype {values.dtype}")
    if len(values) == 0:
        return [], np.empty(0, dtype=np.intp)
    uniques, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order), dtype=np.intp)
    return [str(u) for u in uniques[order].tolist()], rank[inverse.reshape(-1)]


# --------------------------------------------------------------------------- schema
def _type_name(dtype: np.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else np.dtype(dtype).name


class Schema:
    """Column names and logical types, in order (types: numpy dtype names or 'string')."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str | np.dtype]] | Mapping[str, Any]):
        items = fields.items() if isinstance(fields, Mapping) else fields
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, typ in items:
            if name in seen:
                raise ValueError(f"duplicate column name {name!r} in schema")
            seen.add(name)
            out.append((str(name), _normalise_type_name(name, typ)))
        self._fields = tuple(out)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self._fields]

    @property
    def types(self) -> list[str]:
        return [t for _, t in self._fields]

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _ in self._fields)

    def __getitem__(self, name: str) -> str:
        for n, t in self._fields:
            if n == name:
                return t
        raise KeyError(f"no column {name!r} in schema (columns: {self.names})")

    def get(self, name: str, default: str | None = None) -> str | None:
        for n, t in self._fields:
            if n == name:
                return t
        return default

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {t}" for n, t in self._fields)
        return f"Schema({inner})"


def _normalise_type_name(name: str, typ: str | np.dtype | type) -> str:
    if typ is str or (isinstance(typ, str) and typ in (STRING, "str", "utf8", "varchar")):
        return STRING
    try:
        dt = np.dtype(typ)
    except TypeError as exc:
        raise TypeError(f"column {name!r}: unknown type {typ!r}") from exc
    if _supported_dtype(dt):
        return dt.name
    raise TypeError(f"column {name!r}: unsupported type {typ!r}{_datetime_hint(dt)}")


#: datetime64 units a column may have (the ones Arrow, pandas and polars share, and days)
_DATETIME_UNITS = ("D", "s", "ms", "us", "ns")
#: other datetime64 units, converted exactly to a supported one on input
_DATETIME_COARSE = {"Y": "D", "M": "D", "W": "D", "h": "s", "m": "s"}


def _supported_dtype(dt: np.dtype) -> bool:
    if dt in _SUPPORTED_NUMERIC:
        return True
    return dt.kind == "M" and np.datetime_data(dt) in [(u, 1) for u in _DATETIME_UNITS]


def _datetime_hint(dt: np.dtype) -> str:
    if dt.kind == "M":
        return f" (datetime64 columns need one of the units {', '.join(_DATETIME_UNITS)})"
    return ""


def _normalise_datetime(name: str, data: np.ndarray) -> np.ndarray:
    """datetime64 data in a supported unit (converted exactly) or a TypeError."""
    unit, count = np.datetime_data(data.dtype)
    if unit in _DATETIME_UNITS and count == 1:
        return data
    target = _DATETIME_COARSE.get(unit, unit if unit in _DATETIME_UNITS else None)
    if target is None:
        raise TypeError(
            f"column {name!r}: unsupported dtype {data.dtype}{_datetime_hint(data.dtype)}"
        )
    return data.astype(f"datetime64[{target}]")


# --------------------------------------------------------------------------- columns
def _naive_utc(v: _dt.datetime) -> _dt.datetime:
    if v.tzinfo is not None and v.utcoffset() is not None:
        return v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return v.replace(tzinfo=None)


def _datetime_value(v: Any) -> np.datetime64:
    if isinstance(v, np.datetime64):
        return v
    to64 = getattr(v, "to_datetime64", None)  # pandas Timestamp: keep nanoseconds
    if to64 is not None:
        return to64()
    return np.datetime64(_naive_utc(v), "us")


def _value_kind(t: type) -> str | None:
    """The column kind of Python/numpy values of type ``t`` (None for unsupported)."""
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, (int, np.integer)):
        return "int"
    if issubclass(t, (float, np.floating)):
        return "float"
    if issubclass(t, str):
        return "str"
    if issubclass(t, (_dt.datetime, np.datetime64)):
        return "datetime"
    if issubclass(t, _dt.date):
        return "date"
    return None


def _infer_list(name: str, values: list[Any]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Column from a Python list with None for null: (data, valid-or-None, kind).

    ``kind`` is 'bool', 'int', 'float', 'str', 'datetime' or 'date'. Strings come back
    as an object array (None at nulls), everything else as a numpy array.
    """
    n = len(values)
    kinds = set()
    for t in set(map(type, values)):  # per distinct type, not per value
        if t is type(None):
            continue
        kind = _value_kind(t)
        if kind is None:
            v = next(v for v in values if type(v) is t)
            raise TypeError(f"column {name!r}: unsupported value {v!r} of type {type(v).__name__}")
        kinds.add(kind)
    has_null = None in values
    if has_null:
        valid = np.fromiter(map(operator.is_not, values, repeat(None)), dtype=bool, count=n)
    mask = valid if has_null else None
    if not kinds:
        # all null (or empty): no type; float64 storage marked untyped
        return _untyped_column(n), mask, "float"
    if len(kinds) > 1 and kinds != {"int", "float"}:
        raise TypeError(f"column {name!r}: mixed value types {sorted(kinds)} in one column")
    kind = "float" if kinds == {"int", "float"} else next(iter(kinds))
    if kind == "str":
        arr = np.empty(n, dtype=object)
        arr[:] = values
        return arr, mask, "str"
    if kind in ("datetime", "date"):
        if kind == "date":
            conv = [None if v is None else np.datetime64(v, "D") for v in values]
        else:
            conv = [None if v is None else _datetime_value(v) for v in values]
        dtype = np.array([c for c in conv if c is not None]).dtype  # finest unit present
        nat = np.datetime64("NaT")
        data = np.array([nat if c is None else c for c in conv], dtype=dtype)
        return data, mask, kind
    fill = {"bool": False, "int": 0, "float": 0.0}[kind]
    dtype = {"bool": np.bool_, "int": np.int64, "float": np.float64}[kind]
    filled = [fill if v is None else v for v in values] if has_null else values
    try:
        data = np.array(filled, dtype=dtype)
    except OverflowError:
        # integers beyond int64 fit uint64 when none is negative
        try:
            data = np.array(filled, dtype=np.uint64)
        except OverflowError as exc:
            raise TypeError(
                f"column {name!r}: integer value out of the int64/uint64 range"
            ) from exc
    return data, mask, kind


def _string_dtype_to_objects(arr: np.ndarray) -> np.ndarray:
    """numpy StringDType array -> object array with None at its missing values."""
    out = arr.astype(object)
    if hasattr(arr.dtype, "na_object"):
        na = arr.dtype.na_object
        is_na = (lambda v: v is na) if not isinstance(na, float) else (lambda v: v != v)
        for i, v in enumerate(out.tolist()):
            if not isinstance(v, str) and is_na(v):
                out[i] = None
    return out


def _pending(
    values: np.ndarray, valid: np.ndarray | None, dictionary: StringDictionary | None
) -> _PendingStrings:
    sel = values if valid is None else values[valid]
    uniques, inverse = _factorize(sel)
    return _PendingStrings(uniques, inverse, valid, len(values), dictionary)


def _and_valid(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _strings_via_arrow(
    name: str, values: Any, valid: np.ndarray | None, dictionary: StringDictionary | None
) -> tuple[None, np.ndarray | None, _PendingStrings] | None:
    """Fast path for a list / object array of str and None: Arrow checks and factorises
    the values at C speed. None when the values are anything else (or pyarrow is
    missing); then the Python path decides, and names any problem."""
    first = next((v for v in values if v is not None), None)
    if not isinstance(first, str):
        return None
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is installed in the test env
        return None
    try:
        arr = pa.array(values, mask=None if valid is None else ~valid, from_pandas=False)
    except (pa.ArrowException, UnicodeError, TypeError, ValueError):
        return None
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    return _arrow_column(pa, name, arr, dictionary)


def _unmasked(name: str, values: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """A masked array's data and validity (None when nothing is masked)."""
    if values.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {values.shape}")
    m = np.ma.getmaskarray(values)
    return np.ma.getdata(values), (~m if m.any() else None)


def _input_mask(name: str, mask: Any, n: int) -> np.ndarray:
    """A validity mask given next to a column, as bool, checked against its length."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != (n,):
        raise ValueError(f"column {name!r}: validity mask has shape {m.shape}, column has ({n},)")
    return m


def _pending_named(
    name: str, values: Any, valid: np.ndarray | None, dictionary: StringDictionary | None
) -> _PendingStrings:
    """:func:`_pending`, its TypeError (e.g. a str that is not valid Unicode) naming the column."""
    try:
        return _pending(values, valid, dictionary)
    except TypeError as exc:
        raise TypeError(f"column {name!r}: {exc}") from exc


def _object_column(
    name: str, values: Any, valid: np.ndarray | None, dictionary: StringDictionary | None
) -> tuple[np.ndarray | None, np.ndarray | None, _PendingStrings | None]:
    """:func:`_as_column` for a list or object array: Python values (None = null) of one kind."""
    fast = _strings_via_arrow(name, values, valid, dictionary)
    if fast is not None:
        return fast
    # positions already null are not read
    lst = values if isinstance(values, list) else values.tolist()
    if valid is not None:
        lst = list(lst)
        for i in np.flatnonzero(~valid).tolist():
            lst[i] = None
    data, v, kind = _infer_list(name, lst)
    valid = _and_valid(valid, v)
    if kind == "str":
        return None, valid, _pending_named(name, data, valid, dictionary)
    return _native_column(name, data, valid)


def _native_column(
    name: str, data: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, None]:
    """:func:`_as_column` for a numeric/bool/datetime array: native order, checked, NaT = null."""
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind == "M":
        data = _normalise_datetime(name, data)
        nat = np.isnat(data)
        if nat.any():
            valid = _and_valid(valid, ~nat)
    elif data.dtype not in _SUPPORTED_NUMERIC:
        raise TypeError(f"column {name!r}: unsupported dtype {data.dtype}")
    if valid is not None and valid.all():
        valid = None
    return data, valid, None


def _as_column(
    name: str,
    values: Any,
    mask: np.ndarray | None,
    dictionary: StringDictionary | None,
) -> tuple[np.ndarray | None, np.ndarray | None, _PendingStrings | None]:
    """Check and normalise one input column without changing any dictionary.

    Returns ``(data, valid-or-None, None)`` for a numeric/bool/datetime column and
    ``(None, valid-or-None, pending)`` for a string column, whose codes come from
    ``pending.encode()`` once every column of the batch has been checked.
    """
    valid = None
    if isinstance(values, np.ma.MaskedArray):
        values, valid = _unmasked(name, values)
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {values.shape}")
        if values.dtype.kind == "T":
            values = _string_dtype_to_objects(values)
    elif isinstance(values, (list, tuple)):
        values = list(values)
    else:
        raise TypeError(
            f"column {name!r}: expected a numpy array or a list, got {type(values).__name__}"
        )
    if mask is not None:
        valid = _and_valid(valid, _input_mask(name, mask, len(values)))
    if isinstance(values, list) or values.dtype == object:
        return _object_column(name, values, valid, dictionary)
    if values.dtype.kind in "US":
        return None, valid, _pending_named(name, values, valid, dictionary)
    return _native_column(name, values, valid)


def _shape_error(n: str, a: Any, num_rows: int, lengths: dict) -> Exception:
    """The error for a column given to RecordBatch() that is no 1-D array of num_rows."""
    if not isinstance(a, np.ndarray):
        return TypeError(f"column {n!r}: expected a numpy array, got {type(a).__name__}")
    if a.ndim != 1:
        return ValueError(f"column {n!r} must be 1-D, got shape {a.shape}")
    return ValueError(
        f"column {n!r} has {len(a)} rows but the batch has {num_rows} (lengths: {lengths})"
    )


def _codes_error(n: str, a: np.ndarray, d: Any) -> TypeError:
    """The error for a string column given to RecordBatch() with a bad dictionary or codes."""
    if not isinstance(d, StringDictionary):
        return TypeError(
            f"string column {n!r}: expected a StringDictionary, got {type(d).__name__}"
        )
    return TypeError(f"string column {n!r}: codes must be int32, got {a.dtype}")


# --------------------------------------------------------------------------- batch
class RecordBatch:
    """An ordered set of named, equal-length, 1-D numpy columns with validity masks.

    Build one with :meth:`from_pydict`, :meth:`from_records`, :meth:`from_arrow`,
    :meth:`from_pandas` or :meth:`from_polars`. ``batch["col"]`` gives the values as a
    numpy array (strings decoded to an object array); :meth:`column` gives the stored
    array (int32 codes for strings), :meth:`validity` the mask and :meth:`dictionary`
    the string dictionary.
    """

    __slots__ = ("_data", "_dicts", "_masks", "_names", "_num_rows")

    def __init__(
        self,
        columns: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray | None] | None = None,
        dictionaries: Mapping[str, StringDictionary] | None = None,
        *,
        num_rows: int | None = None,
    ):
        """Low-level constructor from already-normalised arrays.

        ``columns`` hold numeric/bool/datetime64 arrays, or int32 codes for the columns
        named in ``dictionaries``. Use the ``from_*`` constructors for anything else.
        """
        masks = dict(masks or {})
        dictionaries = dict(dictionaries or {})
        names = list(columns)
        lengths = {n: len(a) for n, a in columns.items()}
        if num_rows is None:
            num_rows = lengths[names[0]] if names else 0
        data: dict[str, np.ndarray] = {}
        for n in names:
            a = columns[n]
            if not isinstance(a, np.ndarray) or a.ndim != 1 or len(a) != num_rows:
                raise _shape_error(n, a, num_rows, lengths)
            if n in dictionaries:
                d = dictionaries[n]
                if not isinstance(d, StringDictionary) or a.dtype != np.int32:
                    raise _codes_error(n, a, d)
            elif not _supported_dtype(a.dtype):
                raise TypeError(
                    f"column {n!r}: unsupported dtype {a.dtype}{_datetime_hint(a.dtype)}"
                )
            m = masks.get(n)
            if m is not None:
                m = np.asarray(m, dtype=bool)
                if m.shape != a.shape:
                    raise ValueError(
                        f"column {n!r}: validity mask has shape {m.shape}, column has {a.shape}"
                    )
                if m.all():
                    m = None
            masks[n] = m
            data[n] = a
        unknown = (set(masks) | set(dictionaries)) - set(names)
        if unknown:
            raise ValueError(f"masks or dictionaries given for unknown columns {sorted(unknown)}")
        self._names = names
        self._data = data
        self._masks = {n: masks.get(n) for n in names}
        self._dicts = dictionaries
        self._num_rows = int(num_rows)

    def _parts(self, name: str):
        """Internal: ``(stored array, validity or None, dictionary or None)`` of a
        column, or None when the batch has no such column (one lookup, no checks)."""
        data = self._data.get(name)
        if data is None:
            return None
        return data, self._masks[name], self._dicts.get(name)

    @classmethod
    def _trusted(cls, names, data, masks, dicts, num_rows: int) -> RecordBatch:
        """Internal: a batch from arrays the engine built and already knows are valid
        (1-D, equal lengths, supported dtypes, all-valid masks given as None)."""
        b = cls.__new__(cls)
        b._names = list(names)
        b._data = data
        b._masks = masks
        b._dicts = dicts
        b._num_rows = int(num_rows)
        return b

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_pydict(
        cls,
        mapping: Mapping[str, Any],
        *,
        masks: Mapping[str, np.ndarray] | None = None,
        dictionaries: Mapping[str, StringDictionary] | None = None,
    ) -> RecordBatch:
        """Batch from ``{name: numpy array | masked array | list (None = null)}``.

        ``masks`` optionally gives validity masks (True = valid); ``dictionaries`` gives
        the StringDictionary to encode each string column into (a job's dictionary).
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(f"from_pydict expects a mapping, got {type(mapping).__name__}")
        masks = masks or {}
        dictionaries = dictionaries or {}
        names = list(mapping)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names: {names}")
        unknown = sorted(set(masks) - set(names), key=str)
        if unknown:
            raise ValueError(f"masks given for unknown columns {unknown} (columns: {names})")
        lengths = {}
        for n, v in mapping.items():
            if not isinstance(n, str):
                raise TypeError(f"column names must be str, got {n!r}")
            if isinstance(v, np.ndarray) and v.ndim != 1:
                raise ValueError(f"column {n!r} must be 1-D, got shape {v.shape}")
            if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
                raise TypeError(
                    f"column {n!r}: expected a numpy array or a list, got {type(v).__name__}"
                )
            lengths[n] = len(v)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns have unequal lengths: {lengths}")
        # check every column first, then encode strings: a failure changes no dictionary
        cols, valids, pending = {}, {}, {}
        for n, v in mapping.items():
            data, valid, p = _as_column(n, v, masks.get(n), dictionaries.get(n))
            cols[n], valids[n] = data, valid
            if p is not None:
                pending[n] = p
        return cls._build(cols, valids, pending, next(iter(lengths.values()), 0))

    @classmethod
    def _build(
        cls,
        cols: dict[str, np.ndarray | None],
        valids: dict[str, np.ndarray | None],
        pending: dict[str, _PendingStrings],
        num_rows: int,
    ) -> RecordBatch:
        dicts = {}
        for n, p in pending.items():
            cols[n], dicts[n] = p.encode()
        return cls(cols, valids, dicts, num_rows=num_rows)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        schema: Schema | None = None,
        dictionaries: Mapping[str, StringDictionary] | None = None,
    ) -> RecordBatch:
        """Batch from a list of dicts (rows). A key missing from a row is null there.

        Columns come in order of first appearance (or the ``schema`` order when given;
        then the schema's types are used).
        """
        rows = list(records)
        names: list[str] = list(schema.names) if schema is not None else []
        seen = set(names)
        for r in rows:
            if not isinstance(r, Mapping):
                raise TypeError(f"records must be dicts, got {type(r).__name__}: {r!r}")
            if schema is None:
                for k in r:
                    if k not in seen:
                        seen.add(k)
                        names.append(k)
        cols = {n: [r.get(n) for r in rows] for n in names}
        if schema is None:
            return cls.from_pydict(cols, dictionaries=dictionaries)
        # cast with fresh dictionaries first, so a failed cast changes no job dictionary
        batch = cls.from_pydict(cols).cast(schema)
        return batch._into_dictionaries(dictionaries or {})

    def _into_dictionaries(self, dictionaries: Mapping[str, StringDictionary]) -> RecordBatch:
        """The same batch with string columns re-encoded into ``dictionaries``."""
        data, dicts = dict(self._data), dict(self._dicts)
        for n, d in dictionaries.items():
            cur = self._dicts.get(n)
            if cur is None or cur is d:
                continue
            codes, m = self._data[n], self._masks[n]
            out = np.full(len(codes), -1, dtype=np.int32)
            ok = codes >= 0 if m is None else m
            if ok.any():
                out[ok] = d.mapping_from(cur)[codes[ok]]
            data[n], dicts[n] = out, d
        return RecordBatch(data, self._masks, dicts, num_rows=self._num_rows)

    @classmethod
    def from_numpy(cls, columns: Mapping[str, np.ndarray], **kw) -> RecordBatch:
        """Alias of :meth:`from_pydict` for numpy columns."""
        return cls.from_pydict(columns, **kw)

    @classmethod
    def from_arrow(
        cls, table: Any, *, dictionaries: Mapping[str, StringDictionary] | None = None
    ) -> RecordBatch:
        """Batch from a pyarrow Table or RecordBatch (numeric columns without nulls are
        zero-copy)."""
        pa = _optional_import("pyarrow", "arrow")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TypeError(f"from_arrow expects a pyarrow Table or RecordBatch, got {type(table)}")
        dictionaries = dictionaries or {}
        names = table.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names: {names}")
        cols, valids, pending = {}, {}, {}
        for i, name in enumerate(names):
            col = table.column(i)
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            data, valid, p = _arrow_column(pa, name, arr, dictionaries.get(name))
            cols[name], valids[name] = data, valid
            if p is not None:
                pending[name] = p
        return cls._build(cols, valids, pending, table.num_rows)

    @classmethod
    def from_pandas(
        cls, df: Any, *, dictionaries: Mapping[str, StringDictionary] | None = None
    ) -> RecordBatch:
        """Batch from a pandas DataFrame (NaN in float columns stays a value; pandas
        missing values of other columns become nulls)."""
        pd = _optional_import("pandas", "pandas")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"from_pandas expects a pandas DataFrame, got {type(df).__name__}")
        dictionaries = dictionaries or {}
        names = [str(c) for c in df.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names: {names}")
        cols, valids, pending = {}, {}, {}
        for i, name in enumerate(names):
            data, valid, p = _pandas_column(pd, name, df.iloc[:, i], dictionaries.get(name))
            cols[name], valids[name] = data, valid
            if p is not None:
                pending[name] = p
        return cls._build(cols, valids, pending, len(df))

    @classmethod
    def from_polars(
        cls, df: Any, *, dictionaries: Mapping[str, StringDictionary] | None = None
    ) -> RecordBatch:
        """Batch from a polars DataFrame (through Arrow)."""
        pl = _optional_import("polars", "polars")
        if not isinstance(df, pl.DataFrame):
            raise TypeError(f"from_polars expects a polars DataFrame, got {type(df).__name__}")
        pa = _optional_import("pyarrow", "polars")
        table = df.to_arrow()
        # polars exports strings as string views; plain strings dictionary-encode everywhere
        fields = [
            pa.field(f.name, pa.large_string()) if pa.types.is_string_view(f.type) else f
            for f in table.schema
        ]
        table = table.cast(pa.schema(fields))
        return cls.from_arrow(table, dictionaries=dictionaries)

    # ---------------------------------------------------------------- basic access
    def __len__(self) -> int:
        return self._num_rows

    @property
    def num_rows(self) -> int:
        return self._num_rows

    @property
    def num_columns(self) -> int:
        return len(self._names)

    @property
    def column_names(self) -> list[str]:
        return list(self._names)

    @property
    def schema(self) -> Schema:
        return Schema([(n, self.type_of(n)) for n in self._names])

    def type_of(self, name: str) -> str:
        self._check(name)
        return STRING if name in self._dicts else self._data[name].dtype.name

    @property
    def untyped_columns(self) -> list[str]:
        """Columns whose type nothing told: every value is null (or the batch has no
        rows) and the source gave no type (a list of None, Arrow's ``null`` type, an
        object column of missing values). Their :meth:`type_of` is a placeholder
        (float64); an engine reads them as its schema's (or earlier batches') type and
        never takes its schema from them."""
        return [n for n in self._names if _is_untyped(self._data[n], self._masks[n])]

    def _check(self, name: str) -> None:
        if name not in self._data:
            raise KeyError(f"no column {name!r} in batch (columns: {self._names})")

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __getitem__(self, name: str) -> np.ndarray:
        """Values of a column: numpy array (strings decoded to an object array, with
        None at nulls)."""
        self._check(name)
        d = self._dicts.get(name)
        if d is not None:
            return d.decode(self._data[name], self._masks[name])
        return self._data[name]

    def column(self, name: str) -> np.ndarray:
        """The stored array of a column (int32 codes for a string column)."""
        self._check(name)
        return self._data[name]

    def validity(self, name: str) -> np.ndarray | None:
        """Validity mask of a column (True = valid), or None when it has no nulls."""
        self._check(name)
        return self._masks[name]

    def null_count(self, name: str) -> int:
        m = self.validity(name)
        return 0 if m is None else int((~m).sum())

    def dictionary(self, name: str) -> StringDictionary | None:
        """The StringDictionary of a string column (None for other columns)."""
        self._check(name)
        return self._dicts.get(name)

    @property
    def dictionaries(self) -> dict[str, StringDictionary]:
        return dict(self._dicts)

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}: {self.type_of(n)}" for n in self._names)
        return f"RecordBatch({self._num_rows} rows; {cols})"

    # ---------------------------------------------------------------- transforms
    def _subset(self, names: list[str], data, masks) -> RecordBatch:
        dicts = {n: self._dicts[n] for n in names if n in self._dicts}
        n_rows = len(next(iter(data.values()))) if data else 0
        return RecordBatch(data, masks, dicts, num_rows=n_rows if data else 0)

    def select(self, names: Sequence[str]) -> RecordBatch:
        """A batch with only ``names``, in that order (no copy)."""
        names = list(names)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in select: {names}")
        for n in names:
            self._check(n)
        out = RecordBatch(
            {n: self._data[n] for n in names},
            {n: self._masks[n] for n in names},
            {n: self._dicts[n] for n in names if n in self._dicts},
            num_rows=self._num_rows,
        )
        return out

    def take(self, indices: Sequence[int] | np.ndarray) -> RecordBatch:
        """Rows at ``indices`` (negative indices count from the end)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            raise TypeError("take expects integer indices; use filter for a boolean mask")
        if idx.dtype.kind not in "iu" and idx.size:
            raise TypeError(f"take expects integer indices, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.ndim != 1:
            raise ValueError(f"take expects 1-D indices, got shape {idx.shape}")
        if len(idx) and (idx.max() >= self._num_rows or idx.min() < -self._num_rows):
            raise IndexError(f"take: index out of range for a batch of {self._num_rows} rows")
        return RecordBatch(
            {n: a[idx] for n, a in self._data.items()},
            {n: (None if m is None else m[idx]) for n, m in self._masks.items()},
            self._dicts,
            num_rows=len(idx),
        )

    def filter(self, mask: np.ndarray) -> RecordBatch:
        """Rows where the boolean ``mask`` is True."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self._num_rows,):
            raise ValueError(f"filter expects a boolean mask of length {self._num_rows}")
        return self.take(np.flatnonzero(mask))

    def slice(self, offset: int = 0, length: int | None = None) -> RecordBatch:
        """Rows ``[offset, offset + length)`` (views, no copy)."""
        if offset < 0:
            raise ValueError(f"slice offset must be >= 0, got {offset}")
        if length is not None and length < 0:
            raise ValueError(f"slice length must be >= 0, got {length}")
        stop = self._num_rows if length is None else min(self._num_rows, offset + length)
        start = min(offset, self._num_rows)
        stop = max(stop, start)
        return RecordBatch(
            {n: a[start:stop] for n, a in self._data.items()},
            {n: (None if m is None else m[start:stop]) for n, m in self._masks.items()},
            self._dicts,
            num_rows=stop - start,
        )

    @staticmethod
    def concat(batches: Sequence[RecordBatch]) -> RecordBatch:
        """Concatenate batches with the same column names and types.

        String columns sharing a dictionary keep it; otherwise their values are
        re-encoded into a copy of the first batch's dictionary.
        """
        batches = list(batches)
        if not batches:
            raise ValueError("concat needs at least one batch")
        # an untyped column takes the type the column has in another batch
        batches, untyped = _typed_alike(batches)
        first = batches[0]
        _check_concat(batches)
        data, masks, dicts = {}, {}, {}
        total = sum(len(b) for b in batches)
        for n in first.column_names:
            d0 = first._dicts.get(n)
            if d0 is not None:
                dicts[n], data[n] = _concat_strings(batches, n, d0)
            else:
                data[n] = np.concatenate([b._data[n] for b in batches])
                if n in untyped:
                    data[n] = data[n].view(_Untyped)
            if any(b._masks[n] is not None for b in batches):
                masks[n] = np.concatenate(
                    [np.ones(len(b), bool) if b._masks[n] is None else b._masks[n] for b in batches]
                )
            else:
                masks[n] = None
        return RecordBatch(data, masks, dicts, num_rows=total)

    def cast(self, schema: Schema | Mapping[str, Any]) -> RecordBatch:
        """A batch with the columns of ``schema``, converted to its types.

        Numeric casts are checked like Arrow's safe casts: a valid value that does not
        survive a cast to an integer type (NaN, overflow, a fraction) raises ValueError.
        A column with no valid value (all null, or no rows) casts to any type,
        including string (an untyped column gets its type so); other casts to or from
        string raise TypeError.
        """
        if not isinstance(schema, Schema):
            schema = Schema(schema)
        n_rows = self._num_rows
        data, masks, dicts = {}, {}, {}
        for name, typ in schema:
            self._check(name)
            cur = self.type_of(name)
            m = self._masks[name]
            masks[name] = m
            all_null = n_rows == 0 or (m is not None and not m.any())
            if typ == cur and not (all_null and type(self._data[name]) is _Untyped):
                data[name] = self._data[name]
                if name in self._dicts:
                    dicts[name] = self._dicts[name]
            elif all_null:
                if typ == STRING:
                    data[name] = np.full(n_rows, -1, dtype=np.int32)
                    dicts[name] = StringDictionary()
                else:
                    data[name] = np.zeros(n_rows, dtype=typ)
            elif typ == STRING or cur == STRING:
                raise TypeError(f"column {name!r}: cannot cast {cur} to {typ}")
            else:
                data[name] = _safe_cast(name, self._data[name], m, np.dtype(typ))
        return RecordBatch(data, masks, dicts, num_rows=n_rows)

    def rename(self, mapping: Mapping[str, str]) -> RecordBatch:
        names = [mapping.get(n, n) for n in self._names]
        if len(set(names)) != len(names):
            raise ValueError(f"rename gives duplicate column names: {names}")
        return RecordBatch(
            {mapping.get(n, n): self._data[n] for n in self._names},
            {mapping.get(n, n): self._masks[n] for n in self._names},
            {mapping.get(n, n): d for n, d in self._dicts.items()},
            num_rows=self._num_rows,
        )

    # ---------------------------------------------------------------- equality
    def equals(self, other: object, *, bitwise: bool = False) -> bool:
        """Same names, types, nulls and values (strings compared as strings).

        With ``bitwise=True`` float values must have identical bit patterns (so 0.0 and
        -0.0 differ and NaNs must match bit for bit); otherwise NaN equals NaN.
        """
        if not isinstance(other, RecordBatch):
            return False
        if self._names != other._names or self._num_rows != other._num_rows:
            return False
        for n in self._names:
            if self.type_of(n) != other.type_of(n):
                return False
            m1, m2 = self._masks[n], other._masks[n]
            if (m1 is None) != (m2 is None):
                return False
            a, b = self._data[n], other._data[n]
            if m1 is not None:
                if not np.array_equal(m1, m2):
                    return False
                a, b = a[m1], b[m1]
            # equal types: both columns are strings (with dictionaries) or neither is
            if not _values_equal(a, b, self._dicts.get(n), other._dicts.get(n), bitwise):
                return False
        return True

    def __eq__(self, other: object) -> bool:
        return self.equals(other)

    __hash__ = None  # type: ignore[assignment]

    # ---------------------------------------------------------------- exports
    def _pylist(self, name: str) -> list[Any]:
        data, m = self._data[name], self._masks[name]
        d = self._dicts.get(name)
        if d is not None:
            vals = d.decode(data, m).tolist()
        elif data.dtype.kind == "M":
            vals = _datetime_pylist(data)
        else:
            vals = data.tolist()
        if m is not None:
            for i in np.flatnonzero(~m).tolist():
                vals[i] = None
        return vals

    def to_pydict(self) -> dict[str, list[Any]]:
        """``{name: list of Python values}`` with None for null and str for strings."""
        return {n: self._pylist(n) for n in self._names}

    def to_records(self) -> list[dict[str, Any]]:
        """List of row dicts."""
        if not self._names:
            return [{} for _ in range(self._num_rows)]
        cols = self.to_pydict()
        return [dict(zip(self._names, row)) for row in zip(*(cols[n] for n in self._names))]

    def to_numpy(self) -> dict[str, np.ndarray]:
        """``{name: numpy array}``; string columns decoded to object arrays, nulls
        kept as masked arrays."""
        out = {}
        for n in self._names:
            vals = self[n]
            m = self._masks[n]
            out[n] = vals if m is None else np.ma.MaskedArray(vals, mask=~m)
        return out

    def to_arrow(self, *, dictionary_strings: bool = False) -> Any:
        """pyarrow Table (numeric columns without nulls are zero-copy). Strings come out
        as ``string`` (or ``dictionary<int32, string>`` with ``dictionary_strings``)."""
        pa = _optional_import("pyarrow", "arrow")
        arrays = []
        for n in self._names:
            data, m = self._data[n], self._masks[n]
            mask = None if m is None else ~m
            d = self._dicts.get(n)
            if d is not None:
                codes = data if m is None else np.where(m, data, 0)
                dict_arr = pa.array(d.as_array() if len(d) else [], type=pa.string())
                arr = pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask), dict_arr)
                if not dictionary_strings:
                    arr = arr.cast(pa.string())
            elif _is_untyped(data, m):
                arr = pa.nulls(len(data))  # no type: Arrow's null type, as it may have come
            else:
                arr = pa.array(data, mask=mask)
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, names=self._names)

    def to_pandas(self) -> Any:
        """pandas DataFrame; columns with nulls use pandas' nullable dtypes."""
        pd = _optional_import("pandas", "pandas")
        cols = {}
        for n in self._names:
            data, m = self._data[n], self._masks[n]
            d = self._dicts.get(n)
            if d is not None:
                cols[n] = pd.array(d.decode(data, m), dtype="str")
            elif m is None:
                cols[n] = data
            elif data.dtype.kind == "M":
                vals = data.copy()
                vals[~m] = np.datetime64("NaT")
                cols[n] = vals
            else:
                # masked arrays built from values and mask, so NaN stays a value
                cls = _PANDAS_MASKED[data.dtype.kind](pd)
                cols[n] = cls(data, ~m)
        return pd.DataFrame(cols, columns=self._names)

    def to_polars(self) -> Any:
        """polars DataFrame (through Arrow)."""
        pl = _optional_import("polars", "polars")
        return pl.from_arrow(self.to_arrow())


def _values_equal(
    a: np.ndarray,
    b: np.ndarray,
    d1: StringDictionary | None,
    d2: StringDictionary | None,
    bitwise: bool,
) -> bool:
    """RecordBatch.equals for one column's valid values (strings as strings, floats' NaN)."""
    if d1 is not None:
        if d1 is not d2:
            a, b = d1.as_array()[a], d2.as_array()[b]
        return np.array_equal(a, b)
    if a.dtype.kind == "f":
        if bitwise:
            width = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
            return np.array_equal(a.view(width), b.view(width))
        return np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


def _typed_alike(batches: list[RecordBatch]) -> tuple[list[RecordBatch], set[str]]:
    """RecordBatch.concat's batches, each untyped column given the type (and string
    dictionary) the column has in another batch; and the columns no batch has a type for."""
    like: dict[str, RecordBatch] = {}  # column -> a batch where it has a type
    names: set[str] = set()
    for b in batches:
        names.update(b._names)
        for n in b._names:
            if n not in like and not _is_untyped(b._data[n], b._masks[n]):
                like[n] = b
    out = []
    for b in batches:
        fix = [n for n in b._names if n in like and _is_untyped(b._data[n], b._masks[n])]
        if fix:
            data, dicts = dict(b._data), dict(b._dicts)
            for n in fix:
                d = like[n]._dicts.get(n)
                if d is not None:
                    data[n], dicts[n] = np.full(len(b), -1, dtype=np.int32), d
                else:
                    data[n] = np.zeros(len(b), dtype=like[n]._data[n].dtype)
            b = RecordBatch._trusted(b._names, data, dict(b._masks), dicts, len(b))
        out.append(b)
    return out, names - set(like)


def _check_concat(batches: list[RecordBatch]) -> None:
    """RecordBatch.concat's check: every batch has batch 0's column names and types."""
    first = batches[0]
    for i, b in enumerate(batches[1:], 1):
        if b.column_names != first.column_names:
            raise ValueError(
                f"concat: batch {i} has columns {b.column_names}, batch 0 has {first.column_names}"
            )
        for n in first.column_names:
            if b.type_of(n) != first.type_of(n):
                raise TypeError(
                    f"concat: column {n!r} is {b.type_of(n)} in batch {i} "
                    f"but {first.type_of(n)} in batch 0"
                )


def _concat_strings(
    batches: list[RecordBatch], n: str, d0: StringDictionary
) -> tuple[StringDictionary, np.ndarray]:
    """Dictionary and codes of string column ``n`` concatenated (re-encoded unless shared)."""
    if all(b._dicts[n] is d0 for b in batches):
        d = d0
        parts = [b._data[n] for b in batches]
    else:
        d = d0.copy()
        parts = []
        for b in batches:
            mapping = d.mapping_from(b._dicts[n])
            codes = b._data[n]
            m = b._masks[n]
            out = np.full(len(codes), -1, dtype=np.int32)
            ok = codes >= 0 if m is None else m
            out[ok] = mapping[codes[ok]]
            parts.append(out)
    return d, (np.concatenate(parts) if parts else np.empty(0, np.int32))


def _safe_cast(name: str, src: np.ndarray, valid: np.ndarray | None, to: np.dtype) -> np.ndarray:
    """``src.astype(to)``; to an integer type, every valid value must survive exactly."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = src.astype(to)
    if to.kind not in "iu":
        return out
    vals = src.view(np.int64) if src.dtype.kind == "M" else src
    info = np.iinfo(to)
    with np.errstate(invalid="ignore"):
        ok = (vals >= info.min) & (vals <= info.max)  # exact for Python-int bounds
        if vals.dtype.kind == "f":
            ok &= out.astype(vals.dtype) == vals  # NaN, fractions, float rounding
    if valid is not None:
        ok |= ~valid
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"column {name!r}: value {src[i].item()!r} at row {i} cannot be cast "
            f"to {to.name} without loss"
        )
    return out


_PANDAS_MASKED = {
    "i": lambda pd: pd.arrays.IntegerArray,
    "u": lambda pd: pd.arrays.IntegerArray,
    "f": lambda pd: pd.arrays.FloatingArray,
    "b": lambda pd: pd.arrays.BooleanArray,
}


def _datetime_pylist(data: np.ndarray) -> list[Any]:
    """Python values of a datetime64 column, as pyarrow's ``to_pylist`` gives them:
    ``datetime.date`` for days, ``datetime.datetime`` for s/ms/us, and pandas
    ``Timestamp`` for ns (when pandas is installed; a datetime cannot hold ns)."""
    unit = np.datetime_data(data.dtype)[0]
    if unit == "D":
        return data.astype(object).tolist()
    if unit == "ns":
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is installed in the test env
            pd = None
        if pd is not None:
            return [None if v is pd.NaT else v for v in pd.Series(data).tolist()]
    return data.astype("datetime64[us]").astype(object).tolist()


def _arrow_column(
    pa, name: str, arr, dictionary: StringDictionary | None, *, encoded_here: bool = False
):
    """One Arrow array -> ``(data, valid-or-None, pending-strings-or-None)``."""
    t = arr.type
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_dictionary(t):
        vt = t.value_type
        # a dictionary of non-strings is just a compressed column of its values; null
        # dictionary entries: decode and re-encode so validity is in the indices
        if not (pa.types.is_string(vt) or pa.types.is_large_string(vt)) or (
            arr.dictionary.null_count
        ):
            return _arrow_column(pa, name, arr.dictionary_decode(), dictionary)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.intp)
        inverse = idx if valid is None else idx[valid]
        uniques = arr.dictionary.to_pylist()
        return (
            None,
            valid,
            _PendingStrings(uniques, inverse, valid, len(arr), dictionary, first_seen=encoded_here),
        )
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        if pa.types.is_string_view(t):
            arr = arr.cast(pa.large_string())
        return _arrow_column(pa, name, arr.dictionary_encode(), dictionary, encoded_here=True)
    if pa.types.is_null(t):
        # a column of nulls only, with no type: untyped, like an all-None list
        return _untyped_column(len(arr)), np.zeros(len(arr), dtype=bool), None
    if pa.types.is_boolean(t):
        data = arr.fill_null(False).to_numpy(zero_copy_only=False)
        return data, valid, None
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if pa.types.is_float16(t):
            raise TypeError(f"column {name!r}: unsupported type {t}")
        if valid is None:
            data = arr.to_numpy(zero_copy_only=True)
        else:
            data = arr.fill_null(0).to_numpy(zero_copy_only=False)
        return data, valid, None
    return _arrow_temporal_column(pa, name, arr, valid)


def _arrow_temporal_column(pa, name: str, arr, valid: np.ndarray | None):
    """The rest of :func:`_arrow_column`: timestamps and dates as datetime64, others refused."""
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            # the instants stay the same: epoch values are UTC with or without a zone
            arr = arr.cast(pa.timestamp(t.unit))
        return arr.to_numpy(zero_copy_only=False), valid, None
    if pa.types.is_date32(t):
        return arr.to_numpy(zero_copy_only=False).astype("datetime64[D]"), valid, None
    if pa.types.is_date64(t):
        return arr.to_numpy(zero_copy_only=False).astype("datetime64[ms]"), valid, None
    raise TypeError(f"column {name!r}: unsupported Arrow type {t}")


def _pandas_column(pd, name: str, s, dictionary: StringDictionary | None):
    """One pandas Series -> ``(data, valid-or-None, pending-strings-or-None)``."""
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories.tolist()
        if all(isinstance(c, str) for c in cats):
            raw = s.cat.codes.to_numpy()
            valid = raw >= 0
            if valid.all():
                valid, inverse = None, raw.astype(np.intp)
            else:
                inverse = raw[valid].astype(np.intp)
            return (
                None,
                valid,
                _PendingStrings(cats, inverse, valid, len(s), dictionary, first_seen=False),
            )
        # categories of other values: the column of those values
        vals = np.array(s.astype(object).to_numpy(), dtype=object)
        vals[s.isna().to_numpy()] = None
        return _as_column(name, vals, None, dictionary)
    if isinstance(dtype, getattr(pd, "ArrowDtype", ())):
        pa = _optional_import("pyarrow", "pandas")
        arr = pa.array(s.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        return _arrow_column(pa, name, arr, dictionary)
    if isinstance(dtype, np.dtype) and dtype.kind in "iubf":
        # NaN in a float column is a value, not a null
        return _as_column(name, s.to_numpy(), None, dictionary)
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return _as_column(name, s.to_numpy(), None, dictionary)
    if isinstance(dtype, pd.DatetimeTZDtype):
        data = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        return _as_column(name, data, None, dictionary)
    kind = getattr(dtype, "kind", "O")
    if kind in "iufb" and not isinstance(dtype, np.dtype):
        # pandas nullable extension type (Int64, Float64, boolean): NaN stays a value
        na = s.isna().to_numpy()
        np_dtype = np.dtype(dtype.numpy_dtype)
        fill = False if np_dtype.kind == "b" else 0
        data = s.to_numpy(dtype=np_dtype, na_value=fill)
        return _as_column(name, data, ~na if na.any() else None, dictionary)
    # object / str dtype: strings (or Python values to infer), pandas' NA -> null
    if isinstance(dtype, pd.StringDtype) and not s.notna().any():
        return _null_strings(len(s), dictionary)  # typed str, though no value says so
    vals = s.to_numpy(dtype=object, na_value=None)
    return _as_column(name, vals, None, dictionary)


def _null_strings(n: int, dictionary: StringDictionary | None):
    """A string column of ``n`` nulls: ``(None, valid, pending strings)``."""
    valid = np.zeros(n, dtype=bool)
    return None, valid, _PendingStrings([], np.empty(0, np.intp), valid, n, dictionary)


def _unique_objects(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct strings of an object array in order of first appearance and the index
    into them of every value (C speed via Arrow when pyarrow is installed)."""
    if len(values) == 0:
        return [], np.empty(0, dtype=np.intp)
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is installed in the test env
        pa = None
    if pa is not None:
        try:
            enc = pa.array(values, type=pa.string()).dictionary_encode()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(f"expected str values: {exc}") from exc
        if enc.null_count:
            raise TypeError("expected str values, found None")
        return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False)
    index: dict[str, int] = {}  # pragma: no cover
    inverse = np.empty(len(values), dtype=np.intp)  # pragma: no cover
    for i, v in enumerate(values.tolist()):  # pragma: no cover
        if not isinstance(v, str):
            raise TypeError(f"expected str values, found {type(v).__name__} {v!r}")
        inverse[i] = index.setdefault(v, len(index))
    return list(index), inverse  # pragma: no cover
