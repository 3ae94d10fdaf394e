"""Measurements as text and pictures: the markdown tables ``velokern bench`` prints and
the report embeds, the throughput plot, and the scaling study's section."""

from __future__ import annotations

import json

from velokern.bench.runner import BenchResult, _from_json


def format_table(results: list[BenchResult]) -> str:
    lines = ["| scenario | batch | engine | records/s | µs/batch | spread | vs V1 | vs DuckDB |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    base = {(r.scenario, r.batch_size, r.engine): r for r in results}
    for r in results:
        v1 = base.get((r.scenario, r.batch_size, "v1"))
        dd = base.get((r.scenario, r.batch_size, "duckdb"))
        rv1 = f"{r.records_per_s / v1.records_per_s:.2f}x" if v1 else ""
        rdd = f"{r.records_per_s / dd.records_per_s:.2f}x" if dd else ""
        lines.append(f"| {r.scenario} | {r.batch_size:,} | {r.engine} | "
                     f"{r.records_per_s / 1e6:,.1f} M | {r.us_per_batch:,.1f} | "
                     f"{r.spread * 100:.0f}% | {rv1} | {rdd} |")
    return "\n".join(lines)


def format_scaling(results: list[BenchResult]) -> str:
    """Scaling efficiency (V2 at p partitions / (p x V1)), load balance, peak memory."""
    lines = ["| scenario | batch | engine | records/s | scaling efficiency | records per "
             "partition | load balance (max/mean) | peak memory |",
             "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: |"]
    base = {(r.scenario, r.batch_size, r.engine): r for r in results}
    for r in results:
        if r.partitions == 0:
            continue
        v1 = base.get((r.scenario, r.batch_size, "v1"))
        eff = (f"{r.records_per_s / (r.partitions * v1.records_per_s):.2f}"
               if v1 and r.engine != "v1" else "")
        parts = ", ".join(f"{x:,}" for x in r.partition_records or [])
        lb = f"{r.load_balance:.2f}" if r.load_balance is not None else ""
        mem = f"{r.peak_bytes / 2**20:,.1f} MiB" if r.peak_bytes is not None else ""
        lines.append(f"| {r.scenario} | {r.batch_size:,} | {r.engine} | "
                     f"{r.records_per_s / 1e6:,.1f} M | {eff} | {parts} | {lb} | {mem} |")
    return "\n".join(lines)


def plot(results: list[BenchResult], path: str) -> bool:
    """Throughput vs batch size per engine (one panel per scenario) and V2 scaling vs
    partitions, as a PNG; False (and nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'velokern[plot]'): no plot")
        return False
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    ncols = min(3, len(scenarios) + 1)
    nrows = -(-(len(scenarios) + 1) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(scenarios) + 1:]:
        ax.set_visible(False)
    for ax, sc in zip(axes, scenarios):
        for eng in dict.fromkeys(r.engine for r in results if r.scenario == sc):
            rs = sorted((r for r in results if r.scenario == sc and r.engine == eng),
                        key=lambda r: r.batch_size)
            ax.plot([r.batch_size for r in rs], [r.records_per_s / 1e6 for r in rs],
                    marker="o", label=eng)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(sc)
        ax.set_xlabel("batch size (records)")
        ax.set_ylabel("M records/s")
        ax.legend(fontsize=7)
    ax = axes[len(scenarios)]
    big = max(r.batch_size for r in results)
    for sc in scenarios:
        rs = sorted((r for r in results if r.scenario == sc and r.batch_size == big
                     and r.partitions > 0 and r.engine != "v1"), key=lambda r: r.partitions)
        v1 = next((r for r in results if r.scenario == sc and r.batch_size == big
                   and r.engine == "v1"), None)
        if rs and v1:
            ax.plot([r.partitions for r in rs],
                    [r.records_per_s / v1.records_per_s for r in rs], marker="o", label=sc)
    ax.set_title(f"V2 / V1, {big:,}-record batches")
    ax.set_xlabel("partitions")
    ax.set_ylabel("x V1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def format_scaling_study(data: dict, name: str) -> str:
    """Markdown for one ``measure_scaling`` JSON file (``name``: its path as shown)."""
    m = data["machine"]
    results = _from_json(data["results"])
    lines = [
        f"## Scaling on {m['cpus']} CPUs (`{name}`)",
        "",
        f"Measured on {m['date']} on another machine"
        + (f" (velokern at commit {m['commit']})" if m.get("commit") else "")
        + f": {m['platform']}, {m['cpus']} CPUs, "
        f"numba {m['numba']}, threading layer `{m['threading_layer']}`, by "
        f"`{data['command']}` there. `make bench-report` does not re-measure it (it needs "
        "that machine); it renders the JSON file."
        + ("" if data.get("complete") else " The run was cut short: what it measured."),
        "",
    ]
    if data["ceiling"]:
        lines += [
            "The machine's own ceiling: t numba workers against one on loops with no serial "
            "part and no shared data (`velokern.bench.measure_parallel_ceiling`).",
            "",
            "| loop | one worker | " + " | ".join(f"{c['threads']} workers"
                                                  for c in data["ceiling"]) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in data["ceiling"]) + " |",
        ]
        for loop in (k for k in data["ceiling"][0] if k != "threads"):
            lines.append(f"| {loop} | {data['ceiling'][0][loop]['one'] * 1e3:.2f} ms | "
                         + " | ".join(f"{c[loop]['speedup']:.2f}x" for c in data["ceiling"])
                         + " |")
        lines.append("")
    if results:
        lines += ["Scenarios (as in the tables above; vs V1 and scaling efficiency "
                  "= V2 at p partitions / (p x V1)):", "",
                  "| scenario | batch | engine | records/s | µs/batch | spread | vs V1 | "
                  "scaling efficiency | load balance (max/mean) | vs DuckDB |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        base = {(r.scenario, r.batch_size, r.engine): r for r in results}
        order = sorted(results, key=lambda r: (r.scenario, r.batch_size))
        for r in order:
            v1 = base.get((r.scenario, r.batch_size, "v1"))
            dd = base.get((r.scenario, r.batch_size, "duckdb"))
            x1 = r.records_per_s / v1.records_per_s if v1 else None
            eff = (f"{x1 / r.partitions:.2f}" if x1 and r.partitions
                   and r.engine != "v1" else "")
            lb = f"{r.load_balance:.2f}" if r.partitions and r.load_balance else ""
            lines.append(
                f"| {r.scenario} | {r.batch_size:,} | {r.engine} | "
                f"{r.records_per_s / 1e6:,.1f} M | {r.us_per_batch:,.1f} | "
                f"{r.spread * 100:.0f}% | {f'{x1:.2f}x' if x1 else ''} | {eff} | {lb} | "
                f"{f'{r.records_per_s / dd.records_per_s:.2f}x' if dd else ''} |")
        lines.append("")
    card = data.get("high_cardinality")
    if card:
        lines += [f"GROUP BY over {card['keys']:,} distinct integer keys ({card['rows']:,} "
                  "rows), as above:", "", "| engine | median seconds | M rows/s |",
                  "| --- | ---: | ---: |",
                  *[f"| {k} | {v:.3f} | {card['rows'] / v / 1e6:,.1f} |"
                    for k, v in card.items() if k not in ("rows", "keys")], ""]
    return "\n".join(lines)


def scaling_sections(report_path: str) -> list[str]:
    """Every ``scaling-*.json`` beside the report, rendered (sorted by name)."""
    import glob
    import os

    folder = os.path.dirname(os.path.abspath(report_path))
    out = []
    for f in sorted(glob.glob(os.path.join(folder, "scaling-*.json"))):
        with open(f) as fh:
            data = json.load(fh)
        out.append(format_scaling_study(data, os.path.relpath(f, os.getcwd())))
    return out

