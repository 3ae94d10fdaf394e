"""asv benchmarks of velokern.

Run them from ``asv_bench/``: ``asv run`` builds a wheel of each commit (which compiles
the Cython shim) in a virtualenv holding the newest numpy, numba, sqlglot, Cython,
setuptools and wheel, plus pyarrow, polars and duckdb for the comparisons;
``asv run --python=same`` uses the current environment instead. Every benchmark
module's setup, and each benchmark once at its first parameters, also runs in the
test suite (tests/test_asv_benchmarks.py), so a benchmark cannot silently rot.
"""
