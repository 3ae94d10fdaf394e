# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Partition bucketing and thread pinning for velokern's V2 processor.

Partition ids
-------------
``partition_ids(keys, n)`` maps one or more int64 key columns to partitions with a
fixed 64-bit mixing function, identical on every platform and run::

    h = 0
    for each key column k:  h = splitmix64(h XOR uint64(k))
    partition = h mod n

    splitmix64(x):  z = x + 0x9E3779B97F4A7C15
                    z = (z XOR (z >> 30)) * 0xBF58476D1CE4E5B9
                    z = (z XOR (z >> 27)) * 0x94D049BB133111EB
                    return z XOR (z >> 31)          (all arithmetic modulo 2**64)

Stable bucketing
----------------
``stable_bucket(pids, n)`` returns ``(order, offsets)``: the row indices grouped by
partition (a counting sort, so rows of one partition keep arrival order) and the n+1
offsets of each partition's run in ``order``.

Thread pinning
--------------
``vk_pin_current_thread`` and ``vk_current_thread_cpus`` are exported with ``cdef api``
so numba nopython code can call them through
``numba.core.extending.get_cython_function_address("velokern._shim", name)``.
"""

from libc.stdint cimport int64_t, uint64_t, int32_t, uint8_t
from cpython.mem cimport PyMem_Malloc, PyMem_Free

import numpy as np

cdef extern from *:
    """
    #ifdef __linux__
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE
    #endif
    #include <sched.h>
    static int vk__pin(int cpu) {
        cpu_set_t set;
        if (cpu < 0 || cpu >= CPU_SETSIZE) return -1;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        return sched_setaffinity(0, sizeof(set), &set);
    }
    static int vk__cpus(long long *out, int max_words) {
        cpu_set_t set;
        int i, n = 0;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
        for (i = 0; i < max_words; i++) out[i] = 0;
        for (i = 0; i < CPU_SETSIZE && i < 64 * max_words; i++) {
            if (CPU_ISSET(i, &set)) { out[i / 64] |= (1LL << (i % 64)); n++; }
        }
        return n;
    }
    static int vk__set_cpus(const long long *words, int n_words) {
        cpu_set_t set;
        int i;
        CPU_ZERO(&set);
        for (i = 0; i < CPU_SETSIZE && i < 64 * n_words; i++) {
            if ((words[i / 64] >> (i % 64)) & 1LL) CPU_SET(i, &set);
        }
        return sched_setaffinity(0, sizeof(set), &set);
    }
    #else
    static int vk__pin(int cpu) { (void)cpu; return -1; }
    static int vk__cpus(long long *out, int max_words) { (void)out; (void)max_words; return -1; }
    static int vk__set_cpus(const long long *w, int n) { (void)w; (void)n; return -1; }
    #endif
    """
    int vk__pin(int cpu) nogil
    int vk__cpus(long long *out, int max_words) nogil
    int vk__set_cpus(const long long *words, int n_words) nogil


cdef inline uint64_t splitmix64(uint64_t x) noexcept nogil:
    cdef uint64_t z = x + <uint64_t>0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef api int vk_pin_current_thread(int cpu) noexcept nogil:
    """Pin the calling thread to ``cpu``. Returns 0 on success, -1 on failure."""
    return vk__pin(cpu)


cdef api long long vk_current_thread_cpus(long long *out, int max_words) noexcept nogil:
    """Fill ``out`` (``max_words`` 64-bit words) with the calling thread's CPU set.

    Returns the number of CPUs in the set, or -1 when it cannot be read.
    """
    return vk__cpus(out, max_words)


cdef api int vk_set_current_thread_cpus(const long long *words, int n_words) noexcept nogil:
    """Set the calling thread's CPU set from a bit mask. Returns 0 on success."""
    return vk__set_cpus(words, n_words)


def hash_keys(keys):
    """Mixed 64-bit hash (as uint64) of one or more equal-length int64 key columns."""
    cdef Py_ssize_t n, i
    cdef const int64_t[::1] col
    if isinstance(keys, np.ndarray):
        keys = [keys]
    keys = list(keys)
    if not keys:
        raise ValueError("hash_keys needs at least one key column")
    n = len(keys[0])
    out = np.zeros(n, dtype=np.uint64)
    cdef uint64_t[::1] h = out
    for k, arr in enumerate(keys):
        arr = np.ascontiguousarray(arr)
        if arr.ndim != 1:
            raise ValueError(f"key column {k} must be 1-D, got shape {arr.shape}")
        if arr.dtype != np.int64:
            raise TypeError(f"key column {k} must be int64, got {arr.dtype}")
        if arr.shape[0] != n:
            raise ValueError(
                f"key column {k} has {arr.shape[0]} rows, key column 0 has {n}")
        col = arr
        with nogil:
            for i in range(n):
                h[i] = splitmix64(h[i] ^ <uint64_t>col[i])
    return out


def partition_ids(keys, Py_ssize_t n):
    """Partition id (int32, in [0, n)) of every row: ``hash_keys(keys) % n``."""
    if n < 1:
        raise ValueError(f"number of partitions must be >= 1, got {n}")
    hashed = hash_keys(keys)
    cdef const uint64_t[::1] h = hashed
    cdef Py_ssize_t m = h.shape[0], i
    out = np.empty(m, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef uint64_t un = <uint64_t>n
    with nogil:
        for i in range(m):
            o[i] = <int32_t>(h[i] % un)
    return out


def stable_bucket(pids, Py_ssize_t n):
    """Stable counting sort of rows by partition id.

    Returns ``(order, offsets)``: ``order`` (int64) lists row indices partition by
    partition, each partition's rows in arrival order; rows of partition p are
    ``order[offsets[p]:offsets[p + 1]]``.
    """
    if n < 1:
        raise ValueError(f"number of partitions must be >= 1, got {n}")
    arr = np.ascontiguousarray(pids)
    if arr.ndim != 1:
        raise ValueError(f"partition ids must be 1-D, got shape {arr.shape}")
    if arr.dtype != np.int32:
        if arr.dtype.kind not in "iu":
            raise TypeError(f"partition ids must be integers, got {arr.dtype}")
        arr = arr.astype(np.int32)
    cdef const int32_t[::1] p = arr
    cdef Py_ssize_t m = p.shape[0], i, bad = -1
    order = np.empty(m, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    cdef int64_t[::1] o = order
    cdef int64_t[::1] off = offsets
    cdef int64_t *pos = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
    if pos == NULL:
        raise MemoryError()
    cdef int32_t v
    try:
        with nogil:
            for i in range(m):
                v = p[i]
                if v < 0 or v >= n:
                    bad = i
                    break
                off[v + 1] += 1
            if bad < 0:
                for i in range(n):
                    off[i + 1] += off[i]
                    pos[i] = off[i]
                for i in range(m):
                    v = p[i]
                    o[pos[v]] = i
                    pos[v] += 1
    finally:
        PyMem_Free(pos)
    if bad >= 0:
        raise ValueError(
            f"partition id {arr[bad]} at row {bad} is outside [0, {n})")
    return order, offsets


def bucket_by_keys(keys, Py_ssize_t n):
    """``partition_ids`` then ``stable_bucket``: returns ``(pids, order, offsets)``."""
    pids = partition_ids(keys, n)
    order, offsets = stable_bucket(pids, n)
    return pids, order, offsets


def pin_current_thread(int cpu):
    """Pin the calling (Python) thread to ``cpu``; raises OSError on failure."""
    if vk_pin_current_thread(cpu) != 0:
        raise OSError(f"could not pin the current thread to CPU {cpu}")


def current_thread_cpus():
    """The set of CPUs the calling thread may run on (read from the thread itself)."""
    cdef long long words[16]
    cdef long long got = vk_current_thread_cpus(words, 16)
    if got < 0:
        raise OSError("the CPU affinity of the current thread cannot be read here")
    cpus = set()
    for w in range(16):
        for b in range(64):
            if (words[w] >> b) & 1:
                cpus.add(w * 64 + b)
    return cpus


def set_current_thread_cpus(cpus):
    """Set the calling thread's CPU set; raises OSError on failure."""
    cdef long long words[16]
    for w in range(16):
        words[w] = 0
    for c in cpus:
        if c < 0 or c >= 1024:
            raise ValueError(f"CPU {c} is outside [0, 1024)")
        words[c // 64] |= (1 << (c % 64))
    if vk_set_current_thread_cpus(words, 16) != 0:
        raise OSError(f"could not set the current thread's CPUs to {sorted(cpus)}")
