"""The ``velokern`` command line (``python -m velokern``): ``run``, ``demo``, ``bench``,
``explain``.

Exit codes: 0 success, 1 the job failed (or the demo's processors disagreed), 2 usage
errors (bad arguments, SQL, processor config, missing input, unreadable job file),
130 stopped by Ctrl-C (gracefully: the batch in flight is finished, a checkpoint is
written when the job has a checkpoint directory, sinks are closed).
Errors print as one line unless ``--verbose``."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["main"]


class UsageError(ValueError):
    """The command was asked for something it cannot do (exit code 2)."""


_JOB_KEYS = {"sql": str, "source": str, "sink": str, "late_sink": str, "processor": str,
             "batch_size": int, "checkpoint_dir": str, "checkpoint_every": int,
             "checkpoint_seconds": float, "allowed_lateness_ms": int, "on_error": str,
             "schema": dict, "name": str}


def _load_job_file(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"job file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"job file {path} is not valid TOML: {exc}") from None
    for k, v in spec.items():
        if k not in _JOB_KEYS:
            raise UsageError(f"job file {path}: unknown key {k!r} (known: "
                             f"{', '.join(sorted(_JOB_KEYS))})")
        want = _JOB_KEYS[k]
        wrong = not isinstance(v, want) or (want is int and isinstance(v, bool))
        if wrong and not (want is float and isinstance(v, int)):
            raise UsageError(f"job file {path}: {k} must be a {want.__name__}, got "
                             f"{type(v).__name__}")
    return spec


class _Progress:
    """One self-overwriting stderr line: records, records/s, batches."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._last = 0.0

    def __call__(self, m: dict) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        rate = m["records_in"] / m["elapsed_s"] if m["elapsed_s"] else 0.0
        print(f"\r{m['job']}: {m['records_in']:,} records, {rate:,.0f} records/s, "
              f"{m['batches']:,} batches, {m['records_out']:,} out ", end="",
              file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self._last:
            print(file=sys.stderr)


def _metrics_table(m: dict) -> str:
    lat = m["latency_ms"]
    rows = [
        ("status", m["status"]), ("processor", m["processor"]),
        ("records in", m["records_in"]), ("records out", m["records_out"]),
        ("records filtered", m["records_filtered"]), ("late records", m["late_records"]),
        ("records rejected", m["records_rejected"]), ("batches", m["batches"]),
        ("elapsed", f"{m['elapsed_s']:.3f} s"),
        ("throughput", f"{m['records_per_s']:,.0f} records/s"),
        ("records per partition", ", ".join(f"{x:,}" for x in m["partition_records"])),
        ("load balance (max/mean)", "-" if m["load_balance"] is None
         else f"{m['load_balance']:.3f}"),
        ("batch latency p50/p90/p99/max", "-" if lat["p50"] is None else
         "/".join(f"{lat[k]:.3f}" for k in ("p50", "p90", "p99", "max")) + " ms"),
        ("checkpoints written", m["checkpoints"]),
    ]
    if m["resumed_from_batch"] is not None:
        rows.append(("resumed from batch", m["resumed_from_batch"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)


def _job_spec(args: argparse.Namespace) -> dict:
    """The job's settings: the job file's, then the options given; needs sql and source."""
    spec: dict = {}
    if args.job_file:
        spec = _load_job_file(args.job_file)
    for k in _JOB_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            spec[k] = v
    for k in ("sql", "source"):
        if not spec.get(k):
            raise UsageError(f"velokern run needs --{k} (or '{k} = ...' in a job file)")
    return spec


def _print_rows(job, show: int) -> None:
    """A memory sink's rows after the metrics: the first ``show`` as a table."""
    if job.sink.name != "memory":
        return
    out = job.sink.result()
    if out.num_columns:
        print()
        print(_table(out.slice(0, show).to_records(), out.column_names))
        if len(out) > show:
            print(f"... {len(out) - show:,} more rows ({len(out):,} in all)")


def _run(args: argparse.Namespace) -> int:
    import signal

    from velokern.server import JobFailed, StreamJob

    spec = _job_spec(args)
    job = StreamJob(spec.pop("sql"), spec.pop("source"), spec.pop("sink", "memory"),
                    spec.pop("processor", None), **spec)
    progress = _Progress(sys.stderr.isatty() if args.progress is None else args.progress)
    job.on_progress = progress
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C kills
        job.stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        job.run()
        failed = None
    except JobFailed as exc:
        failed = exc
    finally:
        signal.signal(signal.SIGINT, old)
        progress.done()
    m = job.metrics()
    print(_metrics_table(m))
    if failed is not None:
        if args.verbose:
            raise failed
        print(f"velokern: error: {failed}", file=sys.stderr)
        return 2 if _refused_before_any_record(failed, m) else 1
    _print_rows(job, args.show)
    if interrupted:
        print("velokern: interrupted: stopped after the batch in flight"
              + (f"; resume with the same command (checkpoint in {job.checkpoint_dir})"
                 if job.checkpoint_dir else ""), file=sys.stderr)
        return 130
    return 0

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "NULL" if v is None else str(v)


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[k]) for row in cells]) for k, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    for row in cells:
        out.append(" | ".join(v.rjust(w) for v, w in zip(row, widths)))
    return "\n".join(out)


def _demo(args: argparse.Namespace) -> int:
    from velokern import JobProcessorFactory, RecordBatch, StreamExecutionEngine
    from velokern.datagen import SCENARIOS, stream_for
    from velokern.processors.threading import threading_layer_name

    names = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [x for x in names if x not in SCENARIOS]
    if bad or not names:
        raise UsageError(f"unknown scenario(s) {bad or [args.scenarios]} for --scenarios "
                         f"(known: {', '.join(SCENARIOS)})")
    v2 = f"v2:{args.partitions}" if args.partitions else "v2"
    total, bs = args.records, args.batch_size
    print(f"velokern demo: {len(names)} reference scenarios, {total:,} generated records "
          f"each in batches of {bs:,}; V1 and {v2}; threading layer {threading_layer_name()}")
    ok = True
    for name in names:
        sql = SCENARIOS[name]
        batches = list(stream_for(name, total, bs, seed=args.seed))
        print(f"\n== {name}: {sql}")
        results = {}
        for cfg in ("v1", v2):
            proc = JobProcessorFactory.create(cfg)
            warm = StreamExecutionEngine(sql)  # compiles (or loads) the kernels
            proc.process_batch(batches[0], warm)
            proc.flush(warm)
            proc = JobProcessorFactory.create(cfg)
            engine = StreamExecutionEngine(sql)
            t0 = time.perf_counter()
            outs = [proc.process_batch(b, engine) for b in batches]
            outs.append(proc.flush(engine))
            dt = time.perf_counter() - t0
            outs = [o for o in outs if o.num_columns]
            results[cfg] = (RecordBatch.concat(outs), dt, proc)
        ref = results["v1"][0]
        rows = ref.slice(0, args.show).to_records()
        print(_table(rows, ref.column_names))
        if len(ref) > args.show:
            print(f"... {len(ref) - args.show:,} more rows ({len(ref):,} in all)")
        for cfg, (out, dt, proc) in results.items():
            same = out.equals(ref, bitwise=True)
            ok &= same
            verdict = "same answer as V1 (bit for bit)" if same else "DIFFERS from V1"
            print(f"  {cfg + ' ' + proc.processor_name:<40} {total / dt:>14,.0f} records/s "
                  f"{dt * 1e3:>9.1f} ms  {verdict}")
    return 0 if ok else 1


def _explain(args: argparse.Namespace) -> int:
    from velokern import JobProcessorConfig, StreamExecutionEngine
    from velokern.batch import Schema

    schema = None
    if args.schema:
        try:
            schema = Schema([tuple(p.split(":", 1)) for p in args.schema.split(",")])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--schema {args.schema!r}: {exc}") from None
    engine = StreamExecutionEngine(args.sql, schema)
    print(engine.explain())
    cfg = JobProcessorConfig.parse(args.processor)
    print(f"processor: {cfg.description()}")
    if not cfg.is_v1:
        from velokern.processors.strategies import make_strategy

        s = make_strategy(cfg.strategy, engine)
        why = ("GROUP BY keys hash to partitions, so each group lives in one partition"
               if s.name == "hash" else
               "stateless query: each partition takes a contiguous slice, output keeps "
               "input order" if s.name == "fan_in" else f"chosen strategy {s.name}")
        print(f"strategy: {s.name} ({why})")
        from velokern import config
        from velokern.exec.sessions import is_session

        moves = s.keyed_by_hash(engine) and not is_session(engine.query)
        print(f"workers: a batch under {config.PARALLEL_MIN_ROWS:,} records runs on one; "
              "a larger one on all or on one, whichever V2 measures cheaper per record"
              + ("; on one worker the state runs in one partition (V1's layout)"
                 if moves else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from velokern.bench import (
        ALL_SCENARIOS,
        QUICK,
        SCALING_SCENARIOS,
        format_scaling,
        format_table,
        measure_scaling,
        plot,
        run_bench,
        to_json,
        write_report,
    )

    if args.report:
        write_report(args.report, quick=args.quick)
        print(f"wrote {args.report}")
        return 0
    if args.realistic:
        return _bench_realistic(args)
    if args.busy:
        raise UsageError("--busy goes with --realistic")
    text = args.scenarios or ",".join(SCALING_SCENARIOS if args.scaling else ALL_SCENARIOS)
    scenarios = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in scenarios if x not in ALL_SCENARIOS]
    if bad or not scenarios:
        raise UsageError(f"unknown scenario(s) {bad or [text]} for --scenarios "
                         f"(known: {', '.join(ALL_SCENARIOS)})")
    if args.scaling:
        if args.processors:
            raise UsageError("--scaling runs V1 and V2 at 1, 2, 4, ... partitions up to the "
                             "CPUs; leave out --processors")
        measure_scaling(args.scaling, quick=args.quick, scenarios=scenarios)
        print(f"wrote {args.scaling}")
        return 0
    kw = {}
    if args.quick:
        kw = dict(QUICK)
    if args.processors:
        kw["processors"] = tuple(args.processors.split(","))
    results = run_bench(scenarios=scenarios, **kw)
    print(format_table(results))
    print()
    print(format_scaling(results))
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(results))
    if args.plot and plot(results, args.plot):
        print(f"wrote {args.plot}")
    return 0


def _bench_realistic(args: argparse.Namespace) -> int:
    import json

    from velokern.bench.realistic import WORKLOADS, format_realistic, measure_realistic

    if args.scenarios or args.scaling or args.plot:
        raise UsageError("--realistic runs its own four workloads; leave out --scenarios, "
                         "--scaling and --plot")
    kw: dict = {"busy": args.busy}
    if args.quick:
        kw.update(batch_sizes=(1_000, 100_000), records=200_000, large_records=600_000,
                  repeats=3)
    if args.processors:
        kw["processors"] = tuple(args.processors.split(","))
    rows = measure_realistic(**kw)
    for w, (sql, data) in WORKLOADS.items():
        print(f"{w}: {sql}  [{data}]")
    print()
    print(format_realistic(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="velokern",
                                     description="Streaming SQL over columnar batches.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a query from a source to a sink",
                       description="Run a query from a source (Parquet file or directory, "
                       "Arrow IPC, CSV, or scenario:S0..S3b) to a sink (.parquet, .arrow, "
                       ".csv; default: print the result). Options override the job file.")
    r.add_argument("job_file", nargs="?", help="a TOML job file (keys as the options)")
    r.add_argument("--sql")
    r.add_argument("--source", help="input path, or scenario:S2?total=1000000&seed=1")
    r.add_argument("--sink", help="output path (.parquet, .arrow, .csv)")
    r.add_argument("--late-sink", help="where late records go (a path)")
    r.add_argument("--processor", help="v1, v2, v2:N, v2:affinity, v2:N:affinity "
                   "(default: $VELOKERN_PROCESSOR or v2)")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--checkpoint-dir", help="resume from and write checkpoints here")
    r.add_argument("--checkpoint-every", type=int, help="batches between checkpoints "
                   "(default 10)")
    r.add_argument("--checkpoint-seconds", type=float, help="also checkpoint this often")
    r.add_argument("--allowed-lateness-ms", type=int)
    r.add_argument("--on-error", choices=("fail", "skip"))
    r.add_argument("--show", type=int, default=20, help="rows of an unsaved result to print")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: when stderr is a terminal)")
    r.set_defaults(func=_run)
    d = sub.add_parser("demo", help="run the five reference scenarios through V1 and V2")
    d.add_argument("--scenarios", default="S0,S1,S2,S3a,S3b")
    d.add_argument("--records", type=int, default=1_000_000, help="records per scenario")
    d.add_argument("--batch-size", type=int, default=100_000)
    d.add_argument("--partitions", type=int, default=None)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--show", type=int, default=5, help="rows of each result to print")
    d.set_defaults(func=_demo)
    b = sub.add_parser("bench", help="V1 / V2 / DuckDB / Polars on the reference scenarios")
    b.add_argument("--quick", action="store_true", help="small run (under a minute)")
    b.add_argument("--scenarios", default=None,
                   help="comma-separated reference scenarios (default: S0,S1,S2,S3a,S3b; "
                        "with --scaling S0,S1,S2,S3a)")
    b.add_argument("--plot", help="also draw throughput and scaling to this PNG file")
    b.add_argument("--processors", default=None, help="e.g. v1,v2:2")
    b.add_argument("--json", help="also write the results as JSON to this file")
    b.add_argument("--report", help="run every measurement and write the markdown report")
    b.add_argument("--scaling", metavar="FILE.json",
                   help="the scaling study on this machine (V2 at 1, 2, 4, ... partitions up "
                        "to its CPUs) as JSON; the report renders docs/scaling-*.json")
    b.add_argument("--realistic", action="store_true",
                   help="filter, GROUP BY, tumbling window and ROWS window on random data, "
                        "V1 and V2 beside a hand-written loop (velokern.bench.realistic)")
    b.add_argument("--busy", action="store_true",
                   help="with --realistic: keep one core busy with another process")
    b.set_defaults(func=_bench)
    e = sub.add_parser("explain", help="print the plan of a query")
    e.add_argument("--sql", required=True)
    e.add_argument("--schema", help="name:type,... (e.g. symbol:string,price:float64)")
    e.add_argument("--processor", default="v2")
    e.set_defaults(func=_explain)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if args.verbose:
            raise
        print(f"velokern: error: {exc}", file=sys.stderr)
        return 2 if _is_usage_error(exc) else 1


def _refused_before_any_record(failed: BaseException, metrics: dict) -> bool:
    """A job whose query does not fit its source (an unknown column, a type the SQL
    cannot take) fails on its first batch: a usage error, like one found earlier."""
    from velokern.exec import SchemaError
    from velokern.plan import PlanError

    if metrics.get("batches", 0) or metrics.get("records_in", 0):
        return False
    cause = failed.__cause__
    while cause is not None:  # (bad data in a file is not: that job exits 1)
        if isinstance(cause, (SchemaError, PlanError)):
            return True
        cause = cause.__cause__
    return False


def _is_usage_error(exc: BaseException) -> bool:
    """Errors in what the user asked for, found before any record was processed."""
    from velokern.io import SinkError, SourceError
    from velokern.plan import PlanError
    from velokern.processors import ConfigError

    return isinstance(exc, (UsageError, PlanError, ConfigError, SourceError, SinkError,
                            FileNotFoundError))

if __name__ == "__main__":
    sys.exit(main())
