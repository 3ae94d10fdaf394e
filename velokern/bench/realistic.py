"""``velokern bench --realistic``: four workloads on data shaped like a real stream, V1
and V2 side by side with a hand-written numba loop doing the same work, optionally with
one core kept busy by another process.

The data (one numpy generator, seed 5): random keys (not ``i % k``), a filter that
keeps about half the rows, a tumbling window with about ten records per group per
window, a ROWS window over 1,000 keys. For the filter and the GROUP BY the same run
times a hand-written loop on the same arrays, serial and on all workers (the filter's
workers take contiguous ranges, count, then write at their offsets; the GROUP BY's
aggregate their ranges into their own arrays, merged after): the serial loop is the
figure V1's fraction travels with between machines, the parallel one the speed-up this
machine gives that work at best.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable

import numpy as np
from numba import njit, prange

import velokern as vk
from velokern.batch import RecordBatch, StringDictionary

__all__ = ["WORKLOADS", "format_realistic", "measure_realistic"]

#: workload -> (SQL, what its data is)
WORKLOADS = {
    "filter": ("SELECT order_id, total_amount FROM t WHERE total_amount > 100",
               "amounts normal around 100 (sd 40): about half pass"),
    "groupby": ("SELECT symbol, COUNT(*) AS c, AVG(price) AS a, MIN(price) AS mn, "
                "MAX(price) AS mx, SUM(quantity) AS q FROM t GROUP BY symbol",
                "200 random symbols"),
    "tumbling": ("SELECT symbol, COUNT(*) AS c, AVG(price) AS a, SUM(quantity) AS q FROM t "
                 "GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' SECOND)",
                 "200 random symbols, 2 records per ms: ~10 per group per window"),
    "rows": ("SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY ts ROWS "
             "BETWEEN 9 PRECEDING AND CURRENT ROW) AS ma FROM t",
             "1,000 random symbols"),
}
_SYMBOLS = 200
_ROWS_SYMBOLS = 1_000


class _Data:
    """The columns of the whole stream (cut into batches per batch size)."""

    def __init__(self, records: int, seed: int = 5):
        rng = np.random.default_rng(seed)
        self.n = records
        self.dictionary = StringDictionary(f"SYM{j}" for j in range(_ROWS_SYMBOLS))
        self.codes = rng.integers(0, _SYMBOLS, records).astype(np.int32)
        self.codes_rows = rng.integers(0, _ROWS_SYMBOLS, records).astype(np.int32)
        self.price = 100 + rng.standard_normal(records) * 5
        self.quantity = rng.integers(1, 1000, records)
        self.amount = 100 + rng.standard_normal(records) * 40
        self.ts = (np.arange(records) // 2).astype(np.int64)
        self.order_id = np.arange(records, dtype=np.int64)

    def cuts(self, batch_size: int):
        return [(a, min(self.n, a + batch_size)) for a in range(0, self.n, batch_size)]

    def batches(self, workload: str, batch_size: int) -> list[RecordBatch]:
        d = {"symbol": self.dictionary}
        out = []
        for a, b in self.cuts(batch_size):
            if workload == "filter":
                cols = {"order_id": self.order_id[a:b], "total_amount": self.amount[a:b]}
                out.append(RecordBatch(cols))
            elif workload == "rows":
                cols = {"symbol": self.codes_rows[a:b], "price": self.price[a:b],
                        "ts": self.ts[a:b]}
                out.append(RecordBatch(cols, dictionaries=d))
            else:
                cols = {"symbol": self.codes[a:b], "price": self.price[a:b],
                        "quantity": self.quantity[a:b], "ts": self.ts[a:b]}
                out.append(RecordBatch(cols, dictionaries=d))
        return out


# ------------------------------------------------------------------ hand-written loops
@njit(cache=True, nogil=True)
def _filter_range(ids, amount, lo, hi, oi, oa, at):
    k = at
    for i in range(lo, hi):
        oi[k] = ids[i]
        oa[k] = amount[i]
        k += amount[i] > 100.0
    return k - at


@njit(cache=True, nogil=True)
def _count_range(amount, lo, hi):
    c = 0
    for i in range(lo, hi):
        c += amount[i] > 100.0
    return c


@njit(cache=True, nogil=True, parallel=True)
def _filter_parallel(ids, amount, parts, oi, oa):
    n = len(ids)
    counts = np.empty(parts, np.int64)
    for q in prange(parts):
        counts[q] = _count_range(amount, q * n // parts, (q + 1) * n // parts)
    at = np.zeros(parts, np.int64)
    for q in range(1, parts):
        at[q] = at[q - 1] + counts[q - 1]
    for q in prange(parts):
        _filter_range(ids, amount, q * n // parts, (q + 1) * n // parts, oi, oa, at[q])
    return at[parts - 1] + counts[parts - 1]


@njit(cache=True, nogil=True)
def _group_range(codes, price, qty, lo, hi, cnt, s, mn, mx, sq):
    for i in range(lo, hi):
        g = codes[i]
        x = price[i]
        cnt[g] += 1
        s[g] += x
        sq[g] += qty[i]
        if x < mn[g]:
            mn[g] = x
        if x > mx[g]:
            mx[g] = x


@njit(cache=True, nogil=True, parallel=True)
def _group_parallel(codes, price, qty, parts, cnt, s, mn, mx, sq):
    """Each worker aggregates its range into its own row of the arrays; row 0 then
    takes the others (the merge of a few groups' partials)."""
    n = len(codes)
    for q in prange(parts):
        _group_range(codes, price, qty, q * n // parts, (q + 1) * n // parts, cnt[q], s[q],
                     mn[q], mx[q], sq[q])
    for q in range(1, parts):
        for g in range(cnt.shape[1]):
            if cnt[q, g]:
                cnt[0, g] += cnt[q, g]
                s[0, g] += s[q, g]
                sq[0, g] += sq[q, g]
                mn[0, g] = min(mn[0, g], mn[q, g])
                mx[0, g] = max(mx[0, g], mx[q, g])
                cnt[q, g] = 0
                s[q, g] = 0.0
                sq[q, g] = 0
                mn[q, g] = np.inf
                mx[q, g] = -np.inf


def _hand(workload: str, data: _Data, batch_size: int, threads: int) -> Callable[[], None]:
    """The whole stream through the hand-written loop, batch by batch (outputs and
    state preallocated and reused: the loop does the work and nothing else)."""
    cuts = data.cuts(batch_size)
    if workload == "filter":
        oi = np.empty(batch_size, np.int64)
        oa = np.empty(batch_size)

        def run():
            for a, b in cuts:
                if threads > 1:
                    _filter_parallel(data.order_id[a:b], data.amount[a:b], threads, oi, oa)
                else:
                    _filter_range(data.order_id[a:b], data.amount[a:b], 0, b - a, oi, oa, 0)
        return run
    rows = max(threads, 1)
    cnt = np.zeros((rows, _SYMBOLS), np.int64)
    s = np.zeros((rows, _SYMBOLS))
    sq = np.zeros((rows, _SYMBOLS), np.int64)
    mn = np.full((rows, _SYMBOLS), np.inf)
    mx = np.full((rows, _SYMBOLS), -np.inf)

    def run_groups():
        for a, b in cuts:
            c, p, q = data.codes[a:b], data.price[a:b], data.quantity[a:b]
            if threads > 1:
                _group_parallel(c, p, q, threads, cnt, s, mn, mx, sq)
            else:
                _group_range(c, p, q, 0, b - a, cnt[0], s[0], mn[0], mx[0], sq[0])
    return run_groups


def _check_hand(workload: str, data: _Data, batches: list[RecordBatch]) -> None:
    """The hand-written loops compute what V1 does (checked before they are timed)."""
    engine = vk.StreamExecutionEngine(WORKLOADS[workload][0])
    proc = vk.JobProcessorFactory.create("v1")
    outs = [proc.process_batch(b, engine) for b in batches]
    if workload == "filter":
        oi = np.empty(data.n, np.int64)
        oa = np.empty(data.n)
        k = _filter_range(data.order_id, data.amount, 0, data.n, oi, oa, 0)
        got = np.concatenate([o.column("order_id") for o in outs])
        ok = np.array_equal(got, oi[:k])
    else:
        cnt = np.zeros((1, _SYMBOLS), np.int64)
        s = np.zeros((1, _SYMBOLS))
        sq = np.zeros((1, _SYMBOLS), np.int64)
        mn = np.full((1, _SYMBOLS), np.inf)
        mx = np.full((1, _SYMBOLS), -np.inf)
        _group_range(data.codes, data.price, data.quantity, 0, data.n, cnt[0], s[0], mn[0],
                     mx[0], sq[0])
        last = {}
        for o in outs:
            for row in zip(o.column("symbol"), o.column("c"), o.column("mn"),
                           o.column("mx"), o.column("q"), o.column("a")):
                last[int(row[0])] = row[1:]
        ok = all(c == cnt[0, g] and lo == mn[0, g] and hi == mx[0, g] and q == sq[0, g]
                 and np.isclose(a, s[0, g] / cnt[0, g], rtol=1e-9)
                 for g, (c, lo, hi, q, a) in last.items()) and len(last) == (cnt[0] > 0).sum()
    if not ok:
        raise AssertionError(f"the hand-written {workload} loop disagrees with V1")


def _velokern(workload: str, batches: list[RecordBatch], cfg: str) -> Callable[[], None]:
    sql = WORKLOADS[workload][0]

    def run():
        engine = vk.StreamExecutionEngine(sql)
        proc = vk.JobProcessorFactory.create(cfg)
        for b in batches:
            proc.process_batch(b, engine)
        proc.flush(engine)
    return run


def _spin() -> None:  # the busy core's process
    while True:
        pass


def measure_realistic(batch_sizes=(1_000, 10_000, 100_000), processors=("v1", "v2:2"),
                      records: int = 400_000, repeats: int = 5, busy: bool = False,
                      workloads=tuple(WORKLOADS), large_records: int = 2_000_000
                      ) -> list[dict]:
    """Median µs per batch of every case, timed round by round side by side (each
    round runs every case once, so a slow moment of the machine hits them all): rows of
    (workload, batch_size, case, us_per_batch, busy). Cases: the processors, and for
    the filter and the GROUP BY ``hand`` and ``hand:T`` (the loop on T workers, T the
    last processor's partitions). Batches of 100,000 records and more cut a stream of
    ``large_records`` (20 batches: a job long enough for V2 to settle on its worker
    count), smaller ones a stream of ``records``."""
    from velokern.processors.threading import use_threads

    streams = {n: _Data(n) for n in {records, large_records}}
    # the hand-written loops run on as many workers as the widest V2 processor
    threads = max([getattr(vk.JobProcessorFactory.create(p), "num_threads", 1)
                   for p in processors] + [1])
    spinner = None
    if busy:
        spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
        spinner.start()
    rows = []
    try:
        for w in workloads:
            for bs in batch_sizes:
                data = streams[large_records if bs >= 100_000 else records]
                batches = data.batches(w, bs)
                cases = {cfg: _velokern(w, batches, cfg) for cfg in processors}
                if w in ("filter", "groupby"):
                    _check_hand(w, data, batches)
                    cases["hand"] = _hand(w, data, bs, 1)
                    if threads > 1:
                        cases[f"hand:{threads}"] = _hand(w, data, bs, threads)
                for fn in cases.values():  # compile, warm up
                    fn()
                times: dict[str, list[float]] = {c: [] for c in cases}
                for _ in range(repeats):
                    for c, fn in cases.items():
                        use_threads(threads if c.startswith("hand:") else 1)
                        t = time.perf_counter()
                        fn()
                        times[c].append(time.perf_counter() - t)
                nb = len(batches)
                rows += [{"workload": w, "batch_size": bs, "case": c, "busy": busy,
                          "us_per_batch": statistics.median(v) / nb * 1e6}
                         for c, v in times.items()]
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.join()
    return rows


def format_realistic(rows: list[dict]) -> str:
    """A markdown table: µs per batch of each case, V2 against V1, V1 as a fraction of
    the hand-written loop, and the speed-ups of V2 and of the parallel loop."""
    by = {}
    for r in rows:
        by.setdefault((r["workload"], r["batch_size"], r["busy"]), {})[r["case"]] = \
            r["us_per_batch"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    v2s = [c for c in cases if c.startswith("v2")]
    hands = [c for c in cases if c.startswith("hand:")]
    head = ["workload", "batch", "busy core", *[f"{c} µs" for c in cases],
            *[f"{c}/v1" for c in v2s], "v1 of hand", *[f"{c} speed-up" for c in hands]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (w, bs, busy), t in by.items():
        v1, hand = t.get("v1"), t.get("hand")
        cells = [w, f"{bs:,}", "yes" if busy else "no"]
        cells += [f"{t[c]:,.1f}" if c in t else "" for c in cases]
        cells += [f"{v1 / t[c]:.2f}x" if v1 and c in t else "" for c in v2s]
        cells += [f"{hand / v1:.2f}" if hand and v1 else ""]
        cells += [f"{hand / t[c]:.2f}x" if hand and c in t else "" for c in hands]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
