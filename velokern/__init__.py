"""velokern: streaming SQL over columnar record batches, compiled to numba kernels."""

from velokern._version import __version__
from velokern.batch import RecordBatch, Schema, StringDictionary

__all__ = ["RecordBatch", "Schema", "StringDictionary", "__version__"]
