"""The generated kernel source of every reference query is pinned by its digest.

The code generator may be restructured, but the source it writes for a query must not
change unless a change means to (a new kernel shape, a fix): then regenerate the pins
with ``python tests/test_codegen_digests.py --write`` and say why in the commit. Equal
source keeps the on-disk kernel cache keys valid and proves a refactor preserves
behaviour."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from velokern.codegen import generate
from velokern.datagen import SCENARIOS, stream_for
from velokern.plan import bind
from velokern.sql import parse_sql

PINS = Path(__file__).parent / "data" / "codegen_digests.json"

_W = "PARTITION BY k ORDER BY seq ROWS BETWEEN 4 PRECEDING AND CURRENT ROW"
_AGGS = ("COUNT(*) AS n, COUNT(x) AS nx, SUM(x) AS sx, AVG(f) AS af, MIN(f) AS mn, "
         "MAX(x) AS mx, FIRST_VALUE(f) AS ff, LAST_VALUE(x) AS lx, COUNT(DISTINCT s) AS ds")

#: queries over the test stream's columns (k, s, s2, x, y, f, b, seq, ts), one per
#: generator path: stateless, GROUP BY (hash table, direct map, global, every aggregate),
#: windows (tumbling, sliding, EMIT CHANGES), ROWS windows
QUERIES = {
    "filter_exprs": "SELECT seq, k, x // y AS q, x % y AS r, ROUND(f, 1) AS rf, "
                    "CASE WHEN x > 0 THEN f ELSE -f END AS c, CAST(f AS BIGINT) AS ci, "
                    "COALESCE(x, y, 0) AS co, s FROM t "
                    "WHERE (s = 's1' OR x IN (1, 2, NULL)) AND f BETWEEN -5 AND 5 AND NOT b",
    "group_all_aggs": "SELECT k, COUNT(*) AS n, COUNT(x) AS nx, SUM(x) AS sx, AVG(f) AS af, "
                      "MIN(f) AS mnf, MAX(f) AS mxf, MIN(x) AS mnx, MAX(s) AS mxs, "
                      "MIN(s2) AS mns, STDDEV(f) AS sd, VAR_POP(x) AS vp, "
                      "STDDEV_POP(f) AS sdp, VARIANCE(f) AS vs, "
                      "FIRST_VALUE(f) AS ff, LAST_VALUE(x IGNORE NULLS) AS lx, "
                      "COUNT(DISTINCT f) AS dfl, COUNT(DISTINCT s2) AS ds "
                      "FROM t WHERE x IS NOT NULL OR f > 0 GROUP BY k HAVING COUNT(*) > 1",
    "group_direct": "SELECT s, s2, b, COUNT(*) AS n, SUM(f) AS sf FROM t GROUP BY s, s2, b",
    "group_float_key": "SELECT f, k + 1 AS k1, MAX(x) AS mx FROM t GROUP BY f, k + 1",
    "group_final": "SELECT k, s, SUM(x) AS sx FROM t GROUP BY k, s EMIT FINAL",
    "global": "SELECT COUNT(*) AS n, SUM(x) AS sx, AVG(f) AS af FROM t WHERE x > 0",
    "tumbling": f"SELECT k, s, {_AGGS}, window_start, window_end FROM t GROUP BY k, s "
                "WINDOW TUMBLING(ts, INTERVAL '5' SECOND)",
    "tumbling_changes": "SELECT k, COUNT(*) AS n, window_start FROM t GROUP BY k "
                        "WINDOW TUMBLING(ts, INTERVAL '5' SECOND) EMIT CHANGES",
    "sliding": f"SELECT k, {_AGGS}, window_start, window_end FROM t GROUP BY k "
               "WINDOW SLIDING(ts, INTERVAL '5' SECOND, INTERVAL '2' SECOND)",
    "global_window": "SELECT COUNT(*) AS n, SUM(x) AS sx, window_start FROM t "
                     "WINDOW TUMBLING(ts, INTERVAL '5' SECOND)",
    "rows_frame": f"SELECT seq, k, AVG(f) OVER ({_W}) AS af, SUM(x) OVER ({_W}) AS sx, "
                  f"MIN(f) OVER ({_W}) AS mnf, MAX(x) OVER ({_W}) AS mxx, "
                  f"COUNT(x) OVER ({_W}) AS cx, COUNT(*) OVER ({_W}) AS cs FROM t",
    "rows_lag": "SELECT seq, s2, LAG(x) OVER (PARTITION BY s2 ORDER BY seq) AS l1, "
                "LAG(f, 3, 0) OVER (PARTITION BY s2 ORDER BY seq) AS l3, "
                "ROW_NUMBER() OVER (PARTITION BY s2 ORDER BY seq) AS rn FROM t "
                "WHERE x IS NULL OR x > -8",
}


def _test_schema():
    from tests.conftest import make_stream, to_batch

    cols = make_stream(64, seed=3)
    return to_batch(cols, extra={"ts": np.arange(64, dtype=np.int64) * 700}).schema


def _cases():
    """(name, sql, schema) of every pinned query."""
    out = []
    for name, sql in SCENARIOS.items():
        out.append((name, sql, next(iter(stream_for(name, 16, 16))).schema))
    schema = _test_schema()
    out += [(name, sql, schema) for name, sql in QUERIES.items()]
    return out


def _digests() -> dict[str, str]:
    got = {}
    for name, sql, schema in _cases():
        bq = bind(parse_sql(sql), schema)
        for variant, nullable in (("plain", set()), ("nullable", set(bq.columns))):
            src = generate(bq, nullable).source
            got[f"{name}/{variant}"] = hashlib.sha256(src.encode()).hexdigest()
    return got


def test_generated_source_is_pinned():
    pins = json.loads(PINS.read_text())
    got = _digests()
    assert sorted(got) == sorted(pins), "the pinned queries changed: regenerate the pins"
    changed = [k for k in got if got[k] != pins[k]]
    assert not changed, f"generated source changed for {changed}"


def test_pins_cover_every_generator_path():
    """Each kind of kernel module is among the pinned ones."""
    kinds = set()
    for _, sql, schema in _cases():
        src = generate(bind(parse_sql(sql), schema), set()).source
        for fn in ("project_part", "batch_part", "rows_part", "close_groups", "init_global",
                   "row_hash"):
            if f"def {fn}(" in src:
                kinds.add(fn)
    assert kinds == {"project_part", "batch_part", "rows_part", "close_groups",
                     "init_global", "row_hash"}


if __name__ == "__main__":  # pragma: no cover
    if "--write" in sys.argv:
        sys.path.insert(0, str(Path(__file__).parent.parent))
        PINS.parent.mkdir(exist_ok=True)
        PINS.write_text(json.dumps(_digests(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {PINS}")
