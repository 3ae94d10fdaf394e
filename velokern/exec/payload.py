"""The checkpoint payload: an engine's whole state as plain data, and back.

:func:`snapshot` gathers what each stage holds (numpy arrays, numbers, strings, lists
and dicts: what :mod:`velokern.checkpoint` stores); :func:`load` gives it back to the
stages of a new engine, which then continues exactly as the old one would.

A payload read from a file is not trusted: :func:`load` first checks every field's type
and range (:func:`validate`; the state arrays against the kernels' layout in
:func:`velokern.exec.state.check_arrays`) and refuses with a ValueError naming the
field, since the numba kernels do not check bounds (a count past its arrays would read
or write outside them) and probe loops over a crafted table would not end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from velokern import config
from velokern.batch import STRING, Schema, StringDictionary
from velokern.exec.context import JobContext
from velokern.exec.input import InputStage
from velokern.exec.reshard import partition_key_columns
from velokern.exec.state import KeyedState
from velokern.plan import Col

__all__ = ["FIELDS", "load", "snapshot", "validate"]

_INT64 = (-(1 << 63), (1 << 63) - 1)
#: the fields of an engine's payload
FIELDS = frozenset({"sql", "schema", "allowed_lateness_ms", "nullable", "num_partitions",
                    "watermark", "seq", "metrics", "dicts", "state", "sessions"})
_KEYS = FIELDS
_SESSION_KEYS = {"pre", "bound", "key_ids", "nsess", "arrays", "held"}
_SESSION_ARRAYS = {"_start": "int64", "_end": "int64", "_first": "int64", "_alive": "uint8",
                   "_parent": "int64", "_skey": "int64", "_nxt": "int64", "_head": "int64",
                   "_held_sid": "int64"}
_HELD_KEYS = {"names", "data", "masks", "dicts", "rows"}


def snapshot(ctx: JobContext, inputs: InputStage, state: KeyedState,
             sessions) -> dict[str, Any]:
    """The payload of one engine (the caller holds the job's lock)."""
    return {
        "sql": ctx.sql,
        "schema": None if inputs.bound is None else [list(f) for f in inputs.bound.schema],
        "allowed_lateness_ms": ctx.allowed_lateness_ms,
        "nullable": sorted(inputs.nullable),
        "num_partitions": ctx.num_partitions,
        "watermark": int(ctx.watermark),
        "seq": int(ctx.seq),
        "metrics": {k: v.copy() if isinstance(v, np.ndarray) else v
                    for k, v in ctx.metrics.items()},
        "dicts": {c: d.values for c, d in inputs.dicts.items()},
        # (in the job's partitions, also while V2 runs it in one: see exec/reshard.py)
        "state": None if state.arrays is None else state.arrays_in(
            ctx.num_partitions, partition_key_columns(inputs.bound)),
        "sessions": None if sessions is None else sessions.snapshot(),
    }


def load(snap: Mapping[str, Any], ctx: JobContext, inputs: InputStage, state: KeyedState,
         sessions, bind_partitions) -> None:
    """Adopt a snapshot's state (the stages are new: they have seen no batch), once
    :func:`validate` finds nothing wrong with it."""
    validate(snap, sessions)
    if snap["schema"] is not None and inputs.bound is None:
        inputs.bind_schema(Schema([tuple(f) for f in snap["schema"]]))
    inputs.dicts = {c: StringDictionary(v) for c, v in snap["dicts"].items()}
    inputs.nullable = set(snap["nullable"])
    if snap["num_partitions"] is not None:
        bind_partitions(snap["num_partitions"])
    ctx.watermark = int(snap["watermark"])
    ctx.seq = int(snap["seq"])
    ctx.metrics.update({k: v.copy() if isinstance(v, np.ndarray) else v
                        for k, v in snap["metrics"].items()})
    if snap["state"] is not None:
        try:
            spec = inputs.variant()[0]
            state.adopt(spec, [np.array(a) for a in snap["state"]],
                        _code_limits(inputs, spec))
        except ValueError as ex:
            raise ValueError(f"{ex} (query {ctx.sql!r})") from None
    if snap["sessions"] is not None:
        sessions.restore(snap["sessions"])


# ---------------------------------------------------------------- validation
def _bad(field: str, what: str) -> ValueError:
    return ValueError(f"checkpoint payload is refused: {field} {what}")


def _is_int(v: Any, lo: int = _INT64[0], hi: int = _INT64[1]) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _strings(v: Any, field: str, unique: bool = True) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(field, "is not a list of strings")
    if unique and len(set(v)) != len(v):
        raise _bad(field, "repeats a value")
    return v


def _array(v: Any, field: str, dtype: str, ndim: int = 1) -> np.ndarray:
    if not isinstance(v, np.ndarray) or v.dtype != np.dtype(dtype) or v.ndim != ndim:
        raise _bad(field, f"is not a {ndim}-D {dtype} array")
    return v


def validate(snap: Any, sessions=None, field: str = "engine") -> None:
    """Refuse (ValueError naming the field) a payload this engine could not adopt safely:
    a missing or extra field, a wrong type, a count or index outside its arrays. The
    state arrays are checked against the kernels' layout when they are adopted."""
    if not isinstance(snap, Mapping) or set(snap) != _KEYS:
        got = set(snap) if isinstance(snap, Mapping) else type(snap).__name__
        raise _bad(field, f"does not have the fields {sorted(_KEYS)} (it has {got})")
    _check_scalars(snap, field)
    P = snap["num_partitions"]
    types = _check_schema(snap["schema"], f"{field}.schema")
    for c in _strings(snap["nullable"], f"{field}.nullable"):
        if types is None or c not in types:
            raise _bad(f"{field}.nullable", f"names {c!r}, not a column of the schema")
    _check_dicts(snap["dicts"], types, f"{field}.dicts")
    _check_metrics(snap["metrics"], P, f"{field}.metrics")
    st = snap["state"]
    if st is not None:
        if not isinstance(st, list) or not all(isinstance(a, np.ndarray) for a in st):
            raise _bad(f"{field}.state", "is not a list of arrays")
        if types is None or P is None or any(a.ndim < 1 or a.shape[0] != P for a in st):
            raise _bad(f"{field}.state", f"does not hold {P} partitions of a bound schema")
    if (snap["sessions"] is None) != (sessions is None):
        raise _bad(f"{field}.sessions", "does not match the query (session windows or not)")
    if snap["sessions"] is not None:
        _check_sessions(snap["sessions"], sessions, f"{field}.sessions")


def _check_scalars(snap: Mapping[str, Any], field: str) -> None:
    if not isinstance(snap["sql"], str):
        raise _bad(f"{field}.sql", "is not a string")
    if not (snap["allowed_lateness_ms"] is None or _is_int(snap["allowed_lateness_ms"], 0)):
        raise _bad(f"{field}.allowed_lateness_ms", "is not a non-negative integer")
    if not _is_int(snap["watermark"]):
        raise _bad(f"{field}.watermark", f"is not an int64 ({snap['watermark']!r})")
    if not _is_int(snap["seq"], 0):
        raise _bad(f"{field}.seq", f"is not a non-negative int64 ({snap['seq']!r})")
    P = snap["num_partitions"]
    if not (P is None or _is_int(P, 1, config.MAX_PARTITIONS)):
        raise _bad(f"{field}.num_partitions", f"is not 1..{config.MAX_PARTITIONS} ({P!r})")


def _check_schema(v: Any, field: str) -> dict[str, str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(
            isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)
            for f in v):
        raise _bad(field, "is not a list of [name, type] pairs")
    try:
        schema = Schema([tuple(f) for f in v])
    except (ValueError, TypeError, KeyError) as ex:
        raise _bad(field, f"is not a schema ({ex})") from None
    return dict(zip(schema.names, schema.types))


def _check_dicts(v: Any, types: dict[str, str] | None, field: str) -> None:
    if not isinstance(v, dict):
        raise _bad(field, "is not a mapping")
    for c, values in v.items():
        if types is None or types.get(c) != STRING:
            raise _bad(field, f"has a dictionary for {c!r}, not a string column")
        _strings(values, f"{field}[{c!r}]")


def _check_metrics(v: Any, P: int | None, field: str) -> None:
    if not isinstance(v, dict):
        raise _bad(field, "is not a mapping")
    for k, x in v.items():
        if k == "partition_records":
            if not ((isinstance(x, list) and not x) or (
                    isinstance(x, np.ndarray) and x.dtype == np.int64 and x.shape == (P,))):
                raise _bad(f"{field}.{k}", f"is not {P} int64 counts")
        elif not _is_int(x, 0):
            raise _bad(f"{field}.{k}", f"is not a non-negative integer ({x!r})")


def _code_limits(inputs: InputStage, spec) -> dict[tuple[str, int], int]:
    """Which state holds dictionary codes, and of how many values: string GROUP BY keys,
    the I-pack rows of string aggregates (MIN/MAX of a string column...) and the
    distinct sets of string columns."""
    bound, dicts = inputs.bound, inputs.dicts
    out: dict[tuple[str, int], int] = {}
    for j, (k, t) in enumerate(zip(bound.keys, bound.key_types)):
        if t == STRING and isinstance(k, Col) and k.name in dicts:
            out["key", j] = len(dicts[k.name])
    for i, a in enumerate(bound.aggs):
        if not (isinstance(a.arg, Col) and a.arg.name in dicts):
            continue
        n = len(dicts[a.arg.name])
        if f"a{i}" in spec.distinct:  # COUNT(DISTINCT s): its set holds codes
            out["D", spec.distinct.index(f"a{i}")] = n
        if bound.agg_types[i] == STRING:
            for s in spec.state:
                if s.name.startswith(f"a{i}_") and s.pack == "I" and s.dtype == "int32":
                    out["I", s.row] = n
    return out


# ---------------------------------------------------------------- session windows
def _check_sessions(v: Any, sessions, field: str) -> None:
    if not isinstance(v, dict) or not _SESSION_KEYS <= set(v) <= _SESSION_KEYS | {"free"}:
        raise _bad(field, f"does not have the fields {sorted(_SESSION_KEYS)} (and free)")
    validate(v["pre"], None, f"{field}.pre")
    b = v["bound"]
    if b is not None and not (
            isinstance(b, list) and len(b) == 3 and isinstance(b[0], (int, float))
            and not isinstance(b[0], bool) and np.isfinite(b[0]) and b[0] > 0
            and _is_int(b[1], 0) and isinstance(b[2], str)):
        raise _bad(f"{field}.bound", "is not [ticks per ms, gap, time type]")
    if b is not None:
        _check_schema([["t", b[2]]], f"{field}.bound")
    ids = v["key_ids"]
    _check_key_ids(ids, v.get("free", []), len(sessions.keys), field)
    arrs = v["arrays"]
    if not isinstance(arrs, dict) or set(arrs) != set(_SESSION_ARRAYS):
        raise _bad(f"{field}.arrays", f"does not hold {sorted(_SESSION_ARRAYS)}")
    for name, dtype in _SESSION_ARRAYS.items():
        _array(arrs[name], f"{field}.arrays.{name}", dtype)
    cap = len(arrs["_start"])
    n = v["nsess"]
    if not _is_int(n, 0, cap):
        raise _bad(f"{field}.nsess", f"is not 0..{cap} ({n!r})")
    rows = _check_held(v["held"], f"{field}.held")
    want = [name for name, _ in sessions.pre.query.select]  # what the WHERE/key kernel gives
    if v["held"] is not None and v["held"]["names"] != want:
        raise _bad(f"{field}.held.names", f"are not the held columns {want}")
    _check_session_arrays(arrs, n, max(len(ids), 1), rows, f"{field}.arrays")


def _check_key_ids(ids: Any, free: Any, nkeys: int, field: str) -> None:
    """Keys by id: distinct grouping bits (16 bytes a key column), None for a free id;
    the free list names each free id once."""
    if not isinstance(ids, list) or not all(
            x is None or (isinstance(x, bytes) and len(x) == 16 * nkeys) for x in ids):
        raise _bad(f"{field}.key_ids", f"is not a list of {16 * nkeys}-byte keys")
    known = [x for x in ids if x is not None]
    if len(set(known)) != len(known) or (nkeys == 0 and ids):
        raise _bad(f"{field}.key_ids", "repeats a key")
    if not isinstance(free, list) or not all(
            _is_int(i, 0, len(ids) - 1) and ids[i] is None for i in free) or \
            len(set(free)) != len(free):
        raise _bad(f"{field}.free", "is not a list of distinct free key ids")


def _check_session_arrays(a: dict, n: int, nkeys: int, held_rows: int, field: str) -> None:
    """Lengths agree; ids in range; the parent chains and key lists end."""
    cap = len(a["_start"])
    for name in ("_end", "_first", "_alive", "_parent", "_skey", "_nxt"):
        if len(a[name]) != cap:
            raise _bad(f"{field}.{name}", f"has {len(a[name])} entries, _start {cap}")
    if len(a["_head"]) < nkeys or len(a["_held_sid"]) != held_rows:
        raise _bad(field, "_head has fewer entries than keys, or _held_sid than held rows")
    ids = np.arange(n)
    parent, nxt, head = a["_parent"][:n], a["_nxt"][:n], a["_head"]
    checks = {
        "_alive": (a["_alive"][:n] > 1).any(),
        "_parent": ((parent < 0) | (parent >= n)).any(),
        "_skey": ((a["_skey"][:n] < 0) | (a["_skey"][:n] >= nkeys)).any(),
        "_nxt": ((nxt < -1) | (nxt >= ids)).any(),  # a list runs to older sessions
        "_head": ((head < -1) | (head >= n)).any(),
        "_held_sid": ((a["_held_sid"] < 0) | (a["_held_sid"] >= n)).any(),
    }
    for name, bad in checks.items():
        if bad:
            raise _bad(f"{field}.{name}", f"holds an id outside its range ({n} sessions)")
    root = parent.copy()  # pointer doubling: every chain must reach a root in < n steps
    for _ in range(max(n, 1).bit_length() + 1):
        root = root[root]
    if n and (parent[root] != root).any():
        raise _bad(f"{field}._parent", "has a cycle (a merged session's chain must end)")


def _check_held(h: Any, field: str) -> int:
    """The held records (open sessions'): returns their number."""
    if h is None:
        return 0
    if not isinstance(h, dict) or set(h) != _HELD_KEYS:
        raise _bad(field, f"does not have the fields {sorted(_HELD_KEYS)}")
    names, rows = _strings(h["names"], f"{field}.names"), h["rows"]
    if not _is_int(rows, 0):
        raise _bad(f"{field}.rows", "is not a non-negative integer")
    for part in ("data", "masks"):
        if not isinstance(h[part], dict) or set(h[part]) != set(names):
            raise _bad(f"{field}.{part}", "does not have one entry per column")
    dicts = h["dicts"]
    if not isinstance(dicts, dict) or not set(dicts) <= set(names):
        raise _bad(f"{field}.dicts", "is not a mapping of columns")
    for c in names:
        _check_held_column(h, c, rows, f"{field}")
    return rows


def _check_held_column(h: dict, c: str, rows: int, field: str) -> None:
    d, m = h["data"][c], h["masks"][c]
    if not isinstance(d, np.ndarray) or d.ndim != 1 or len(d) != rows or \
            d.dtype.kind not in "biufMm":
        raise _bad(f"{field}.data[{c!r}]", f"is not a 1-D array of {rows} values")
    if m is not None:
        _array(m, f"{field}.masks[{c!r}]", "bool")
        if len(m) != rows:
            raise _bad(f"{field}.masks[{c!r}]", f"does not have {rows} entries")
    if c in h["dicts"]:
        size = len(_strings(h["dicts"][c], f"{field}.dicts[{c!r}]"))
        if d.dtype != np.int32 or (rows and (d.min() < -1 or d.max() >= size)):
            raise _bad(f"{field}.data[{c!r}]", f"holds codes outside [-1, {size})")
