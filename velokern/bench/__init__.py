"""``velokern bench`` and ``make bench-report``: measuring velokern against DuckDB and
Polars, and writing ``docs/performance.md``.

The package, in reading order:

- ``queries``: the reference scenarios in standard SQL (DuckDB's per-batch query and the
  whole stream's answer);
- ``checks``: the answer checks every run passes before it prints a figure;
- ``runner``: the runner, ``run_bench``: each scenario through V1, V2 (1, 2, 4, ...
  partitions), DuckDB and Polars, timed side by side;
- ``ceiling``: the machine's own parallel ceiling (hand-written numba loops);
- ``studies``: the other measurements: high-cardinality GROUP BY, bucketing, cold and
  warm start, Dask, and the scaling study of ``velokern bench --scaling``;
- ``tables``: measurements as markdown tables, a plot, the scaling study's section;
- ``report``: the report writer of ``make bench-report``; the hand-written analysis it
  appends lives in ``docs/performance-analysis.md``.

Every name is importable from ``velokern.bench`` as before the split.
"""

from velokern.bench.ceiling import measure_parallel_ceiling
from velokern.bench.checks import _check as _check
from velokern.bench.checks import _check_direct as _check_direct
from velokern.bench.checks import _per_batch_answers as _per_batch_answers
from velokern.bench.queries import ALL_SCENARIOS, DIRECT_SQL
from velokern.bench.report import ANALYSIS_FILE, TARGETS, analysis, render_report, write_report
from velokern.bench.runner import (
    QUICK,
    BenchResult,
    default_processors,
    machine_info,
    run_bench,
    to_json,
)
from velokern.bench.runner import _from_json as _from_json
from velokern.bench.runner import _time as _time
from velokern.bench.runner import _time_rounds as _time_rounds
from velokern.bench.studies import (
    COLD,
    NUMBA,
    SCALING_SCENARIOS,
    WARM,
    measure_bucketing,
    measure_dask,
    measure_high_cardinality,
    measure_scaling,
    measure_start,
)
from velokern.bench.tables import (
    format_scaling,
    format_scaling_study,
    format_table,
    plot,
    scaling_sections,
)

# the private helpers imported "as" themselves (_check, _time_rounds, ...) are used by
# the tests and were importable from velokern.bench before the split
__all__ = [
    "ALL_SCENARIOS",
    "ANALYSIS_FILE",
    "COLD",
    "DIRECT_SQL",
    "NUMBA",
    "QUICK",
    "SCALING_SCENARIOS",
    "TARGETS",
    "WARM",
    "BenchResult",
    "analysis",
    "default_processors",
    "format_scaling",
    "format_scaling_study",
    "format_table",
    "machine_info",
    "measure_bucketing",
    "measure_dask",
    "measure_high_cardinality",
    "measure_parallel_ceiling",
    "measure_scaling",
    "measure_start",
    "plot",
    "render_report",
    "run_bench",
    "scaling_sections",
    "to_json",
    "write_report",
]
