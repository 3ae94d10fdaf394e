"""Shared test helpers: random streams, batch cutting, DuckDB reference answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import settings

import velokern as vk
from velokern.batch import RecordBatch, StringDictionary

# numba compiles on first call: no per-example deadline
settings.register_profile("velokern", deadline=None)
settings.load_profile("velokern")


def make_stream(
    n: int,
    *,
    seed: int = 0,
    keys: int = 20,
    null_rate: float = 0.1,
    skew: bool = False,
    nan_rate: float = 0.02,
) -> dict[str, np.ndarray | np.ma.MaskedArray]:
    """Random columns: k (int key), s/s2 (string keys), x/y (ints), f (float with NaN,
    -0.0), b (bool), and seq (row number), with nulls in x, f, s2, y."""
    rng = np.random.default_rng(seed)
    if skew:
        k = np.minimum(rng.zipf(1.5, n), keys) - 1
    else:
        k = rng.integers(0, keys, n)
    s = np.array([f"s{v}" for v in rng.integers(0, max(2, keys // 3), n)], dtype=object)
    s2 = np.array([f"v{v:02d}" for v in rng.integers(0, 12, n)], dtype=object)
    x = rng.integers(-10, 11, n)
    y = rng.integers(-3, 4, n)
    f = np.round(rng.normal(0.0, 10.0, n), 2)
    f[rng.random(n) < nan_rate] = np.nan
    f[rng.random(n) < 0.02] = -0.0
    b = rng.random(n) < 0.5

    def masked(a):
        m = rng.random(n) < null_rate
        return np.ma.MaskedArray(a, mask=m)

    s2m = s2.copy()
    s2m[rng.random(n) < null_rate] = None
    return {
        "seq": np.arange(n, dtype=np.int64),
        "k": k.astype(np.int64),
        "s": s,
        "s2": s2m,
        "x": masked(x),
        "y": masked(y),
        "f": masked(f),
        "b": b,
    }


STRING_COLUMNS = ("s", "s2")


def to_batch(cols: dict, dictionaries: dict[str, StringDictionary] | None = None,
             extra: dict | None = None) -> RecordBatch:
    """RecordBatch of a make_stream() dict; s and s2 are strings even when all null."""
    cols = dict(cols)
    if extra:
        cols.update(extra)
    dictionaries = dict(dictionaries or {})
    plain = {n: v for n, v in cols.items() if n not in STRING_COLUMNS}
    b = RecordBatch.from_pydict(plain)
    data = {n: b.column(n) for n in b.column_names}
    masks = {n: b.validity(n) for n in b.column_names}
    dicts = b.dictionaries
    for n in STRING_COLUMNS:
        if n in cols:
            vals = np.asarray(cols[n], dtype=object)
            valid = np.array([v is not None for v in vals], dtype=bool)
            d = dictionaries.get(n) or StringDictionary()
            data[n] = d.encode(vals, valid)
            masks[n] = valid
            dicts[n] = d
    order = list(cols)
    return RecordBatch({n: data[n] for n in order}, {n: masks[n] for n in order},
                       dicts, num_rows=len(next(iter(data.values()))))


def runs_at_gaps(runs):
    """(win, seq, bounds): sorted runs of (window start, first record) written after
    ``gap`` unused slots (-1) each, as partitions leave their group rows in the packs."""
    win, seq, bounds = [], [], []
    for run, gap in runs:
        win += [-1] * gap
        seq += [-1] * gap
        a = len(win)
        for w, s in sorted(run):
            win.append(w)
            seq.append(s)
        bounds.append((a, len(win)))
    return win, seq, bounds


def dealt_rows_of(pid, gaps, n):
    """Rows 0..n-1 dealt to partitions by ``pid`` (-1: filtered out), each partition's
    rows in arrival order after ``gaps[p]`` unused slots (-5): (orow, starts, counts,
    runs) as the kernels leave them."""
    orow, starts, counts, runs = [], [], [], []
    for p in range(len(gaps)):
        orow += [-5] * gaps[p]
        starts.append(len(orow))
        orow += [i for i in range(n) if pid[i] == p]
        counts.append(len(orow) - starts[-1])
        runs.append((starts[-1], len(orow)))
    return orow, starts, counts, runs


def timed_batches(n_batches: int, size: int, *, seed: int, keys: int, span: int = 40_000,
                  jitter: int = 900) -> list[RecordBatch]:
    """make_stream() rows in ``n_batches`` batches of ``size``, with an event-time column
    ``ts`` (ms): sorted times over ``span``, each moved by up to ``jitter`` (so some
    records come late)."""
    n = n_batches * size
    cols = make_stream(n, seed=seed, keys=keys)
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, span, n)) + rng.integers(-jitter, jitter, n)
    return [to_batch({c: v[i * size:(i + 1) * size] for c, v in cols.items()},
                     extra={"ts": ts[i * size:(i + 1) * size]}) for i in range(n_batches)]


def cut(batch: RecordBatch, sizes: list[int]) -> list[RecordBatch]:
    """Cut a batch into consecutive batches of the given sizes (the last takes the rest)."""
    out, pos = [], 0
    for s in sizes:
        if pos >= len(batch):
            break
        out.append(batch.slice(pos, s))
        pos += s
    if pos < len(batch):
        out.append(batch.slice(pos))
    return out


def run(sql: str, batches: list[RecordBatch], processor, **kw) -> list[RecordBatch]:
    """Every output batch (one per input batch, then the flush)."""
    proc = processor if not isinstance(processor, str) else vk.JobProcessorFactory.create(
        processor, **kw)
    return run_job(sql, batches, proc)[0]


def run_job(sql: str, batches: list[RecordBatch], processor, **engine_kw):
    """(every output batch, the engine): ``engine_kw`` go to StreamExecutionEngine."""
    engine = vk.StreamExecutionEngine(sql, **engine_kw)
    proc = processor if not isinstance(processor, str) else vk.JobProcessorFactory.create(
        processor)
    outs = [proc.process_batch(b, engine) for b in batches]
    outs.append(proc.flush(engine))
    return outs, engine


def assert_batches_identical(a: list[RecordBatch], b: list[RecordBatch], label: str = ""):
    assert len(a) == len(b), f"{label}: {len(a)} vs {len(b)} output batches"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.column_names == y.column_names, f"{label}: batch {i} columns differ"
        assert x.equals(y, bitwise=True), (
            f"{label}: output batch {i} differs\n{x.to_pydict()}\n{y.to_pydict()}"
        )


def duckdb_rows(sql: str, batch: RecordBatch) -> list[tuple]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET error_on_division_by_zero=false")
    con.register("t", batch.to_arrow())
    return con.execute(sql).fetchall()


def values_equal(a, b, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return a == b


def assert_rows_match(ours: list[tuple], ref: list[tuple], label: str = ""):
    assert len(ours) == len(ref), f"{label}: {len(ours)} rows vs DuckDB's {len(ref)}"
    for i, (r1, r2) in enumerate(zip(ours, ref)):
        assert len(r1) == len(r2)
        for j, (a, b) in enumerate(zip(r1, r2)):
            if hasattr(b, "is_finite"):  # Decimal from DuckDB
                b = float(b)
            assert values_equal(a, b), f"{label}: row {i} col {j}: {a!r} != DuckDB {b!r}\n" \
                                       f"ours {r1}\nref  {r2}"


def rows_of(batch: RecordBatch) -> list[tuple]:
    d = batch.to_pydict()
    names = batch.column_names
    return list(zip(*(d[n] for n in names))) if names else []


@pytest.fixture(scope="session")
def stream_batch() -> RecordBatch:
    return to_batch(make_stream(3000, seed=11))
