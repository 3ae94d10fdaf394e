"""SQL text -> logical plan (sqlglot for standard SQL, plus velokern's streaming clauses).

:func:`parse_sql` keeps what it parsed: in the process (a new engine for a known query
skips ~10 ms of sqlglot) and in the kernel cache directory's ``queries/`` folder, so a
new process running a query it has run before does not import sqlglot at all (~0.2 s
of a warm start). Each caller gets its own copy of the query's lists; the expression
trees are immutable and shared. A cache entry is keyed by the SQL text, velokern's
version and the parser's and plan's sources; an unreadable entry is parsed again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import pickle
from dataclasses import replace
from pathlib import Path

from velokern._version import __version__
from velokern.cachedir import cache_dir, write_atomically
from velokern.plan import PlanError, Query, walk

__all__ = ["parse_sql"]

_HERE = Path(__file__).parent


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
        path = cache_dir("queries") / f"{_key(sql)}.pickle"
    except OSError:  # no writable cache directory: parse every time
        path = None
    q = None if path is None else _load(path)
    if q is None:
        from velokern.sql.parser import parse  # imports sqlglot

        q = parse(sql)
        if path is not None:
            _store(path, q)
    return q


@functools.lru_cache(maxsize=1)
def _sources_digest() -> bytes:
    h = hashlib.sha256()
    for f in (_HERE / "parser.py", _HERE.parent / "plan.py"):
        h.update(f.read_bytes())
    return h.digest()


def _key(sql: str) -> str:
    h = hashlib.sha256(__version__.encode() + b"\0" + _sources_digest())
    h.update(sql.encode())
    return h.hexdigest()[:32]


def _exprs(q: Query) -> dict:
    """Every expression node of the query, by id (error positions are keyed by id)."""
    roots = [e for _, e in q.select] + list(q.group_by)
    roots += [e for e in (q.where, q.having) if e is not None]
    return {id(n): n for r in roots for n in walk(r)}


def _store(path: Path, q: Query) -> None:
    nodes = _exprs(q)
    spots = [(nodes[i], p) for i, p in q.positions.items() if i in nodes]
    data = pickle.dumps((replace(q, positions={}), spots), protocol=pickle.HIGHEST_PROTOCOL)
    with contextlib.suppress(OSError):  # a read-only or full cache directory: parse again
        write_atomically(path, data)


def _load(path: Path) -> Query | None:
    try:
        with open(path, "rb") as f:
            q, spots = pickle.load(f)
    except Exception:  # not there yet, damaged, or from another build: parse again
        return None
    if not isinstance(q, Query):
        return None
    return replace(q, positions={id(e): p for e, p in spots})
