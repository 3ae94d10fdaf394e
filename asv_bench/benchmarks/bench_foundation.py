"""Foundation benchmarks: the shim's bucketing and RecordBatch construction.

All data is built in ``setup``; the timed methods only call the code under test.
"""

from __future__ import annotations

import os

import numpy as np

from velokern import _shim
from velokern.batch import RecordBatch, StringDictionary

ROWS = [1_000, 10_000, 100_000, 1_000_000]
PARTITIONS = 8


class Bucketing:
    """Partition ids from one int64 key column and the stable counting sort by them."""

    params = ROWS
    param_names = ["rows"]

    def setup(self, rows):
        rng = np.random.default_rng(42)
        self.keys = rng.integers(0, 1_000_000, rows, dtype=np.int64)
        self.two_keys = [self.keys, rng.integers(0, 1_000, rows, dtype=np.int64)]
        self.pids = _shim.partition_ids(self.keys, PARTITIONS)

    def time_partition_ids_and_stable_bucket(self, rows):
        _shim.stable_bucket(_shim.partition_ids(self.keys, PARTITIONS), PARTITIONS)

    def time_bucket_by_keys(self, rows):
        _shim.bucket_by_keys(self.keys, PARTITIONS)

    def time_partition_ids(self, rows):
        _shim.partition_ids(self.keys, PARTITIONS)

    def time_partition_ids_two_keys(self, rows):
        _shim.partition_ids(self.two_keys, PARTITIONS)

    def time_stable_bucket(self, rows):
        _shim.stable_bucket(self.pids, PARTITIONS)


class ThreadedBucketing:
    """``bucket_by_keys`` on the process's CPUs (one OpenMP thread per CPU, at most
    PARTITIONS) for an int64 key column."""

    params = ROWS
    param_names = ["rows"]
    dtype = np.int64

    def setup(self, rows):
        self.keys = np.random.default_rng(42).integers(0, 1_000, rows).astype(self.dtype)
        self.threads = max(1, min(PARTITIONS, len(os.sched_getaffinity(0))))
        try:  # commits before threaded bucketing (or before int32 key columns)
            _shim.bucket_by_keys(self.keys[:1], PARTITIONS, self.threads)
        except TypeError:
            raise NotImplementedError from None

    def time_bucket_by_keys_threads(self, rows):
        _shim.bucket_by_keys(self.keys, PARTITIONS, self.threads)


class ThreadedBucketingCodes(ThreadedBucketing):
    """The same for int32 dictionary codes, which the shim reads as they are."""

    dtype = np.int32


def _columns(rows: int, rng: np.random.Generator, symbols: np.ndarray) -> dict:
    return {
        "id": np.arange(rows, dtype=np.int64),
        "price": rng.normal(100.0, 5.0, rows),
        "quantity": rng.integers(1, 1000, rows, dtype=np.int32),
        "buy": rng.random(rows) < 0.5,
        "ts": (np.arange(rows, dtype=np.int64) * 1000).astype("datetime64[ms]"),
        "symbol": symbols[rng.integers(0, len(symbols), rows)],
    }


class BatchConstruction:
    """RecordBatch from numpy columns and from Arrow, strings into a job's dictionary.

    The dictionary already holds every symbol, as in a job's steady state: encoding
    finds codes and adds nothing.
    """

    params = ROWS
    param_names = ["rows"]

    def setup(self, rows):
        rng = np.random.default_rng(7)
        vocab = np.array([f"SYM{i:04d}" for i in range(1000)], dtype=object)
        self.columns = _columns(rows, rng, vocab)
        self.numeric = {k: v for k, v in self.columns.items() if k != "symbol"}
        self.dictionary = StringDictionary(vocab.tolist())
        self.dictionaries = {"symbol": self.dictionary}
        try:
            import pyarrow as pa
        except ImportError:  # asv skips a benchmark whose setup raises this
            raise NotImplementedError("pyarrow is not installed") from None
        self.table = pa.table(self.columns)
        self.numeric_table = pa.table(self.numeric)
        self.dict_table = self.table.set_column(
            self.table.schema.get_field_index("symbol"),
            "symbol",
            self.table.column("symbol").dictionary_encode(),
        )

    def time_from_pydict(self, rows):
        RecordBatch.from_pydict(self.columns, dictionaries=self.dictionaries)

    def time_from_pydict_numeric(self, rows):
        RecordBatch.from_pydict(self.numeric)

    def time_from_arrow(self, rows):
        RecordBatch.from_arrow(self.table, dictionaries=self.dictionaries)

    def time_from_arrow_dictionary_strings(self, rows):
        RecordBatch.from_arrow(self.dict_table, dictionaries=self.dictionaries)

    def time_from_arrow_numeric(self, rows):
        RecordBatch.from_arrow(self.numeric_table)

    def track_dictionary_size_after_from_pydict(self, rows):
        RecordBatch.from_pydict(self.columns, dictionaries=self.dictionaries)
        return len(self.dictionary)

    track_dictionary_size_after_from_pydict.unit = "strings"
