"""Seeded generators of the reference streams.

Record i of a stream is defined by the seed and i alone, so any batch cutting gives the
same stream (tests/test_datagen.py holds this): random columns are drawn in fixed
blocks of records, each block from its own generator seeded by (seed, column, block).
Every generator yields RecordBatches whose string columns share one StringDictionary
per column (as a job's source would), so engines see stable codes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from velokern.batch import RecordBatch, StringDictionary

__all__ = ["SCENARIOS", "market_data", "market_trades", "orders", "stream_for", "trades"]

_S3A = ("SELECT trader_id, symbol, COUNT(*) AS trade_count, AVG(price) AS avg_price, "
        "SUM(quantity) AS total_quantity, SUM(price * quantity) AS total_value "
        "FROM market_data GROUP BY trader_id, symbol "
        "WINDOW TUMBLING (trade_time, INTERVAL '1' MINUTE)")

#: SQL of the reference scenarios (issue 4).
SCENARIOS = {
    "S0": "SELECT order_id, customer_id, order_date, total_amount FROM orders "
          "WHERE total_amount > 100",
    "S1": "SELECT symbol, price, AVG(price) OVER (ROWS WINDOW BUFFER 100 ROWS "
          "PARTITION BY symbol ORDER BY timestamp) AS moving_avg FROM market_data",
    "S2": "SELECT symbol, COUNT(*) AS trade_count, AVG(price) AS avg_price, "
          "MIN(price) AS min_price, MAX(price) AS max_price, SUM(quantity) AS total_quantity "
          "FROM market_data GROUP BY symbol",
    "S3a": _S3A,
    "S3b": _S3A + " EMIT CHANGES",
}


def _dictionary(prefix: str, k: int) -> StringDictionary:
    return StringDictionary(f"{prefix}{j}" for j in range(k))


#: records per block of random draws (a batch's values are cut from the blocks it spans)
_BLOCK = 4096


def _draw(seed: int, column: int, a: int, b: int, draw) -> np.ndarray:
    """Values ``a..b-1`` of a random column: ``draw(rng, n)`` per block of _BLOCK
    records, each block from its own generator, so the values do not depend on how the
    stream is cut into batches."""
    first, last = a // _BLOCK, (b - 1) // _BLOCK if b > a else a // _BLOCK - 1
    parts = [draw(np.random.default_rng([seed, column, k]), _BLOCK)
             for k in range(first, last + 1)]
    if not parts:
        return draw(np.random.default_rng([seed, column, 0]), 0)
    flat = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return flat[a - first * _BLOCK:b - first * _BLOCK]


def _normal(rng, n):
    return rng.standard_normal(n)


def _uniform_int(lo: int, hi: int):
    return lambda rng, n: rng.integers(lo, hi, n)


def _cuts(total: int, batch_size: int) -> Iterator[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, total, batch_size):
        yield start, min(total, start + batch_size)


def orders(total: int, batch_size: int = 100_000, *, seed: int = 0,
           random: bool = False) -> Iterator[RecordBatch]:
    """S0 input: order_id = i, customer_id = i % 1000, order_date a string (one of 365
    days), total_amount = 150 + i % 100 (every record passes S0's ``> 100``; with
    ``random``: normal around 100, standard deviation 40, so about half pass)."""
    days = _dictionary("2024-01-", 0)
    for d in range(365):
        day = np.datetime64("2024-01-01") + d
        days.code_of(str(day))
    for a, b in _cuts(total, batch_size):
        i = np.arange(a, b, dtype=np.int64)
        amount = (100.0 + 40.0 * _draw(seed, 0, a, b, _normal) if random
                  else 150.0 + (i % 100))
        yield RecordBatch(
            {
                "order_id": i,
                "customer_id": i % 1000,
                "order_date": (i % 365).astype(np.int32),
                "total_amount": amount.astype(np.float64),
            },
            dictionaries={"order_date": days},
        )


def market_data(total: int, batch_size: int = 100_000, *, symbols: int = 200, seed: int = 0,
                random: bool = False) -> Iterator[RecordBatch]:
    """S1 and S2 input (S1: 10 symbols, S2: 200): symbol ``SYM{i % symbols}`` (with
    ``random``: a uniformly random one of the ``symbols``), price normal around 100
    (standard deviation 5), quantity uniform in [1, 1000), timestamp = i * 1000 (ms)."""
    sym = _dictionary("SYM", symbols)
    for a, b in _cuts(total, batch_size):
        i = np.arange(a, b, dtype=np.int64)
        codes = _draw(seed, 0, a, b, _uniform_int(0, symbols)) if random else i % symbols
        yield RecordBatch(
            {
                "symbol": codes.astype(np.int32),
                "price": 100.0 + _draw(seed, 1, a, b, _normal) * 5.0,
                "quantity": _draw(seed, 2, a, b, _uniform_int(1, 1000)),
                "timestamp": i * 1000,
            },
            dictionaries={"symbol": sym},
        )


def trades(total: int, batch_size: int = 100_000, *, seed: int = 0) -> Iterator[RecordBatch]:
    """A trade stream for the demo: trader_id random among ``T0..T49``, symbol
    ``SYM{i % 100}``, side, price, quantity, trade_time = 1_000_000 + i * 1000 (ms)."""
    traders = _dictionary("T", 50)
    sym = _dictionary("SYM", 100)
    side = StringDictionary(["BUY", "SELL"])
    base = 50.0 + np.arange(100) * 2.5
    for a, b in _cuts(total, batch_size):
        i = np.arange(a, b, dtype=np.int64)
        s = (i % 100).astype(np.int32)
        yield RecordBatch(
            {
                "trader_id": _draw(seed, 0, a, b, _uniform_int(0, 50)).astype(np.int32),
                "symbol": s,
                "side": _draw(seed, 1, a, b, _uniform_int(0, 2)).astype(np.int32),
                "price": base[s] * (1.0 + _draw(seed, 2, a, b, _normal) * 0.01),
                "quantity": _draw(seed, 3, a, b, _uniform_int(1, 500)),
                "trade_time": 1_000_000 + i * 1000,
            },
            dictionaries={"trader_id": traders, "symbol": sym, "side": side},
        )


def market_trades(total: int, batch_size: int = 100_000, *, seed: int = 0,
                  random: bool = False, jitter_ms: int = 5_000) -> Iterator[RecordBatch]:
    """S3a/S3b input: trader_id ``T{i % 50}``, symbol ``SYM{i % 100}`` (so one trader
    always trades the same two symbols: 100 groups, each with a record every 100 s, so
    one record per group per 1-minute window or none), price normal around 100
    (standard deviation 5), quantity uniform in [1, 1000), trade_time = 1_000_000 +
    i * 1000 (ms, one record a second, in order).

    With ``random``: uniformly random traders and symbols (5,000 groups, about 0.012
    records per group per minute), and trade times moved by up to ``jitter_ms`` either
    way, so records arrive slightly out of order."""
    traders = _dictionary("T", 50)
    sym = _dictionary("SYM", 100)
    for a, b in _cuts(total, batch_size):
        i = np.arange(a, b, dtype=np.int64)
        t = 1_000_000 + i * 1000
        if random:
            tr = _draw(seed, 0, a, b, _uniform_int(0, 50))
            sy = _draw(seed, 1, a, b, _uniform_int(0, 100))
            t = t + _draw(seed, 2, a, b, _uniform_int(-jitter_ms, jitter_ms + 1))
        else:
            tr, sy = i % 50, i % 100
        yield RecordBatch(
            {
                "trader_id": tr.astype(np.int32),
                "symbol": sy.astype(np.int32),
                "price": 100.0 + _draw(seed, 3, a, b, _normal) * 5.0,
                "quantity": _draw(seed, 4, a, b, _uniform_int(1, 1000)),
                "trade_time": t,
            },
            dictionaries={"trader_id": traders, "symbol": sym},
        )


def stream_for(scenario: str, total: int, batch_size: int = 100_000, *, seed: int = 0,
               random: bool = False) -> Iterator[RecordBatch]:
    """The input stream of a reference scenario."""
    if scenario == "S0":
        return orders(total, batch_size, seed=seed, random=random)
    if scenario == "S1":
        return market_data(total, batch_size, symbols=10, seed=seed, random=random)
    if scenario == "S2":
        return market_data(total, batch_size, seed=seed, random=random)
    if scenario in ("S3a", "S3b"):
        return market_trades(total, batch_size, seed=seed, random=random)
    raise ValueError(f"unknown scenario {scenario!r} (known: S0, S1, S2, S3a, S3b)")
