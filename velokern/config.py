"""Every tunable of velokern, named and documented in one place.

Values are module attributes read when used, so a program (or a test) may set one
before it builds its engines: ``velokern.config.PARALLEL_MIN_ROWS = 65_536``. Those a
user is likely to want to change from outside a program can also be set in the
environment (``VELOKERN_<NAME>``) before velokern is imported. None of them changes an
answer: they trade memory against time, or decide where a step runs.
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(f"VELOKERN_{name}")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"VELOKERN_{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"VELOKERN_{name} must be >= 0, got {value}")
    return value


# ---------------------------------------------------------------- planning limits
# A query or processor past one of these is refused when it is planned, with an error
# naming the construct and the limit (past them a job would allocate gigabytes).
#: rows one ROWS window frame keeps per key (``n PRECEDING`` + the current row), and the
#: largest LAG offset: each is a ring of that many values per key in the state
MAX_ROWS_FRAME = 10_000
#: windows one record belongs to in a sliding window (size / slide): each batch's
#: output room and late-row room grow with it
MAX_WINDOWS_PER_RECORD = 100
#: V2 partitions (each has its own state)
MAX_PARTITIONS = 1024
#: event times, in ticks of the time column (ms, or the datetime64 unit), lie strictly
#: between -MAX_EVENT_TIME and MAX_EVENT_TIME (2**62 ns: years 1824 to 2116), and window
#: sizes, slides, session gaps and the allowed lateness are under MAX_WINDOW_TICKS ticks:
#: window arithmetic then never leaves int64 (a batch with a time outside is refused)
MAX_EVENT_TIME = 2**62
MAX_WINDOW_TICKS = 2**60

# ---------------------------------------------------------------- state
#: groups each partition's state holds at first (it doubles when full)
INITIAL_GROUPS = 256
#: a direct map (keys that are all string/bool columns) grows to at most this many slots
#: per partition; past it the job turns the map off and uses the hash table alone
DIRECT_MAP_LIMIT = 1 << 20

# ---------------------------------------------------------------- generated kernels
# (baked into the generated source: a change compiles new kernels, under new cache keys)
#: GROUP BY over a hash table of at least this many slots (no longer in cache) prefetches
#: each row's table slot PREFETCH_AHEAD rows ahead (see velokern.codegen.prefetch)
PREFETCH_MIN_SLOTS = 65536
PREFETCH_AHEAD = 32
#: a windowed kernel frees closed windows in the middle of a batch once this many groups
#: are live (and then at twice the groups left): closing earlier or later never changes
#: a result, it only bounds the state
WINDOW_CLOSE_GROUPS = 4096

# ---------------------------------------------------------------- V2
#: V2 may run a batch on its worker threads (routing, kernels, and putting the output rows
#: back into order) when it has this many rows and more; fewer run on the calling thread
#: alone (waking the workers costs more than they save: docs/performance-analysis.md,
#: "V2 on realistic data")
PARALLEL_MIN_ROWS = _env_int("PARALLEL_MIN_ROWS", 32_768)
#: V2 keeps a running cost per row of its large batches on all workers and on one, and
#: runs the next on whichever is cheaper (a core taken by another process makes the
#: workers wait for it); V2_PROBE_EVERY large batches after the choice changed, one runs
#: the other way to measure it again, then twice as long after each probe that left the
#: choice as it was, up to V2_PROBE_MAX: the choice follows the machine when its load
#: changes
V2_PROBE_EVERY = _env_int("V2_PROBE_EVERY", 16)
V2_PROBE_MAX = _env_int("V2_PROBE_MAX", 256)
#: after this many small batches in a row on one worker (a large one: at once), a V2 job
#: keyed by hash moves its state into one partition (V1's layout: no bucketing, no
#: merge), and back into its partitions the first time a batch runs on all workers
#: (velokern.exec.reshard)
V2_ONE_PARTITION_AFTER = _env_int("V2_ONE_PARTITION_AFTER", 4)
#: weight of the newest batch in those running costs
V2_COST_WEIGHT = 0.25

# ---------------------------------------------------------------- output memory
#: output blocks no output refers to any more are kept for reuse up to this many bytes
#: (velokern.pool.BlockPool)
POOL_MAX_FREE_BYTES = _env_int("POOL_MAX_FREE_BYTES", 64 << 20)
#: output packs smaller than this are plain arrays, not carved from a pooled block (the
#: C allocator keeps small sizes mapped anyway)
POOL_MIN_BYTES = 256 << 10
#: a validity mask of up to this many entries is checked with a count, longer ones with
#: a reduction (the count costs ~0.4 us a call, numpy's reduction ~1.4 us, but the
#: reduction is faster on long arrays)
MASK_COUNT_MAX = 8192

# ---------------------------------------------------------------- sources
#: records per batch a file or scenario source cuts its input into, unless told
DEFAULT_BATCH_SIZE = 100_000
#: rows a Parquet source reads from a row group at a time
PARQUET_READ_ROWS = 65_536

# ---------------------------------------------------------------- caches
#: one-partition routings kept by batch size (sizes a job sees are few)
ROUTING_CACHE_SIZE = 64
#: output pack layouts kept per kernel variant, by (rows, pool threshold)
PACK_LAYOUT_CACHE_SIZE = 64
