"""Answer checks, run before any figure is printed: V1 = V2 bit for bit, velokern =
DuckDB over the whole stream, and each batch's output of another engine = velokern's
answer for that batch alone (as a multiset of rows; floats to a relative 1e-9)."""

from __future__ import annotations

import math

import velokern as vk
from velokern.bench.queries import _REFERENCE
from velokern.datagen import SCENARIOS


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _same_rows(scenario: str, got: list[tuple], exp: list[tuple]) -> None:
    if len(got) != len(exp):
        raise AssertionError(f"{scenario}: {len(got)} rows, DuckDB {len(exp)}")
    for i, (g, e) in enumerate(zip(got, exp)):
        if len(g) != len(e) or not all(_close(a, b) for a, b in zip(g, e)):
            raise AssertionError(f"{scenario}: row {i} is {g}, DuckDB says {e}")


def _rows(outs) -> list[tuple]:
    return [tuple(r.values()) for o in outs if o.num_columns for r in o.to_records()]



def _check(scenario: str, sql: str, batches, outputs: dict[str, list]) -> None:
    """V1 = V2 bit for bit, and velokern = DuckDB over the whole stream."""
    import duckdb

    ref = outputs["v1"]
    for name, outs in outputs.items():
        if len(outs) != len(ref) or not all(a.equals(b, bitwise=True) for a, b in zip(ref, outs)):
            raise AssertionError(f"{scenario}: {name} output differs from V1")
    whole = vk.RecordBatch.concat(batches).to_arrow()
    con = duckdb.connect()
    con.execute("SET threads = 1")  # row_number() OVER () in arrival order
    con.register("raw", whole)
    con.execute("CREATE TEMP TABLE s AS SELECT *, row_number() OVER () AS rn FROM raw")
    if scenario in _REFERENCE:
        _same_rows(scenario, _rows(ref), con.execute(_REFERENCE[scenario]).fetchall())
    elif scenario == "S3b":
        # the change stream ends at the final answer: the last row of each (window, key),
        # in window order, is S3a's result (a V1 run that also selects window_start)
        proc, eng = vk.SimpleJobProcessor(), vk.StreamExecutionEngine(
            sql.replace(" FROM market_data", ", window_start FROM market_data"))
        outs = [proc.process_batch(b, eng) for b in batches] + [proc.flush(eng)]
        if _rows(outs) and [r[:-1] for r in _rows(outs)] != _rows(ref):
            raise AssertionError("S3b: the change stream depends on selecting window_start")
        last: dict[tuple, tuple] = {}
        for r in _rows(outs):
            last[(r[-1], r[0], r[1])] = r[:-1]
        final = [r for _, r in sorted(last.items(), key=lambda kv: kv[0][0])]  # stable
        _same_rows(scenario, final, con.execute(_REFERENCE["S3a"]).fetchall())
    else:
        # S2, EMIT CHANGES: the last row of each group is its final answer
        last = {}
        for r in _rows(ref):
            last[r[0]] = r
        exp = con.execute(SCENARIOS["S2"].replace(" FROM market_data", " FROM s")
                          + " ORDER BY MIN(rn)").fetchall()
        _same_rows(scenario, list(last.values()), exp)


def _per_batch_answers(scenario: str, batches) -> list:
    """velokern's answer for each batch on its own (a new V1 job per batch), as Arrow:
    what DuckDB and Polars compute per batch in the direct-SQL runs."""
    sql = SCENARIOS["S3a" if scenario == "S3b" else scenario]
    answers = []
    for b in batches:
        proc, eng = vk.SimpleJobProcessor(), vk.StreamExecutionEngine(sql)
        outs = [o for o in (proc.process_batch(b, eng), proc.flush(eng)) if o.num_columns]
        answers.append(vk.RecordBatch.concat(outs).to_arrow())
    return answers


def _check_direct(scenario: str, engine: str, answers: list, outs: list) -> None:
    """Every batch's output ``outs[i]`` of ``engine`` equals the reference answer
    ``answers[i]`` (velokern's answer for that batch, or another engine's), as a multiset
    of rows; floats to a relative 1e-9; NaN equals NaN."""
    import numpy as np
    import pyarrow as pa

    if len(outs) != len(answers):
        raise AssertionError(f"{scenario}: {engine} gave {len(outs)} batch outputs, "
                             f"expected {len(answers)}")
    for i, (ref, got) in enumerate(zip(answers, outs)):
        if not isinstance(got, pa.Table):
            got = got.to_arrow()
        where = f"{scenario}: {engine}, batch {i}"
        if got.num_rows != ref.num_rows or got.num_columns != ref.num_columns:
            raise AssertionError(f"{where}: {got.num_rows} rows x {got.num_columns} columns, "
                                 f"reference {ref.num_rows} x {ref.num_columns}")
        names = [f"c{j}" for j in range(ref.num_columns)]
        ref, got = ref.rename_columns(names), got.rename_columns(names)
        floats = [n for n in names if pa.types.is_floating(ref.schema.field(n).type)]
        keys = [(n, "ascending") for n in names if n not in floats] + \
               [(n, "ascending") for n in floats]
        ref, got = ref.sort_by(keys), got.sort_by(keys)
        for n in names:
            a = ref.column(n).to_numpy(zero_copy_only=False)
            b = got.column(n).to_numpy(zero_copy_only=False)
            same = (np.allclose(a.astype(float), b.astype(float), rtol=1e-9, atol=0.0,
                                equal_nan=True) if n in floats else bool((a == b).all()))
            if not same:
                raise AssertionError(f"{where}: column {ref.column_names.index(n)} "
                                     f"differs from the reference answer")

