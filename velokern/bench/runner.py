"""``velokern bench``: the reference scenarios through V1, V2, DuckDB and Polars.

Each engine processes the same stream of Arrow/RecordBatch batches batch by batch (a
streaming job's unit of work); creating a velokern job (parsing, planning) is not timed,
pushing every batch through it and flushing is. DuckDB ("direct SQL") runs the
scenario's SQL on every batch; Polars runs the same query with its lazy API on every
batch. Before any figure is printed the answers are checked: velokern's V1 and V2
outputs must be identical bit for bit, and velokern's final result must equal DuckDB's
over the whole stream (floats to a relative 1e-9); and every batch's output of DuckDB
and of Polars must equal velokern's answer for that batch on its own (a new job per
batch), as a multiset of rows. Figures are medians of several timed passes after a
warm-up pass; the engines of one scenario and batch size take turns, one timed pass
each per round (each after an untimed pass of its own, so no engine runs on another's
cache contents), so their ratios come from passes run side by side.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import velokern as vk
from velokern.bench.checks import _check, _check_direct, _per_batch_answers
from velokern.bench.queries import ALL_SCENARIOS, DIRECT_SQL
from velokern.datagen import SCENARIOS, stream_for

__all__ = ["ALL_SCENARIOS", "QUICK", "BenchResult", "run_bench"]


@dataclass
class BenchResult:
    scenario: str
    engine: str
    batch_size: int
    records: int
    seconds: list[float]
    peak_bytes: int | None = None  # velokern: peak traced allocation of one pass
    partition_records: list[int] | None = None  # velokern: records per partition

    @property
    def partitions(self) -> int:
        """Partitions of a velokern config (v1: 1; DuckDB/Polars: 0)."""
        if self.engine == "v1":
            return 1
        if self.engine.startswith("v2"):
            return len(self.partition_records or [1])
        return 0

    @property
    def load_balance(self) -> float | None:
        """max partition / mean partition (1.0 = perfectly even)."""
        pr = self.partition_records
        if not pr or sum(pr) == 0:
            return None
        return max(pr) / (sum(pr) / len(pr))

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def records_per_s(self) -> float:
        return self.records / self.median

    @property
    def us_per_batch(self) -> float:
        return self.median / math.ceil(self.records / self.batch_size) * 1e6

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed passes."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def _time_rounds(cases: dict[str, tuple[Callable[..., object], Callable[[], tuple] | None]],
                 repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` passes of each case ``fn(*setup())`` after a warm-up pass
    of each (``setup``, creating a job, is not timed). The cases take turns, so a change
    in this shared machine's load hits them alike and their ratios compare passes run
    side by side. With several cases, each timed pass follows an untimed pass of the
    same case: a pass that directly followed another engine's ran on that engine's
    cache contents (measured: S2 at 1k batches, V1 10-20% slower than in passes run
    back to back), which a job streaming batches never does."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for fn, setup in cases.values():
        fn(*(setup() if setup else ()))  # warm-up: compiles or loads kernels, warms caches
    for _ in range(repeats):
        for name, (fn, setup) in cases.items():
            if len(cases) > 1:
                fn(*(setup() if setup else ()))  # rewarm after the other engines' passes
            args = setup() if setup else ()
            t0 = time.perf_counter()
            fn(*args)
            out[name].append(time.perf_counter() - t0)
    return out


def _time(fn: Callable[..., object], repeats: int,
          setup: Callable[[], tuple] | None = None) -> list[float]:
    """Seconds of each of ``repeats`` passes of ``fn(*setup())`` after a warm-up pass."""
    return _time_rounds({"": (fn, setup)}, repeats)[""]


def _profile(setup, run) -> tuple[int, list[int]]:
    """(peak traced bytes, records per partition) of one untimed pass."""
    import tracemalloc

    proc, engine = setup()
    tracemalloc.start()
    try:
        run(proc, engine)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, [int(x) for x in engine.metrics["partition_records"]]


def default_processors() -> tuple[str, ...]:
    """V1, and V2 at 1, 2, 4, ... partitions up to the CPUs this process may use."""
    from velokern.processors.threading import available_cpus

    ncpu = max(len(available_cpus()), 1)
    out, p = ["v1"], 1
    while p <= ncpu:
        out.append(f"v2:{p}")
        p *= 2
    if f"v2:{ncpu}" not in out:
        out.append(f"v2:{ncpu}")
    return tuple(out)


def _velokern(sql: str, batches, cfg: str):
    """(setup, run): a new job (processor + engine), and pushing the stream through it."""

    def setup():
        return vk.JobProcessorFactory.create(cfg), vk.StreamExecutionEngine(sql)

    def run(proc, engine):
        outs = [proc.process_batch(b, engine) for b in batches]
        outs.append(proc.flush(engine))
        return outs

    return setup, run


def _duckdb(scenario: str, tables):
    import duckdb

    con = duckdb.connect()
    query = DIRECT_SQL[scenario]

    def run():
        out = []
        for t in tables:
            con.register("batch", t)
            out.append(con.sql(query).to_arrow_table())
        return out

    return run


def _polars(scenario: str, frames):
    import polars as pl

    if scenario == "S0":
        def q(df):
            return df.lazy().filter(pl.col("total_amount") > 100).select(
                "order_id", "customer_id", "order_date", "total_amount").collect()
    elif scenario == "S1":
        def q(df):
            return df.lazy().select(
                "symbol", "price", pl.col("price").rolling_mean(100, min_samples=1)
                .over("symbol").alias("moving_avg")).collect()
    elif scenario in ("S3a", "S3b"):
        def q(df):
            return df.lazy().group_by(
                "trader_id", "symbol", pl.col("trade_time") // 60_000, maintain_order=True
            ).agg(pl.len().alias("trade_count"), pl.col("price").mean().alias("avg_price"),
                  pl.col("quantity").sum().alias("total_quantity"),
                  (pl.col("price") * pl.col("quantity")).sum().alias("total_value")
                  ).drop("trade_time").collect()  # the window key is not selected
    else:
        def q(df):
            return df.lazy().group_by("symbol", maintain_order=True).agg(
                pl.len().alias("trade_count"), pl.col("price").mean().alias("avg_price"),
                pl.col("price").min().alias("min_price"),
                pl.col("price").max().alias("max_price"),
                pl.col("quantity").sum().alias("total_quantity")).collect()

    def run():
        return [q(f) for f in frames]

    return run


#: ``--quick``: two batch sizes, a smaller stream, three timed passes
QUICK = {"batch_sizes": (1_000, 100_000), "records": 300_000, "small_records": 30_000,
         "repeats": 3}


def run_bench(
    scenarios=ALL_SCENARIOS,
    batch_sizes=(1_000, 10_000, 100_000),
    processors: tuple[str, ...] | None = None,
    records: int = 2_000_000,
    small_records: int = 200_000,
    repeats: int = 5,
    with_duckdb: bool = True,
    with_polars: bool = True,
) -> list[BenchResult]:
    processors = processors or default_processors()
    results = []
    for scenario in scenarios:
        sql = SCENARIOS[scenario]
        for bs in batch_sizes:
            total = records if bs >= 10_000 else small_records
            batches = list(stream_for(scenario, total, bs))
            outputs, cases, profiles = {}, {}, {}
            for cfg in processors:
                setup, run = _velokern(sql, batches, cfg)
                outputs[cfg] = run(*setup())
                profiles[cfg] = _profile(setup, run)
                cases[cfg] = (run, setup)
            _check(scenario, sql, batches, outputs)
            answers = _per_batch_answers(scenario, batches) if with_duckdb or with_polars \
                else None
            if with_duckdb:
                try:
                    tables = [b.to_arrow() for b in batches]
                    run = _duckdb(scenario, tables)
                    _check_direct(scenario, "duckdb", answers, run())
                    cases["duckdb"] = (run, None)
                except ImportError:
                    print("duckdb is not installed: skipped")
            if with_polars:
                try:
                    import polars as pl

                    frames = [pl.from_arrow(b.to_arrow()) for b in batches]
                    run = _polars(scenario, frames)
                    _check_direct(scenario, "polars", answers, run())
                    cases["polars"] = (run, None)
                except ImportError:
                    print("polars is not installed: skipped")
            times = _time_rounds(cases, repeats)
            results += [BenchResult(scenario, name, bs, total, times[name],
                                    *profiles.get(name, (None, None))) for name in cases]
    return results


def to_json(results: list[BenchResult]) -> str:
    return json.dumps([asdict(r) | {"records_per_s": r.records_per_s,
                                    "us_per_batch": r.us_per_batch,
                                    "load_balance": r.load_balance} for r in results], indent=1)


def _from_json(rows: list[dict]) -> list[BenchResult]:
    fields = BenchResult.__dataclass_fields__
    return [BenchResult(**{k: v for k, v in r.items() if k in fields}) for r in rows]


def machine_info() -> dict:
    """Where figures were measured: date, platform, CPUs, numba and its threading layer."""
    import datetime
    import os
    import platform

    import numba

    from velokern.processors.threading import available_cpus, threading_layer_name

    return {"date": datetime.date.today().isoformat(),
            "platform": f"{platform.platform()}, Python {platform.python_version()}",
            "cpus": len(available_cpus()) or os.cpu_count() or 1,
            "numba": numba.__version__, "threading_layer": threading_layer_name(),
            "commit": _commit()}


def _commit() -> str | None:
    """The velokern commit measured: ``VELOKERN_COMMIT``, else ``git rev-parse`` in the
    source tree, else None."""
    import os
    import subprocess

    if os.environ.get("VELOKERN_COMMIT"):
        return os.environ["VELOKERN_COMMIT"]
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None

