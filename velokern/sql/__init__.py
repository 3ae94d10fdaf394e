"""SQL text -> logical plan (sqlglot for standard SQL, plus velokern's streaming clauses).

:func:`parse_sql` keeps what it parsed: in the process (a new engine for a known query
skips ~10 ms of sqlglot) and in the kernel cache directory's ``queries/`` folder, so a
new process running a query it has run before does not import sqlglot at all (~0.1 s
of a warm start). Each caller gets its own copy of the query's lists; the expression
trees are immutable and shared. A cache entry is keyed by the SQL text, velokern's
version and the sources of the parser, the plan, the aggregate registry and the
types.

A cache entry is JSON (never pickle: a file planted in the cache directory must not run
code): the query's fields and its expression tree as tagged objects, each node one of
:mod:`velokern.plan`'s expression classes, each field checked against the class's
annotation (a ``str`` field holds a str, an ``Expr`` field a node...), shared nodes
written once and referred to by number. An entry that is not exactly that (damaged,
planted, from another build) is ignored and the query parsed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from velokern._version import __version__
from velokern.cachedir import cache_dir, write_atomically
from velokern.plan import Expr, Lit, PlanError, Query, WindowSpec

__all__ = ["parse_sql"]

_HERE = Path(__file__).parent
_FORMAT = 2


def parse_sql(sql: str) -> Query:
    """Parse one streaming SELECT statement into a :class:`Query`."""
    if not isinstance(sql, str) or not sql.strip():
        raise PlanError("empty SQL: expected a SELECT statement")
    q = _kept(sql)
    return replace(q, select=list(q.select), group_by=list(q.group_by),
                   positions=dict(q.positions))


@functools.lru_cache(maxsize=256)
def _kept(sql: str) -> Query:
    try:
        path = cache_dir("queries") / f"{_key(sql)}.json"
    except OSError:  # no writable cache directory: parse every time
        path = None
    q = None if path is None else _load(path, sql)
    if q is None:
        from velokern.sql.parser import parse  # imports sqlglot

        q = parse(sql)
        if path is not None:
            _store(path, q)
    return q


@functools.lru_cache(maxsize=1)
def _sources_digest() -> bytes:
    h = hashlib.sha256()
    # the parser reads its aggregate names from the registry, the plan its types
    for f in (_HERE / "parser.py", _HERE.parent / "plan.py", _HERE.parent / "aggregates.py",
              _HERE.parent / "types.py"):
        h.update(f.read_bytes())
    return h.digest()


def _key(sql: str) -> str:
    h = hashlib.sha256(__version__.encode() + b"\0" + _sources_digest())
    h.update(sql.encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------- the JSON form
class _Bad(ValueError):
    """A cache entry that is not a query this build wrote."""


@functools.lru_cache(maxsize=1)
def _node_classes() -> dict[str, type]:
    """The expression classes an entry may name: velokern.plan's Expr dataclasses."""
    out, todo = {}, [Expr]
    while todo:
        c = todo.pop()
        todo += c.__subclasses__()
        if c.__module__ == "velokern.plan" and c is not Expr and dataclasses.is_dataclass(c):
            out[c.__name__] = c
    return out


_SCALARS = (str, int, float, bool, type(None))


class _Writer:
    def __init__(self) -> None:
        self.ids: dict[int, int] = {}  # id(node) -> its number (pre-order)

    def node(self, e: Expr) -> dict:
        n = self.ids.get(id(e))
        if n is not None:
            return {"ref": n}
        if type(e).__name__ not in _node_classes():
            raise _Bad(f"{type(e).__name__} is not a plan node")
        self.ids[id(e)] = len(self.ids)
        out: dict[str, Any] = {"node": type(e).__name__}
        for f in dataclasses.fields(e):
            out[f.name] = self.value(getattr(e, f.name))
        return out

    def value(self, v: Any) -> Any:
        if isinstance(v, Expr):
            return self.node(v)
        if isinstance(v, tuple):
            return [self.value(x) for x in v]
        if isinstance(v, _SCALARS):
            return v
        raise _Bad(f"a {type(v).__name__} in a plan node")

    def opt(self, e: Expr | None) -> dict | None:
        return None if e is None else self.node(e)


def _encode(q: Query) -> bytes:
    w = _Writer()
    body = {
        "format": _FORMAT, "source": q.source,
        "select": [[name, w.node(e)] for name, e in q.select],
        "where": w.opt(q.where), "group_by": [w.node(e) for e in q.group_by],
        "having": w.opt(q.having), "emit": q.emit, "star": q.star, "sql": q.sql,
        "window": None if q.window is None else dataclasses.asdict(q.window),
        "allowed_lateness_ms": q.allowed_lateness_ms, "state_ttl_ms": q.state_ttl_ms,
    }
    body["positions"] = [[w.ids[i], int(p[0]), int(p[1])] for i, p in q.positions.items()
                         if i in w.ids]
    return json.dumps(body, allow_nan=True).encode()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _want(ok: bool, what: str) -> None:
    if not ok:
        raise _Bad(what)


class _Reader:
    def __init__(self) -> None:
        self.nodes: list[Expr | None] = []

    def node(self, v: Any, kind: type = Expr) -> Expr:
        _want(isinstance(v, dict), "a node is not an object")
        if "ref" in v:
            n = v["ref"]
            _want(len(v) == 1 and _is_int(n) and 0 <= n < len(self.nodes)
                  and self.nodes[n] is not None, "a bad node reference")
            e = self.nodes[n]
        else:
            cls = _node_classes().get(v.get("node"))
            _want(cls is not None, "an unknown node class")
            fields = dataclasses.fields(cls)
            _want(set(v) == {"node"} | {f.name for f in fields}, "a node's fields differ")
            n = len(self.nodes)
            self.nodes.append(None)  # numbered before its children, as written
            e = cls(**{f.name: self.field(f.type, v[f.name]) for f in fields})
            self.nodes[n] = e
        _want(isinstance(e, kind), f"a node is not a {kind.__name__}")
        return e

    def field(self, ann: str, v: Any) -> Any:
        if ann.endswith(" | None"):
            return None if v is None else self.field(ann[:-7], v)
        if ann == "Expr":
            return self.node(v)
        if ann == "Lit":
            return self.node(v, Lit)
        if ann.startswith("tuple[") and ann.endswith(", ...]"):
            _want(isinstance(v, list), "a tuple field is not a list")
            inner = ann[6:-6]
            if inner == "tuple[Expr, Expr]":
                _want(all(isinstance(x, list) and len(x) == 2 for x in v), "a bad pair")
                return tuple((self.node(a), self.node(b)) for a, b in v)
            return tuple(self.field(inner, x) for x in v)
        return _scalar(ann, v)


def _scalar(ann: str, v: Any) -> Any:
    ok = {"str": isinstance(v, str), "int": _is_int(v), "bool": isinstance(v, bool),
          "object": isinstance(v, _SCALARS)}.get(ann)  # object: a literal's value
    _want(ok is not None, f"a field of type {ann}")
    _want(ok, f"a {ann} field holds a {type(v).__name__}")
    return v


def _window(v: Any) -> WindowSpec | None:
    if v is None:
        return None
    _want(isinstance(v, dict) and set(v) == {"kind", "time_col", "size_ms", "slide_ms"},
          "a bad window")
    _want(isinstance(v["kind"], str) and isinstance(v["time_col"], (str, type(None)))
          and _is_int(v["size_ms"]) and _is_int(v["slide_ms"]), "a bad window")
    return WindowSpec(**v)


_TOP = {"format", "source", "select", "where", "group_by", "having", "emit", "star", "sql",
        "window", "allowed_lateness_ms", "state_ttl_ms", "positions"}


def _decode(data: bytes, sql: str) -> Query:
    body = json.loads(data)
    _want(isinstance(body, dict) and set(body) == _TOP and body["format"] == _FORMAT,
          "not a query entry")
    _want(body["sql"] == sql, "another query's entry")
    r = _Reader()
    _want(isinstance(body["select"], list) and all(
        isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
        for x in body["select"]), "a bad select list")
    select = [(name, r.node(e)) for name, e in body["select"]]
    where = None if body["where"] is None else r.node(body["where"])
    _want(isinstance(body["group_by"], list), "a bad GROUP BY")
    group_by = [r.node(e) for e in body["group_by"]]
    having = None if body["having"] is None else r.node(body["having"])
    _want(isinstance(body["source"], str) and isinstance(body["emit"], (str, type(None)))
          and isinstance(body["star"], bool), "a bad query field")
    late, ttl = body["allowed_lateness_ms"], body["state_ttl_ms"]
    _want(late is None or _is_int(late), "a bad allowed lateness")
    _want(ttl is None or _is_int(ttl), "a bad state TTL")
    spots = body["positions"]
    _want(isinstance(spots, list) and all(
        isinstance(s, list) and len(s) == 3 and all(_is_int(x) for x in s)
        and 0 <= s[0] < len(r.nodes) for s in spots), "bad positions")
    return Query(body["source"], select, where=where, group_by=group_by, having=having,
                 emit=body["emit"], star=body["star"], sql=sql,
                 positions={id(r.nodes[n]): (a, b) for n, a, b in spots},
                 window=_window(body["window"]), allowed_lateness_ms=late,
                 state_ttl_ms=ttl)


def _store(path: Path, q: Query) -> None:
    try:
        data = _encode(q)
    except _Bad:  # a node this format does not know: parse again next time
        return
    with contextlib.suppress(OSError):  # a read-only or full cache directory: parse again
        write_atomically(path, data)


def _load(path: Path, sql: str) -> Query | None:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 24)
        return _decode(data, sql)
    except (OSError, ValueError, TypeError, RecursionError):
        # not there yet, damaged, planted or from another build: parse again
        return None
