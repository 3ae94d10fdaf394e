"""The ``velokern`` command line: ``demo``, ``bench`` and ``explain`` (``python -m velokern``)."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["main"]

DEMO_SQL = (
    "SELECT symbol, COUNT(*) AS trades, SUM(quantity) AS volume, AVG(price) AS avg_price, "
    "MIN(price) AS low, MAX(price) AS high, STDDEV(price) AS stddev_price, "
    "COUNT(DISTINCT trader_id) AS traders "
    "FROM trades WHERE quantity >= 10 GROUP BY symbol HAVING SUM(quantity) > 0 EMIT FINAL"
)


def _table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "NULL" if v is None else str(v)

    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[k]) for row in cells]) for k, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    for row in cells:
        out.append(" | ".join(v.rjust(w) for v, w in zip(row, widths)))
    return "\n".join(out)


def _demo(args: argparse.Namespace) -> int:
    from velokern import JobProcessorFactory, StreamExecutionEngine
    from velokern.datagen import trades
    from velokern.processors.threading import threading_layer_name

    total, bs = args.records, args.batch_size
    print(f"velokern demo: {total:,} generated trades in batches of {bs:,}")
    print(f"query: {DEMO_SQL}\n")
    batches = list(trades(total, bs, seed=args.seed))
    results = {}
    for cfg in ("v1", f"v2:{args.partitions}" if args.partitions else "v2"):
        proc = JobProcessorFactory.create(cfg)
        # warm-up run compiles (or loads from the on-disk cache) the kernels
        warm = StreamExecutionEngine(DEMO_SQL)
        proc.process_batch(batches[0], warm)
        proc.flush(warm)
        proc = JobProcessorFactory.create(cfg)
        engine = StreamExecutionEngine(DEMO_SQL)
        t0 = time.perf_counter()
        for b in batches:
            proc.process_batch(b, engine)
        out = proc.flush(engine)
        dt = time.perf_counter() - t0
        results[cfg] = (out, dt, proc, engine)
    ref = next(iter(results.values()))[0]
    rows = ref.to_records()
    print(_table(rows[: args.show], ref.column_names))
    if len(rows) > args.show:
        print(f"... {len(rows) - args.show} more rows")
    print()
    print(f"{'processor':<36} {'records/s':>14} {'time':>9}  same answer as V1")
    for cfg, (out, dt, proc, _engine) in results.items():
        same = "yes (bit for bit)" if out.equals(ref, bitwise=True) else "NO"
        label = f"{cfg} {proc.processor_name}"
        print(f"{label:<36} {total / dt:>14,.0f} {dt * 1e3:>7.1f}ms  {same}")
    m = results["v1"][3].metrics
    print(f"\nrecords in {m['records_in']:,}, filtered {m['records_filtered']:,}, "
          f"groups {m['groups']}, emitted {m['records_emitted']}; "
          f"threading layer {threading_layer_name()}")
    ok = all(o.equals(ref, bitwise=True) for o, *_ in results.values())
    return 0 if ok else 1


def _explain(args: argparse.Namespace) -> int:
    from velokern import JobProcessorConfig, StreamExecutionEngine
    from velokern.batch import Schema

    schema = None
    if args.schema:
        schema = Schema([tuple(p.split(":", 1)) for p in args.schema.split(",")])
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
    return 0


def _bench(args: argparse.Namespace) -> int:
    from velokern.bench import (
        ALL_SCENARIOS,
        QUICK,
        format_scaling,
        format_table,
        plot,
        run_bench,
        to_json,
        write_report,
    )

    if args.report:
        write_report(args.report, quick=args.quick)
        print(f"wrote {args.report}")
        return 0
    kw = {}
    if args.quick:
        kw = dict(QUICK)
    if args.processors:
        kw["processors"] = tuple(args.processors.split(","))
    scenarios = tuple(x.strip() for x in args.scenarios.split(",") if x.strip())
    bad = [x for x in scenarios if x not in ALL_SCENARIOS]
    if bad or not scenarios:
        raise ValueError(f"unknown scenario(s) {bad or [args.scenarios]} for --scenarios "
                         f"(known: {', '.join(ALL_SCENARIOS)})")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="velokern",
                                     description="Streaming SQL over columnar batches.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a generated trade stream through V1 and V2")
    d.add_argument("--records", type=int, default=2_000_000)
    d.add_argument("--batch-size", type=int, default=100_000)
    d.add_argument("--partitions", type=int, default=None)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--show", type=int, default=12, help="rows of the result to print")
    d.set_defaults(func=_demo)
    b = sub.add_parser("bench", help="V1 / V2 / DuckDB / Polars on the reference scenarios")
    b.add_argument("--quick", action="store_true", help="small run (under a minute)")
    b.add_argument("--scenarios", default="S0,S1,S2,S3a,S3b",
                   help="comma-separated reference scenarios")
    b.add_argument("--plot", help="also draw throughput and scaling to this PNG file")
    b.add_argument("--processors", default=None, help="e.g. v1,v2:2")
    b.add_argument("--json", help="also write the results as JSON to this file")
    b.add_argument("--report", help="run every measurement and write the markdown report")
    b.set_defaults(func=_bench)
    e = sub.add_parser("explain", help="print the plan of a query")
    e.add_argument("--sql", required=True)
    e.add_argument("--schema", help="name:type,... (e.g. symbol:string,price:float64)")
    e.add_argument("--processor", default="v2")
    e.set_defaults(func=_explain)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        if args.verbose:
            raise
        print(f"velokern: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
