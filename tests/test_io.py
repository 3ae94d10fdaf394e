"""Sources and sinks (velokern.io): deterministic batching, resuming, corrupt inputs, and
exactly-once file output across a simulated crash."""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")
pq = pytest.importorskip("pyarrow.parquet")

from velokern.batch import RecordBatch  # noqa: E402
from velokern.datagen import stream_for  # noqa: E402
from velokern.io import (  # noqa: E402
    ArrowIPCSink,
    ArrowIPCSource,
    CallbackSink,
    CSVSink,
    CSVSource,
    MemorySink,
    MemorySource,
    ParquetSink,
    ParquetSource,
    ScenarioSource,
    Sink,
    SinkError,
    Source,
    SourceError,
    open_sink,
    open_source,
)

N = 500
TYPES = {"i": "int64", "f": "float64", "s": "string", "b": "bool", "t": "datetime64[ms]"}


def make_table(n: int = N, seed: int = 0):
    """ints, floats with NaN and -0.0, strings with nulls and empty strings, bools with
    nulls, and a datetime64[ms] column with nulls."""
    rng = np.random.default_rng(seed)
    f = np.round(rng.normal(0.0, 100.0, n), 3)
    f[::13] = np.nan
    f[5::17] = -0.0
    s = [None if i % 11 == 0 else ("" if i % 23 == 0 else f"s{i % 7},\"q\"") for i in range(n)]
    b = [None if i % 5 == 0 else bool(i % 3) for i in range(n)]
    t = np.datetime64("2024-01-01T00:00:00", "ms") + rng.integers(0, 10**9, n)
    return pa.table(
        {
            "i": pa.array(np.arange(n, dtype=np.int64) * 3 - 7),
            "f": pa.array(f),
            "s": pa.array(s, pa.string()),
            "b": pa.array(b, pa.bool_()),
            "t": pa.array(t, mask=(np.arange(n) % 7 == 3)),
        }
    )


@pytest.fixture(scope="module")
def table():
    return make_table()


@pytest.fixture(scope="module")
def expected(table):
    return RecordBatch.from_arrow(table)


@pytest.fixture(scope="module")
def files(table, tmp_path_factory):
    """The table as Parquet (row groups of 64 rows), Arrow IPC file (record batches of
    100), Arrow IPC stream (record batches of 37) and CSV."""
    d = tmp_path_factory.mktemp("io_files")
    paths = {
        "parquet": str(d / "t.parquet"),
        "ipc_file": str(d / "t.arrow"),
        "ipc_stream": str(d / "t.arrows"),
        "csv": str(d / "t.csv"),
    }
    pq.write_table(table, paths["parquet"], row_group_size=64)
    with pa.ipc.new_file(paths["ipc_file"], table.schema) as w:
        for b in table.to_batches(max_chunksize=100):
            w.write_batch(b)
    with pa.ipc.new_stream(paths["ipc_stream"], table.schema) as w:
        for b in table.to_batches(max_chunksize=37):
            w.write_batch(b)
    pcsv.write_csv(table, paths["csv"])
    return paths


def make_source(kind: str, files, batch_size: int) -> Source:
    if kind == "parquet":
        return ParquetSource(files["parquet"], batch_size)
    if kind in ("ipc_file", "ipc_stream"):
        return ArrowIPCSource(files[kind], batch_size)
    return CSVSource(files["csv"], batch_size, schema=TYPES)


KINDS = ["parquet", "ipc_file", "ipc_stream", "csv"]


# --------------------------------------------------------------------------- sources
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_source_round_trip_with_exact_batch_boundaries(kind, batch_size, files, expected):
    src = make_source(kind, files, batch_size)
    got = list(src.batches())
    assert len(got) == -(-N // batch_size)
    for j, b in enumerate(got):
        assert b.equals(expected.slice(j * batch_size, batch_size), bitwise=True), j
    assert RecordBatch.concat(got).equals(expected, bitwise=True)
    # string columns of one run share one dictionary
    assert all(b.dictionary("s") is got[0].dictionary("s") for b in got)
    json.dumps(src.describe())


def test_ipc_format_detection(files):
    assert ArrowIPCSource(files["ipc_file"]).format == "file"
    assert ArrowIPCSource(files["ipc_stream"]).format == "stream"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [7, 64, 200])
def test_resume_equals_tail_of_full_run(kind, batch_size, files):
    src = make_source(kind, files, batch_size)
    full = list(src.batches())
    for start in sorted({0, 1, 3, len(full) - 1, len(full), len(full) + 2}):
        tail = list(src.batches(start=start))
        assert len(tail) == len(full[start:]), start
        for a, b in zip(tail, full[start:]):
            assert a.equals(b, bitwise=True)


def test_parquet_resume_skips_earlier_row_groups(files, monkeypatch):
    requested = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        requested.extend(kwargs["row_groups"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    src = ParquetSource(files["parquet"], batch_size=50)
    got = list(src.batches(start=6))  # records 300.. : row group 300 // 64 = 4 on
    assert requested == list(range(4, 8))
    assert sum(len(b) for b in got) == N - 300


def test_bad_batch_size_and_start(files):
    with pytest.raises(SourceError, match="batch_size"):
        ParquetSource(files["parquet"], batch_size=0)
    with pytest.raises(SourceError, match="start"):
        ParquetSource(files["parquet"]).batches(start=-1)


def test_parquet_directory_records_continue_across_files(table, expected, tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(table.slice(0, 130), d / "part-0.parquet", row_group_size=50)
    pq.write_table(table.slice(130, 1), d / "part-1.parquet")
    pq.write_table(table.slice(131, N - 131), d / "part-2.parquet", row_group_size=100)
    (d / "_SUCCESS").write_text("")
    src = ParquetSource(str(d), batch_size=100)
    assert [os.path.basename(p) for p in src.paths] == [f"part-{i}.parquet" for i in range(3)]
    got = list(src.batches())
    assert [len(b) for b in got] == [100] * 5
    assert RecordBatch.concat(got).equals(expected, bitwise=True)
    assert RecordBatch.concat(list(src.batches(start=2))).equals(expected.slice(200), bitwise=True)
    listed = ParquetSource([str(d / f"part-{i}.parquet") for i in range(3)], batch_size=100)
    assert RecordBatch.concat(list(listed.batches())).equals(expected, bitwise=True)
    assert isinstance(open_source(str(d)), ParquetSource)


def test_parquet_file_with_other_schema_is_named(table, tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(table.slice(0, 100), d / "a.parquet")
    other = table.slice(100, 100).set_column(1, "f", pa.array(np.zeros(100, np.float32)))
    pq.write_table(other, d / "b.parquet")
    got = []
    with pytest.raises(SourceError) as info:
        for b in ParquetSource(str(d), batch_size=10).batches():
            got.append(b)
    msg = str(info.value)
    assert "b.parquet" in msg and "'f'" in msg and "float" in msg
    assert len(got) == 10  # the first file was read before the second was refused
    with pytest.raises(SourceError, match=r"directory has no \.parquet files"):
        ParquetSource(str(tmp_path))


def test_truncated_parquet_names_the_file(files, tmp_path):
    data = Path(files["parquet"]).read_bytes()
    bad = tmp_path / "truncated.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"truncated\.parquet"):
        list(ParquetSource(str(bad)).batches())
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello\n")
    with pytest.raises(SourceError, match=r"text\.parquet"):
        list(open_source(str(not_parquet)).batches())


def test_corrupt_row_group_is_named_after_earlier_batches(table, tmp_path):
    path = tmp_path / "corrupt.parquet"
    pq.write_table(table, path, row_group_size=100, compression="snappy")
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for c in range(meta.num_columns):
        chunk = meta.row_group(1).column(c)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + chunk.total_compressed_size] = b"\xab" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(SourceError) as info:
        for b in ParquetSource(str(path), batch_size=10).batches():
            got.append(b)
    assert "corrupt.parquet" in str(info.value) and "row group 1" in str(info.value)
    assert len(got) == 10
    assert RecordBatch.concat(got).equals(RecordBatch.from_arrow(table.slice(0, 100)))
    # resuming past the bad row group never touches it
    assert sum(len(b) for b in ParquetSource(str(path), batch_size=10).batches(start=20)) == 300


def test_truncated_ipc_names_the_file(files, tmp_path):
    for kind, name in (("ipc_file", "cut.arrow"), ("ipc_stream", "cut.arrows")):
        data = Path(files[kind]).read_bytes()
        bad = tmp_path / name
        bad.write_bytes(data[: len(data) - 200])
        with pytest.raises(SourceError, match=name):
            list(ArrowIPCSource(str(bad), batch_size=10).batches())
    empty = tmp_path / "empty.arrow"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.arrow"):
        list(ArrowIPCSource(str(empty)).batches())


def test_truncated_ipc_stream_names_the_record_batch(files, tmp_path):
    data = Path(files["ipc_stream"]).read_bytes()
    bad = tmp_path / "cut.arrows"
    bad.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(SourceError, match=r"cut.arrows: record batch \d+"):
        for b in ArrowIPCSource(str(bad), batch_size=37).batches():
            got.append(b)
    assert got  # the complete record batches came first


def test_csv_short_line_names_the_line(tmp_path):
    # pyarrow numbers records (header = 1, empty lines skipped, a quoted value spanning
    # lines counted once): the bad record is its row 4 but line 6 of the file
    path = tmp_path / "short.csv"
    path.write_text('a,b\n1,x\n\n2,"y\nz"\n3\n4,w\n')
    with pytest.raises(SourceError) as info:
        list(CSVSource(str(path), batch_size=2).batches())
    msg = str(info.value)
    assert "short.csv" in msg and "line 6 " in msg and "expected 2 fields, found 1" in msg


def test_csv_bad_value_names_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,x\n2,y\nfoo,z\n")
    with pytest.raises(SourceError) as info:
        list(CSVSource(str(path), schema={"a": "int64"}).batches())
    msg = str(info.value)
    assert "bad.csv" in msg and "line 4 " in msg and "column 'a'" in msg and "'foo'" in msg


def test_csv_bad_value_far_into_the_file(tmp_path):
    lines = ["n,s"] + [f"{i},v{i}" for i in range(100_000)]
    lines[70_001] = "70000,v,extra"
    lines[80_001] = "oops,v"
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match="line 70002 ") as info:
        list(CSVSource(str(path), batch_size=10_000, schema={"n": "int64"}).batches())
    assert "expected 2 fields, found 3" in str(info.value)
    lines[70_001] = "70000,v"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"line 80002 .*column 'n'.*oops"):
        list(CSVSource(str(path), batch_size=10_000, schema={"n": "int64"}).batches())


def test_csv_schema_forms_and_errors(files, tmp_path, expected):
    schemas = [
        TYPES,
        pa.schema([("i", pa.int64()), ("s", pa.string()), ("t", pa.timestamp("ms"))]),
    ]
    for schema in schemas:
        got = RecordBatch.concat(list(CSVSource(files["csv"], schema=schema).batches()))
        assert got.equals(expected, bitwise=True)
    with pytest.raises(SourceError, match="header does not have"):
        list(CSVSource(files["csv"], schema={"nope": "int64"}).batches())
    with pytest.raises(SourceError, match="unknown type"):
        CSVSource(files["csv"], schema={"i": "decimal"})
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match=r"empty\.csv"):
        list(CSVSource(str(empty)).batches())


def test_memory_source(expected, table):
    items = [expected.slice(0, 10), table.slice(10, 5), expected.slice(15, 0), table.slice(15)]
    src = MemorySource(items)
    got = list(src.batches())
    assert [len(b) for b in got] == [10, 5, 0, N - 15]
    assert RecordBatch.concat(got).equals(expected, bitwise=True)
    assert [len(b) for b in src.batches(start=2)] == [0, N - 15]
    cut = MemorySource(items, batch_size=100)
    assert [len(b) for b in cut.batches()] == [100] * 5
    assert RecordBatch.concat(list(cut.batches(start=3))).equals(expected.slice(300))
    mixed = MemorySource([{"x": [1, 2]}, [{"x": 3}], expected.to_pandas().iloc[:0, :0]])
    assert [len(b) for b in mixed.batches(start=0)][:2] == [2, 1]
    json.dumps(src.describe())


def test_memory_source_from_a_generator_cannot_resume(expected):
    src = MemorySource(expected.slice(i * 100, 100) for i in range(5))
    with pytest.raises(SourceError, match="cannot be resumed"):
        src.batches(start=1)
    assert RecordBatch.concat(list(src.batches())).equals(expected)
    with pytest.raises(SourceError, match="already read"):
        src.batches()
    with pytest.raises(SourceError, match="item 1"):
        list(MemorySource([{"x": [1]}, 42]).batches())


def test_scenario_source():
    src = ScenarioSource("S2", total=1000, batch_size=300, seed=3)
    ref = list(stream_for("S2", 1000, 300, seed=3))
    got = list(src.batches(start=2))
    assert len(got) == 2
    for a, b in zip(got, ref[2:]):
        assert a.equals(b, bitwise=True)
    assert src.describe()["seed"] == 3
    with pytest.raises(SourceError, match="unknown scenario"):
        ScenarioSource("S9")


# --------------------------------------------------------------------------- open_source
def test_open_source_dispatch(files, expected, tmp_path):
    assert isinstance(open_source(files["parquet"]), ParquetSource)
    assert isinstance(open_source(files["ipc_file"]), ArrowIPCSource)
    stream = tmp_path / "t.arrowstream"
    stream.write_bytes(Path(files["ipc_stream"]).read_bytes())
    src = open_source(stream, batch_size=50)
    assert isinstance(src, ArrowIPCSource) and src.format == "stream"
    assert [len(b) for b in src.batches()] == [50] * 10
    assert isinstance(open_source(files["csv"]), CSVSource)
    feather = tmp_path / "t.feather"
    feather.write_bytes(Path(files["ipc_file"]).read_bytes())
    assert RecordBatch.concat(list(open_source(feather).batches())).equals(expected)
    same = ParquetSource(files["parquet"])
    assert open_source(same) is same
    mem = open_source([expected.slice(0, 3), expected.slice(3, 4)])
    assert isinstance(mem, MemorySource) and [len(b) for b in mem.batches()] == [3, 4]
    assert isinstance(open_source(b for b in [expected]), MemorySource)
    assert isinstance(open_source({"x": [1, 2]}), MemorySource)


def test_open_source_scenarios():
    src = open_source("scenario:S2?total=1000&seed=3", batch_size=250)
    assert isinstance(src, ScenarioSource)
    assert (src.scenario, src.total, src.seed, src.batch_size) == ("S2", 1000, 3, 250)
    assert not src.random
    src = open_source("scenario:S3a?total=10&random=true&batch_size=4")
    assert src.random and [len(b) for b in src.batches()] == [4, 4, 2]
    assert open_source("scenario:S0").total == 1_000_000
    with pytest.raises(SourceError, match="unknown parameter 'rows'"):
        open_source("scenario:S2?rows=5")
    with pytest.raises(SourceError, match="total must be an integer"):
        open_source("scenario:S2?total=many")
    with pytest.raises(SourceError, match="unknown scenario"):
        open_source("scenario:nope")


def test_open_source_errors(tmp_path):
    with pytest.raises(SourceError, match=r"unknown file extension '\.txt'.*\.parquet.*\.csv"):
        open_source(str(tmp_path / "data.txt"))
    with pytest.raises(SourceError, match=r"missing\.parquet: no such file"):
        open_source(str(tmp_path / "missing.parquet"))
    with pytest.raises(SourceError, match=r"missing\.csv: no such file"):
        CSVSource(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="cannot make a source"):
        open_source(42)


# --------------------------------------------------------------------------- sinks
SINKS = {
    "parquet": (lambda p: ParquetSink(p, row_group_size=64), ".parquet"),
    "ipc": (lambda p: ArrowIPCSink(p, batch_size=100), ".arrow"),
    "csv": (CSVSink, ".csv"),
}


def read_back(kind: str, path) -> RecordBatch:
    """The file read with pyarrow, as a RecordBatch."""
    if kind == "parquet":
        table = pq.read_table(path)
    elif kind == "ipc":
        with pa.ipc.open_file(path) as reader:
            table = reader.read_all()
    else:
        convert = pcsv.ConvertOptions(
            column_types={"i": pa.int64(), "f": pa.float64(), "s": pa.string(),
                          "b": pa.bool_(), "t": pa.timestamp("ms")},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        parse = pcsv.ParseOptions(newlines_in_values=True)
        table = pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    return RecordBatch.from_arrow(table)


def write_all(sink: Sink, expected: RecordBatch, cuts, commit_every: int = 2) -> None:
    sink.open()
    for j, (a, b) in enumerate(pairwise(cuts)):
        sink.write(expected.slice(a, b - a))
        if j % commit_every == 0:
            sink.commit()
    sink.close()


CUTS_A = [0, 0, 1, 8, 200, 264, 265, N]
CUTS_B = [0, 100, 101, 333, 334, 499, N, N]


@pytest.mark.parametrize("kind", SINKS)
def test_sink_round_trip_and_deterministic_bytes(kind, expected, tmp_path):
    make, ext = SINKS[kind]
    path_a, path_b = tmp_path / f"a{ext}", tmp_path / f"b{ext}"
    sink = make(str(path_a))
    sink.open()
    sink.write(RecordBatch({}))  # no columns: ignored
    sink.close()
    write_all(make(str(path_a)), expected, CUTS_A)
    write_all(make(str(path_b)), expected, CUTS_B, commit_every=1)
    assert read_back(kind, path_a).equals(expected, bitwise=True)
    assert path_a.read_bytes() == path_b.read_bytes()
    assert sorted(os.listdir(tmp_path)) == sorted([path_a.name, path_b.name])  # no staging
    if kind == "parquet":
        meta = pq.ParquetFile(path_a).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sizes == [64] * (N // 64) + [N % 64]
    if kind == "ipc":
        with pa.ipc.open_file(path_a) as reader:
            sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        assert sizes == [100] * 5
    # the sources read the output back
    src = CSVSource(str(path_a), schema=TYPES) if kind == "csv" else open_source(str(path_a))
    assert RecordBatch.concat(list(src.batches())).equals(expected, bitwise=True)


@pytest.mark.parametrize("kind", SINKS)
def test_sink_resume_after_crash_is_exactly_once(kind, expected, tmp_path):
    make, ext = SINKS[kind]
    once, crashed = tmp_path / f"once{ext}", tmp_path / f"crashed{ext}"
    write_all(make(str(once)), expected, [0, N])

    first = make(str(crashed))
    first.open()
    first.write(expected.slice(0, 50))
    first.commit()
    first.write(expected.slice(50, 100))
    token = first.commit()
    assert token == {"segments": 2, "rows": 150}
    first.write(expected.slice(150, 70))  # after the checkpoint: lost in the crash
    assert first.rows_written == 220
    json.dumps(token)
    first._abort()  # the process dies: the open segment stays on disk, partial
    staging = first.staging_dir
    with open(os.path.join(staging, "seg-000004.arrows"), "wb") as f:
        f.write(b"garbage from a later, partial segment")

    second = make(str(crashed))
    second.open(resume=json.loads(json.dumps(token)))
    assert second.rows_written == 150
    assert sorted(os.listdir(staging)) == ["seg-000001.arrows", "seg-000002.arrows"]
    second.write(expected.slice(150, 200))
    second.commit()
    second.write(expected.slice(350))
    second.close()
    second.close()  # idempotent
    assert not os.path.exists(staging)
    assert crashed.read_bytes() == once.read_bytes()
    assert read_back(kind, crashed).equals(expected, bitwise=True)


@pytest.mark.parametrize("kind", SINKS)
def test_sink_open_fresh_discards_leftovers(kind, expected, tmp_path):
    make, ext = SINKS[kind]
    path = tmp_path / f"out{ext}"
    old = make(str(path))
    old.open()
    old.write(expected.slice(0, 100))
    old.commit()
    old.write(expected.slice(100, 10))
    old._abort()
    new = make(str(path))
    new.open(None)
    new.write(expected.slice(200, 50))
    new.close()
    assert read_back(kind, path).equals(expected.slice(200, 50), bitwise=True)


@pytest.mark.parametrize("kind", SINKS)
def test_sink_empty_output(kind, expected, tmp_path):
    make, ext = SINKS[kind]
    path = tmp_path / f"empty{ext}"
    sink = make(str(path))
    sink.open()
    sink.write(expected.slice(0, 0))  # no rows, but the schema
    token = sink.commit()
    assert token == {"segments": 1, "rows": 0}
    resumed = make(str(path))
    resumed.open(resume=token)
    resumed.close()
    back = read_back(kind, path)
    assert len(back) == 0 and back.column_names == expected.column_names
    # a sink that never saw a column writes nothing, and leaves no stale output
    nothing = make(str(path))
    nothing.open()
    nothing.close()
    assert not path.exists()


@pytest.mark.parametrize("kind", SINKS)
def test_sink_schema_mismatch(kind, tmp_path):
    make, ext = SINKS[kind]
    path = tmp_path / f"x{ext}"
    sink = make(str(path))
    sink.open()
    sink.write({"a": np.arange(3), "b": ["x", "y", "z"]})
    with pytest.raises(SinkError, match=r"x\..*column 'a' is float64, expected int64"):
        sink.write({"a": np.zeros(2), "b": ["x", "y"]})
    with pytest.raises(SinkError, match=r"missing columns \['b'\]"):
        sink.write({"a": np.arange(3)})
    token = sink.commit()
    resumed = make(str(path))
    resumed.open(resume=token)
    with pytest.raises(SinkError, match="extra columns"):
        resumed.write({"a": np.arange(3), "b": ["x", "y", "z"], "c": [1, 2, 3]})
    resumed.write({"a": np.arange(2), "b": ["p", None]})
    resumed.close()
    assert len(read_back_any(path)) == 5


def read_back_any(path) -> RecordBatch:
    src = open_source(str(path))
    return RecordBatch.concat(list(src.batches()))


def test_file_sink_bad_tokens_and_misuse(expected, tmp_path):
    path = tmp_path / "out.parquet"
    sink = ParquetSink(str(path))
    with pytest.raises(SinkError, match="call open"):
        sink.write(expected)
    sink.open()
    sink.write(expected.slice(0, 10))
    token = sink.commit()
    other = ParquetSink(str(path))
    with pytest.raises(SinkError, match="missing"):
        other.open(resume={"segments": 3, "rows": 10})
    with pytest.raises(SinkError, match="hold 10 rows"):
        other.open(resume={"segments": 1, "rows": 11})
    with pytest.raises(SinkError, match="must be an int"):
        other.open(resume={"segments": "1"})
    with pytest.raises(SinkError, match="must be a dict"):
        other.open(resume=1)
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.write(expected)
    with pytest.raises(SinkError, match=r"staging directory .* is gone"):
        ParquetSink(str(path)).open(resume=token)
    with pytest.raises(SinkError, match="does not exist"):
        ParquetSink(str(tmp_path / "nowhere" / "x.parquet")).open()
    with pytest.raises(SinkError, match="row_group_size"):
        ParquetSink(str(path), row_group_size=0)


def test_file_sink_context_manager(expected, tmp_path):
    path = tmp_path / "ctx.arrow"
    with ArrowIPCSink(str(path)) as sink:
        sink.write(expected)
        sink.write(expected.to_arrow())
    assert len(read_back_any(path)) == 2 * N
    with pytest.raises(RuntimeError), ArrowIPCSink(str(path)) as sink:
        sink.write(expected.slice(0, 5))
        raise RuntimeError("job failed")
    assert len(read_back_any(path)) == 2 * N  # the failed run did not replace the output


def test_memory_sink(expected):
    sink = MemorySink()
    assert sink.result().num_columns == 0
    sink.open()
    sink.write(expected.slice(0, 0))
    assert sink.result().column_names == expected.column_names
    sink.write(expected.slice(0, 100))
    sink.write(RecordBatch({}))
    token = sink.commit()
    assert token == {"batches": 1, "rows": 100}
    sink.write(expected.slice(100, 50))
    sink.open(resume=token)
    assert sink.rows_written == 100
    sink.write(expected.slice(100))
    sink.close()
    assert sink.result().equals(expected, bitwise=True)
    with pytest.raises(SinkError, match="names 5 batches"):
        MemorySink().open(resume={"batches": 5, "rows": 0})
    sink.open()
    assert len(sink.result()) == 0


def test_callback_sink_is_at_least_once(expected):
    seen = []
    sink = CallbackSink(seen.append)
    sink.open()
    sink.write(expected.slice(0, 10))
    sink.write(expected.slice(0, 0))
    token = sink.commit()
    assert token == {"batches": 1, "rows": 10}
    sink.write(expected.slice(10, 10))
    again = CallbackSink(seen.append)
    again.open(resume=token)
    assert again.rows_written == 10
    again.write(expected.slice(10, 10))  # the replayed batch is delivered again
    assert [len(b) for b in seen] == [10, 10, 10]
    assert again.commit() == {"batches": 2, "rows": 20}
    with pytest.raises(SinkError, match="callable"):
        CallbackSink(42)


def test_open_sink_dispatch(tmp_path):
    assert isinstance(open_sink(str(tmp_path / "o.parquet")), ParquetSink)
    assert isinstance(open_sink(tmp_path / "o.pq"), ParquetSink)
    for ext in (".arrow", ".ipc", ".feather"):
        assert isinstance(open_sink(str(tmp_path / f"o{ext}")), ArrowIPCSink)
    assert isinstance(open_sink(str(tmp_path / "o.csv")), CSVSink)
    assert isinstance(open_sink("memory"), MemorySink)
    assert isinstance(open_sink(print), CallbackSink)
    sink = MemorySink()
    assert open_sink(sink) is sink
    with pytest.raises(SinkError, match=r"unknown file extension '\.txt'.*\.parquet"):
        open_sink(str(tmp_path / "o.txt"))
    with pytest.raises(SinkError, match="cannot make a sink"):
        open_sink(42)
    for s in (open_sink(str(tmp_path / "o.parquet")), MemorySink(), CallbackSink(print)):
        json.dumps(s.describe())
