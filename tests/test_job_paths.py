"""A job whose sink would write over its input or over its other sink is refused before
it starts, naming both paths (symbolic links resolved); the input is left as it was."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from velokern.io import (
    ArrowIPCSink,
    ParquetSink,
    ParquetSource,
    PathConflictError,
    SinkError,
    check_job_paths,
)
from velokern.server import StreamJob, StreamJobServer

SQL = "SELECT k, SUM(x) AS sx FROM t GROUP BY k"
WINDOWED = "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, INTERVAL '5' SECOND)"

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt",
                                    reason="no symbolic links here")


def _write_source(path) -> str:
    table = pa.table({"k": np.arange(10) % 3, "x": np.arange(10.0)})
    pq.write_table(table, path)
    return _digest(path)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _refused(match_paths, *args, **kw):
    """StreamJob(*args, **kw) raises PathConflictError naming every one of match_paths."""
    with pytest.raises(PathConflictError) as info:
        StreamJob(*args, **kw)
    for p in match_paths:
        assert str(p) in str(info.value), (p, str(info.value))
    assert isinstance(info.value, SinkError) and isinstance(info.value, ValueError)
    return str(info.value)


def test_sink_and_late_sink_the_same_file(tmp_path):
    out = tmp_path / "out.parquet"
    msg = _refused([out], WINDOWED, [{"k": [1], "ts": [1]}], str(out), processor="v1",
                   late_sink=str(out))
    assert "same file" in msg and "late_sink" in msg
    # another spelling of the same path, and a Sink object
    _refused([out], WINDOWED, [{"k": [1], "ts": [1]}], ParquetSink(out), processor="v1",
             late_sink=str(tmp_path / "sub" / ".." / "out.parquet"))
    assert not os.listdir(tmp_path)  # nothing was created: no file, no staging directory


@needs_symlinks
def test_sink_and_late_sink_the_same_file_through_a_symlink(tmp_path):
    out = tmp_path / "out.arrow"
    link = tmp_path / "link.arrow"
    link.symlink_to(out)  # dangling until the job writes: still the same file
    msg = _refused([out, link], WINDOWED, [{"k": [1], "ts": [1]}], str(out), processor="v1",
                   late_sink=str(link))
    assert str(out.resolve()) in msg
    out.write_bytes(b"earlier output")
    _refused([out, link], WINDOWED, [{"k": [1], "ts": [1]}], ArrowIPCSink(link),
             processor="v1", late_sink=out)
    assert out.read_bytes() == b"earlier output"


def test_sink_is_the_source_file(tmp_path):
    src = tmp_path / "in.parquet"
    digest = _write_source(src)
    msg = _refused([src], SQL, str(src), str(src), processor="v1")
    assert "source" in msg and "overwrite" in msg
    _refused([src], SQL, ParquetSource(src), ParquetSink(src), processor="v1")
    _refused([src], SQL, [str(src)], "memory", processor="v1", late_sink=str(src))
    assert _digest(src) == digest
    assert sorted(os.listdir(tmp_path)) == ["in.parquet"]


@needs_symlinks
def test_sink_is_the_source_file_through_a_symlink(tmp_path):
    src = tmp_path / "in.parquet"
    digest = _write_source(src)
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "result.parquet"
    link.symlink_to(src)
    _refused([src, link], SQL, str(src), str(link), processor="v1")
    # a symlinked directory holding the source
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    _refused([src], SQL, str(src), str(tmp_path / "alias" / "in.parquet"), processor="v1")
    assert _digest(src) == digest


def test_sink_inside_a_source_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    digest = _write_source(data / "part-0.parquet")
    for sink in (data / "out.parquet", data / "sub" / "out.csv"):
        msg = _refused([data, sink], SQL, str(data), str(sink), processor="v1")
        assert "inside the job's source directory" in msg
    _refused([data], SQL, ParquetSource(data), ParquetSink(data / "out.parquet"),
             processor="v1")
    _refused([data], SQL, str(data), "memory", processor="v1",
             late_sink=str(data / "late.parquet"))
    assert sorted(os.listdir(data)) == ["part-0.parquet"]
    assert _digest(data / "part-0.parquet") == digest


def test_distinct_paths_are_accepted(tmp_path):
    src = tmp_path / "in.parquet"
    _write_source(src)
    # next to the source file, a list of source files, another directory: all fine
    job = StreamJob(SQL, str(src), str(tmp_path / "out.parquet"), processor="v1",
                    late_sink=str(tmp_path / "late.parquet"))
    assert job.run()["status"] == "finished"
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 3
    check_job_paths([str(src)], str(tmp_path / "other" / "out.parquet"))
    check_job_paths("scenario:S2", "memory", print)
    check_job_paths([{"k": [1]}], "memory", None)


def test_the_server_refuses_at_deploy(tmp_path):
    src = tmp_path / "in.parquet"
    digest = _write_source(src)
    with StreamJobServer(processor_config="v1") as server, pytest.raises(
            PathConflictError, match=r"in\.parquet"):
        server.deploy("bad", SQL, str(src), sink=str(src))
    assert _digest(src) == digest


def test_cli_exits_2_naming_the_paths(tmp_path):
    src = tmp_path / "in.parquet"
    digest = _write_source(src)
    out = tmp_path / "out.parquet"
    for args in (["--sink", str(src)], ["--sink", str(out), "--late-sink", str(out)]):
        r = subprocess.run([sys.executable, "-m", "velokern", "run", "--sql", SQL,
                            "--source", str(src), "--processor", "v1", *args],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert r.stderr.startswith("velokern: error: ") and r.stderr.count("\n") == 1
        assert str(args[1]) in r.stderr
    assert _digest(src) == digest
    assert sorted(os.listdir(tmp_path)) == ["in.parquet"]
