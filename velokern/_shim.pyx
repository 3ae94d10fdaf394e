# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Partition bucketing and thread pinning for velokern's V2 processor.

Partition ids
-------------
``partition_ids(keys, n)`` maps one or more integer key columns to partitions with a
fixed 64-bit mixing function, identical on every platform and run (a column is read as
int64: int32 dictionary codes sign-extended, uint64 as its bits, other widths widened)::

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
offsets of each partition's run in ``order``. ``bucket_by_keys(keys, n, threads)`` does
both, on ``threads`` OpenMP threads (contiguous chunks of rows) when built with OpenMP.

Thread pinning
--------------
``vk_pin_current_thread`` and ``vk_current_thread_cpus`` are exported with ``cdef api``
so numba nopython code can call them through
``numba.core.extending.get_cython_function_address("velokern._shim", name)``.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc

import numpy as np

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* GCC on x86-64 glibc Linux: the hashing loops are also compiled for AVX-512
       (x86-64-v4: eight 64-bit lanes with a native 64-bit multiply, ~3x faster than
       AVX2's emulated one here) and AVX2 (four lanes), and the loader picks the best
       version (an ifunc); elsewhere plain C. The results are the same bits either way. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__) && defined(__GLIBC__)
    #define VK_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
    #define VK_AVX512 1
    #include <immintrin.h>
    #else
    #define VK_CLONES
    #define VK_AVX512 0
    #endif

    /* ---- exact division by a run-time invariant divisor (Granlund & Montgomery 1994,
       fig. 4.1): q = floor(x / d) with one 64x64->128 multiply instead of a `div`. */
    typedef struct { uint64_t d, m; int sh1, sh2; } vk_divider;

    static vk_divider vk__divider(uint64_t d) {          /* d >= 1 */
        vk_divider r;
        int l = 0;
        while (l < 64 && (((uint64_t)1) << l) < d) l++;  /* l = ceil(log2(d)) */
        r.d = d;
    #if defined(__SIZEOF_INT128__)
        {
            unsigned __int128 two_l = ((unsigned __int128)1) << l;
            r.m = (uint64_t)((((unsigned __int128)(two_l - d)) << 64) / d + 1);
        }
    #else
        r.m = 0;
    #endif
        r.sh1 = l < 1 ? l : 1;
        r.sh2 = l > 0 ? l - 1 : 0;
        return r;
    }

    static inline uint64_t vk__mod(uint64_t x, vk_divider v) {
    #if defined(__SIZEOF_INT128__)
        uint64_t t1 = (uint64_t)(((unsigned __int128)v.m * x) >> 64);
        uint64_t q = (t1 + ((x - t1) >> v.sh1)) >> v.sh2;
        return x - q * v.d;
    #else
        return x % v.d;
    #endif
    }

    static inline uint64_t vk__splitmix64(uint64_t x) {
        uint64_t z = x + 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }

    /* A key column: int64, or int32 (w[c] == 4: dictionary codes), which hashes as its
       value sign-extended to int64. */
    #define VK_COL(cols, w, c, row) \
        ((const int64_t *)((const char *)(cols)[c] + (Py_ssize_t)(row) * (w)[c]))

    /* h[j] = hash of row start + j over the key columns, j < len (column by column, so
       every loop is a plain vectorisable map) */
    VK_CLONES
    static void vk__hash_rows(const int64_t *const *cols, const int *w, int ncols,
                              Py_ssize_t start, Py_ssize_t len, uint64_t *restrict h) {
        Py_ssize_t j;
        int c;
        for (c = 0; c < ncols; c++) {
            if (w[c] == 4) {
                const int32_t *restrict k4 = (const int32_t *)VK_COL(cols, w, c, start);
                if (c == 0)
                    for (j = 0; j < len; j++) h[j] = vk__splitmix64((uint64_t)(int64_t)k4[j]);
                else
                    for (j = 0; j < len; j++)
                        h[j] = vk__splitmix64(h[j] ^ (uint64_t)(int64_t)k4[j]);
            } else {
                const int64_t *restrict k = cols[c] + start;
                if (c == 0)
                    for (j = 0; j < len; j++) h[j] = vk__splitmix64((uint64_t)k[j]);
                else
                    for (j = 0; j < len; j++) h[j] = vk__splitmix64(h[j] ^ (uint64_t)k[j]);
            }
        }
    }

    /* one key column, a power-of-two partition count: hash and mask in one pass */
    VK_CLONES
    static void vk__pids_pow2(const int64_t *restrict k, Py_ssize_t m, uint64_t mask,
                              int32_t *restrict out) {
        Py_ssize_t i;
        for (i = 0; i < m; i++) out[i] = (int32_t)(vk__splitmix64((uint64_t)k[i]) & mask);
    }

    VK_CLONES
    static void vk__pids_pow2_32(const int32_t *restrict k, Py_ssize_t m, uint64_t mask,
                                 int32_t *restrict out) {
        Py_ssize_t i;
        for (i = 0; i < m; i++)
            out[i] = (int32_t)(vk__splitmix64((uint64_t)(int64_t)k[i]) & mask);
    }

    VK_CLONES
    static void vk__mask_hashes(const uint64_t *restrict h, Py_ssize_t len, uint64_t mask,
                                int32_t *restrict out) {
        Py_ssize_t j;
        for (j = 0; j < len; j++) out[j] = (int32_t)(h[j] & mask);
    }

    static void vk__mod_hashes(const uint64_t *restrict h, Py_ssize_t len, vk_divider v,
                               int32_t *restrict out) {
        Py_ssize_t j;
        for (j = 0; j < len; j++) out[j] = (int32_t)vk__mod(h[j], v);
    }

    /* Counting rows per partition. With few partitions, four interleaved histograms
       keep successive increments of one counter from waiting on each other. */
    #define VK_HIST_MAX 1024
    static void vk__hist(const int32_t *restrict p, Py_ssize_t len, int64_t n,
                         int64_t *restrict h) {          /* h: 4 * n if n <= VK_HIST_MAX */
        Py_ssize_t i = 0;
        if (n <= VK_HIST_MAX) {
            for (; i + 4 <= len; i += 4) {
                h[p[i]]++; h[n + p[i + 1]]++; h[2 * n + p[i + 2]]++; h[3 * n + p[i + 3]]++;
            }
        }
        for (; i < len; i++) h[p[i]]++;
    }

    static void vk__hist_sum(const int64_t *h, int64_t n, int64_t *counts) {
        int64_t j;
        if (n <= VK_HIST_MAX) {
            for (j = 0; j < n; j++) counts[j] += h[j] + h[n + j] + h[2 * n + j] + h[3 * n + j];
        } else {
            for (j = 0; j < n; j++) counts[j] += h[j];
        }
    }

    #define VK_CHUNK 2048
    /* out[i] = hash(row i) mod n; when hist is not NULL (4 * n zeroed entries, or n
       when n > VK_HIST_MAX) the rows of every partition are counted into it while the
       chunk just written is still in L1. */
    static void vk__partition_rows(const int64_t *const *cols, const int *w, int ncols,
                                   Py_ssize_t m, uint64_t n, int32_t *out, int64_t *hist) {
        uint64_t h[VK_CHUNK];
        Py_ssize_t s, len;
        const int pow2 = (n & (n - 1)) == 0;
        const vk_divider v = vk__divider(n);
        if (ncols == 1 && pow2 && hist == NULL) {
            if (w[0] == 4) vk__pids_pow2_32((const int32_t *)cols[0], m, n - 1, out);
            else vk__pids_pow2(cols[0], m, n - 1, out);
            return;
        }
        for (s = 0; s < m; s += VK_CHUNK) {
            len = m - s < VK_CHUNK ? m - s : VK_CHUNK;
            if (ncols == 1 && pow2 && w[0] == 8) {
                vk__pids_pow2(cols[0] + s, len, n - 1, out + s);
            } else if (ncols == 1 && pow2) {
                vk__pids_pow2_32((const int32_t *)cols[0] + s, len, n - 1, out + s);
            } else {
                vk__hash_rows(cols, w, ncols, s, len, h);
                if (pow2) vk__mask_hashes(h, len, n - 1, out + s);
                else vk__mod_hashes(h, len, v, out + s);
            }
            if (hist) vk__hist(out + s, len, (int64_t)n, hist);
        }
    }

    /* off[p + 1] += rows of partition p (off has n + 1 entries; hist is the zeroed
       scratch of vk__hist). Returns -1, or the first row whose id is outside [0, n)
       (then off is left unchanged). */
    #if VK_AVX512
    /* Rows per partition for a few partitions on a CPU with AVX-512: 16 ids at a time,
       one compare and a popcount per partition but the last (whose rows are the rest),
       and one unsigned compare that finds an id outside [0, n) (then the scalar loop
       below finds and reports the first).
       Returns 0, or -1 when it found a bad id and counted nothing. */
    __attribute__((target("avx512f")))
    static int vk__count_few(const int32_t *restrict p, Py_ssize_t m, int64_t n,
                             int64_t *off) {
        int64_t c[4] = {0, 0, 0, 0};
        const __m512i un = _mm512_set1_epi32((int)n);
        const __m512i v0 = _mm512_set1_epi32(0), v1 = _mm512_set1_epi32(1);
        const __m512i v2 = _mm512_set1_epi32(2);
        Py_ssize_t i = 0;
        int64_t j;
        for (; i + 16 <= m; i += 16) {
            __m512i x = _mm512_loadu_si512(p + i);
            if (_mm512_cmpge_epu32_mask(x, un)) return -1;
            c[0] += __builtin_popcount(_mm512_cmpeq_epi32_mask(x, v0));
            if (n > 2) c[1] += __builtin_popcount(_mm512_cmpeq_epi32_mask(x, v1));
            if (n > 3) c[2] += __builtin_popcount(_mm512_cmpeq_epi32_mask(x, v2));
        }
        for (; i < m; i++) {
            uint32_t a = (uint32_t)p[i];
            if (a >= (uint32_t)n) return -1;
            c[a]++;
        }
        /* the last partition's rows are the rest */
        c[n - 1] = m;
        for (j = 0; j < n - 1; j++) c[n - 1] -= c[j];
        for (j = 0; j < n; j++) off[j + 1] += c[j];
        return 0;
    }
    #endif
    static Py_ssize_t vk__count_ids(const int32_t *restrict p, Py_ssize_t m, int64_t n,
                                    int64_t *off, int64_t *restrict h) {
        Py_ssize_t i = 0;
        const uint32_t un = (uint32_t)n;
    #if VK_AVX512
        if (n >= 2 && n <= 4 && __builtin_cpu_supports("avx512f")
                && vk__count_few(p, m, n, off) == 0) {
            return -1;
        }
    #endif
        if (n <= VK_HIST_MAX) {
            for (; i + 4 <= m; i += 4) {
                uint32_t a = (uint32_t)p[i], b = (uint32_t)p[i + 1];
                uint32_t c = (uint32_t)p[i + 2], d = (uint32_t)p[i + 3];
                if ((a >= un) | (b >= un) | (c >= un) | (d >= un)) break;
                h[a]++; h[n + b]++; h[2 * n + c]++; h[3 * n + d]++;
            }
        }
        for (; i < m; i++) {
            uint32_t a = (uint32_t)p[i];
            if (a >= un) return i;
            h[a]++;
        }
        vk__hist_sum(h, n, off + 1);
        return -1;
    }

    #if VK_AVX512
    /* The stable scatter for a few partitions on a CPU with AVX-512: one pass over the
       ids per partition, 16 rows at a time; the row numbers of the partition's rows are
       compressed into one register and stored whole, and the next store starts where
       their count ends. A store can reach up to 7 entries past the partition's rows:
       into partitions written after it, or into the 8 entries of slack the caller
       leaves after the last one. */
    __attribute__((target("avx512f")))
    static void vk__scatter_compress(const int32_t *restrict p, Py_ssize_t m, int64_t n,
                                     const int64_t *off, int64_t *restrict order) {
        const __m512i step = _mm512_set1_epi64(16);
        const __m512i eight = _mm512_set1_epi64(8);
        int64_t v;
        for (v = 0; v < n; v++) {
            int64_t *dst = order + off[v];
            const __m512i want = _mm512_set1_epi32((int)v);
            __m512i lo = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
            Py_ssize_t i = 0;
            for (; i + 16 <= m; i += 16) {
                __mmask16 k = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(p + i), want);
                __mmask8 k0 = (__mmask8)(k & 0xFF), k1 = (__mmask8)(k >> 8);
                _mm512_storeu_si512(dst, _mm512_maskz_compress_epi64(k0, lo));
                dst += __builtin_popcount(k0);
                _mm512_storeu_si512(dst, _mm512_maskz_compress_epi64(
                    k1, _mm512_add_epi64(lo, eight)));
                dst += __builtin_popcount(k1);
                lo = _mm512_add_epi64(lo, step);
            }
            for (; i < m; i++) {
                if (p[i] == v) *dst++ = i;
            }
        }
    }
    #endif

    /* The stable scatter of rows [lo, hi): each row's number written at pos[p] of its
       partition p, pos advanced past them. For at most 8 partitions, the rows of each
       partition met so far in a block of up to 255 rows are 8-bit lanes of one
       register, so a row's destination never waits for the store of the row before it
       (pos[p]++ in memory costs a store-to-load round trip per row). */
    static void vk__scatter_chunk(const int32_t *restrict p, Py_ssize_t lo, Py_ssize_t hi,
                                  int64_t n, int64_t *pos, int64_t *restrict order) {
        Py_ssize_t i = lo, end;
        int64_t j;
        if (n <= 8) {
            while (i < hi) {
                uint64_t c = 0;
                end = hi - i > 255 ? i + 255 : hi;
                for (; i < end; i++) {
                    uint32_t v = (uint32_t)p[i];
                    unsigned sh = 8u * v;
                    order[pos[v] + (int64_t)((c >> sh) & 0xFF)] = i;
                    c += (uint64_t)1 << sh;
                }
                for (j = 0; j < n; j++) pos[j] += (int64_t)((c >> (8 * j)) & 0xFF);
            }
            return;
        }
        for (; i < hi; i++) order[pos[p[i]]++] = i;
    }

    /* prefix sums of the counts in off, then the stable scatter of all rows (AVX-512
       compress stores for at most 4 partitions, else vk__scatter_chunk) */
    static void vk__scatter_ids(const int32_t *restrict p, Py_ssize_t m, int64_t n,
                                int64_t *off, int64_t *pos, int64_t *restrict order) {
        int64_t j;
        for (j = 0; j < n; j++) { off[j + 1] += off[j]; pos[j] = off[j]; }
    #if VK_AVX512
        if (n <= 4 && m >= 64 && __builtin_cpu_supports("avx512f")) {
            vk__scatter_compress(p, m, n, off, order);
            return;
        }
    #endif
        vk__scatter_chunk(p, 0, m, n, pos, order);
    }

    /* Partition ids and the stable bucketing of rows [0, m) on up to T threads (one
       OpenMP team; velokern's numba kernels run on the same libgomp thread pool). Each
       thread takes a contiguous chunk of rows: it computes their ids and counts them per
       partition into its row of hist (T * n zeroed); once every chunk is counted, one
       thread turns the counts into where each chunk starts in each partition (chunks in
       row order, so each partition's rows keep their arrival order) and writes the
       offsets (off[p + 1]: the end of partition p); then every thread writes its rows'
       numbers there. Returns 0, or -1 when a thread's scratch could not be allocated. */
    #ifdef _OPENMP
    #include <omp.h>
    #define VK_OPENMP 1
    #else
    #define VK_OPENMP 0
    #endif
    #include <stdlib.h>
    static int vk__bucket_rows(const int64_t *const *cols, const int *w, int ncols,
                               Py_ssize_t m,
                               int64_t n, int T, int32_t *pids, int64_t *hist,
                               int64_t *off, int64_t *order) {
        int failed = 0;
    #ifdef _OPENMP
        #pragma omp parallel num_threads(T)
    #endif
        {
    #ifdef _OPENMP
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    #else
            const int t = 0, nt = 1;
    #endif
            const Py_ssize_t q = m / nt, r = m % nt;
            const Py_ssize_t lo = q * t + (t < r ? t : r), hi = lo + q + (t < r ? 1 : 0);
            const int64_t *cc[64];
            int64_t *mine = hist + (int64_t)t * n, *h4, *cnt;
            int k;
            for (k = 0; k < ncols; k++) cc[k] = VK_COL(cols, w, k, lo);
            h4 = (int64_t *)calloc((size_t)(n <= VK_HIST_MAX ? 4 * n : n) + n + 1,
                                   sizeof(int64_t));
            if (h4 == NULL) {
    #ifdef _OPENMP
                #pragma omp atomic write
    #endif
                failed = 1;
            } else {
                cnt = h4 + (n <= VK_HIST_MAX ? 4 * n : n);
                if (hi > lo) {
                    vk__partition_rows(cc, w, ncols, hi - lo, (uint64_t)n, pids + lo, NULL);
                    vk__count_ids(pids + lo, hi - lo, n, cnt, h4);
                }
                for (k = 0; k < n; k++) mine[k] = cnt[k + 1];
                free(h4);
            }
    #ifdef _OPENMP
            #pragma omp barrier
            #pragma omp single
    #endif
            {
                int64_t run = 0, c, p2;
                int s2;
                for (p2 = 0; p2 < n; p2++) {
                    for (s2 = 0; s2 < nt; s2++) {
                        c = hist[(int64_t)s2 * n + p2];
                        hist[(int64_t)s2 * n + p2] = run;
                        run += c;
                    }
                    off[p2 + 1] = run;
                }
            }
            if (!failed) vk__scatter_chunk(pids, lo, hi, n, mine, order);
        }
        return failed ? -1 : 0;
    }

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
            if (CPU_ISSET(i, &set)) { out[i / 64] |= (long long)(1ULL << (i % 64)); n++; }
        }
        return n;
    }
    static int vk__set_cpus(const long long *words, int n_words) {
        cpu_set_t set;
        int i;
        CPU_ZERO(&set);
        for (i = 0; i < CPU_SETSIZE && i < 64 * n_words; i++) {
            if (((unsigned long long)words[i / 64] >> (i % 64)) & 1ULL) CPU_SET(i, &set);
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
    void vk__hash_rows(const int64_t **cols, const int *w, int ncols, Py_ssize_t start,
                       Py_ssize_t len, uint64_t *h) nogil
    void vk__partition_rows(const int64_t **cols, const int *w, int ncols, Py_ssize_t m,
                            uint64_t n, int32_t *out, int64_t *hist) nogil
    Py_ssize_t vk__count_ids(const int32_t *p, Py_ssize_t m, int64_t n, int64_t *off,
                             int64_t *hist) nogil
    void vk__hist_sum(const int64_t *h, int64_t n, int64_t *counts) nogil
    void vk__scatter_ids(const int32_t *p, Py_ssize_t m, int64_t n, int64_t *off,
                         int64_t *pos, int64_t *order) nogil
    int VK_OPENMP
    int vk__bucket_rows(const int64_t **cols, const int *w, int ncols, Py_ssize_t m,
                        int64_t n, int T, int32_t *pids, int64_t *hist, int64_t *off,
                        int64_t *order) nogil
    int VK_HIST_MAX


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


cdef int32_t _MAX_PARTITIONS = 2147483647


cdef list _key_columns(keys):
    """The key columns as a list of contiguous 1-D arrays of one length: int64, or int32
    (dictionary codes; hashed as their value sign-extended to int64). uint64 columns are
    read as int64 (the same bits); other integer columns are widened to int64."""
    if isinstance(keys, np.ndarray):
        keys = [keys]
    keys = list(keys)
    if not keys:
        raise ValueError("at least one key column is needed")
    cols = []
    n = -1
    for k, arr in enumerate(keys):
        arr = np.ascontiguousarray(arr)
        if arr.ndim != 1:
            raise ValueError(f"key column {k} must be 1-D, got shape {arr.shape}")
        if arr.dtype == np.uint64:
            arr = arr.view(np.int64)
        elif arr.dtype.kind in "iu" and arr.dtype not in (np.int64, np.int32):
            arr = arr.astype(np.int64)
        elif arr.dtype not in (np.int64, np.int32):
            raise TypeError(f"key column {k} must hold integers, got {arr.dtype}")
        if n < 0:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(
                f"key column {k} has {arr.shape[0]} rows, key column 0 has {n}")
        cols.append(arr)
    return cols


cdef class _Columns:
    """C pointers to the key columns and their element widths (8 or 4 bytes); the list
    it holds keeps the buffers alive while the pointers are used."""
    cdef const int64_t **ptrs
    cdef int *widths
    cdef int n
    cdef list cols

    def __cinit__(self, list cols):
        cdef Py_ssize_t k
        cdef const char[::1] mv
        self.cols = cols
        self.n = len(cols)
        self.ptrs = <const int64_t **>PyMem_Malloc((self.n or 1) * sizeof(int64_t *))
        self.widths = <int *>PyMem_Malloc((self.n or 1) * sizeof(int))
        if self.ptrs == NULL or self.widths == NULL:
            raise MemoryError()
        for k in range(self.n):
            mv = cols[k].view(np.int8)
            self.ptrs[k] = <const int64_t *>&mv[0] if mv.shape[0] > 0 else NULL
            self.widths[k] = cols[k].dtype.itemsize

    def __dealloc__(self):
        PyMem_Free(self.ptrs)
        PyMem_Free(self.widths)


cdef Py_ssize_t _check_partitions(Py_ssize_t n) except -1:
    if n < 1:
        raise ValueError(f"number of partitions must be >= 1, got {n}")
    if n > _MAX_PARTITIONS:
        raise ValueError(f"number of partitions must be <= {_MAX_PARTITIONS}, got {n}")
    return n


def hash_keys(keys):
    """Mixed 64-bit hash (as uint64) of one or more equal-length int64 key columns."""
    cols = _key_columns(keys)
    cdef Py_ssize_t m = cols[0].shape[0]
    cdef int ncols = len(cols)
    out = np.empty(m, dtype=np.uint64)
    if m == 0:
        return out
    cdef uint64_t[::1] h = out
    cdef _Columns cs = _Columns(cols)
    with nogil:
        vk__hash_rows(cs.ptrs, cs.widths, ncols, 0, m, &h[0])
    return out


cdef int64_t *_new_hist(Py_ssize_t n) except NULL:
    """Zeroed scratch counters for ``n`` partitions (four interleaved histograms)."""
    cdef Py_ssize_t size = 4 * n if n <= VK_HIST_MAX else n
    cdef int64_t *hist = <int64_t *>PyMem_Calloc(size, sizeof(int64_t))
    if hist == NULL:
        raise MemoryError()
    return hist


cdef _partition(list cols, Py_ssize_t n, int64_t *counts):
    """Partition ids of the rows; adds each partition's row count to ``counts[p]``
    unless ``counts`` is NULL."""
    cdef Py_ssize_t m = cols[0].shape[0]
    cdef int ncols = len(cols)
    out = np.empty(m, dtype=np.int32)
    if m == 0:
        return out
    cdef int32_t[::1] o = out
    cdef int64_t *hist = NULL
    if counts != NULL:
        hist = _new_hist(n)
    cdef _Columns cs = _Columns(cols)
    with nogil:
        vk__partition_rows(cs.ptrs, cs.widths, ncols, m, <uint64_t>n, &o[0], hist)
        if hist != NULL:
            vk__hist_sum(hist, n, counts)
    PyMem_Free(hist)
    return out


def partition_ids(keys, Py_ssize_t n):
    """Partition id (int32, in [0, n)) of every row: ``hash_keys(keys) % n``."""
    _check_partitions(n)
    return _partition(_key_columns(keys), n, NULL)


cdef Py_ssize_t _count(pids_arr, Py_ssize_t n, offsets) except -2:
    """Adds each partition's row count to ``offsets[1:]``; returns -1, or the first row
    whose id is outside [0, n) (then nothing is counted)."""
    cdef const int32_t[::1] p = pids_arr
    cdef int64_t[::1] off = offsets
    cdef Py_ssize_t m = p.shape[0], bad = -1
    cdef int64_t *hist
    if m > 0:
        hist = _new_hist(n)
        with nogil:
            bad = vk__count_ids(&p[0], m, n, &off[0], hist)
        PyMem_Free(hist)
    return bad


cdef _scatter(pids_arr, Py_ssize_t n, offsets):
    """The stable scatter of rows by partition, ``offsets[1:]`` holding the counts."""
    cdef const int32_t[::1] p = pids_arr
    cdef Py_ssize_t m = p.shape[0]
    # 8 entries of slack: the AVX-512 scatter stores whole registers (see above)
    order = np.empty(m + 8, dtype=np.int64)
    cdef int64_t[::1] o = order
    cdef int64_t[::1] off = offsets
    cdef int64_t *pos = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
    if pos == NULL:
        raise MemoryError()
    with nogil:
        vk__scatter_ids(&p[0] if m > 0 else NULL, m, n, &off[0], pos,
                        &o[0] if m > 0 else NULL)
    PyMem_Free(pos)
    return order[:m]


def stable_bucket(pids, Py_ssize_t n):
    """Stable counting sort of rows by partition id.

    Returns ``(order, offsets)``: ``order`` (int64) lists row indices partition by
    partition, each partition's rows in arrival order; rows of partition p are
    ``order[offsets[p]:offsets[p + 1]]``.
    """
    _check_partitions(n)
    arr = np.ascontiguousarray(pids)
    if arr.ndim != 1:
        raise ValueError(f"partition ids must be 1-D, got shape {arr.shape}")
    if arr.dtype != np.int32:
        if arr.dtype.kind not in "iu":
            raise TypeError(f"partition ids must be integers, got {arr.dtype}")
        if arr.shape[0]:
            # check before narrowing to int32, which could wrap a bad id into range
            bad_rows = np.flatnonzero((arr < 0) | (arr >= n))
            if bad_rows.shape[0]:
                i = int(bad_rows[0])
                raise ValueError(
                    f"partition id {arr[i]} at row {i} is outside [0, {n})")
        arr = arr.astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    cdef Py_ssize_t bad = _count(arr, n, offsets)
    if bad >= 0:
        raise ValueError(
            f"partition id {arr[bad]} at row {bad} is outside [0, {n})")
    return _scatter(arr, n, offsets), offsets


def bucket_by_keys(keys, Py_ssize_t n, int threads=1):
    """``partition_ids`` then ``stable_bucket`` (the ids need no check): returns
    ``(pids, order, offsets)``. With ``threads`` > 1 (and a shim built with OpenMP) the
    rows are split into that many contiguous chunks, each hashed, counted and scattered
    by its own thread; the result is the same.
    """
    _check_partitions(n)
    cols = _key_columns(keys)
    offsets = np.zeros(n + 1, dtype=np.int64)
    cdef int64_t[::1] off = offsets
    cdef Py_ssize_t m = cols[0].shape[0]
    if threads <= 1 or len(cols) > 64:
        pids = _partition(cols, n, NULL)
        _count(pids, n, offsets)
        return pids, _scatter(pids, n, offsets), offsets
    cdef int ncols = len(cols)
    pids = np.empty(m, dtype=np.int32)
    order = np.empty(m, dtype=np.int64)
    if m == 0:
        return pids, order, offsets
    hist = np.zeros(threads * n, dtype=np.int64)
    cdef int32_t[::1] p = pids
    cdef int64_t[::1] o = order
    cdef int64_t[::1] h = hist
    cdef _Columns cs = _Columns(cols)
    cdef int rc
    with nogil:
        rc = vk__bucket_rows(cs.ptrs, cs.widths, ncols, m, n, threads, &p[0], &h[0],
                             &off[0], &o[0])
    if rc != 0:
        raise MemoryError("no memory for the bucketing threads' counters")
    return pids, order, offsets


def openmp():
    """Whether this shim was built with OpenMP (``bucket_by_keys`` runs threads)."""
    return bool(VK_OPENMP)


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
    cdef int w, b
    cpus = set()
    for w in range(16):
        for b in range(64):
            if ((<unsigned long long>words[w]) >> b) & 1:
                cpus.add(w * 64 + b)
    return cpus


def set_current_thread_cpus(cpus):
    """Set the calling thread's CPU set; raises OSError on failure."""
    cdef long long words[16]
    cdef unsigned long long bits[16]
    cdef int w, cpu
    for w in range(16):
        bits[w] = 0
    cpus = list(cpus)
    for c in cpus:
        if c < 0 or c >= 1024:
            raise ValueError(f"CPU {c} is outside [0, 1024)")
        cpu = c
        bits[cpu // 64] |= (<unsigned long long>1) << (cpu % 64)  # bit 63 too
    for w in range(16):
        words[w] = <long long>bits[w]
    if vk_set_current_thread_cpus(words, 16) != 0:
        raise OSError(f"could not set the current thread's CPUs to {sorted(cpus)}")
