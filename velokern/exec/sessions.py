"""Session windows: ``GROUP BY k WINDOW SESSION(ts, INTERVAL '30' SECOND)``.

A session of a key is a run of its records whose times lie closer than the gap: a
record at ``t`` spans ``[t, t + gap)`` and joins every open session of its key that the
span overlaps (sessions that grow together merge); the session is ``[first time, last
time + gap)`` and closes once the watermark reaches its end plus the allowed lateness.
Lateness, as for the other windows, is decided record by record
(:func:`velokern.kernels.windows.assign_sessions`), so batch boundaries never change it.

How it runs: a stateless kernel applies WHERE and computes the keys; the session kernel
assigns each record to a session; the records of open sessions are held (only the
columns the query needs) and, when a session closes, its records go in arrival order
through the query's own aggregates (a GROUP BY over the session), so every aggregate,
HAVING and expression of the other windows works here too. The work is serial: V1 and
V2 give identical output, but V2's partitions do not speed sessions up.

State is as large as the open sessions: closed sessions are freed (their ids renumbered)
and a key is forgotten once it has no open session (its id goes to a free list and is
reused), so an endless stream of ever-new keys runs in flat memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velokern.batch import RecordBatch, Schema, StringDictionary
from velokern.exec.context import JobContext, Prepared, Routing
from velokern.exec.input import check_event_times
from velokern.exec.windows import hold_late
from velokern.kernels.windows import (
    NO_WATERMARK,
    assign_sessions,
    session_lists,
    watermarks,
)
from velokern.plan import (
    WINDOW_COLUMNS,
    Col,
    PlanError,
    Query,
    _bind_window,
    columns_of,
    is_time,
)

_POS = "__vk_pos"  # input position of a record within its batch
_SID = "__vk_sid"  # session of a held record
_WS = "__vk_ws"  # session start (for the output order)
_KEY = "__vk_k{}"


def column_key_bits(batch: RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(int64 grouping bits, null flags) of a key column: -0.0 groups with 0.0 and
    every NaN with every NaN; a NULL key is its own group."""
    a = batch.column(name)
    valid = batch.validity(name)
    nulls = np.zeros(len(a), np.int64) if valid is None else (~valid).astype(np.int64)
    if a.dtype.kind == "f":
        v = np.where(a == 0, 0.0, a.astype(np.float64))
        v = np.where(np.isnan(v), np.nan, v)
        bits = v.view(np.int64)
    elif a.dtype.kind == "M":
        bits = a.view(np.int64)
    else:
        bits = a.astype(np.int64)
    return np.where(nulls != 0, 0, bits), nulls


class SessionWindows:
    """The session-window half of a :class:`StreamExecutionEngine` (it delegates).

    ``make_engine(query, schema)`` builds the engines sessions run on: one for WHERE and
    the keys, one per closing for the aggregates of the closed sessions.
    """

    def __init__(self, query: Query, schema: Schema | None, ctx: JobContext,
                 make_engine: Callable[[Query, Schema | None], Any]):
        q = query
        self.query = query
        self.ctx = ctx
        self._make_engine = make_engine
        self.window = q.window
        if q.emit == "changes":
            raise PlanError("EMIT CHANGES is not supported for session windows (a session "
                            "can still merge with another); use EMIT FINAL")
        self.time_col = q.window.time_column
        self.keys = list(q.group_by)
        used: list[str] = []
        for _, e in q.select:
            used += columns_of(e)
        for e in self.keys + ([q.having] if q.having is not None else []):
            used += columns_of(e)
        self.window_names = [c for c in dict.fromkeys(used) if c in WINDOW_COLUMNS]
        cols = [c for c in dict.fromkeys(used + [self.time_col]) if c not in WINDOW_COLUMNS]
        # WHERE and the keys: a stateless query over the input
        pre_select = [(c, Col(c)) for c in cols]
        pre_select += [(_KEY.format(j), k) for j, k in enumerate(self.keys)]
        pre_select.append((_POS, Col(_POS)))
        self.pre = make_engine(
            Query(q.source, pre_select, where=q.where, sql=q.sql, positions=q.positions),
            None if schema is None else Schema(list(schema) + [(_POS, "int64")]))
        # the aggregates of a closed session: GROUP BY the keys and the session
        self.agg_query = Query(
            q.source, list(q.select) + [(_WS, Col(_WS))], where=None,
            group_by=self.keys + [Col(_SID), Col(_WS)] + [Col(c) for c in self.window_names],
            having=q.having, emit="final", sql=q.sql, positions=q.positions)
        self.gap = 0
        self.ticks = 1.0
        self.time_type: str | None = None
        if schema is not None:  # the gap is checked now, not at the first batch
            self._bind_time(schema)
        # keys with an open session: grouping bits -> id; id -> bits (None: a free id)
        self._key_ids: dict[bytes, int] = {}
        self._key_of: list[bytes | None] = []
        self._free: list[int] = []  # ids of forgotten keys, reused last freed first
        self._nsess = 0
        cap = 1024
        self._start = np.zeros(cap, np.int64)
        self._end = np.zeros(cap, np.int64)
        self._first = np.zeros(cap, np.int64)
        self._alive = np.zeros(cap, np.uint8)
        self._parent = np.zeros(cap, np.int64)
        self._skey = np.zeros(cap, np.int64)
        self._nxt = np.full(cap, -1, np.int64)
        self._head = np.full(cap, -1, np.int64)
        self._held: RecordBatch | None = None  # records of open sessions
        self._held_sid = np.zeros(0, np.int64)
        self._empty: RecordBatch | None = None

    # ------------------------------------------------------------------ input
    def prepare(self, batch: RecordBatch) -> Prepared:
        """Validate through the WHERE/key kernel; the watermark of every record rides
        along (computed over all records, filtered or not)."""
        n = len(batch)
        if self.time_col in batch:  # (missing: the pre-stage names it)
            check_event_times(self.time_col, *batch._parts(self.time_col)[:2])
        data = {c: batch._parts(c)[0] for c in batch.column_names}
        masks = {c: batch._parts(c)[1] for c in batch.column_names}
        data[_POS] = np.arange(n, dtype=np.int64)
        masks[_POS] = None
        with_pos = RecordBatch._trusted(batch.column_names + [_POS], data, masks,
                                        dict(batch.dictionaries), n)
        prep = self.pre.prepare(with_pos)
        if self.time_type is None:
            self._bind_time(self.pre.schema)
        ts = batch.column(self.time_col)
        ts = ts.view(np.int64) if is_time(self.time_type) else ts.astype(np.int64)
        valid = batch.validity(self.time_col)
        wm = np.empty(n, np.int64)
        final = watermarks(ts, valid if valid is not None else np.ones(0, np.bool_),
                           valid is not None, self.ctx.watermark, wm)
        prep.session = (batch, wm, int(final))
        return prep

    def _bind_time(self, schema: Schema) -> None:
        """The gap in ticks of the time column's type (raises PlanError)."""
        self.ticks, self.gap, _ = _bind_window(self.query, self.window,
                                               dict(zip(schema.names, schema.types)))
        self.time_type = schema[self.time_col]

    # ------------------------------------------------------------------ snapshots
    _ARRAYS = ("_start", "_end", "_first", "_alive", "_parent", "_skey", "_nxt", "_head",
               "_held_sid")

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (see :meth:`StreamExecutionEngine.snapshot`). Key ids are
        written dense (``0..keys-1``, in id order), so a restored engine starts with no
        free ids."""
        held = self._held
        arrays = {a: getattr(self, a).copy() for a in self._ARRAYS}
        live = sorted(self._key_ids.values())
        if self.keys:
            n = self._nsess
            dense = np.zeros(len(self._key_of), np.int64)
            dense[live] = np.arange(len(live))
            skey, head = arrays["_skey"], arrays["_head"]
            skey[:n] = dense[skey[:n]]
            skey[n:] = 0
            head[:len(live)] = self._head[live]
            head[len(live):] = -1
        return {
            "pre": self.pre.snapshot(),
            "bound": None if self.time_type is None else [self.ticks, self.gap,
                                                          self.time_type],
            "key_ids": [self._key_of[i] for i in live],  # keys with open sessions
            "nsess": self._nsess,
            "arrays": arrays,
            "held": None if held is None else {
                "names": list(held.column_names),
                "data": {c: held._parts(c)[0].copy() for c in held.column_names},
                "masks": {c: held._parts(c)[1] for c in held.column_names},
                "dicts": {c: d.values for c, d in held.dictionaries.items()},
                "rows": len(held)},
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.pre.load(snap["pre"])
        if snap["bound"] is not None:
            self.ticks, self.gap, self.time_type = snap["bound"]
        self._key_of = list(snap["key_ids"])
        self._key_ids = {k: i for i, k in enumerate(self._key_of) if k is not None}
        self._free = []
        self._nsess = int(snap["nsess"])
        for a, v in snap["arrays"].items():
            setattr(self, a, np.array(v))
        # (a checkpoint written before keys were forgotten holds every key ever seen)
        self._forget_keys(np.array(list(self._key_ids.values()), np.int64))
        h = snap["held"]
        if h is not None:
            self._held = RecordBatch._trusted(
                h["names"], h["data"], h["masks"],
                {c: StringDictionary(v) for c, v in h["dicts"].items()}, h["rows"])

    # ------------------------------------------------------------------ state
    def _ensure(self, sessions: int, keys: int) -> None:
        cap = len(self._start)
        if sessions > cap:
            new = max(sessions, 2 * cap)
            for name in ("_start", "_end", "_first", "_parent", "_skey"):
                a = getattr(self, name)
                setattr(self, name, np.concatenate([a, np.zeros(new - cap, a.dtype)]))
            self._alive = np.concatenate([self._alive, np.zeros(new - cap, np.uint8)])
            self._nxt = np.concatenate([self._nxt, np.full(new - cap, -1, np.int64)])
        if keys > len(self._head):
            self._head = np.concatenate(
                [self._head, np.full(max(keys, 2 * len(self._head)) - len(self._head), -1,
                                     np.int64)])

    def _key_ids_of(self, rows: RecordBatch) -> np.ndarray:
        """Id of every row's key: a key seen before keeps its id while it has an open
        session; a new key takes a forgotten key's id, else the next one."""
        if not self.keys:
            return np.zeros(len(rows), np.int64)
        parts = []
        for j in range(len(self.keys)):
            bits, nulls = column_key_bits(rows, _KEY.format(j))
            parts += [bits, nulls]
        mat = np.ascontiguousarray(np.stack(parts, axis=1))
        uniq, inverse = np.unique(mat, axis=0, return_inverse=True)
        ids = np.empty(len(uniq), np.int64)
        known, key_of, free = self._key_ids, self._key_of, self._free
        for u in range(len(uniq)):
            bits = uniq[u].tobytes()
            i = known.get(bits)
            if i is None:
                if free:
                    i = free.pop()
                    key_of[i] = bits
                else:
                    i = len(key_of)
                    key_of.append(bits)
                known[bits] = i
            ids[u] = i
        return ids[inverse.reshape(-1)]

    def _forget_keys(self, ids: np.ndarray) -> None:
        """Forget the keys among ``ids`` that have no open session left (their ids are
        freed for new keys): called with the keys whose sessions closed and the keys of
        late records, it keeps exactly the keys with an open session."""
        if not self.keys or len(ids) == 0:
            return
        n = self._nsess
        ids = np.unique(ids)
        dead = ids[~np.isin(ids, self._skey[:n][self._alive[:n] != 0])].tolist()
        key_of = self._key_of
        dead = [i for i in dead if key_of[i] is not None]  # (not forgotten already)
        self._head[dead] = -1
        for i in dead:
            del self._key_ids[key_of[i]]
            key_of[i] = None
        self._free += dead

    def _roots(self, sids: np.ndarray) -> np.ndarray:
        r = sids.copy()
        while True:
            nxt = self._parent[r]
            if (nxt == r).all():
                return r
            r = nxt

    def groups(self) -> int:
        return int(self._alive[:self._nsess].sum())

    # ------------------------------------------------------------------ run
    def execute(self, prep: Prepared) -> RecordBatch:
        batch, wm, final = prep.session
        ctx = self.ctx
        self.pre.bind_partitions(1)
        rows = self.pre.execute(prep, Routing.single(prep.n))
        t = rows.column(self.time_col)
        t = t.view(np.int64) if is_time(self.time_type) else t.astype(np.int64)
        tvalid = rows.validity(self.time_col)
        m = ctx.metrics
        if tvalid is not None and not tvalid.all():
            m["records_without_time"] = m.get("records_without_time", 0) + int(
                (~tvalid).sum())
            keep = np.flatnonzero(tvalid)
            rows, t = rows.take(keep), t[keep]
        pos = rows.column(_POS)
        keys = self._key_ids_of(rows)
        n = len(rows)
        self._ensure(self._nsess + n, len(self._key_of))
        sid = np.empty(n, np.int64)
        seqs = ctx.seq + pos
        self._nsess, nlate = assign_sessions(
            keys, t, wm[pos], seqs, self.gap, int(ctx.allowed_lateness_ms * self.ticks),
            self._start, self._end, self._first, self._alive, self._parent, self._skey,
            self._head,
            self._nxt, self._nsess, sid)
        late = sid < 0
        if nlate:
            hold_late(ctx, batch, pos[late])  # (delivered by the engine once done)
            keep = np.flatnonzero(~late)
            rows, sid = rows.take(keep), sid[keep]
        self._held = rows if self._held is None else RecordBatch.concat([self._held, rows])
        self._held_sid = np.concatenate([self._held_sid, sid])
        closing = np.zeros(self._nsess, bool)
        if final != NO_WATERMARK:
            ctx.watermark = final
            limit = final - int(ctx.allowed_lateness_ms * self.ticks)
            closing = self._end[:self._nsess] <= limit
        out = self._close(closing)
        self._forget_keys(keys[late])  # a key whose records were all late
        return out

    def flush(self) -> RecordBatch:
        return self._close(np.ones(self._nsess, bool))

    def _close(self, ends_passed: np.ndarray) -> RecordBatch:
        """Emit the open sessions flagged in ``ends_passed`` and free them (and their
        keys, once no open session of the key is left)."""
        closing = ends_passed & (self._alive[:self._nsess] != 0)
        held = self._held
        if held is None or not closing.any():
            return self._emit(None if held is None else held.take(np.zeros(0, np.int64)),
                              np.zeros(0, np.int64))
        closed_keys = self._skey[:self._nsess][closing]
        roots = self._roots(self._held_sid)
        out_rows = closing[roots]
        take = np.flatnonzero(out_rows)
        out = self._emit(held.take(take), roots[take])
        # free: keep the other records and renumber the sessions still open
        stay = np.flatnonzero(~out_rows)
        self._held = held.take(stay)
        self._alive[:self._nsess][closing] = 0
        live = np.flatnonzero(self._alive[:self._nsess])
        newid = np.full(self._nsess, -1, np.int64)
        newid[live] = np.arange(len(live))
        self._held_sid = newid[roots[stay]]
        k = len(live)
        for name in ("_start", "_end", "_first", "_skey"):
            a = getattr(self, name)
            a[:k] = a[live]
        self._alive[:k] = 1
        self._alive[k:self._nsess] = 0
        self._parent[:k] = np.arange(k)
        session_lists(self._skey, k, self._head, self._nxt)
        self._nsess = k
        self._forget_keys(closed_keys)
        return out

    def _emit(self, rows: RecordBatch | None, roots: np.ndarray) -> RecordBatch:
        if rows is None:
            return RecordBatch({})
        if len(rows) == 0 and self._empty is not None:
            return self._empty
        n = len(rows)
        data = {c: rows._parts(c)[0] for c in rows.column_names}
        masks = {c: rows._parts(c)[1] for c in rows.column_names}
        names = list(rows.column_names)
        ws, we = self._start[roots], self._end[roots]
        tdt = np.dtype(self.time_type) if is_time(self.time_type) else None
        extra: dict[str, Any] = {_SID: roots.astype(np.int64), _WS: ws}
        for c in self.window_names:
            v = we if WINDOW_COLUMNS[c] else ws
            extra[c] = v.view(tdt) if tdt is not None else v.astype(np.int64)
        for c, v in extra.items():
            data[c] = v
            masks[c] = None
            names.append(c)
        fed = RecordBatch._trusted(names, data, masks, dict(rows.dictionaries), n)
        agg = self._make_engine(self.agg_query, None)
        agg.bind_partitions(1)
        agg.execute(agg.prepare(fed), Routing.single(n))
        out = agg.flush()
        # window start, then the session's first record (the GROUP BY's own order)
        order = np.argsort(out.column(_WS), kind="stable")
        out = out.take(order).select([c for c in out.column_names if c != _WS])
        if n == 0:
            self._empty = out
        return out


def is_session(q: Query) -> bool:
    return q.window is not None and q.window.kind == "session"


__all__ = ["SessionWindows", "column_key_bits", "is_session"]
