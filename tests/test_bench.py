"""``velokern bench --quick``: runs end to end in a subprocess, checks every engine's
answer before printing, and writes its JSON and plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from velokern.datagen import SCENARIOS


def test_quick_bench_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    r = subprocess.run(
        [sys.executable, "-m", "velokern", "bench", "--quick", "--scenarios", "S2",
         "--processors", "v1,v2:2", "--json", str(out), "--plot", str(png)],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    got = {(x["engine"], x["batch_size"]) for x in rows}
    assert got == {(e, b) for e in ("v1", "v2:2", "duckdb", "polars") for b in (1_000, 100_000)}
    for x in rows:
        assert x["records_per_s"] > 0 and len(x["seconds"]) == 3
        if x["engine"] == "v2:2":
            assert len(x["partition_records"]) == 2
            assert sum(x["partition_records"]) == x["records"]
        if x["engine"] == "v2:2" and x["batch_size"] == 100_000:
            # the batches that run on both workers split S2's 200 symbols over both
            # partitions (the one V2 runs on one worker to measure it counts in partition
            # 0, and small ones soon run in one partition: velokern.exec.reshard)
            assert min(x["partition_records"]) > 0 and x["load_balance"] >= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scaling efficiency" in r.stdout


def test_demo_runs_the_five_scenarios_on_v1_and_v2():
    # after the bench test in this file (one worker), so the scenario kernels are cached
    r = subprocess.run([sys.executable, "-m", "velokern", "demo", "--records", "20000",
                        "--batch-size", "5000", "--partitions", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for name in SCENARIOS:
        assert f"== {name}:" in r.stdout
    assert r.stdout.count("same answer as V1 (bit for bit)") == 10


def test_high_cardinality_groupby_checks_every_engine():
    """The 1M-key benchmark (small here) times V1, V2 on every CPU, Polars and DuckDB
    after checking velokern's answers against Polars; the check fails on a wrong row."""
    import pyarrow as pa
    import pytest

    from velokern.bench import _check_direct, measure_high_cardinality
    from velokern.processors.threading import available_cpus

    got = measure_high_cardinality(rows=30_000, keys=5_000, batch_size=7_000, repeats=1)
    engines = {k for k in got if k not in ("rows", "keys")}
    ncpu = len(available_cpus())
    expect = {"velokern v1 (7k batches)", "polars (whole table)", "duckdb (whole table)"}
    if ncpu > 1:
        expect.add(f"velokern v2:{ncpu} (7k batches)")
    assert engines == expect and all(got[k] > 0 for k in engines)
    assert got["rows"] == 30_000 and 4_900 < got["keys"] <= 5_000
    ref = pa.table({"k": [1, 2], "n": [3, 4]})
    _check_direct("t", "same rows, other order", [ref], [pa.table({"k": [2, 1], "n": [4, 3]})])
    with pytest.raises(AssertionError, match="column 1 differs"):
        _check_direct("t", "wrong count", [ref], [pa.table({"k": [1, 2], "n": [3, 5]})])


def test_rounds_rewarm_each_engine_before_its_timed_pass():
    """Several engines: each timed pass follows an untimed pass of the same engine (so
    none runs on another's cache contents); one engine: passes back to back."""
    from velokern.bench import _time_rounds

    calls = []
    cases = {name: (lambda name=name: calls.append(name), None) for name in ("a", "b")}
    times = _time_rounds(cases, 3)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())
    calls.clear()
    _time_rounds({"a": cases["a"]}, 3)
    assert calls == ["a"] * 4


def test_parallel_ceiling_reports_one_worker_time_and_speedup():
    from velokern.bench import measure_parallel_ceiling

    out = measure_parallel_ceiling(threads=2, repeats=2, sizes=(20_000, 100_000))
    assert out["threads"] in (1, 2)
    assert set(out) == {"threads", "compute-bound loop", "memory-bound scan (1 MB)"}
    for name in ("compute-bound loop", "memory-bound scan (1 MB)"):
        assert out[name]["one"] > 0 and 0 < out[name]["speedup"] < 100


def test_scaling_study_json_and_its_report_section(tmp_path):
    """``velokern bench --scaling``: every (batch size, engine) of the study lands in the
    JSON with the machine it ran on; ``write_report`` renders each ``scaling-*.json``
    beside the report as a section (scaling efficiency = V2 / (p x V1))."""
    from velokern.bench import format_scaling_study, measure_scaling, scaling_sections
    from velokern.processors.threading import available_cpus

    path = tmp_path / "scaling-test.json"
    data = measure_scaling(str(path), quick=True, scenarios=("S2",))
    assert json.loads(path.read_text()) == json.loads(json.dumps(data))
    assert data["complete"] and data["machine"]["cpus"] == len(available_cpus())
    engines = {x["engine"] for x in data["results"]}
    assert {"v1", "v2:1", "duckdb"} <= engines
    assert {(x["batch_size"]) for x in data["results"]} == {1_000, 100_000}
    ncpu = data["machine"]["cpus"]
    assert [c["threads"] for c in data["ceiling"]] == (
        [t for t in (2, 4, 8, 16, 32, 64, 128, 256) if t < ncpu] + [ncpu] if ncpu > 1 else [])
    card = data["high_cardinality"]
    assert card["rows"] == 1_000_000 and card["velokern v1 (100k batches)"] > 0
    # a hand-made study renders the figures it holds
    data["results"] = [
        {"scenario": "S2", "engine": "v1", "batch_size": 100_000, "records": 1_000_000,
         "seconds": [0.01, 0.01, 0.01], "partition_records": [1_000_000]},
        {"scenario": "S2", "engine": "v2:4", "batch_size": 100_000, "records": 1_000_000,
         "seconds": [0.005, 0.005, 0.005], "partition_records": [250_000, 250_000,
                                                                  300_000, 200_000]}]
    data["machine"]["cpus"] = 4
    text = format_scaling_study(data, "docs/scaling-test.json")
    assert "## Scaling on 4 CPUs (`docs/scaling-test.json`)" in text
    assert "| S2 | 100,000 | v2:4 | 200.0 M | 500.0 | 0% | 2.00x | 0.50 | 1.20 |  |" in text
    assert "| S2 | 100,000 | v1 | 100.0 M |" in text
    path.write_text(json.dumps(data))
    (tmp_path / "other.json").write_text("{}")  # not a scaling study: not read
    sections = scaling_sections(str(tmp_path / "performance.md"))
    assert len(sections) == 1 and "2.00x | 0.50 | 1.20" in sections[0]


def test_scaling_command_line(tmp_path):
    """``velokern bench --scaling FILE --scenarios S0 --quick`` writes the study of S0
    alone; --processors does not go with --scaling (the study picks the configurations)."""
    out = tmp_path / "scaling-x.json"
    r = subprocess.run([sys.executable, "-m", "velokern", "bench", "--quick", "--scaling",
                        str(out), "--scenarios", "S0"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["complete"] and {x["scenario"] for x in data["results"]} == {"S0"}
    assert f"wrote {out}" in r.stdout
    r = subprocess.run([sys.executable, "-m", "velokern", "bench", "--scaling", str(out),
                        "--processors", "v1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "leave out --processors" in r.stderr
    r = subprocess.run([sys.executable, "-m", "velokern", "bench", "--scaling", str(out),
                        "--scenarios", "S9"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unknown scenario(s) ['S9']" in r.stderr
    bad = tmp_path / "no such folder" / "s.json"  # fails before measuring anything
    r = subprocess.run([sys.executable, "-m", "velokern", "bench", "--scaling", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no such folder" in r.stderr


def test_realistic_bench_times_velokern_beside_checked_hand_loops(tmp_path):
    from velokern.bench.realistic import _check_hand, _Data, format_realistic, measure_realistic

    rows = measure_realistic(batch_sizes=(5_000,), processors=("v1", "v2:2"),
                             records=20_000, repeats=1, workloads=("filter", "groupby"),
                             large_records=20_000)
    cases = {(r["workload"], r["case"]) for r in rows}
    for w in ("filter", "groupby"):
        assert {(w, "v1"), (w, "v2:2"), (w, "hand")} <= cases
    assert all(r["us_per_batch"] > 0 for r in rows)
    table = format_realistic(rows)
    assert "| filter | 5,000 | no |" in table and "v1 of hand" in table
    # the hand-written loops are checked against V1 before they are timed: a wrong one
    # is refused
    data = _Data(3_000)
    data.amount = data.amount[::-1].copy()  # the loop reads other amounts than V1
    batches = _Data(3_000).batches("filter", 1_000)
    with pytest.raises(AssertionError, match="hand-written filter loop"):
        _check_hand("filter", data, batches)
