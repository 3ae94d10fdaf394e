"""Processor configs, the factory, V1/V2 metadata and interchangeability, strategies,
core affinity read back from the workers, and concurrent V2 jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from conftest import assert_batches_identical, cut, make_stream, run, to_batch
from numba import njit

import velokern as vk
from velokern import config
from velokern.processors import (
    ConfigError,
    JobProcessor,
    JobProcessorConfig,
    JobProcessorFactory,
    PartitionedJobCoordinator,
    SimpleJobProcessor,
    StrategyError,
)
from velokern.processors.threading import available_cpus, worker_affinity

GROUP_SQL = "SELECT k, COUNT(*) AS n, SUM(f) AS sf FROM t GROUP BY k"
FILTER_SQL = "SELECT seq, k, f FROM t WHERE f > 0"


# ----------------------------------------------------------------- config strings
@pytest.mark.parametrize(
    "text, normal, version, n, affinity, strategy",
    [
        ("v1", "v1", "V1", None, False, None),
        ("  V1 ", "v1", "V1", None, False, None),
        ("v2", "v2", "V2", None, False, None),
        ("V2", "v2", "V2", None, False, None),
        ("v2:8", "v2:8", "V2", 8, False, None),
        (" v2:1 ", "v2:1", "V2", 1, False, None),
        ("v2:affinity", "v2:affinity", "V2", None, True, None),
        ("v2:8:affinity", "v2:8:affinity", "V2", 8, True, None),
        ("V2:8:AFFINITY", "v2:8:affinity", "V2", 8, True, None),
        ("v2:8:hash", "v2:8:hash", "V2", 8, False, "hash"),
        ("v2:round_robin", "v2:round_robin", "V2", None, False, "round_robin"),
        ("v2:4:affinity:sticky", "v2:4:affinity:sticky", "V2", 4, True, "sticky"),
        ("v2:smart", "v2:smart", "V2", None, False, "smart"),
        ("v2:2:fan_in", "v2:2:fan_in", "V2", 2, False, "fan_in"),
    ],
)
def test_parse_accepts(text, normal, version, n, affinity, strategy):
    cfg = JobProcessorConfig.parse(text)
    assert (cfg.version, cfg.num_partitions, cfg.enable_core_affinity, cfg.strategy) == (
        version, n, affinity, strategy)
    assert str(cfg) == normal
    assert JobProcessorConfig.parse(str(cfg)) == cfg


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("v3", "'v3'"),
        ("v2:0", ">= 1, got 0"),
        ("v2:-1", ">= 1, got -1"),
        ("v2:foo", "'foo'"),
        ("v2:8:8", "twice"),
        ("", "empty"),
        ("   ", "empty"),
        ("v1:4", "v1 takes no options"),
        ("v1:affinity", "v1 takes no options"),
        ("v2:affinity:affinity", "twice"),
        ("v2:hash:sticky", "twice"),
        ("v2:hash:8", "right after v2"),
        ("v2:hash:affinity", "before the strategy"),
        ("v2:", "''"),
    ],
)
def test_parse_rejects(text, fragment):
    with pytest.raises(ConfigError) as exc:
        JobProcessorConfig.parse(text)
    assert fragment in str(exc.value)


def test_config_objects_and_descriptions():
    assert JobProcessorConfig.V1().description() == "V1 (single partition, serial)"
    assert JobProcessorConfig.V2(8, True).description() == "V2 (8 partitions, core affinity)"
    assert JobProcessorConfig.V2(1).description() == "V2 (1 partition, no core affinity)"
    assert "hash strategy" in JobProcessorConfig.V2(2, strategy="hash").description()
    assert "one per available CPU" in JobProcessorConfig.V2().description()
    pj = JobProcessorConfig.V2(3, True, "hash").to_partitioned_job_config()
    assert (pj.num_partitions, pj.enable_core_affinity, pj.strategy) == (3, True, "hash")
    assert JobProcessorConfig.V2().to_partitioned_job_config().num_partitions == max(
        1, len(available_cpus()) or 8)
    assert JobProcessorConfig() == JobProcessorConfig.V2()
    with pytest.raises(ConfigError):
        JobProcessorConfig.V2(0)
    with pytest.raises(ConfigError):
        JobProcessorConfig.V2(2, strategy="nope")
    with pytest.raises(ConfigError):
        JobProcessorConfig("V1", num_partitions=4)


def test_environment_default(monkeypatch):
    monkeypatch.delenv("VELOKERN_PROCESSOR", raising=False)
    assert JobProcessorConfig.default() == JobProcessorConfig.V2()
    monkeypatch.setenv("VELOKERN_PROCESSOR", "v2:3:affinity")
    assert JobProcessorConfig.default() == JobProcessorConfig.V2(3, True)
    assert JobProcessorFactory.create().num_partitions == 3
    monkeypatch.setenv("VELOKERN_PROCESSOR", "v1")
    assert isinstance(JobProcessorFactory.create(None), SimpleJobProcessor)
    monkeypatch.setenv("VELOKERN_PROCESSOR", "v9")
    with pytest.raises(ConfigError, match="VELOKERN_PROCESSOR"):
        JobProcessorConfig.default()


# ----------------------------------------------------------------- factory / metadata
def test_factory_and_metadata():
    v1 = JobProcessorFactory.create_v1()
    assert (v1.processor_name, v1.processor_version, v1.num_partitions) == (
        "SimpleJobProcessor", "V1", 1)
    v2 = JobProcessorFactory.create_v2_with_partitions(5)
    assert isinstance(v2, PartitionedJobCoordinator)
    assert (v2.processor_name, v2.processor_version, v2.num_partitions) == (
        "PartitionedJobCoordinator", "V2", 5)
    assert JobProcessorFactory.create_v2_default().num_partitions == \
        JobProcessorConfig.V2().to_partitioned_job_config().num_partitions
    assert JobProcessorFactory.create_from_str("v2:2:affinity").enable_core_affinity
    assert JobProcessorFactory.create(JobProcessorConfig.V2(4)).num_partitions == 4
    for p in (v1, v2):
        assert isinstance(p, JobProcessor)
        with pytest.raises(AttributeError):
            p.num_partitions = 3  # read-only
    with pytest.raises(ConfigError):
        JobProcessorFactory.create_from_str("v2:0")


def test_processors_are_interchangeable(stream_batch):
    batches = cut(stream_batch, [100, 900, 2000])

    def drive(proc: JobProcessor, sql: str):
        engine = vk.StreamExecutionEngine(sql)
        outs = [proc.process_batch(b, engine) for b in batches]
        return outs + [proc.flush(engine)]

    for sql in (GROUP_SQL, FILTER_SQL):
        ref = drive(SimpleJobProcessor(), sql)
        for proc in (PartitionedJobCoordinator(2), PartitionedJobCoordinator(3),
                     JobProcessorFactory.create("v2:8")):
            assert_batches_identical(ref, drive(proc, sql), f"{sql} {proc}")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one CPU: one worker")
def test_v1_and_v2_share_one_compiled_kernel(stream_batch, monkeypatch):
    """V2's prange wrapper passes its loop index (unsigned in numba) on as int64, so V2
    reuses the per-partition kernel V1 compiled instead of compiling a second signature
    (seconds per query); end of input has no parallel wrapper to compile at all."""
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)  # every batch on both workers
    batches = cut(stream_batch, [100, 900, 2000])
    e1, e2 = vk.StreamExecutionEngine(GROUP_SQL), vk.StreamExecutionEngine(GROUP_SQL)
    p1, p2 = SimpleJobProcessor(), PartitionedJobCoordinator(2)
    for b in batches:
        p1.process_batch(b, e1)
        p2.process_batch(b, e2)
    p1.flush(e1)
    p2.flush(e2)
    module = e2.inputs.variant()[1]
    assert e1.inputs.variant()[1] is module
    assert len(module.batch_part.signatures) == 1
    assert len(module.batch_all.signatures) == 1
    assert not hasattr(module, "emit_all") and not hasattr(module, "close_all")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one CPU: one worker")
def test_parallel_wrapper_calls_the_kernel_by_address(stream_batch, monkeypatch):
    """The prange wrapper calls batch_part through the address it is given: a direct
    call would link batch_part's code into the wrapper and optimize it again (as long
    to compile as the kernel itself). Checked on the wrapper's LLVM IR (compiled here,
    uncached, so numba has it to show)."""
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)  # every batch on both workers
    e = vk.StreamExecutionEngine(GROUP_SQL)
    p = PartitionedJobCoordinator(2)
    for b in cut(stream_batch, [1000, 2000]):
        p.process_batch(b, e)
    module = e.inputs.variant()[1]
    (sig,) = module.batch_all.signatures
    wrapper = njit(sig, parallel=True)(module.batch_all.py_func)
    defined = [ln for ln in wrapper.inspect_llvm(sig).splitlines() if ln.startswith("define")]
    assert any("batch_all" in ln for ln in defined)
    assert not any("batch_part" in ln or "update_part" in ln for ln in defined)
    # the address is that of the very kernel V1 runs, for the wrapper's argument types
    assert len(module.batch_part.signatures) == 1


def test_empty_batches_and_big_batch():
    cols = make_stream(10_000, seed=2, keys=100)
    big = to_batch(cols)
    empty = big.slice(0, 0)
    for sql in (GROUP_SQL, FILTER_SQL):
        ref = run(sql, [empty, big, empty], "v1")
        assert len(ref[0]) == 0 and ref[0].column_names == ref[1].column_names
        for cfg in ("v2:2", "v2:3", "v2:8"):
            assert_batches_identical(ref, run(sql, [empty, big, empty], cfg), cfg)
    assert len(run(GROUP_SQL, [big], "v1")[0]) == 100


def test_empty_stream_flush():
    for sql, rows in ((GROUP_SQL + " EMIT FINAL", 0), ("SELECT COUNT(*) AS n FROM t EMIT FINAL",
                                                       1)):
        engine = vk.StreamExecutionEngine(sql, schema={"k": "int64", "f": "float64"})
        out = SimpleJobProcessor().flush(engine)
        assert len(out) == rows
    engine = vk.StreamExecutionEngine("SELECT COUNT(*) AS n FROM t EMIT FINAL",
                                      schema={"k": "int64"})
    assert PartitionedJobCoordinator(3).flush(engine).to_pydict() == {"n": [0]}


def test_partition_column_batch_and_sticky():
    cols = make_stream(2000, seed=8, keys=30)
    b = to_batch(cols, extra={"__partition__": np.asarray(cols["k"]) % 4})
    batches = cut(b, [500, 700])
    ref = run(GROUP_SQL, batches, "v1")
    sticky = PartitionedJobCoordinator(3, strategy="sticky", keyed_by=["k"])
    assert_batches_identical(ref, run(GROUP_SQL, batches, sticky), "sticky keyed by k")
    smart = PartitionedJobCoordinator(3, strategy="smart", keyed_by=["k"])
    assert_batches_identical(ref, run(GROUP_SQL, batches, smart), "smart keyed by k")
    engine = vk.StreamExecutionEngine(GROUP_SQL)
    assert smart.strategy_for(engine).describe(engine) == "sticky"
    assert PartitionedJobCoordinator(3, strategy="smart").strategy_for(engine).describe(
        engine) == "hash"
    # stateless: sticky routes by the column and still keeps input order
    ref = run(FILTER_SQL, batches, "v1")
    assert_batches_identical(ref, run(FILTER_SQL, batches, "v2:3:sticky"), "sticky stateless")
    # the partition column can be selected like any other
    out = vk.run_sql("SELECT __partition__ AS p FROM t", batches, "v2:2:sticky")
    assert out["p"].tolist() == b["__partition__"].tolist()


def test_invalid_strategies_are_rejected_at_setup(stream_batch):
    cases = [
        (FILTER_SQL, "hash", "GROUP BY keys"),
        (GROUP_SQL, "round_robin", "stateless"),
        (GROUP_SQL, "fan_in", "stateless"),
        (GROUP_SQL, "sticky", "keyed_by"),
    ]
    for sql, strategy, fragment in cases:
        engine = vk.StreamExecutionEngine(sql)
        proc = PartitionedJobCoordinator(2, strategy=strategy)
        with pytest.raises(StrategyError, match=fragment):
            proc.validate(engine)
        with pytest.raises(StrategyError):
            proc.process_batch(stream_batch, engine)
        assert engine.metrics["records_in"] == 0
    # keyed by a column that is not a GROUP BY column does not make sticky safe
    with pytest.raises(StrategyError):
        PartitionedJobCoordinator(2, strategy="sticky", keyed_by=["s"]).validate(
            vk.StreamExecutionEngine(GROUP_SQL))


def test_sticky_without_partition_column_leaves_state_unchanged(stream_batch):
    engine = vk.StreamExecutionEngine(FILTER_SQL)
    proc = PartitionedJobCoordinator(2, strategy="sticky")
    with pytest.raises(StrategyError, match="__partition__"):
        proc.process_batch(stream_batch, engine)
    m = engine.metrics
    assert m["records_in"] == 0 and m["records_rejected"] == len(stream_batch)


@pytest.mark.parametrize("bad_partition", [
    np.array([0.5, 1.5, 2.5, 3.5]),      # not integers
    np.array([0, -1, 2, 3]),             # a negative partition
])
def test_sticky_refused_first_batch_leaves_schema_unfixed(bad_partition):
    """A first batch refused by the strategy does not fix the job's schema: a second
    batch with another valid schema is accepted and answers as on a fresh job."""
    first = vk.as_batch({"k": np.array([1, 2, 3, 4], np.int32),
                         "f": np.array([1.0, 2.0, 3.0, 4.0]),
                         "__partition__": bad_partition})
    second = vk.as_batch({"k": np.array([7, 8, 7, 9], np.int64),
                          "f": np.array([10, 20, 30, 40], np.int64),
                          "__partition__": np.array([0, 1, 0, 1])})
    for strategy in ("sticky", "smart"):
        engine = vk.StreamExecutionEngine(GROUP_SQL)
        proc = PartitionedJobCoordinator(2, strategy=strategy, keyed_by=["k"])
        with pytest.raises(StrategyError, match="__partition__"):
            proc.process_batch(first, engine)
        assert engine.schema is None
        assert engine.metrics["batches_rejected"] == 1
        out = proc.process_batch(second, engine)
        fresh_engine = vk.StreamExecutionEngine(GROUP_SQL)
        fresh = PartitionedJobCoordinator(2, strategy=strategy, keyed_by=["k"]).process_batch(
            second, fresh_engine)
        assert out.equals(fresh, bitwise=True)
        assert engine.schema == fresh_engine.schema
        assert out.to_pydict() == {"k": [7, 8, 9], "n": [2, 1, 1], "sf": [40, 20, 40]}


def test_metrics_count_every_record(stream_batch):
    engine = vk.StreamExecutionEngine(FILTER_SQL)
    proc = PartitionedJobCoordinator(3)
    out = [proc.process_batch(b, engine) for b in cut(stream_batch, [1000, 1000])]
    m = engine.metrics
    assert m["records_in"] == len(stream_batch)
    assert m["records_filtered"] + m["records_emitted"] == len(stream_batch)
    assert m["records_emitted"] == sum(len(o) for o in out)
    assert sum(m["partition_records"]) == len(stream_batch)
    assert len(m["partition_records"]) == 3


def test_engine_cannot_be_resharded(stream_batch):
    engine = vk.StreamExecutionEngine(GROUP_SQL)
    PartitionedJobCoordinator(2).process_batch(stream_batch, engine)
    with pytest.raises(ValueError, match="already sharded into 2"):
        PartitionedJobCoordinator(3).process_batch(stream_batch, engine)


# ----------------------------------------------------------------- affinity, threads
@pytest.mark.skipif(len(available_cpus()) < 2, reason="needs 2 CPUs")
def test_core_affinity_read_back_from_workers(stream_batch):
    """Each V2 worker thread runs on its own core, as read by the worker itself."""
    result = {}

    def job():
        try:
            result["caller"] = os.sched_getaffinity(0)
            proc = JobProcessorFactory.create("v2:2:affinity")
            engine = vk.StreamExecutionEngine(GROUP_SQL)
            proc.process_batch(stream_batch, engine)
            result["affinity"] = worker_affinity(proc.num_threads)
        except Exception as exc:
            result["error"] = exc

    # a thread of its own: its OpenMP team is separate from the test runner's
    t = threading.Thread(target=job)
    t.start()
    t.join()
    assert "error" not in result, result.get("error")
    sets = result["affinity"]
    cpus = available_cpus()
    assert len(sets) == 2
    # worker 0 is the calling thread: never pinned; worker 1 runs on a core of its own
    assert sets[0] == result["caller"], sets
    assert len(sets[1]) == 1 and sets[1] <= set(cpus), sets


def _cpus_seen_by_a_subprocess() -> int:
    out = subprocess.run([sys.executable, "-c",
                          "import os; print(len(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


@pytest.mark.skipif(len(available_cpus()) < 2,
                    reason="needs 2 CPUs: with one, no worker is pinned beside the caller")
def test_core_affinity_leaves_the_calling_thread_alone(stream_batch):
    """V2 with affinity pins worker threads only: the calling thread's CPU set is the
    same after every batch, after the flush and after a batch that raised, and a
    subprocess it starts afterwards sees every CPU."""
    before = os.sched_getaffinity(0)
    try:
        after = []
        proc = JobProcessorFactory.create("v2:2:affinity")
        engine = vk.StreamExecutionEngine(GROUP_SQL)
        for b in cut(stream_batch, [1000, 1000]):
            proc.process_batch(b, engine)
            after.append(os.sched_getaffinity(0))
        proc.flush(engine)
        after.append(os.sched_getaffinity(0))
        # an exception in the middle of a batch, after a fresh coordinator pinned
        proc = JobProcessorFactory.create("v2:2:affinity")
        engine = vk.StreamExecutionEngine(GROUP_SQL)

        def fail(prep, routing):
            raise RuntimeError("failed in the middle of the batch")

        engine.execute = fail
        with pytest.raises(RuntimeError, match="middle of the batch"):
            proc.process_batch(stream_batch, engine)
        after.append(os.sched_getaffinity(0))
        assert after == [before] * len(after)
        assert _cpus_seen_by_a_subprocess() == len(before)
        assert len(before) >= 2
        # the workers beside the caller are pinned, each to a core of its own
        workers = worker_affinity(proc.num_threads)
        assert workers[0] == before and len(workers[1]) == 1, workers
    finally:
        os.sched_setaffinity(0, before)  # (the test runner's thread, whatever happened)


def test_concurrent_v2_jobs_in_threads():
    cols = make_stream(20_000, seed=21, keys=50)
    b = to_batch(cols)
    batches = cut(b, [3000] * 7)
    jobs = {
        "group": GROUP_SQL,
        "filter": FILTER_SQL,
        "final": "SELECT s, MAX(f) AS m, COUNT(DISTINCT k) AS d FROM t GROUP BY s EMIT FINAL",
    }
    expected = {name: run(sql, batches, "v1") for name, sql in jobs.items()}
    for sql in jobs.values():  # compile the parallel kernels before the race
        run(sql, batches[:1], "v2:2")
    results, errors = {}, []

    def worker(name, sql, rep):
        try:
            for _ in range(3):
                results[(name, rep)] = run(sql, batches, "v2:2")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n, s, r)) for n, s in jobs.items()
               for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (name, _), outs in results.items():
        assert_batches_identical(expected[name], outs, f"concurrent {name}")


def test_one_coordinator_serves_several_jobs(stream_batch):
    """A coordinator keeps a validated strategy per engine, never another engine's."""
    proc = PartitionedJobCoordinator(2)
    for sql in (GROUP_SQL, FILTER_SQL, GROUP_SQL, FILTER_SQL):
        engine = vk.StreamExecutionEngine(sql)
        out = proc.process_batch(stream_batch, engine)
        ref = SimpleJobProcessor().process_batch(stream_batch, vk.StreamExecutionEngine(sql))
        assert out.equals(ref, bitwise=True)
        del engine


@pytest.mark.parametrize("scenario", ["S1", "S3a"])
def test_outputs_kept_across_batches_stay_as_emitted(scenario):
    """An output that took over the engine's output buffers (no copy) is never written
    by a later batch: every kept output still equals a copy taken when it came out, on
    V1 and V2; an output much smaller than the buffers is a copy, not a view of them."""
    from velokern.datagen import SCENARIOS, stream_for

    batches = list(stream_for(scenario, 40_000, 10_000))
    for cfg in ("v1", "v2:2"):
        engine = vk.StreamExecutionEngine(SCENARIOS[scenario])
        proc = vk.JobProcessorFactory.create(cfg)
        kept, copies = [], []
        for b in batches:
            out = proc.process_batch(b, engine)
            kept.append(out)
            copies.append(out.take(np.arange(out.num_rows)))  # new arrays
        for i, (a, c) in enumerate(zip(kept, copies)):
            assert a.equals(c, bitwise=True), f"{cfg}: output {i} changed after it came out"
    engine = vk.StreamExecutionEngine(SCENARIOS["S2"])
    out = vk.SimpleJobProcessor().process_batch(next(stream_for("S2", 10_000, 10_000)),
                                                engine)
    col = out.column("trade_count")
    assert col.base is None or col.base.nbytes <= 8 * out.num_rows * 8


def test_threaded_routing_of_large_batches(monkeypatch):
    """Batches of PARALLEL_MIN_ROWS rows and more are hashed and bucketed on the
    worker threads (the shim's OpenMP team), and a ROWS window's output rows scattered
    back into input order on the numba workers: V2 stays V1 bit for bit, also with two
    V2 jobs at once from two Python threads."""
    from velokern import _shim
    from velokern.config import PARALLEL_MIN_ROWS

    cols = make_stream(2 * PARALLEL_MIN_ROWS + 11, seed=23, keys=300)
    b = to_batch(cols)
    batches = [b, b.slice(0, 5_000), b]
    seen = []
    real = _shim.bucket_by_keys

    def spy(keys, n, threads=1):
        seen.append((len(keys[0]), n, threads))
        return real(keys, n, threads)

    monkeypatch.setattr(_shim, "bucket_by_keys", spy)
    sqls = (GROUP_SQL, "SELECT s, k, COUNT(*) AS c, SUM(f) AS sf FROM t GROUP BY s, k",
            # one output row per input row: scattered back into input order on the workers
            "SELECT s, f, AVG(f) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY s "
            "ORDER BY seq) AS m FROM t")
    expected = {sql: run(sql, batches, "v1") for sql in sqls}
    for sql in sqls:
        for cfg in ("v2:2", "v2:3"):
            assert_batches_identical(expected[sql], run(sql, batches, cfg), cfg)
    threads = min(2, max(len(available_cpus()), 1))
    assert (len(b), 2, threads) in seen and (5_000, 2, 1) in seen
    results, errors = {}, []

    def worker(sql):
        try:
            results[sql] = run(sql, batches * 2, "v2:2")
        except Exception as exc:
            errors.append(exc)

    ts = [threading.Thread(target=worker, args=(sql,)) for sql in sqls]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for sql in sqls:
        assert_batches_identical(run(sql, batches * 2, "v1"), results[sql], "concurrent")


def test_merged_group_rows_gathered_on_the_workers(monkeypatch):
    """Windowed GROUP BY under V2 merges the partitions' group rows and gathers them;
    with 32k+ rows both run on the V2 job's numba workers (4 chunks forced here, more
    than this machine's CPUs): V1's output bit for bit. The engine asks for the workers
    only in V2 jobs with enough rows."""
    from velokern.config import PARALLEL_MIN_ROWS
    from velokern.exec.output import OutputStage

    cols = make_stream(2 * PARALLEL_MIN_ROWS, seed=29, keys=5_000)
    b = to_batch(cols)
    sql = ("SELECT k, s, COUNT(*) AS n, SUM(f) AS sf FROM t GROUP BY k, s "
           "WINDOW TUMBLING (seq, INTERVAL '2000' MILLISECOND)")
    batches = [b, b.slice(0, 1_000)]
    expected = run(sql, batches, "v1")
    asked = []
    real = OutputStage.worker_threads

    def four(self, rows):
        asked.append((self.ctx.num_partitions, rows, real(self, rows)))
        return 4 if real(self, rows) > 1 else 1

    monkeypatch.setattr(OutputStage, "worker_threads", four)
    for cfg in ("v2:2", "v2:3"):
        assert_batches_identical(expected, run(sql, batches, cfg), cfg)
    threads = min(2, max(len(available_cpus()), 1))
    assert any(rows >= PARALLEL_MIN_ROWS and t == threads for _, rows, t in asked)
    assert all(t == 1 for _, rows, t in asked if rows < PARALLEL_MIN_ROWS)


def test_flush_runs_under_the_parallel_guard(monkeypatch):
    """Flushing a V2 job can merge and gather the last windows' rows on the numba
    workers, so it runs under the same guard as a batch (on a layer that is not
    thread-safe, one parallel call at a time), with the job's thread count set."""
    import contextlib

    from velokern.processors import partitioned

    entered = []

    @contextlib.contextmanager
    def guard():
        entered.append(numba.get_num_threads())
        yield

    monkeypatch.setattr(partitioned, "parallel_guard", guard)
    b = to_batch(make_stream(5_000, seed=31, keys=50))
    sql = ("SELECT k, COUNT(*) AS n FROM t GROUP BY k "
           "WINDOW TUMBLING (seq, INTERVAL '1000' MILLISECOND)")
    proc = vk.JobProcessorFactory.create("v2:2")
    eng = vk.StreamExecutionEngine(sql)
    proc.process_batch(b, eng)
    numba.set_num_threads(1)
    entered.clear()
    proc.flush(eng)
    assert entered == [proc.num_threads]
