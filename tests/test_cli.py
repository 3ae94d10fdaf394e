"""The velokern command line, run in subprocesses: exit codes, output, job files,
Ctrl-C, and errors as one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import velokern as vk
from velokern.datagen import SCENARIOS, stream_for

S2 = SCENARIOS["S2"]
SRC = "scenario:S2?total=200000&seed=2"


def vk_cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "velokern", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


def _reference():
    return vk.run_sql(S2, list(stream_for("S2", 200_000, 20_000, seed=2)), processor="v1")


def test_run_writes_the_sink_and_prints_metrics(tmp_path):
    out = tmp_path / "out.parquet"
    r = vk_cli("run", "--sql", S2, "--source", SRC, "--sink", str(out), "--processor",
               "v2:2", "--batch-size", "20000")
    assert r.returncode == 0, r.stderr
    assert "records in" in r.stdout and "200,000" in r.stdout
    assert "throughput" in r.stdout and "batch latency" in r.stdout
    assert pq.read_table(out).equals(_reference().to_arrow())


def test_run_without_sink_prints_the_result():
    r = vk_cli("run", "--sql", S2, "--source", SRC, "--processor", "v1", "--batch-size",
               "20000", "--show", "3")
    assert r.returncode == 0, r.stderr
    assert "trade_count" in r.stdout and "more rows (2,000 in all)" in r.stdout


def test_run_from_a_job_file_with_overrides(tmp_path):
    out = tmp_path / "out.csv"
    job = tmp_path / "job.toml"
    job.write_text(f'sql = "{S2}"\nsource = "{SRC}"\nsink = "{out}"\n'
                   f'processor = "v2:3"\nbatch_size = 20000\n')
    r = vk_cli("run", str(job), "--processor", "v1")
    assert r.returncode == 0, r.stderr
    assert "v1" in r.stdout
    assert out.read_text().splitlines()[0].startswith('"symbol"')
    assert len(out.read_text().splitlines()) == 1 + 10 * 200  # EMIT CHANGES per batch


@pytest.mark.parametrize("args, message", [
    (["run", "--sql", S2, "--source", SRC, "--processor", "v3"], "v3"),
    (["run", "--sql", "SELECT nope FROM", "--source", SRC], "SQL"),
    (["run", "--sql", S2, "--source", "/nonexistent/data.parquet"],
     "/nonexistent/data.parquet"),
    (["run", "--sql", S2, "--source", "data.xlsx"], "data.xlsx"),
    (["run", "--sql", S2], "--source"),
    (["run", "/nonexistent/job.toml"], "job.toml"),
    (["demo", "--scenarios", "S9"], "S9"),
    (["bench", "--scenarios", "S9"], "S9"),
    # the query does not fit the source: found on the first batch, still a usage error
    (["run", "--sql", "SELECT nope FROM t", "--source", SRC], "nope"),
    (["run", "--sql", "SELECT price FROM t WHERE symbol > 3", "--source", SRC],
     "cannot compare string with int64"),
    (["run", "--sql", S2, "--source", SRC, "--allowed-lateness-ms", "-5"],
     "allowed_lateness_ms"),
    (["explain", "--sql", "SELECT x FROM t", "--schema", "x:nosuchtype"], "nosuchtype"),
])
def test_usage_errors_exit_2_with_one_line(args, message):
    r = vk_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("velokern: error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_bad_arguments_exit_2():
    assert vk_cli("run", "--batch-size", "many").returncode == 2
    assert vk_cli("frobnicate").returncode == 2


def test_a_failing_job_exits_1_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,price\nA,1.5\nB\n")
    r = vk_cli("run", "--sql", "SELECT symbol, price FROM t", "--source", str(bad))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "bad.csv" in last and "line 3" in last and "Traceback" not in r.stderr
    r = vk_cli("--verbose", "run", "--sql", "SELECT symbol, price FROM t", "--source",
               str(bad))
    assert r.returncode == 1 and "Traceback" in r.stderr


@pytest.mark.parametrize("command", ["run", "demo", "bench", "explain"])
def test_help_on_every_command(command):
    r = vk_cli(command, "--help")
    assert r.returncode == 0 and "usage: velokern " + command in r.stdout


def test_explain():
    r = vk_cli("explain", "--sql", S2, "--schema",
               "symbol:string,price:float64,quantity:int64", "--processor", "v2:4")
    assert r.returncode == 0, r.stderr
    assert "strategy: hash" in r.stdout
    assert "on one worker the state runs in one partition" in r.stdout


def test_ctrl_c_stops_gracefully_and_the_job_resumes(tmp_path):
    out, cp = tmp_path / "out.parquet", tmp_path / "cp"
    src = "scenario:S3a?total=1000000&seed=1&random=1"
    sql = SCENARIOS["S3a"]
    args = ["run", "--sql", sql, "--source", src, "--sink", str(out), "--processor", "v1",
            "--batch-size", "5000", "--checkpoint-dir", str(cp), "--checkpoint-every", "5"]
    p = subprocess.Popen([sys.executable, "-m", "velokern", *args, "--progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    # wait until records flow (the progress line), then press Ctrl-C
    buf = ""
    deadline = time.monotonic() + 240
    while "records/s" not in buf and time.monotonic() < deadline:
        buf += p.stderr.read(1)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "interrupted" in stderr and "status" in stdout and "stopped" in stdout
    assert (cp / "checkpoint.vkcp").exists()
    r = vk_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resumed from batch" in r.stdout
    ref = tmp_path / "ref.parquet"
    r = vk_cli(*[a if a != str(out) else str(ref) for a in args[:-4]])
    assert r.returncode == 0
    assert out.read_bytes() == ref.read_bytes()
