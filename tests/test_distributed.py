"""velokern.distributed.run_sql on a real distributed.LocalCluster (2 worker processes
on loopback): reference scenarios over a Parquet dataset of 8 files equal the local V1
run; a worker killed mid-run is survived; a corrupt file fails with its name."""

from __future__ import annotations

import os
import signal
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_distributed_merge import assert_close, local_final

import velokern as vk
from velokern.datagen import SCENARIOS, stream_for
from velokern.io import ParquetSource, SourceError
from velokern.plan import PlanError

distributed = pytest.importorskip("distributed")
from velokern.distributed import run_sql  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _dataset(tmp_path, name, total=80_000, files=8, seed=5):
    d = tmp_path / name
    d.mkdir()
    batches = list(stream_for(name, total, total // files, seed=seed, random=name != "S0"))
    for i, b in enumerate(batches):
        pq.write_table(b.to_arrow(), d / f"part-{i:02d}.parquet", row_group_size=4_000)
    return d, batches


@pytest.mark.parametrize("name", ["S0", "S2", "S3a", "S3b"])
def test_reference_scenarios_equal_the_local_run(client, tmp_path, name):
    d, batches = _dataset(tmp_path, name)
    seen = []
    got = run_sql(SCENARIOS[name], str(d), client, processor="v1", batch_size=3_000,
                  progress=lambda done, total: seen.append((done, total)))
    assert_close(got, local_final(SCENARIOS[name], batches))
    assert seen and seen[-1][0] == seen[-1][1]


def test_rows_windows_are_shuffled_by_key(client, tmp_path):
    d, batches = _dataset(tmp_path, "S1", total=40_000)
    got = run_sql(SCENARIOS["S1"], str(d), client, processor="v1", batch_size=3_000)
    assert got.equals(vk.run_sql(SCENARIOS["S1"], batches, processor="v1"), bitwise=True)
    sql = ("SELECT symbol, LAG(price) OVER (PARTITION BY symbol ORDER BY timestamp) AS prev, "
           "ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY timestamp) AS rn FROM t")
    got = run_sql(sql, [b.to_arrow() for b in batches], client, processor="v1")
    assert got.equals(vk.run_sql(sql, batches, processor="v1"), bitwise=True)
    # SELECT * passes the stream position through itself (was: duplicate column)
    sql = ("SELECT *, AVG(price) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY symbol "
           "ORDER BY timestamp) AS ma FROM t")
    got = run_sql(sql, str(d), client, processor="v1", batch_size=3_000)
    exp = vk.run_sql(sql, batches, processor="v1")
    assert got.column_names == exp.column_names and got.equals(exp, bitwise=True)
    # a state TTL is measured against the whole stream's watermark: refused, not wrong
    with pytest.raises(PlanError, match="state TTL cannot run distributed"):
        run_sql(sql + " WITH (state_ttl = '1s')", str(d), client, processor="v1")


def test_an_empty_answer_has_the_local_columns(client):
    """No row comes back: the answer still has the local job's columns and types (was:
    a batch without columns for a GROUP BY)."""
    batches = list(stream_for("S2", 6_000, 2_000, seed=1))
    for sql in ("SELECT symbol, COUNT(*) AS n, AVG(price) AS a FROM t WHERE price > 1e9 "
                "GROUP BY symbol EMIT FINAL",
                "SELECT symbol, price FROM t WHERE price > 1e9"):
        got = run_sql(sql, [b.to_arrow() for b in batches], client, processor="v1")
        exp = vk.run_sql(sql, batches, processor="v1")
        assert len(exp) == 0 and got.equals(exp, bitwise=True), sql
        assert got.column_names == exp.column_names == ["symbol", *exp.column_names[1:]]
        assert [got.type_of(c) for c in got.column_names] == [
            exp.type_of(c) for c in exp.column_names]


def test_session_windows_are_refused(client, tmp_path):
    d, _ = _dataset(tmp_path, "S3a", total=8_000)
    with pytest.raises(vk.PlanError, match="session windows"):
        run_sql("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol "
                "WINDOW SESSION(trade_time, 1s)", str(d), client)


def test_parallel_processor_on_workers_and_dask_dataframe_input(client, tmp_path):
    import dask.dataframe as dd

    d, batches = _dataset(tmp_path, "S0")
    ddf = dd.read_parquet(str(d))
    got = run_sql(SCENARIOS["S0"], ddf, client, processor="v2:2")
    exp = vk.run_sql(SCENARIOS["S0"], batches, processor="v1")
    assert got.equals(exp, bitwise=True)


def test_a_worker_killed_mid_run_is_survived(client, tmp_path):
    d, batches = _dataset(tmp_path, "S3a", total=160_000)
    pids = list(client.run(os.getpid).values())
    killed = threading.Event()

    def progress(done, total):
        if done == 2 and not killed.is_set():
            killed.set()
            os.kill(pids[0], signal.SIGKILL)

    got = run_sql(SCENARIOS["S3a"], str(d), client, processor="v1", batch_size=2_000,
                  progress=progress)
    assert killed.is_set()
    assert_close(got, local_final(SCENARIOS["S3a"], batches))
    client.wait_for_workers(2, timeout=120)


def test_a_corrupt_file_fails_naming_it(client, tmp_path):
    d, _ = _dataset(tmp_path, "S2", total=16_000)
    bad = d / "part-05.parquet"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(SourceError, match=r"part-05\.parquet"):
        run_sql(SCENARIOS["S2"], str(d), client, processor="v1")
    other = d / "part-06.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    bad.unlink()
    with pytest.raises(SourceError, match=r"part-06\.parquet"):
        run_sql(SCENARIOS["S2"], str(d), client, processor="v1")


def test_a_file_whose_column_changed_type_fails_naming_it(client, tmp_path):
    """Each part runs in its own engine; the driver holds every file to the first one's
    schema before any task runs, as a local ParquetSource over the files does, and
    in-memory parts to the first one's types with the engine's rule."""
    import pyarrow.compute as pc

    d, _ = _dataset(tmp_path, "S2", total=16_000)
    path = d / "part-03.parquet"
    t = pq.read_table(path)
    i = t.schema.get_field_index("price")
    t = t.set_column(i, "price", pc.cast(pc.round(t.column("price")), pa.int64()))
    pq.write_table(t, path)
    with pytest.raises(SourceError, match=r"part-03\.parquet: schema differs from the "
                       r"first file .*part-00\.parquet: column 'price' is int64"):
        run_sql(SCENARIOS["S2"], str(d), client, processor="v1")
    with pytest.raises(SourceError, match=r"part-03\.parquet: schema differs"):
        vk.run_sql(SCENARIOS["S2"], ParquetSource(str(d)).batches(), processor="v1")
    tables = [pq.read_table(d / f"part-0{i}.parquet") for i in range(4)]
    with pytest.raises(SourceError, match=r"part 3: column 'price' has type int64"):
        run_sql(SCENARIOS["S2"], tables, client, processor="v1")
