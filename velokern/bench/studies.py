"""Measurements beside the scenarios: the high-cardinality GROUP BY, bucketing, cold and
warm start, scale-out on Dask, and the scaling study (``velokern bench --scaling``)."""

from __future__ import annotations

import json
import statistics

import numpy as np

import velokern as vk
from velokern.bench.ceiling import measure_parallel_ceiling
from velokern.bench.checks import _check_direct
from velokern.bench.runner import (
    QUICK,
    _time_rounds,
    _velokern,
    machine_info,
    run_bench,
    to_json,
)
from velokern.bench.tables import format_table
from velokern.datagen import SCENARIOS, stream_for


def measure_high_cardinality(rows: int = 5_000_000, keys: int = 1_000_000,
                             batch_size: int = 100_000, repeats: int = 3) -> dict:
    """GROUP BY over ``keys`` distinct integer keys: velokern V1 (EMIT FINAL, the
    stream in batches) vs Polars and DuckDB over the whole table at once. Answers
    checked equal first. Median seconds."""
    import duckdb
    import pyarrow as pa

    try:
        import polars as pl
    except ImportError:
        pl = None
        print("polars is not installed: skipped (velokern checked against DuckDB)")

    rng = np.random.default_rng(0)
    k = rng.integers(0, keys, rows)
    v = rng.integers(0, 1000, rows)
    sql = "SELECT k, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k EMIT FINAL"
    batches = [vk.RecordBatch({"k": k[a:a + batch_size], "v": v[a:a + batch_size]})
               for a in range(0, rows, batch_size)]
    # V1, and V2 on every CPU (Polars and DuckDB use every CPU too)
    from velokern.processors.threading import available_cpus

    ncpu = len(available_cpus())
    cfgs = ["v1"] + ([f"v2:{ncpu}"] if ncpu > 1 else [])
    jobs = {cfg: _velokern(sql, batches, cfg) for cfg in cfgs}
    table = pa.table({"k": k, "v": v})
    con = duckdb.connect()
    con.register("t", table)

    def duckdb_run():
        return con.execute("SELECT k, COUNT(*), SUM(v) FROM t GROUP BY k").fetchnumpy()

    if pl is not None:
        df = pl.from_arrow(table)

        def polars_run():
            return df.lazy().group_by("k").agg(pl.len().alias("n"),
                                               pl.col("v").sum().alias("s")).collect()

        ref, by = polars_run().to_arrow(), "polars"
    else:
        ref, by = con.sql("SELECT k, COUNT(*), SUM(v)::BIGINT FROM t GROUP BY k"
                           ).to_arrow_table(), "duckdb"
    cases = {}
    for cfg, (setup, run) in jobs.items():
        ours = vk.RecordBatch.concat([o for o in run(*setup()) if o.num_columns])
        _check_direct("high-cardinality GROUP BY", f"velokern {cfg} against {by}", [ref],
                      [ours])
        cases[f"velokern {cfg} ({batch_size // 1000}k batches)"] = (run, setup)
    if pl is not None:
        cases["polars (whole table)"] = (polars_run, None)
    cases["duckdb (whole table)"] = (duckdb_run, None)
    times = _time_rounds(cases, repeats)
    return {name: statistics.median(t) for name, t in times.items()} | {
        "rows": rows, "keys": ref.num_rows}


#: ``velokern bench --scaling``: scenarios whose V2 scaling is studied (S3b scales as S3a)
SCALING_SCENARIOS = ("S0", "S1", "S2", "S3a")


def measure_scaling(path: str, quick: bool = False,
                    scenarios: tuple[str, ...] = SCALING_SCENARIOS) -> dict:
    """The scaling study, for a machine with more cores than the one the report runs on:
    the machine's parallel ceiling at 2, 4, ... workers, every scenario at 100k, 10k and
    1k batches on V1 and V2 at 1, 2, 4, ... partitions (DuckDB and Polars beside them
    when installed; answers checked as in ``run_bench``), and the high-cardinality GROUP
    BY. Written to ``path`` as JSON after every step (``"complete": false`` until the
    last), largest batches first, so a run cut short still leaves what it measured.
    ``write_report`` renders every ``scaling-*.json`` beside the report."""
    import importlib.util

    data: dict = {"machine": machine_info(), "quick": quick, "complete": False,
                  "command": f"python -m velokern bench --scaling {path}"
                             + (" --quick" if quick else ""),
                  "ceiling": [], "results": [], "high_cardinality": None}

    def save():
        with open(path, "w") as f:
            json.dump(data, f, indent=1)

    save()  # a path that cannot be written fails now, not after minutes of measuring
    ncpu = data["machine"]["cpus"]
    threads = [t for t in (2, 4, 8, 16, 32, 64, 128, 256) if t < ncpu] + [ncpu]
    for t in threads if ncpu > 1 else []:
        data["ceiling"].append(measure_parallel_ceiling(
            threads=t, **({"repeats": 3, "sizes": (100_000, 2_000_000)} if quick else {})))
    save()
    kw = dict(QUICK) if quick else {}
    kw.pop("batch_sizes", None)
    sizes = (100_000, 1_000) if quick else (100_000, 10_000, 1_000)
    polars = importlib.util.find_spec("polars") is not None
    for bs in sizes:
        for sc in scenarios:
            res = run_bench(scenarios=(sc,), batch_sizes=(bs,), with_polars=polars, **kw)
            data["results"] += json.loads(to_json(res))
            save()
            print(format_table(res), flush=True)
    data["high_cardinality"] = measure_high_cardinality(
        **({"rows": 1_000_000, "keys": 200_000, "repeats": 1} if quick else {}))
    data["complete"] = True
    save()
    return data


def measure_bucketing(rows: int = 1_000_000, partitions: int = 8, repeats: int = 25) -> dict:
    """Median seconds of partition_ids + stable_bucket (and each alone) on one core."""
    import timeit

    from velokern import _shim

    keys = np.random.default_rng(0).integers(0, 1_000_000, rows, dtype=np.int64)
    pids = _shim.partition_ids(keys, partitions)
    cases = {
        "partition_ids + stable_bucket": lambda: _shim.stable_bucket(
            _shim.partition_ids(keys, partitions), partitions),
        "partition_ids": lambda: _shim.partition_ids(keys, partitions),
        "stable_bucket": lambda: _shim.stable_bucket(pids, partitions),
    }
    saved = None
    try:
        saved = _shim.current_thread_cpus()
        _shim.set_current_thread_cpus({min(saved)})  # one core
    except OSError:
        saved = None
    try:
        out = {}
        for name, fn in cases.items():
            fn()
            ts = sorted(t / 10 for t in timeit.repeat(fn, number=10, repeat=repeats))
            out[name] = statistics.median(ts)
        return out
    finally:
        if saved is not None:
            _shim.set_current_thread_cpus(saved)



_START_SCRIPT = """
import time
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
import velokern as vk
from velokern.datagen import SCENARIOS, market_data
batch = next(market_data(100_000, 100_000))
engine = vk.StreamExecutionEngine(SCENARIOS["S2"])
out = vk.SimpleJobProcessor().process_batch(batch, engine)
print(time.perf_counter() - t0, t1 - t0)
"""

COLD, WARM, NUMBA = ("cold (empty kernel cache)", "warm (cached kernels)",
                     "of which `import numba` alone")


def measure_start(tmpdir: str, repeats: int = 5) -> dict:
    """First result of S2 in a new process: with an empty kernel cache, then warm (median
    of ``repeats`` processes), and the part of the warm time spent importing numba. The
    processes write and reuse Python bytecode as a default install does (this sandbox
    sets PYTHONDONTWRITEBYTECODE, which would recompile velokern's modules every time)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, VELOKERN_CACHE_DIR=os.path.join(tmpdir, "kernels"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def once() -> tuple[float, float]:
        r = subprocess.run([sys.executable, "-c", _START_SCRIPT], env=env, check=True,
                           capture_output=True, text=True)
        total, numba_s = r.stdout.strip().splitlines()[-1].split()
        return float(total), float(numba_s)

    cold = once()[0]
    warm = [once() for _ in range(repeats)]
    return {COLD: cold, WARM: statistics.median(t for t, _ in warm),
            NUMBA: statistics.median(n for _, n in warm)}


def measure_dask(tmpdir: str, records: int = 2_000_000, files: int = 8,
                 repeats: int = 3) -> dict | None:
    """S2 and S3a over ``files`` Parquet files: velokern.distributed on a 2-worker
    LocalCluster (V1 on each worker) against a local V2 run over the same files, and
    reading the files alone. Answers checked first (the distributed answer is the
    final one: S2's local run emits changes, its last change per group must match).
    Median seconds; None without the ``dask`` extra."""
    import os

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        return None
    import pyarrow.parquet as pq

    from velokern.distributed import run_sql as dask_sql
    from velokern.io import ParquetSource

    out: dict = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        for sc in ("S2", "S3a"):
            d = os.path.join(tmpdir, f"dask-{sc}")
            os.makedirs(d)
            for i, b in enumerate(stream_for(sc, records, records // files)):
                pq.write_table(b.to_arrow(), os.path.join(d, f"part-{i}.parquet"))
            sql = SCENARIOS[sc]
            final = sql + " EMIT FINAL" if sc == "S2" else sql
            expect = vk.run_sql(final, ParquetSource(d), processor="v1").to_arrow()
            got = dask_sql(sql, d, client, processor="v1")
            _check_direct(sc, "dask", [expect], [got.to_arrow()])
            out[sc] = _time_rounds({
                "local V2 (v2:2)": (lambda d=d, sql=sql: vk.run_sql(
                    sql, ParquetSource(d), processor="v2:2"), None),
                "read the files alone": (lambda d=d: sum(
                    len(b) for b in ParquetSource(d)), None),
                "dask, 2 workers x V1": (lambda d=d, sql=sql: dask_sql(
                    sql, d, client, processor="v1"), None),
            }, repeats)
    return {sc: {k: statistics.median(v) for k, v in m.items()} for sc, m in out.items()}
