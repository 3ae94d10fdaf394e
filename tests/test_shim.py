"""The Cython shim held to a slow numpy reference, plus its thread-pinning helpers."""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velokern import _shim

# --------------------------------------------------------------------------- reference
_M30 = np.uint64(30)
_M27 = np.uint64(27)
_M31 = np.uint64(31)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 on a uint64 array, all arithmetic modulo 2**64."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _M30)) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _M27)) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> _M31)


def ref_hash(keys: list[np.ndarray]) -> np.ndarray:
    h = np.zeros(len(keys[0]), dtype=np.uint64)
    for k in keys:
        h = splitmix64(h ^ k.astype(np.int64).view(np.uint64))
    return h


def ref_partition_ids(keys: list[np.ndarray], n: int) -> np.ndarray:
    return (ref_hash(keys) % np.uint64(n)).astype(np.int32)


def ref_bucket(pids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(pids, kind="stable").astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(pids, minlength=n))
    return order, offsets


def check_bucketing(keys: list[np.ndarray], n: int) -> None:
    want_pids = ref_partition_ids(keys, n)
    pids = _shim.partition_ids(keys, n)
    assert pids.dtype == np.int32
    np.testing.assert_array_equal(pids, want_pids)
    want_order, want_off = ref_bucket(want_pids, n)
    order, offsets = _shim.stable_bucket(pids, n)
    assert order.dtype == np.int64 and offsets.dtype == np.int64
    np.testing.assert_array_equal(order, want_order)
    np.testing.assert_array_equal(offsets, want_off)
    for threads in (1, 2, 3, 16):  # threaded: contiguous chunks, each counted and scattered
        p2, o2, off2 = _shim.bucket_by_keys(keys, n, threads)
        np.testing.assert_array_equal(p2, want_pids)
        np.testing.assert_array_equal(o2, want_order)
        np.testing.assert_array_equal(off2, want_off)


# --------------------------------------------------------------------------- hashing
def test_splitmix_reference_known_values():
    # splitmix64 of 0 is the first output of the splitmix64 generator seeded with 0
    assert splitmix64(np.zeros(1, np.uint64))[0] == np.uint64(0xE220A8397B1DCDAF)
    np.testing.assert_array_equal(
        _shim.hash_keys(np.zeros(1, np.int64)), np.array([0xE220A8397B1DCDAF], np.uint64)
    )


@pytest.mark.parametrize("ncols", [1, 2, 3, 5])
def test_hash_keys_matches_reference(ncols):
    rng = np.random.default_rng(ncols)
    keys = [rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64) for _ in range(ncols)]
    h = _shim.hash_keys(keys)
    assert h.dtype == np.uint64
    np.testing.assert_array_equal(h, ref_hash(keys))


def test_hash_keys_accepts_one_array_and_tuples():
    k = np.arange(-50, 50, dtype=np.int64)
    np.testing.assert_array_equal(_shim.hash_keys(k), ref_hash([k]))
    np.testing.assert_array_equal(_shim.hash_keys((k, k[::-1])), ref_hash([k, k[::-1]]))


def test_hash_keys_non_contiguous_input():
    k = np.arange(0, 400, dtype=np.int64)[::3]
    np.testing.assert_array_equal(_shim.hash_keys([k]), ref_hash([k]))
    np.testing.assert_array_equal(_shim.partition_ids([k], 5), ref_partition_ids([k], 5))


def test_key_order_matters():
    a = np.arange(10, dtype=np.int64)
    b = np.arange(10, 20, dtype=np.int64)
    assert not np.array_equal(_shim.hash_keys([a, b]), _shim.hash_keys([b, a]))


def test_extreme_keys():
    k = np.array([0, -1, 1, 2**63 - 1, -(2**63), -(2**62), 2**62], dtype=np.int64)
    for n in (1, 2, 3, 7, 8, 64, 1000):
        check_bucketing([k], n)
    for n in (2**31 - 1, 2**31 - 2, 2**30 + 3):  # ids only: offsets would need n + 1 slots
        np.testing.assert_array_equal(_shim.partition_ids([k], n), ref_partition_ids([k], n))


# --------------------------------------------------------------------------- partitioning
def test_partition_ids_for_many_divisors():
    # the modulo is a multiply-and-shift: check it against numpy's % for many n
    rng = np.random.default_rng(11)
    k = rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64)
    h = ref_hash([k])
    divisors = list(range(1, 300)) + [2**j + d for j in range(9, 31) for d in (-1, 0, 1)]
    divisors += rng.integers(1, 2**31 - 1, 200).tolist()
    for n in divisors:
        want = (h % np.uint64(n)).astype(np.int32)
        np.testing.assert_array_equal(_shim.partition_ids(k, n), want, err_msg=f"n={n}")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 31, 64, 100, 1024, 1025, 5000])
def test_partition_and_bucket_random(n):
    rng = np.random.default_rng(n)
    keys = [rng.integers(-(10**12), 10**12, 10_007, dtype=np.int64)]
    check_bucketing(keys, n)


@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_multiple_key_columns(n):
    rng = np.random.default_rng(100 + n)
    keys = [
        rng.integers(-5, 5, 3001, dtype=np.int64),
        rng.integers(0, 2**40, 3001, dtype=np.int64),
        rng.integers(-(2**63), 2**63 - 1, 3001, dtype=np.int64),
    ]
    check_bucketing(keys, n)


@pytest.mark.parametrize("n", [1, 2, 8, 13])
def test_empty_input(n):
    keys = [np.empty(0, np.int64), np.empty(0, np.int64)]
    check_bucketing(keys, n)
    assert _shim.hash_keys(keys).shape == (0,)
    order, offsets = _shim.stable_bucket(np.empty(0, np.int32), n)
    assert order.shape == (0,)
    np.testing.assert_array_equal(offsets, np.zeros(n + 1, np.int64))


@pytest.mark.parametrize("rows", [1, 2, 3, 7])
def test_more_partitions_than_rows(rows):
    keys = [np.arange(rows, dtype=np.int64) * 7919 - 3]
    for n in (rows + 1, 8, 64, 10_000):
        check_bucketing(keys, n)
        _, offsets = _shim.stable_bucket(_shim.partition_ids(keys, n), n)
        assert offsets[-1] == rows


@pytest.mark.parametrize("n", [2, 8, 16, 33])
def test_skewed_keys(n):
    rng = np.random.default_rng(7)
    # one hot key with 90% of the rows, a long tail, and runs of one key
    hot = np.full(9000, 42, dtype=np.int64)
    tail = rng.integers(-1000, 1000, 1000, dtype=np.int64)
    k = np.concatenate([hot, tail])
    rng.shuffle(k)
    check_bucketing([k], n)
    check_bucketing([np.sort(k)], n)
    check_bucketing([np.full(777, -3, np.int64)], n)


def test_block_boundaries_of_the_packed_counters():
    # the few-partition scatter counts in blocks of 255 rows: hit every boundary
    for rows in (254, 255, 256, 510, 511, 765, 766, 2048, 2049, 4097):
        k = np.arange(rows, dtype=np.int64) % 3
        for n in (1, 2, 5, 8):
            check_bucketing([k], n)
        # all rows in one partition (each lane counts up to the block size)
        pids = np.full(rows, 7, np.int32)
        order, offsets = _shim.stable_bucket(pids, 8)
        np.testing.assert_array_equal(order, np.arange(rows))
        np.testing.assert_array_equal(offsets, [0, 0, 0, 0, 0, 0, 0, 0, rows])


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=300),
    second=st.booleans(),
    n=st.integers(1, 40),
)
def test_partitioning_property(keys, second, n):
    k = np.array(keys, dtype=np.int64)
    cols = [k, k[::-1].copy()] if second else [k]
    check_bucketing(cols, n)


# --------------------------------------------------------------------------- stable_bucket
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 9, 16, 200, 2000])
@pytest.mark.parametrize("rows", [20_000, 20_007])  # 16-id blocks, and a tail
def test_stable_bucket_any_ids(n, rows):
    rng = np.random.default_rng(n)
    pids = rng.integers(0, n, rows).astype(np.int32)
    order, offsets = _shim.stable_bucket(pids, n)
    want_order, want_off = ref_bucket(pids, n)
    np.testing.assert_array_equal(order, want_order)
    np.testing.assert_array_equal(offsets, want_off)
    # each partition's rows keep arrival order
    for p in range(min(n, 20)):
        rows = order[offsets[p] : offsets[p + 1]]
        assert np.all(np.diff(rows) > 0)
        assert np.all(pids[rows] == p)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64, np.uint8, np.uint32, np.uint64])
def test_stable_bucket_other_integer_dtypes(dtype):
    pids = np.array([3, 0, 2, 3, 1, 0], dtype=dtype)
    order, offsets = _shim.stable_bucket(pids, 4)
    want_order, want_off = ref_bucket(pids.astype(np.int64), 4)
    np.testing.assert_array_equal(order, want_order)
    np.testing.assert_array_equal(offsets, want_off)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("n", [0, -1, -8])
def test_bad_partition_count(n):
    k = np.arange(5, dtype=np.int64)
    with pytest.raises(ValueError, match="partitions"):
        _shim.partition_ids([k], n)
    with pytest.raises(ValueError, match="partitions"):
        _shim.stable_bucket(np.zeros(5, np.int32), n)
    with pytest.raises(ValueError, match="partitions"):
        _shim.bucket_by_keys([k], n)


def test_too_many_partitions_for_int32_ids():
    with pytest.raises(ValueError, match="partitions"):
        _shim.partition_ids([np.arange(3, dtype=np.int64)], 2**31)


@pytest.mark.parametrize(
    "pids, n, bad",
    [
        ([0, 1, 8, 2], 8, "partition id 8 at row 2"),
        ([0, -1, 1], 4, "partition id -1 at row 1"),
        ([5] * 600 + [9], 8, "partition id 9 at row 600"),
        ([0, 2**31 - 1], 3, "at row 1"),
        # in a 16-id block of the vectorised count (2 to 4 partitions)
        ([1] * 40 + [7] + [0] * 30, 3, "partition id 7 at row 40"),
        ([0, 1] * 10 + [-3] + [1] * 20, 2, "partition id -3 at row 20"),
        ([3] * 17 + [4] + [2] * 14, 4, "partition id 4 at row 17"),
    ],
)
def test_out_of_range_partition_id(pids, n, bad):
    with pytest.raises(ValueError, match=bad):
        _shim.stable_bucket(np.array(pids, dtype=np.int32), n)


def test_out_of_range_id_is_not_wrapped_into_range():
    # 2**32 + 1 would narrow to 1 as an int32
    with pytest.raises(ValueError, match=r"partition id 4294967297 at row 1"):
        _shim.stable_bucket(np.array([0, 2**32 + 1], dtype=np.int64), 4)
    with pytest.raises(ValueError, match=r"partition id 4294967295 at row 0"):
        _shim.stable_bucket(np.array([2**32 - 1], dtype=np.uint32), 4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.bool_])
def test_non_integer_key(dtype):
    k = np.arange(4).astype(dtype)
    with pytest.raises(TypeError, match="key column 0 must hold integers"):
        _shim.partition_ids([k], 4)
    with pytest.raises(TypeError, match="key column 1 must hold integers"):
        _shim.hash_keys([np.arange(4, dtype=np.int64), k])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint16,
                                   np.uint32, np.uint64])
def test_integer_keys_of_any_width_hash_as_int64(dtype):
    """A key column of any integer type hashes as its value in int64 (uint64: its bits,
    as the kernels' key bits do), so dictionary codes (int32) go to the shim as they
    are: in every path (hashing, ids with a power of two or not, the threaded bucketing),
    alone and beside int64 columns."""
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    raw = rng.integers(info.min, info.max, 5_003, dtype=dtype, endpoint=True)
    raw[:2] = (info.min, info.max)
    wide = raw.astype(np.int64) if dtype != np.uint64 else raw.view(np.int64)
    other = rng.integers(-2**63, 2**63 - 1, len(raw), dtype=np.int64)
    for got, want in (([raw], [wide]), ([other, raw], [other, wide]),
                      ([raw, other, raw], [wide, other, wide])):
        np.testing.assert_array_equal(_shim.hash_keys(got), ref_hash(want))
        for n in (1, 2, 3, 8, 16):
            np.testing.assert_array_equal(_shim.partition_ids(got, n),
                                          ref_partition_ids(want, n))
            ref = _shim.bucket_by_keys(want, n)
            for threads in (1, 3):
                for a, b in zip(ref, _shim.bucket_by_keys(got, n, threads)):
                    np.testing.assert_array_equal(a, b)


def test_non_integer_partition_ids():
    with pytest.raises(TypeError, match="integers"):
        _shim.stable_bucket(np.zeros(3, np.float64), 2)
    with pytest.raises(TypeError, match="integers"):
        _shim.stable_bucket(np.zeros(3, bool), 2)


def test_unequal_key_lengths():
    with pytest.raises(ValueError, match="key column 1 has 3 rows, key column 0 has 4"):
        _shim.partition_ids([np.arange(4, dtype=np.int64), np.arange(3, dtype=np.int64)], 2)
    with pytest.raises(ValueError, match="key column 2 has 5 rows"):
        _shim.bucket_by_keys([np.arange(4, dtype=np.int64)] * 2 + [np.arange(5, dtype=np.int64)], 2)


def test_no_key_columns_and_bad_shapes():
    with pytest.raises(ValueError, match="at least one key column"):
        _shim.hash_keys([])
    with pytest.raises(ValueError, match="1-D"):
        _shim.partition_ids([np.zeros((2, 2), np.int64)], 2)
    with pytest.raises(ValueError, match="1-D"):
        _shim.stable_bucket(np.zeros((2, 2), np.int32), 2)


# --------------------------------------------------------------------------- threads
needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform"
)


def _in_thread(fn):
    """Run ``fn`` in a fresh Python thread; return its result or raise its error."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@needs_affinity
def test_current_thread_cpus_matches_os():
    assert _shim.current_thread_cpus() == set(os.sched_getaffinity(0))


@needs_affinity
def test_pin_and_restore_in_a_thread():
    main_before = set(os.sched_getaffinity(0))
    cpus = sorted(main_before)

    def work():
        before = _shim.current_thread_cpus()
        seen = {}
        try:
            for cpu in cpus[:4]:
                _shim.pin_current_thread(cpu)
                seen[cpu] = (_shim.current_thread_cpus(), set(os.sched_getaffinity(0)))
            if len(cpus) > 1:
                _shim.set_current_thread_cpus(cpus[:2])
                seen["two"] = _shim.current_thread_cpus()
        finally:
            _shim.set_current_thread_cpus(before)
        return before, seen, _shim.current_thread_cpus()

    before, seen, after = _in_thread(work)
    assert before == main_before
    for cpu in cpus[:4]:
        assert seen[cpu] == ({cpu}, {cpu})
    if len(cpus) > 1:
        assert seen["two"] == set(cpus[:2])
    assert after == before
    # pinning a worker thread never changes the main thread
    assert set(os.sched_getaffinity(0)) == main_before


@needs_affinity
def test_threads_pin_independently():
    cpus = sorted(os.sched_getaffinity(0))
    results: dict[int, set[int]] = {}
    barrier = threading.Barrier(len(cpus[:4]))

    def worker(i: int, cpu: int) -> None:
        before = _shim.current_thread_cpus()
        try:
            _shim.pin_current_thread(cpu)
            barrier.wait(timeout=10)  # all pinned at once
            results[i] = _shim.current_thread_cpus()
            barrier.wait(timeout=10)
        finally:
            _shim.set_current_thread_cpus(before)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(cpus[:4])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: {c} for i, c in enumerate(cpus[:4])}


@needs_affinity
def test_cpu_sets_with_high_cpu_numbers():
    # CPU 63 is the sign bit of a 64-bit mask word; CPUs the machine lacks are dropped
    def work():
        before = _shim.current_thread_cpus()
        try:
            _shim.set_current_thread_cpus(before | {63, 127, 1023})
            return before, _shim.current_thread_cpus(), set(os.sched_getaffinity(0))
        finally:
            _shim.set_current_thread_cpus(before)

    before, got, os_view = _in_thread(work)
    assert got == os_view
    assert before <= got <= before | {63, 127, 1023}


@needs_affinity
def test_pin_errors():
    def work():
        before = _shim.current_thread_cpus()
        errors = []
        for cpu in (-1, 1 << 20):
            try:
                _shim.pin_current_thread(cpu)
            except OSError as exc:
                errors.append(str(exc))
        try:
            _shim.set_current_thread_cpus([-1])
        except ValueError as exc:
            errors.append(str(exc))
        try:
            _shim.set_current_thread_cpus([1024])
        except ValueError as exc:
            errors.append(str(exc))
        return before, errors, _shim.current_thread_cpus()

    before, errors, after = _in_thread(work)
    assert len(errors) == 4, errors
    assert "CPU -1" in errors[0]
    assert after == before  # a failed pin leaves the CPU set alone


def test_cython_api_addresses_for_numba():
    from numba.core.extending import get_cython_function_address

    for name in ("vk_pin_current_thread", "vk_current_thread_cpus", "vk_set_current_thread_cpus"):
        assert get_cython_function_address("velokern._shim", name) != 0


@needs_affinity
def test_cython_api_functions_are_callable():
    from numba.core.extending import get_cython_function_address

    pin = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(
        get_cython_function_address("velokern._shim", "vk_pin_current_thread")
    )
    read = ctypes.CFUNCTYPE(ctypes.c_longlong, ctypes.POINTER(ctypes.c_longlong), ctypes.c_int)(
        get_cython_function_address("velokern._shim", "vk_current_thread_cpus")
    )
    cpu = max(os.sched_getaffinity(0))

    def work():
        before = _shim.current_thread_cpus()
        words = (ctypes.c_longlong * 16)()
        try:
            rc = pin(cpu)
            got = read(words, 16)
            return rc, got, [words[i] for i in range(16)]
        finally:
            _shim.set_current_thread_cpus(before)

    rc, got, words = _in_thread(work)
    assert rc == 0
    assert got == 1
    expect = [0] * 16
    expect[cpu // 64] = 1 << (cpu % 64)
    # the words are signed 64-bit: compare bit patterns
    assert [w & (2**64 - 1) for w in words] == expect


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [63, 64, 65, 80, 97, 1000])
def test_stable_bucket_of_few_partitions(n, rows):
    """Few partitions take a vectorised scatter on CPUs that have it, which stores whole
    registers past a partition's rows: partitions of 0, 1 or a few rows between large
    ones, rows not a multiple of 16, and everything in the last partition."""
    rng = np.random.default_rng(rows * 10 + n)
    cases = [
        rng.integers(0, n, rows),
        np.full(rows, n - 1),
        np.where(np.arange(rows) % 37 == 5, 0, n - 1),
        np.minimum(np.arange(rows) // max(rows // n, 1), n - 1),
    ]
    for pids in cases:
        pids = pids.astype(np.int32)
        want_order, want_off = ref_bucket(pids, n)
        order, offsets = _shim.stable_bucket(pids, n)
        np.testing.assert_array_equal(order, want_order)
        np.testing.assert_array_equal(offsets, want_off)


def test_threaded_bucketing_runs_threads_and_matches_one_thread():
    """The shim is built with OpenMP (setup.py, unless VELOKERN_NO_OPENMP was set), so
    bucket_by_keys really splits the rows over threads; chunks of every size (fewer rows
    than threads too) give the one-thread answer for every partition count, one key and
    three."""
    assert _shim.openmp() or os.environ.get("VELOKERN_NO_OPENMP")
    rng = np.random.default_rng(5)
    for m in (0, 1, 7, 15, 4099, 70_001):
        for nk in (1, 3):
            keys = [rng.integers(-2**63, 2**63 - 1, m, dtype=np.int64) for _ in range(nk)]
            for n in (1, 2, 3, 4, 5, 8, 9, 16, 1025):
                want = _shim.bucket_by_keys(keys, n)
                for threads in (2, 5, 16):
                    got = _shim.bucket_by_keys(keys, n, threads)
                    for a, b in zip(want, got):
                        np.testing.assert_array_equal(a, b, err_msg=f"{m} {nk} {n} {threads}")
