"""The numba threading layer velokern runs V2 kernels on, and core pinning of workers.

Layer choice: **OpenMP (``omp``)**. It is thread-safe, so several V2 jobs can run their
``prange`` kernels at once from different Python threads (each calling thread gets its
own OpenMP team), and it costs ~14 µs per parallel call against ~185 µs for
``workqueue``, which also aborts the process on concurrent use. OpenMP is not fork-safe:
start subprocesses with the ``spawn`` method. When the user sets
``NUMBA_THREADING_LAYER`` themselves, that choice is kept. When OpenMP cannot be loaded,
``tbb`` is used if installed; with only ``workqueue`` left, velokern serialises parallel
calls through one lock so concurrent jobs stay correct (but do not overlap).

Core affinity: :func:`pin_workers` runs a tiny ``prange`` kernel in which every worker
thread of the calling thread's team pins itself to its own CPU through the Cython shim's
``vk_pin_current_thread``, except worker 0: on OpenMP that is the calling thread itself,
which is never pinned (threads and subprocesses it starts later inherit its affinity;
its CPU set is also saved before the kernel and put back after it, whatever happens).
:func:`worker_affinity` reads each worker's CPU set back from inside the workers
(``vk_current_thread_cpus``). These kernels call C function pointers, so numba cannot
cache them; they are small and compile in well under a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

import numba
import numpy as np
from numba import njit, prange
from numba.core.extending import get_cython_function_address

__all__ = [
    "available_cpus",
    "configure_threading_layer",
    "parallel_guard",
    "pin_workers",
    "threading_layer_name",
    "use_threads",
    "worker_affinity",
]

_CHOSEN: str | None = None
_GLOBAL_LOCK = threading.Lock()
_NO_GUARD = contextlib.nullcontext()  # (reusable: it holds nothing)
_SET = threading.local()  # the worker count last set on this thread, through velokern


def use_threads(n: int) -> None:
    """``numba.set_num_threads(n)`` for the calling thread, skipped when velokern set
    ``n`` there last (the call costs several µs; a V2 batch of 1k rows takes ~40)."""
    if getattr(_SET, "n", None) != n:
        numba.set_num_threads(n)
        _SET.n = n


def configure_threading_layer() -> str:
    """Choose the threading layer (once, before the first parallel kernel runs)."""
    global _CHOSEN
    if _CHOSEN is not None:
        return _CHOSEN
    if os.environ.get("NUMBA_THREADING_LAYER"):
        _CHOSEN = os.environ["NUMBA_THREADING_LAYER"]
        return _CHOSEN
    for layer, module in (("omp", "numba.np.ufunc.omppool"), ("tbb", "numba.np.ufunc.tbbpool")):
        try:
            __import__(module)
        except Exception:
            continue
        numba.config.THREADING_LAYER = layer
        _CHOSEN = layer
        return layer
    numba.config.THREADING_LAYER = "workqueue"
    _CHOSEN = "workqueue"
    return _CHOSEN


def threading_layer_name() -> str:
    """The layer numba actually uses (after the first parallel run), else the choice."""
    try:
        return numba.threading_layer()
    except ValueError:
        return configure_threading_layer()


def parallel_guard():
    """Context for one parallel kernel call: a no-op on thread-safe layers, a global
    lock on ``workqueue`` (which aborts the process on concurrent use)."""
    if (_CHOSEN or configure_threading_layer()) == "workqueue":
        return _GLOBAL_LOCK
    return _NO_GUARD


def _read_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


# Read once at import: the CPUs workers are pinned to (a thread's own set may be
# narrower, e.g. a pinned worker's).
_PROCESS_CPUS = _read_cpus()


def available_cpus() -> list[int]:
    """CPUs this process may run on (sorted, as at import), or [] when unknown."""
    return list(_PROCESS_CPUS)


_PIN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(
    get_cython_function_address("velokern._shim", "vk_pin_current_thread")
)
_CPUS = ctypes.CFUNCTYPE(ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int)(
    get_cython_function_address("velokern._shim", "vk_current_thread_cpus")
)
_WORDS = 16


@njit(parallel=True)
def _pin_kernel(cpus, result, seen):
    for _t in prange(len(cpus)):
        tid = numba.get_thread_id()
        seen[tid] = 1
        if tid == 0:  # the calling thread: never pinned
            result[tid] = 0
        else:
            result[tid] = _PIN(cpus[tid])


@njit(parallel=True)
def _affinity_kernel(out, seen):
    for _t in prange(out.shape[0]):
        tid = numba.get_thread_id()
        seen[tid] = 1
        row = out[tid]
        _CPUS(row.ctypes, _WORDS)


def pin_workers(num_threads: int, cpus: list[int] | None = None) -> list[int | None]:
    """Pin the calling thread's numba workers 1..``num_threads``-1 each to its own CPU.

    Worker t goes to ``cpus[t]`` (default: this process's CPUs in order); worker 0, the
    calling thread itself on OpenMP, is left as it is: its affinity is the same after
    the call as before, also when the call raises. Returns the CPU each worker is
    pinned to, ``None`` for worker 0. Raises OSError when pinning fails or when there
    are fewer CPUs than workers.
    """
    configure_threading_layer()
    cpus = available_cpus() if cpus is None else list(cpus)
    if len(cpus) < num_threads:
        raise OSError(f"cannot pin {num_threads} workers to their own cores: only "
                      f"{len(cpus)} CPU(s) available ({cpus})")
    use_threads(num_threads)
    arr = np.asarray(cpus[:num_threads], dtype=np.int32)
    with _caller_affinity_kept():
        for _ in range(20):
            result = np.full(num_threads, -1, dtype=np.int32)
            seen = np.zeros(num_threads, dtype=np.uint8)
            with parallel_guard():
                _pin_kernel(arr, result, seen)
            if seen.all():
                break
        else:
            raise OSError("could not reach every worker thread to pin it")
    if (result != 0).any():
        raise OSError(f"pinning worker threads failed (results {result.tolist()})")
    return [None, *arr.tolist()[1:]]


@contextlib.contextmanager
def _caller_affinity_kept():
    """The calling thread's CPU set, put back on the way out (on a layer where the
    caller is not worker 0, the pin kernel may have pinned it)."""
    try:
        before = os.sched_getaffinity(0)  # the calling thread's (Linux: per thread)
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        if os.sched_getaffinity(0) != before:
            os.sched_setaffinity(0, before)


def worker_affinity(num_threads: int) -> list[set[int]]:
    """The CPU set of each of the calling thread's numba workers, read by the workers
    (worker 0 is the calling thread on OpenMP: its own, never pinned, set)."""
    configure_threading_layer()
    use_threads(num_threads)
    for _ in range(20):
        out = np.zeros((num_threads, _WORDS), dtype=np.int64)
        seen = np.zeros(num_threads, dtype=np.uint8)
        with parallel_guard():
            _affinity_kernel(out, seen)
        if seen.all():
            break
    sets = []
    for t in range(num_threads):
        s = set()
        for w in range(_WORDS):
            word = int(out[t, w]) & ((1 << 64) - 1)
            for b in range(64):
                if (word >> b) & 1:
                    s.add(w * 64 + b)
        sets.append(s)
    return sets
