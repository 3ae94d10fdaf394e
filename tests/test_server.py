"""StreamJob and StreamJobServer: concurrent jobs, failures, graceful stop and resume,
kill -9 recovery from checkpoints, and refusing a checkpoint of another job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import velokern as vk
from velokern.checkpoint import CheckpointError
from velokern.datagen import SCENARIOS, stream_for
from velokern.io import SourceError
from velokern.server import JobFailed, StreamJob, StreamJobServer

S2, S3A = SCENARIOS["S2"], SCENARIOS["S3a"]


def _reference(sql, scenario, total, bs, seed=0, random=False):
    return vk.run_sql(sql, list(stream_for(scenario, total, bs, seed=seed, random=random)),
                      processor="v1")


def test_three_concurrent_jobs_on_v1_v2_and_v2_affinity():
    procs = {"a": "v1", "b": "v2:2", "c": "v2:2:affinity"}
    src = "scenario:S3a?total=300000&seed=4&random=1"
    with StreamJobServer(processor_config="v1") as server:
        jobs = {n: server.deploy(n, S3A, src, processor=p, batch_size=20_000)
                for n, p in procs.items()}
        server.deploy("d", S2, "scenario:S2?total=200000&seed=1", batch_size=50_000)
        statuses = server.wait(timeout=600)
    assert statuses == {"a": "finished", "b": "finished", "c": "finished", "d": "finished"}
    ref = _reference(S3A, "S3a", 300_000, 20_000, seed=4, random=True)
    for n, job in jobs.items():
        assert job.sink.result().equals(ref, bitwise=True), n
        m = server.metrics(n)
        assert m["records_in"] == 300_000 and m["batches"] == 15
        assert m["records_out"] == len(ref)
        assert m["processor"] == procs[n]
        assert sum(m["partition_records"]) == 300_000
        assert m["latency_ms"]["p50"] > 0 and m["latency_ms"]["max"] >= m["latency_ms"]["p99"]
    assert len(server.metrics("b")["partition_records"]) == 2
    assert server.metrics("b")["load_balance"] >= 1.0
    assert server.job("d").processor.num_partitions == 1  # the server's config: v1
    assert server.job("d").sink.result().equals(
        _reference(S2, "S2", 200_000, 50_000, seed=1), bitwise=True)


def test_a_failing_job_does_not_take_the_others_down(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,price\nA,1.5\nB,2.5\nC\nD,3.0\n")
    with StreamJobServer() as server:
        server.deploy("bad", "SELECT symbol, price FROM t", str(bad),
                      processor="v2:2", batch_size=2)
        server.deploy("good", S2, "scenario:S2?total=100000", processor="v2:2",
                      batch_size=10_000)
        st = server.wait(timeout=300)
    assert st == {"bad": "failed", "good": "finished"}
    err = server.metrics("bad")["error"]
    assert "bad.csv" in err and "line 4" in err
    assert isinstance(server.job("bad").error, SourceError)
    with pytest.raises(KeyError, match="no job named 'zzz'"):
        server.job("zzz")


def test_bad_query_or_config_fails_at_deployment():
    server = StreamJobServer()
    with pytest.raises(vk.PlanError):
        server.deploy("q", "SELECT FROM WHERE", "scenario:S2")
    with pytest.raises(vk.ConfigError):
        server.deploy("q", S2, "scenario:S2", processor="v3")
    assert server.jobs == []


def test_on_error_skip_counts_the_rejected_batch():
    good = {"k": np.arange(5), "x": np.arange(5.0)}
    batches = [good, {"k": np.arange(3), "y": np.ones(3)}, good]
    job = StreamJob("SELECT k, SUM(x) AS sx FROM t GROUP BY k EMIT FINAL", batches,
                    processor="v1", on_error="skip")
    m = job.run()
    assert m["status"] == "finished" and m["records_rejected"] == 3
    assert job.sink.result().to_pydict()["sx"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    job = StreamJob("SELECT k, SUM(x) AS sx FROM t GROUP BY k", batches, processor="v1")
    with pytest.raises(JobFailed, match=r"batch 1: .*lacks column"):
        job.run()
    assert job.status == "failed"


def _job(tmp_path, out, cp, sql=S3A, **kw):
    return StreamJob(sql, "scenario:S3a?total=240000&seed=5&random=1", str(out),
                     processor=kw.pop("processor", "v2:2"), batch_size=20_000,
                     late_sink=str(tmp_path / f"late-{out.stem}.parquet"),
                     checkpoint_dir=cp, checkpoint_every=kw.pop("checkpoint_every", 2), **kw)


def test_graceful_stop_then_restart_equals_uninterrupted(tmp_path):
    ref_out = tmp_path / "ref.parquet"
    _job(tmp_path, ref_out, None).run()
    for stop_at in (1, 4, 7):
        out = tmp_path / f"out{stop_at}.parquet"
        cp = tmp_path / f"cp{stop_at}"
        job = _job(tmp_path, out, cp)

        def progress(m, job=job, stop_at=stop_at):
            if m["batches"] == stop_at:
                job.stop()

        job.on_progress = progress
        m = job.run()
        assert m["status"] == "stopped" and m["batches"] == stop_at
        # the stopped job's file holds what it emitted so far, and is readable
        assert pq.read_table(out).num_rows <= pq.read_table(ref_out).num_rows
        job2 = _job(tmp_path, out, cp)
        m2 = job2.run()
        assert m2["status"] == "finished" and m2["resumed_from_batch"] == stop_at
        assert m2["records_in"] == 240_000
        assert out.read_bytes() == ref_out.read_bytes()
        late, ref_late = tmp_path / f"late-{out.stem}.parquet", tmp_path / "late-ref.parquet"
        assert late.read_bytes() == ref_late.read_bytes()
        # a finished job run again does nothing and leaves its files as they are
        assert _job(tmp_path, out, cp).run()["status"] == "finished"
        assert out.read_bytes() == ref_out.read_bytes()
    assert pq.read_table(ref_out).equals(
        _reference(S3A, "S3a", 240_000, 20_000, seed=5, random=True).to_arrow())


def test_checkpoint_of_another_job_is_refused_and_left_alone(tmp_path):
    out, cp = tmp_path / "out.parquet", tmp_path / "cp"
    job = _job(tmp_path, out, cp)
    job.on_progress = lambda m: job.stop() if m["batches"] == 3 else None
    job.run()
    before = (cp / "checkpoint.vkcp").read_bytes()
    other = S3A.replace("COUNT(*)", "COUNT(*) + 1") if "COUNT(*)" in S3A else S3A + " "
    for bad in (_job(tmp_path, out, cp, sql=other), _job(tmp_path, out, cp, processor="v2:3")):
        with pytest.raises(JobFailed) as info:
            bad.run()
        assert isinstance(info.value.__cause__, CheckpointError)
        assert "belongs to another job" in str(info.value)
    assert (cp / "checkpoint.vkcp").read_bytes() == before
    assert _job(tmp_path, out, cp).run()["status"] == "finished"


def test_corrupt_input_fails_clearly_and_the_checkpoint_stays_usable(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    batches = list(stream_for("S2", 60_000, 10_000, seed=3))
    tables = [b.to_arrow() for b in batches]
    for i in range(3):
        pq.write_table(pa.concat_tables(tables[2 * i:2 * i + 2]), data / f"part-{i}.parquet",
                       row_group_size=5_000)
    good = (data / "part-2.parquet").read_bytes()
    (data / "part-2.parquet").write_bytes(good[: len(good) // 2])  # truncated
    out, cp = tmp_path / "out.csv", tmp_path / "cp"

    def job():
        return StreamJob(S2, str(data), str(out), processor="v2:2", batch_size=10_000,
                         checkpoint_dir=cp, checkpoint_every=1)

    with pytest.raises(JobFailed, match=r"part-2\.parquet") as info:
        job().run()
    assert isinstance(info.value.__cause__, SourceError)
    assert not out.exists()
    (data / "part-2.parquet").write_bytes(good)  # the file is repaired
    m = job().run()
    assert m["resumed_from_batch"] == 4 and m["status"] == "finished"
    ref = tmp_path / "ref.csv"
    StreamJob(S2, str(data), str(ref), processor="v1", batch_size=10_000).run()
    assert out.read_bytes() == ref.read_bytes()


_CHILD = textwrap.dedent("""
    import sys
    from velokern.server import StreamJob
    out, cp = sys.argv[1], sys.argv[2]
    job = StreamJob({sql!r}, "scenario:S3a?total=300000&seed=9&random=1", out,
                    processor="v2:2", batch_size=10_000, checkpoint_dir=cp,
                    checkpoint_every=3)
    job.on_progress = lambda m: print("batch", m["batches"], flush=True)
    job.run()
    print("done", flush=True)
""").format(sql=S3A)


def _child(out, cp):
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(out), str(cp)],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_kill_9_at_several_points_then_restart_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref.parquet"
    p = _child(ref, tmp_path / "ref-cp")
    assert p.wait(timeout=300) == 0
    out, cp = tmp_path / "out.parquet", tmp_path / "cp"
    for kill_after in (2, 8, 13, 22):
        p = _child(out, cp)
        for line in p.stdout:
            if line.startswith("batch") and int(line.split()[1]) >= kill_after:
                p.send_signal(signal.SIGKILL)
                break
        p.wait(timeout=60)
        assert p.returncode == -signal.SIGKILL
        assert Path(cp, "checkpoint.vkcp").exists() or kill_after < 3
    p = _child(out, cp)
    lines = p.communicate(timeout=300)[0].split("\n")
    assert p.returncode == 0 and "done" in lines
    assert out.read_bytes() == ref.read_bytes()
    assert pq.read_table(out).equals(
        _reference(S3A, "S3a", 300_000, 10_000, seed=9, random=True).to_arrow())


def test_kill_9_at_random_times(tmp_path):
    """Kills that land anywhere (inside a checkpoint write, a sink commit...)."""
    ref = tmp_path / "ref.parquet"
    p = _child(ref, tmp_path / "ref-cp")
    assert p.stdout.readline().startswith("batch")
    t0 = time.monotonic()
    p.communicate(timeout=300)
    span = time.monotonic() - t0  # the job's processing time, start-up excluded
    assert p.returncode == 0
    out, cp = tmp_path / "out.parquet", tmp_path / "cp"
    rng = np.random.default_rng(11)
    kills = 0
    for _ in range(3):
        p = _child(out, cp)
        line = p.stdout.readline()
        if line.startswith("done"):  # the run before got to the end before its kill
            assert p.wait(timeout=60) == 0
            break
        assert line.startswith("batch")  # started processing
        # a kill within the first half of the job's processing time lands mid-job
        time.sleep(float(rng.uniform(0.0, 0.5 * span)))
        p.kill()
        p.wait(timeout=60)
        kills += p.returncode == -signal.SIGKILL
    assert kills >= 1  # at least the first kill landed while the job ran
    p = _child(out, cp)
    p.communicate(timeout=300)
    assert p.returncode == 0
    assert out.read_bytes() == ref.read_bytes()


def test_latencies_are_bounded_and_progress_is_cheap(monkeypatch):
    import velokern.server as server

    monkeypatch.setattr(server, "LATENCY_WINDOW", 3)
    seen = []
    job = StreamJob(S2, "scenario:S2?total=50000", processor="v1", batch_size=5_000,
                    on_progress=seen.append)
    m = job.run()
    assert len(job._latencies) == 3 and m["latency_ms"]["p50"] > 0
    assert [p["batches"] for p in seen] == list(range(1, 11))
    assert seen[-1]["records_in"] == 50_000 and "latency_ms" not in seen[-1]
