"""Sources: where a job's batches come from (memory, the reference generators, files).

A source cuts its records into batches deterministically: for the file sources batch
``i`` always holds records ``[i * batch_size, (i + 1) * batch_size)`` of the file(s)
(the last batch may be shorter), whatever the row groups or record batches of the
files. ``batches(start=k)`` therefore yields exactly the batches an uninterrupted run
yields from batch ``k`` on, which is what a job resumed from a checkpoint needs. Formats
with random access skip what comes before ``start`` without reading it (Parquet skips
whole row groups by their row counts in the footer, an Arrow IPC file skips record
batches); CSV and Arrow IPC streams read and discard.

String columns of the batches of one ``batches()`` call share one StringDictionary per
column, so a job needs no remapping of codes.
"""

from __future__ import annotations

import csv
import importlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any
from urllib.parse import parse_qsl

from velokern import config
from velokern.api import as_batch
from velokern.batch import RecordBatch, Schema, StringDictionary, _optional_import
from velokern.datagen import SCENARIOS, stream_for

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ArrowIPCSource",
    "CSVSource",
    "MemorySource",
    "ParquetSource",
    "ScenarioSource",
    "Source",
    "SourceError",
    "open_source",
]

#: Records per batch of the file and scenario sources unless told otherwise.
DEFAULT_BATCH_SIZE = config.DEFAULT_BATCH_SIZE
#: Rows pyarrow reads at a time from a Parquet row group (batches are re-cut anyway).

PARQUET_EXTENSIONS = (".parquet", ".pq")
IPC_FILE_EXTENSIONS = (".arrow", ".ipc", ".feather")
IPC_STREAM_EXTENSIONS = (".arrows", ".arrowstream")
CSV_EXTENSIONS = (".csv",)
_SOURCE_EXTENSIONS = (
    PARQUET_EXTENSIONS + IPC_FILE_EXTENSIONS + IPC_STREAM_EXTENSIONS + CSV_EXTENSIONS
)


class SourceError(ValueError):
    """A source cannot be opened or read; the message names the file and the place
    (row group, record batch, line) at fault."""


# --------------------------------------------------------------------------- helpers
def _arrow(module: str = "pyarrow"):
    """``pyarrow`` or one of its submodules, with a clear message when not installed."""
    _optional_import("pyarrow", "arrow")
    return importlib.import_module(module)


def _check_batch_size(batch_size: Any, *, optional: bool = False) -> int | None:
    if batch_size is None and optional:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SourceError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def _check_start(start: Any) -> int:
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise SourceError(f"start must be a batch index >= 0, got {start!r}")
    return start


def _existing_file(path: Any) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SourceError(f"{path}: is a directory, expected a file")
    return path


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _schema_difference(
    expected: Sequence[tuple[str, str]], got: Sequence[tuple[str, str]]
) -> str:
    """How the ``(name, type)`` pairs ``got`` differ from ``expected`` ('' when equal)."""
    exp, new = dict(expected), dict(got)
    parts = []
    missing = [n for n, _ in expected if n not in new]
    extra = [n for n, _ in got if n not in exp]
    if missing:
        parts.append(f"missing columns {missing}")
    if extra:
        parts.append(f"extra columns {extra}")
    for n, t in expected:
        if n in new and new[n] != t:
            parts.append(f"column {n!r} is {new[n]}, expected {t}")
    if not parts and [n for n, _ in expected] != [n for n, _ in got]:
        parts.append(
            f"columns in another order: {[n for n, _ in got]}, "
            f"expected {[n for n, _ in expected]}"
        )
    return "; ".join(parts)


def _arrow_fields(schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema]


def _held_to(first: tuple[str, list] | None, path: str, schema) -> tuple[str, list]:
    """(path, fields) of the first file of a multi-file source, given the one before
    (None for the first file); a file whose Arrow schema differs raises SourceError."""
    fields = _arrow_fields(schema)
    if first is None:
        return path, fields
    diff = _schema_difference(first[1], fields)
    if diff:
        raise SourceError(f"{path}: schema differs from the first file {first[0]}: {diff}")
    return first


def _guarded(items: Iterable, where: str) -> Iterator:
    """The items of ``items``; a failure to produce one becomes a SourceError that
    starts with ``where`` (the consumer's own exceptions are never caught)."""
    pa = _arrow()
    errors = (pa.ArrowException, OSError, ValueError)
    try:
        it = iter(items)
    except errors as exc:
        raise SourceError(f"{where}: {exc}") from exc
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except SourceError:
            raise
        except errors as exc:
            raise SourceError(f"{where}: {exc}") from exc
        yield item


def _drop_rows(pieces: Iterable, skip: int) -> Iterator:
    """Arrow record batches ``pieces`` without their first ``skip`` rows."""
    for piece in pieces:
        if skip:
            if piece.num_rows <= skip:
                skip -= piece.num_rows
                continue
            piece = piece.slice(skip)
            skip = 0
        yield piece


def _combine(pa, pieces: list):
    """One pyarrow Table from record batches with the same column names and types
    (metadata and nullability of their schemas may differ)."""
    first = pieces[0].schema
    columns = [
        pa.chunked_array([p.column(i) for p in pieces], type=first.field(i).type)
        for i in range(len(first))
    ]
    return pa.Table.from_arrays(columns, names=first.names)


def _cut_arrow(pieces: Iterable, size: int) -> Iterator:
    """pyarrow Tables of exactly ``size`` rows (the last one may be shorter) from a
    stream of Arrow record batches of any sizes."""
    pa = _arrow()
    pending, have = [], 0
    for piece in pieces:
        while piece.num_rows:
            take = min(size - have, piece.num_rows)
            pending.append(piece.slice(0, take))
            have += take
            piece = piece.slice(take)
            if have == size:
                yield _combine(pa, pending)
                pending, have = [], 0
    if have:
        yield _combine(pa, pending)


def _cut_batches(batches: Iterable[RecordBatch], size: int) -> Iterator[RecordBatch]:
    """RecordBatches of exactly ``size`` rows (the last one may be shorter)."""
    pending: list[RecordBatch] = []
    have = 0
    for b in batches:
        while len(b):
            take = min(size - have, len(b))
            pending.append(b.slice(0, take))
            have += take
            b = b.slice(take)
            if have == size:
                yield pending[0] if len(pending) == 1 else RecordBatch.concat(pending)
                pending, have = [], 0
    if have:
        yield pending[0] if len(pending) == 1 else RecordBatch.concat(pending)


def _to_batches(tables: Iterable, where: str) -> Iterator[RecordBatch]:
    """RecordBatches from pyarrow Tables, string columns sharing one dictionary each."""
    dictionaries: dict[str, StringDictionary] = {}
    for t in tables:
        try:
            batch = RecordBatch.from_arrow(t, dictionaries=dictionaries)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"{where}: {exc}") from exc
        for name, d in batch.dictionaries.items():
            dictionaries.setdefault(name, d)
        yield batch


# --------------------------------------------------------------------------- base
class Source:
    """Where a job's batches come from.

    ``batches(start)`` yields the batches from index ``start`` on, always cut the same
    way; ``describe()`` is a JSON-able identity of the source (a job refuses a
    checkpoint taken from a source with another description); ``name`` is for people.
    """

    name: str = "source"

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def locations(self) -> list[str]:
        """The files and directories this source reads (none for data in memory)."""
        return []

    def batches(self, start: int = 0) -> Iterator[RecordBatch]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[RecordBatch]:
        return self.batches()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------- memory
def _is_data(obj: Any) -> bool:
    """True for one batch's worth of data (not a sequence of them)."""
    if isinstance(obj, (RecordBatch, Mapping)):
        return True
    return type(obj).__module__.split(".")[0] in ("pyarrow", "pandas", "polars")


class MemorySource(Source):
    """Batches from a list or tuple of items, each anything :func:`velokern.as_batch`
    takes (RecordBatch, pyarrow Table or RecordBatch, pandas or polars DataFrame, dict of
    columns, list of row dicts).

    With ``batch_size=None`` every item is one batch (resuming skips ``start`` items);
    otherwise the records of all items are re-cut into batches of ``batch_size``. A
    one-shot iterator or generator is accepted, but it can be read once only and not
    resumed.
    """

    def __init__(self, items: Any, batch_size: int | None = None):
        self.batch_size = _check_batch_size(batch_size, optional=True)
        self.name = "memory"
        self._items: Sequence[Any] | None = None
        self._iterator: Iterator[Any] | None = None
        self._consumed = False
        if _is_data(items):
            items = [items]
        if isinstance(items, Sequence) and not isinstance(items, (str, bytes)):
            self._items = items
        elif isinstance(items, Iterable):
            self._iterator = iter(items)
        else:
            raise SourceError(
                f"MemorySource needs a list of batches or an iterator of them, "
                f"got {type(items).__name__}"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "memory",
            "items": None if self._items is None else len(self._items),
            "batch_size": self.batch_size,
        }

    def batches(self, start: int = 0) -> Iterator[RecordBatch]:
        start = _check_start(start)
        if self._items is None:
            if start:
                raise SourceError(
                    "memory source over a one-shot iterator cannot be resumed "
                    f"(asked to start at batch {start}): give a list of batches"
                )
            if self._consumed:
                raise SourceError("memory source over a one-shot iterator was already read")
            self._consumed = True
            items: Iterable[Any] = self._iterator
        else:
            items = self._items
        if self.batch_size is None:
            if self._items is not None:
                items = (self._items[i] for i in range(start, len(self._items)))
            return self._convert(items, start)
        converted = self._convert(items, 0)
        return islice(_cut_batches(converted, self.batch_size), start, None)

    def _convert(self, items: Iterable[Any], first: int) -> Iterator[RecordBatch]:
        for i, item in enumerate(items, first):
            try:
                yield as_batch(item)
            except (TypeError, ValueError) as exc:
                raise SourceError(f"memory source: item {i}: {exc}") from exc


# --------------------------------------------------------------------------- scenarios
class ScenarioSource(Source):
    """The deterministic input stream of a reference scenario (``S0`` .. ``S3b``) from
    :func:`velokern.datagen.stream_for`. Resuming generates and discards the batches
    before ``start`` (the generators draw random numbers in sequence)."""

    def __init__(
        self,
        scenario: str = "S2",
        total: int = 1_000_000,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
        random: bool = False,
    ):
        if scenario not in SCENARIOS:
            raise SourceError(
                f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})"
            )
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise SourceError(f"total must be an integer >= 0, got {total!r}")
        self.scenario = scenario
        self.total = total
        self.batch_size = _check_batch_size(batch_size)
        self.seed = int(seed)
        self.random = bool(random)
        self.name = f"scenario:{scenario}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "scenario",
            "scenario": self.scenario,
            "total": self.total,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "random": self.random,
        }

    def batches(self, start: int = 0) -> Iterator[RecordBatch]:
        start = _check_start(start)
        stream = stream_for(
            self.scenario, self.total, self.batch_size, seed=self.seed, random=self.random
        )
        return islice(stream, start, None)


# --------------------------------------------------------------------------- parquet
def _parquet_paths(path_or_paths: Any) -> list[str]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        path = os.fspath(path_or_paths)
        if os.path.isdir(path):
            names = sorted(
                n
                for n in os.listdir(path)
                if _extension(n) in PARQUET_EXTENSIONS and not n.startswith((".", "_"))
            )
            if not names:
                raise SourceError(f"{path}: directory has no .parquet files")
            return [os.path.join(path, n) for n in names]
        return [_existing_file(path)]
    paths = [_existing_file(p) for p in path_or_paths]
    if not paths:
        raise SourceError("ParquetSource needs at least one file")
    return paths


class ParquetSource(Source):
    """Batches of ``batch_size`` records from one Parquet file, a list of them or a
    directory (its ``*.parquet`` files in sorted order); records run on from one file to
    the next. Files are read a row group at a time, never whole; resuming skips whole
    row groups using the row counts in the files' footers."""

    def __init__(self, path_or_paths: Any, batch_size: int = DEFAULT_BATCH_SIZE):
        self.paths = _parquet_paths(path_or_paths)
        self.batch_size = _check_batch_size(batch_size)
        self._directory = None
        if isinstance(path_or_paths, (str, os.PathLike)):
            self.name = os.fspath(path_or_paths)
            if os.path.isdir(self.name):
                self._directory = self.name
        else:
            more = f" (+{len(self.paths) - 1} more)" if len(self.paths) > 1 else ""
            self.name = self.paths[0] + more

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "parquet",
            "paths": [os.path.abspath(p) for p in self.paths],
            "batch_size": self.batch_size,
        }

    def locations(self) -> list[str]:
        return list(self.paths) if self._directory is None else [self._directory]

    def batches(self, start: int = 0) -> Iterator[RecordBatch]:
        start = _check_start(start)
        pieces = self._pieces(start * self.batch_size)
        return _to_batches(_cut_arrow(pieces, self.batch_size), self.name)

    def _open(self, pq, path: str):
        try:
            return pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise SourceError(f"{path}: cannot open as a Parquet file: {exc}") from exc

    def check_schemas(self) -> Any:
        """Read every file's footer (no data) and fail as reading would on the first file
        whose schema differs from the first file's; returns the first file's Arrow
        schema."""
        pq = _arrow("pyarrow.parquet")
        first = schema = None
        for path in self.paths:
            with self._open(pq, path) as pf:
                first = _held_to(first, path, pf.schema_arrow)
                schema = pf.schema_arrow if schema is None else schema
        return schema

    def _pieces(self, skip: int) -> Iterator:
        """Arrow record batches of all files from record ``skip`` on."""
        pq = _arrow("pyarrow.parquet")
        first: tuple[str, list[tuple[str, str]]] | None = None
        for path in self.paths:
            with self._open(pq, path) as pf:
                first = _held_to(first, path, pf.schema_arrow)
                meta = pf.metadata
                for rg in range(meta.num_row_groups):
                    rows = meta.row_group(rg).num_rows
                    if skip >= rows:
                        skip -= rows
                        continue
                    read = pf.iter_batches(batch_size=config.PARQUET_READ_ROWS, row_groups=[rg])
                    where = f"{path}: row group {rg} (of {meta.num_row_groups}) cannot be read"
                    yield from _drop_rows(_guarded(read, where), skip)
                    skip = 0


# --------------------------------------------------------------------------- arrow ipc
def _ipc_format(path: str) -> str:
    """'file' (random access) or 'stream', from the first bytes of an Arrow IPC file."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"ARROW1"):
        return "file"
    if head.startswith(b"FEA1"):
        raise SourceError(f"{path}: Feather version 1 files are not supported")
    if not head:
        raise SourceError(f"{path}: file is empty, not an Arrow IPC file or stream")
    return "stream"


class ArrowIPCSource(Source):
    """Batches of ``batch_size`` records from an Arrow IPC file (random access: resuming
    skips whole record batches, memory-mapped, without decoding their columns) or an
    Arrow IPC stream (read in order); the format is detected from the file's first
    bytes."""

    def __init__(self, path: Any, batch_size: int = DEFAULT_BATCH_SIZE):
        self.path = _existing_file(path)
        self.batch_size = _check_batch_size(batch_size)
        self.name = self.path

    def locations(self) -> list[str]:
        return [self.path]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "arrow_ipc",
            "path": os.path.abspath(self.path),
            "batch_size": self.batch_size,
        }

    @property
    def format(self) -> str:
        """'file' or 'stream'."""
        return _ipc_format(self.path)

    def batches(self, start: int = 0) -> Iterator[RecordBatch]:
        start = _check_start(start)
        skip = start * self.batch_size
        if _ipc_format(self.path) == "file":
            pieces = self._file_pieces(skip)
        else:
            pieces = _drop_rows(self._stream_pieces(), skip)
        return _to_batches(_cut_arrow(pieces, self.batch_size), self.name)

    def _file_pieces(self, skip: int) -> Iterator:
        pa = _arrow()
        try:
            reader = pa.ipc.open_file(pa.memory_map(self.path))
        except Exception as exc:
            raise SourceError(f"{self.path}: cannot open as an Arrow IPC file: {exc}") from exc
        n = reader.num_record_batches
        for i in range(n):
            try:
                batch = reader.get_batch(i)
            except Exception as exc:
                raise SourceError(
                    f"{self.path}: record batch {i} (of {n}) cannot be read: {exc}"
                ) from exc
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            yield batch.slice(skip) if skip else batch
            skip = 0

    def _stream_pieces(self) -> Iterator:
        pa = _arrow()
        with pa.OSFile(self.path) as f:
            try:
                reader = pa.ipc.open_stream(f)
            except Exception as exc:
                raise SourceError(
                    f"{self.path}: cannot open as an Arrow IPC stream: {exc}"
                ) from exc
            i = 0
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except Exception as exc:
                    raise SourceError(
                        f"{self.path}: record batch {i} of the stream cannot be read: {exc}"
                    ) from exc
                yield batch
                i += 1


# --------------------------------------------------------------------------- csv
#: Unquoted field values read as NULL (quoted ones are always strings; "nan" is NaN).
CSV_NULL_VALUES = ("", "NULL", "null")


def _arrow_type(pa, name: str, typ: Any):
    """The pyarrow type for a velokern type name (or a pyarrow type, as is)."""
    if isinstance(typ, pa.DataType):
        return typ
    try:
        (t,) = Schema([(name, typ)]).types
    except TypeError as exc:
        raise SourceError(f"CSV schema: {exc}") from exc
    if t == "string":
        return pa.string()
    if t.startswith("datetime64"):
        unit = t[len("datetime64[") : -1]
        return pa.date32() if unit == "D" else pa.timestamp(unit)
    return pa.from_numpy_dtype(t)


def _csv_column_types(pa, schema: Any) -> dict[str, Any] | None:
    if schema is None:
        return None
    if isinstance(schema, pa.Schema):
        return {f.name: f.type for f in schema}
    pairs = schema.items() if isinstance(schema, Mapping) else schema
    return {str(n): _arrow_type(pa, str(n), t) for n, t in pairs}


def _csv_record_lines(path: str, number: int) -> tuple[int, int, list[str]] | None:
    """Where CSV record ``number`` lies in the file, as pyarrow counts records (1-based,
    the header is record 1, empty lines are not records, a quoted value may span
    lines): ``(first line, last line, header fields)``, lines 1-based, or None."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header: list[str] = []
        count, before = 0, 0
        for row in reader:
            if row:  # csv gives [] for an empty line
                count += 1
                if count == 1:
                    header = row
                if count == number:
                    return before + 1, reader.line_num, header
            before = reader.line_num
    return None


class CSVSource(Source):
    """Batches of ``batch_size`` records from a CSV file with a header line, read as a
    stream (``pyarrow.csv.open_csv``, never the whole file).

    ``schema`` fixes column types (a mapping of column name to a velokern type name such
    as ``"int64"``, ``"float64"``, ``"string"``, ``"bool"``, ``"datetime64[ms]"``, a
    velokern Schema or a pyarrow schema); other columns get the types pyarrow infers
    from the file's first block. An empty unquoted field, ``NULL`` and ``null`` are
    NULL; a quoted value is always a string and ``nan`` is a float NaN. Resuming reads
    and discards the records before ``start`` (CSV has no random access).

    A malformed line or a value that does not convert raises SourceError naming the file,
    the line (1-based, the header being line 1) and, for a value, the column.
    """

    def __init__(self, path: Any, batch_size: int = DEFAULT_BATCH_SIZE, schema: Any = None):
        self.path = _existing_file(path)
        self.batch_size = _check_batch_size(batch_size)
        self.column_types = _csv_column_types(_arrow(), schema)
        self.name = self.path

    def locations(self) -> list[str]:
        return [self.path]

    def describe(self) -> dict[str, Any]:
        types = self.column_types
        return {
            "kind": "csv",
            "path": os.path.abspath(self.path),
            "batch_size": self.batch_size,
            "schema": None if types is None else {n: str(t) for n, t in types.items()},
        }

    def batches(self, start: int = 0) -> Iterator[RecordBatch]:
        start = _check_start(start)
        pieces = _drop_rows(self._pieces(), start * self.batch_size)
        return _to_batches(_cut_arrow(pieces, self.batch_size), self.name)

    def _pieces(self) -> Iterator:
        pa, pcsv = _arrow(), _arrow("pyarrow.csv")
        bad_rows: list[Any] = []

        def on_invalid_row(row):
            bad_rows.append(row)
            return "error"

        # one thread: pyarrow numbers rows (for the messages) only when reading serially
        read = pcsv.ReadOptions(use_threads=False)
        parse = pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid_row)
        convert = pcsv.ConvertOptions(
            column_types=self.column_types or {},
            null_values=list(CSV_NULL_VALUES),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        try:
            reader = pcsv.open_csv(
                self.path, read_options=read, parse_options=parse, convert_options=convert
            )
        except (pa.ArrowException, OSError) as exc:
            raise self._error(exc, bad_rows) from exc
        with reader:
            if self.column_types:
                unknown = [n for n in self.column_types if n not in reader.schema.names]
                if unknown:
                    raise SourceError(
                        f"{self.path}: schema names columns {unknown} that the file's header "
                        f"does not have (header: {reader.schema.names})"
                    )
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowException, OSError) as exc:
                    raise self._error(exc, bad_rows) from exc
                yield batch

    def _error(self, exc: Exception, bad_rows: list[Any]) -> SourceError:
        """A SourceError naming the line (and column) of a pyarrow CSV error."""
        msg = str(exc)
        row = bad_rows[-1] if bad_rows else None
        number = getattr(row, "number", None)
        if number is None or number < 0:
            m = re.search(r"Row #(\d+)", msg)
            number = int(m.group(1)) if m else None
        if number is None:
            return SourceError(f"{self.path}: {msg}")
        found = _csv_record_lines(self.path, number)
        if found is None:
            where = f"record {number} (pyarrow's count, the header being record 1)"
            header: list[str] = []
        else:
            first, last, header = found
            lines = f"line {first}" if first == last else f"lines {first}-{last}"
            where = f"{lines} (1-based, the header being line 1)"
        if row is not None:
            return SourceError(
                f"{self.path}: {where}: expected {row.expected_columns} fields, found "
                f"{row.actual_columns}: {row.text!r}"
            )
        col = re.search(r"In CSV column #(\d+)", msg)
        if col is not None:
            j = int(col.group(1))
            name = header[j] if j < len(header) else f"#{j}"
            detail = re.sub(r"^In CSV column #\d+: (Row #\d+: )?", "", msg)
            return SourceError(f"{self.path}: {where}, column {name!r}: {detail}")
        detail = re.sub(r"Row #\d+: ", "", msg)
        return SourceError(f"{self.path}: {where}: {detail}")


# --------------------------------------------------------------------------- open_source
def _scenario_source(spec: str, batch_size: int) -> ScenarioSource:
    body = spec[len("scenario:") :]
    name, _, query = body.partition("?")
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise SourceError(f"{spec!r}: bad parameters: {exc}") from exc
    for key, value in params:
        if key in ("total", "seed", "batch_size"):
            try:
                kwargs[key] = int(value)
            except ValueError as exc:
                raise SourceError(f"{spec!r}: {key} must be an integer, got {value!r}") from exc
        elif key == "random":
            if value.lower() not in ("", "1", "0", "true", "false", "yes", "no"):
                raise SourceError(f"{spec!r}: random must be true or false, got {value!r}")
            kwargs[key] = value.lower() in ("", "1", "true", "yes")
        else:
            raise SourceError(
                f"{spec!r}: unknown parameter {key!r} (known: total, seed, random, batch_size)"
            )
    return ScenarioSource(name, **kwargs)


def open_source(spec: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> Source:
    """A Source from ``spec``: a Source (as is); a path (by extension: .parquet/.pq or a
    directory of Parquet files, .arrow/.ipc/.feather, .arrows/.arrowstream, .csv); a
    list of Parquet paths; ``"scenario:S2"`` or ``"scenario:S2?total=1000000&seed=3"``
    (parameters total, seed, random, batch_size); or a list / iterator of batches
    (a MemorySource, one batch per item)."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if isinstance(path, str) and path.startswith("scenario:"):
            return _scenario_source(path, batch_size)
        if os.path.isdir(path):
            return ParquetSource(path, batch_size)
        ext = _extension(path)
        if ext not in _SOURCE_EXTENSIONS:
            raise SourceError(
                f"{path}: unknown file extension {ext!r} "
                f"(known: {', '.join(_SOURCE_EXTENSIONS)}, or a directory of .parquet files, "
                f"or 'scenario:NAME')"
            )
        if not os.path.exists(path):
            raise SourceError(f"{path}: no such file")
        if ext in PARQUET_EXTENSIONS:
            return ParquetSource(path, batch_size)
        if ext in CSV_EXTENSIONS:
            return CSVSource(path, batch_size)
        return ArrowIPCSource(path, batch_size)
    if (
        isinstance(spec, (list, tuple))
        and spec
        and all(isinstance(p, (str, os.PathLike)) for p in spec)
    ):
        paths = [os.fspath(p) for p in spec]
        if all(_extension(p) in PARQUET_EXTENSIONS for p in paths):
            return ParquetSource(paths, batch_size)
        raise SourceError(f"a list of paths must all be Parquet files, got {paths}")
    if _is_data(spec) or isinstance(spec, Iterable):
        return MemorySource(spec)
    raise SourceError(f"cannot make a source from {type(spec).__name__}")
