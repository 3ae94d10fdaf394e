"""The machine's own parallel ceiling: hand-written numba loops with no serial part and
no shared data, timed on one worker and on many. V2 at p partitions cannot scale better
than they do."""

from __future__ import annotations

import statistics

import numpy as np
from numba import njit, prange

from velokern.bench.runner import _time


# the machine's own parallel ceiling: two prange loops with no serial part and no shared
# data, a compute-bound float recurrence and a memory-bound sum (measure_parallel_ceiling)
@njit(cache=True, nogil=True)
def _chain(a, lo, hi):
    s = 0.0
    for i in range(lo, hi):
        x = a[i]
        for _ in range(16):
            x = x * 1.0000001 + 0.5
        s += x
    return s


@njit(cache=True, nogil=True)
def _total(a, lo, hi):
    s = 0.0
    for i in range(lo, hi):
        s += a[i]
    return s


@njit(cache=True, nogil=True, parallel=True)
def _compute(a, parts, out):
    for q in prange(parts):
        out[q] = _chain(a, q * len(a) // parts, (q + 1) * len(a) // parts)


@njit(cache=True, nogil=True, parallel=True)
def _scan(a, parts, out):
    for q in prange(parts):
        out[q] = _total(a, q * len(a) // parts, (q + 1) * len(a) // parts)


def measure_parallel_ceiling(threads: int | None = None, repeats: int = 15,
                             sizes: tuple[int, int] = (1_000_000, 50_000_000)) -> dict:
    """Per loop with nothing serial: the median seconds on one numba worker, and the
    speed-up of ``threads`` workers over one: what this machine's cores give at best
    (V2 cannot beat it). The one-worker time shows how fast the machine ran then.
    ``sizes``: the elements of the compute-bound loop and of the scanned array."""
    import numba

    from velokern.processors.threading import available_cpus, configure_threading_layer

    configure_threading_layer()
    threads = threads or max(len(available_cpus()), 1)
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    cases = {"compute-bound loop": (_compute, np.random.default_rng(0).random(sizes[0])),
             f"memory-bound scan ({sizes[1] * 8 / 1e6:,.0f} MB)": (_scan, np.ones(sizes[1]))}
    out = {"threads": threads}
    saved = numba.get_num_threads()
    try:
        for name, (fn, a) in cases.items():
            res = np.zeros(threads)
            med = {}
            for t in (1, threads):
                numba.set_num_threads(t)
                fn(a, threads, res)
                med[t] = statistics.median(
                    _time(lambda fn=fn, a=a, res=res: fn(a, threads, res), repeats))
            out[name] = {"one": med[1], "speedup": med[1] / med[threads]}
    finally:
        numba.set_num_threads(saved)
    return out
