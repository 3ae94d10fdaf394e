"""Sinks: where a job's output batches go, with exactly-once checkpoints.

The protocol a job runner follows::

    sink.open(resume)        # None: start fresh; else a token from an earlier commit()
    sink.write(batch) ...    # any number of batches
    token = sink.commit()    # durable; store the token in the job's checkpoint
    ...
    sink.close()             # the final output

After a crash the runner makes a new sink on the same target and calls
``open(resume=token)`` with the token of its last checkpoint: everything written after
that commit is discarded, so once the batches after the checkpoint are processed again
the output has every record exactly once.

The file sinks stage batches in Arrow IPC stream segments in a hidden directory next to
the target (``<dir>/.<name>.vkparts/seg-000001.arrows``, ...); ``commit()`` closes and
fsyncs the current segment, and its token is ``{"segments": k, "rows": n}``. ``close()``
assembles the final file from the segments (written to a temporary file in the same
directory, fsynced, then renamed onto the target) and removes the staging directory. The
final file depends only on the rows, not on how they were cut into batches or segments.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from velokern.api import as_batch
from velokern.batch import RecordBatch, Schema
from velokern.io.sources import _arrow, _cut_batches, _schema_difference

__all__ = [
    "ArrowIPCSink",
    "CSVSink",
    "CallbackSink",
    "MemorySink",
    "ParquetSink",
    "Sink",
    "SinkError",
    "open_sink",
]

_SEGMENT = re.compile(r"^seg-(\d{6})\.arrows$")

PARQUET_EXTENSIONS = (".parquet", ".pq")
IPC_EXTENSIONS = (".arrow", ".ipc", ".feather")
CSV_EXTENSIONS = (".csv",)


class SinkError(ValueError):
    """A sink cannot take a batch, a checkpoint token, or produce its output; the message
    names the sink and what is at fault."""


def _token_count(token: Mapping[str, Any], key: str, sink: str) -> int:
    value = token.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SinkError(f"{sink}: bad resume token {dict(token)!r}: {key!r} must be an int >= 0")
    return value


def _tables(pieces: Iterator, size: int) -> Iterator:
    """pyarrow Tables of exactly ``size`` rows (the last may hold fewer) from Arrow
    record batches of any sizes, built afresh from numpy (``RecordBatch.to_arrow``) so
    that their bytes depend only on the rows: Arrow slices of the pieces could carry
    bits of neighbouring rows into the last byte of a validity bitmap. (Each piece gets
    its own string dictionaries, so a table's strings cost in proportion to its piece,
    not to every string of the output.)"""
    batches = (RecordBatch.from_arrow(piece) for piece in pieces)
    for batch in _cut_batches(batches, size):
        yield batch.to_arrow()


def _check_size(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SinkError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _fsync_dir(path: str) -> None:
    """Make a directory's entries (new, renamed, removed files) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


# --------------------------------------------------------------------------- base
class Sink:
    """Where a job's output batches go; see the module docstring for the protocol.

    All batches written to one sink must have the same column names and types (batches
    with no columns are ignored; one with columns and no rows fixes the schema).
    """

    name: str = "sink"

    def __init__(self) -> None:
        self._state = "new"  # "new", "open" or "closed"
        self._schema: Schema | None = None
        self._rows = 0

    @property
    def rows_written(self) -> int:
        """Rows written since the sink was opened fresh (committed or not)."""
        return self._rows

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def locations(self) -> list[str]:
        """The files this sink writes (none for memory and callbacks)."""
        return []

    def open(self, resume: Mapping[str, Any] | None = None) -> None:
        """Prepare for writing; ``resume`` is a token from an earlier :meth:`commit` and
        drops what was written after it, ``None`` starts fresh."""
        if resume is not None and not isinstance(resume, Mapping):
            raise SinkError(f"{self.name}: resume token must be a dict, got {resume!r}")
        self._open(resume)
        self._state = "open"

    def write(self, batch: Any) -> None:
        """Add a batch (a RecordBatch, or anything :func:`velokern.as_batch` takes)."""
        self._check_open("write")
        if not isinstance(batch, RecordBatch):
            batch = as_batch(batch)
        if batch.num_columns == 0:
            return
        schema = batch.schema
        if self._schema is None:
            self._schema = schema
        elif schema != self._schema:
            diff = _schema_difference(list(self._schema), list(schema))
            raise SinkError(f"{self.name}: batch does not match the sink's schema: {diff}")
        self._write(batch)
        self._rows += len(batch)

    def commit(self) -> dict[str, Any]:
        """Make everything written so far durable; returns a JSON-able token for
        :meth:`open` (``resume=``)."""
        self._check_open("commit")
        return self._commit()

    def close(self, final: bool = True) -> None:
        """Commit and produce the final output (nothing to do when already closed or
        never opened). ``final=False`` suspends instead: the output so far is committed
        and written to the target, but a later sink can still ``open(resume=token)``
        and go on (a job stopped to be resumed from its checkpoint)."""
        if self._state != "open":
            return
        if final:
            self._close()
        else:
            self._suspend()
        self._state = "closed"

    def abort(self) -> None:
        """Give up without committing anything more (after a failure): the committed
        output stays resumable."""
        self._abort()
        if self._state == "open":
            self._state = "closed"

    def complete(self, resume: Mapping[str, Any] | None) -> None:
        """Finish the output of a job that ended with commit token ``resume`` (its final
        checkpoint was written, but it may have died before closing its sinks)."""
        self.open(resume)
        self.close()

    def __enter__(self) -> Sink:
        if self._state != "open":
            self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _check_open(self, what: str) -> None:
        if self._state == "new":
            raise SinkError(f"{self.name}: call open() before {what}()")
        if self._state == "closed":
            raise SinkError(f"{self.name}: cannot {what}(): the sink is closed")

    # subclasses
    def _open(self, resume: Mapping[str, Any] | None) -> None:
        raise NotImplementedError

    def _write(self, batch: RecordBatch) -> None:
        raise NotImplementedError

    def _commit(self) -> dict[str, Any]:
        raise NotImplementedError

    def _close(self) -> None:
        self._commit()

    def _abort(self) -> None:
        """Stop after an error, keeping what was committed (for a later resume)."""

    def _suspend(self) -> None:
        self._commit()


# --------------------------------------------------------------------------- memory
class MemorySink(Sink):
    """Keeps the batches in a list; :meth:`result` concatenates them. Commit token:
    ``{"batches": k, "rows": n}``; ``open(resume)`` keeps the first ``k`` batches."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "memory"
        self.batches: list[RecordBatch] = []
        self._empty: RecordBatch | None = None  # no rows, the schema of the first batch

    def describe(self) -> dict[str, Any]:
        return {"kind": "memory"}

    def result(self) -> RecordBatch:
        """All rows written as one batch (``RecordBatch({})`` when no batch had columns)."""
        if self.batches:
            return RecordBatch.concat(self.batches)
        return self._empty if self._empty is not None else RecordBatch({})

    def _open(self, resume: Mapping[str, Any] | None) -> None:
        if resume is None:
            self.batches.clear()
            self._empty = None
        else:
            k = _token_count(resume, "batches", self.name)
            if k > len(self.batches):
                raise SinkError(
                    f"{self.name}: resume token {dict(resume)!r} names {k} batches, "
                    f"the sink holds {len(self.batches)}"
                )
            del self.batches[k:]
        self._rows = sum(len(b) for b in self.batches)
        if resume is not None and "rows" in resume and resume["rows"] != self._rows:
            raise SinkError(
                f"{self.name}: resume token {dict(resume)!r} does not match the "
                f"{self._rows} rows held"
            )
        if self.batches:
            self._schema = self.batches[0].schema
        elif self._empty is None:
            self._schema = None

    def _write(self, batch: RecordBatch) -> None:
        if self._empty is None:
            self._empty = batch.slice(0, 0)
        if len(batch):
            self.batches.append(batch)

    def _commit(self) -> dict[str, Any]:
        return {"batches": len(self.batches), "rows": self._rows}


class CallbackSink(Sink):
    """Calls ``fn(batch)`` for every batch with rows. Commit token:
    ``{"batches": k, "rows": n}``.

    Calls cannot be undone: after a crash, ``open(resume)`` only takes the counts from
    the token, and the batches processed again after the checkpoint are passed to
    ``fn`` again, so a callback sink is at-least-once (``fn`` must tolerate repeats).
    """

    def __init__(self, fn: Callable[[RecordBatch], Any]):
        if not callable(fn):
            raise SinkError(f"CallbackSink needs a callable, got {type(fn).__name__}")
        super().__init__()
        self.fn = fn
        self.name = f"callback {getattr(fn, '__qualname__', repr(fn))}"
        self.batches_written = 0

    def describe(self) -> dict[str, Any]:
        return {"kind": "callback", "callback": getattr(self.fn, "__qualname__", repr(self.fn))}

    def _open(self, resume: Mapping[str, Any] | None) -> None:
        self._schema = None
        if resume is None:
            self.batches_written, self._rows = 0, 0
        else:
            self.batches_written = _token_count(resume, "batches", self.name)
            self._rows = _token_count(resume, "rows", self.name)

    def _write(self, batch: RecordBatch) -> None:
        if len(batch):
            self.fn(batch)
            self.batches_written += 1

    def _commit(self) -> dict[str, Any]:
        return {"batches": self.batches_written, "rows": self._rows}


# --------------------------------------------------------------------------- files
class _StagedFileSink(Sink):
    """A file sink that stages batches in Arrow IPC stream segments (see the module
    docstring). Subclasses write the final file in :meth:`_assemble`.

    A sink that never saw a batch with columns knows no schema and writes no file at
    close (it removes a file left at the target by an earlier run, so the target never
    shows another run's output); with a schema and no rows it writes a valid empty file.
    """

    kind = "file"

    def __init__(self, path: Any):
        super().__init__()
        self.path = os.path.abspath(os.fspath(path))
        self.name = os.fspath(path)
        directory, base = os.path.split(self.path)
        self._dir = directory
        self._staging = os.path.join(directory, f".{base}.vkparts")
        self._tmp = os.path.join(directory, f".{base}.vktmp")
        self._done = os.path.join(directory, f".{base}.vkdone")
        self._segments = 0  # committed segments
        self._file: Any = None  # the open (uncommitted) segment and its writer
        self._writer: Any = None
        self._arrow_schema: Any = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}

    def locations(self) -> list[str]:
        return [self.path]

    @property
    def staging_dir(self) -> str:
        """The hidden directory holding the segments until :meth:`close`."""
        return self._staging

    def _segment_path(self, i: int) -> str:
        return os.path.join(self._staging, f"seg-{i:06d}.arrows")

    def _segment_numbers(self) -> list[int]:
        if not os.path.isdir(self._staging):
            return []
        found = (_SEGMENT.match(n) for n in os.listdir(self._staging))
        return sorted(int(m.group(1)) for m in found if m)

    # ---------------------------------------------------------------- open
    def _open(self, resume: Mapping[str, Any] | None) -> None:
        self._abort()
        if not os.path.isdir(self._dir):
            raise SinkError(f"{self.name}: directory {self._dir} does not exist")
        if os.path.isdir(self.path):
            raise SinkError(f"{self.name}: is a directory, expected a file path")
        _remove(self._tmp)
        shutil.rmtree(self._done, ignore_errors=True)
        if resume is None:
            if os.path.isdir(self._staging):
                shutil.rmtree(self._staging)
            os.makedirs(self._staging)
            _fsync_dir(self._dir)
            self._segments, self._rows = 0, 0
            self._schema = self._arrow_schema = None
            return
        k = _token_count(resume, "segments", self.name)
        rows = _token_count(resume, "rows", self.name)
        if k and not os.path.isdir(self._staging):
            raise SinkError(
                f"{self.name}: cannot resume from {dict(resume)!r}: the staging directory "
                f"{self._staging} is gone (the sink was closed already, or the checkpoint "
                f"belongs to another output)"
            )
        os.makedirs(self._staging, exist_ok=True)
        present = self._segment_numbers()
        missing = sorted(set(range(1, k + 1)) - set(present))
        if missing:
            raise SinkError(
                f"{self.name}: cannot resume from {dict(resume)!r}: committed segments "
                f"{missing} are missing from {self._staging}"
            )
        found, schema = self._count_rows(k)
        if found != rows:
            raise SinkError(
                f"{self.name}: cannot resume from {dict(resume)!r}: the {k} committed "
                f"segments hold {found} rows"
            )
        for i in present:
            if i > k:  # written after the checkpoint (possibly partial): discard
                _remove(self._segment_path(i))
        _fsync_dir(self._staging)
        self._segments, self._rows = k, rows
        self._arrow_schema = schema
        self._schema = None
        if schema is not None:
            self._schema = RecordBatch.from_arrow(schema.empty_table()).schema

    def _read_segment(self, i: int) -> Iterator:
        """The Arrow record batches of committed segment ``i``."""
        pa = _arrow()
        path = self._segment_path(i)
        try:
            with pa.OSFile(path) as f:
                reader = pa.ipc.open_stream(f)
                yield from reader
        except (pa.ArrowException, OSError) as exc:
            raise SinkError(f"{self.name}: staged segment {path} cannot be read: {exc}") from exc

    def _count_rows(self, k: int) -> tuple[int, Any]:
        pa = _arrow()
        rows, schema = 0, None
        for i in range(1, k + 1):
            path = self._segment_path(i)
            try:
                with pa.OSFile(path) as f:
                    reader = pa.ipc.open_stream(f)
                    if schema is None:
                        schema = reader.schema
                    rows += sum(b.num_rows for b in reader)
            except (pa.ArrowException, OSError) as exc:
                raise SinkError(
                    f"{self.name}: staged segment {path} cannot be read: {exc}"
                ) from exc
        return rows, schema

    # ---------------------------------------------------------------- write / commit
    def _write(self, batch: RecordBatch) -> None:
        table = batch.to_arrow()
        if self._writer is None:
            if not len(table) and self._segments:
                return  # the schema is on disk already
            pa = _arrow()
            self._arrow_schema = table.schema
            self._file = open(self._segment_path(self._segments + 1), "wb")  # noqa: SIM115
            self._writer = pa.ipc.new_stream(self._file, table.schema)
        if len(table):
            self._writer.write_table(table)

    def _commit(self) -> dict[str, Any]:
        if self._writer is not None:
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._writer = self._file = None
            self._segments += 1
            _fsync_dir(self._staging)
        return {"segments": self._segments, "rows": self._rows}

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
        self._writer = self._file = None

    # ---------------------------------------------------------------- close
    def complete(self, resume: Mapping[str, Any] | None) -> None:
        if not os.path.isdir(self._staging) and os.path.exists(self.path):
            return  # closed already: the final file is in place
        super().complete(resume)

    def _close(self) -> None:
        self._suspend()
        # renamed first (atomic), so a crash while deleting cannot leave a staging
        # directory with some segments gone
        shutil.rmtree(self._done, ignore_errors=True)
        os.replace(self._staging, self._done)
        _fsync_dir(self._dir)
        shutil.rmtree(self._done, ignore_errors=True)

    def _suspend(self) -> None:
        """Commit, and write the target from the committed segments (kept)."""
        self._commit()
        if self._arrow_schema is None:
            # nothing with columns was written: no schema, no file
            _remove(self.path)
        else:
            pieces = (b for i in range(1, self._segments + 1) for b in self._read_segment(i))
            try:
                with open(self._tmp, "wb") as f:
                    self._assemble(f, self._arrow_schema, pieces)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(self._tmp, self.path)
            except BaseException:
                _remove(self._tmp)
                raise
        _fsync_dir(self._dir)

    def _assemble(self, f, schema, pieces: Iterator) -> None:
        raise NotImplementedError


class ParquetSink(_StagedFileSink):
    """Writes a Parquet file whose row groups hold exactly ``row_group_size`` rows (the
    last may hold fewer), staged for exactly-once output (see the module docstring)."""

    kind = "parquet"

    def __init__(self, path: Any, row_group_size: int = 65_536):
        super().__init__(path)
        self.row_group_size = _check_size("row_group_size", row_group_size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "row_group_size": self.row_group_size}

    def _assemble(self, f, schema, pieces: Iterator) -> None:
        pq = _arrow("pyarrow.parquet")
        writer = pq.ParquetWriter(f, schema)
        for table in _tables(pieces, self.row_group_size):
            writer.write_table(table, row_group_size=self.row_group_size)
        writer.close()


class ArrowIPCSink(_StagedFileSink):
    """Writes an Arrow IPC file (random-access format) of record batches of exactly
    ``batch_size`` rows (the last may hold fewer), staged for exactly-once output."""

    kind = "arrow_ipc"

    def __init__(self, path: Any, batch_size: int = 65_536):
        super().__init__(path)
        self.batch_size = _check_size("batch_size", batch_size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "batch_size": self.batch_size}

    def _assemble(self, f, schema, pieces: Iterator) -> None:
        pa = _arrow()
        writer = pa.ipc.new_file(f, schema)
        for table in _tables(pieces, self.batch_size):
            writer.write_table(table)
        writer.close()


class CSVSink(_StagedFileSink):
    """Writes a CSV file with one header line (``pyarrow.csv.CSVWriter``: strings
    quoted, NULL as an empty unquoted field, timestamps as ``YYYY-MM-DD hh:mm:ss``),
    staged for exactly-once output. :class:`~velokern.io.CSVSource` reads it back."""

    kind = "csv"

    def _assemble(self, f, schema, pieces: Iterator) -> None:
        pcsv = _arrow("pyarrow.csv")
        writer = pcsv.CSVWriter(f, schema)
        for table in _tables(pieces, 65_536):
            writer.write_table(table)
        writer.close()


# --------------------------------------------------------------------------- open_sink
def open_sink(spec: Any) -> Sink:
    """A Sink from ``spec``: a Sink (as is), ``"memory"``, a callable (CallbackSink) or
    a path by extension (.parquet/.pq, .arrow/.ipc/.feather, .csv)."""
    if isinstance(spec, Sink):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if path == "memory":
            return MemorySink()
        ext = os.path.splitext(path)[1].lower()
        if ext in PARQUET_EXTENSIONS:
            return ParquetSink(path)
        if ext in IPC_EXTENSIONS:
            return ArrowIPCSink(path)
        if ext in CSV_EXTENSIONS:
            return CSVSink(path)
        known = ", ".join(PARQUET_EXTENSIONS + IPC_EXTENSIONS + CSV_EXTENSIONS)
        raise SinkError(
            f"{path}: unknown file extension {ext!r} (known: {known}, or 'memory', "
            f"or a callable)"
        )
    if callable(spec):
        return CallbackSink(spec)
    raise SinkError(f"cannot make a sink from {type(spec).__name__}")
