"""The reference scenarios in standard SQL: what DuckDB runs on each batch ("direct
SQL"), and the whole stream's answer the checks compare velokern's output with."""

from __future__ import annotations

from velokern.datagen import SCENARIOS

ALL_SCENARIOS = ("S0", "S1", "S2", "S3a", "S3b")
_S3_AGGS = ("COUNT(*) AS trade_count, AVG(price) AS avg_price, SUM(quantity) AS "
            "total_quantity, SUM(price * quantity) AS total_value")
#: The query DuckDB runs on each batch ("direct SQL"): the scenario in standard SQL.
#: Windows become a GROUP BY on the window start; DuckDB keeps no state between
#: batches, so its per-batch cost is a lower bound for a streaming job.
DIRECT_SQL = {
    "S0": SCENARIOS["S0"].replace(" FROM orders", " FROM batch"),
    "S1": "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY timestamp "
          "ROWS BETWEEN 99 PRECEDING AND CURRENT ROW) AS moving_avg FROM batch",
    "S2": SCENARIOS["S2"].replace(" FROM market_data", " FROM batch"),
    "S3a": f"SELECT trader_id, symbol, {_S3_AGGS} FROM batch "
           "GROUP BY trader_id, symbol, trade_time // 60000",
}
DIRECT_SQL["S3b"] = DIRECT_SQL["S3a"]

_REFERENCE = {  # the whole stream's answer in standard SQL, in velokern's output order
    "S0": SCENARIOS["S0"].replace(" FROM orders", " FROM s") + " ORDER BY order_id",
    "S1": "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY rn ROWS "
          "BETWEEN 99 PRECEDING AND CURRENT ROW) FROM s ORDER BY rn",
    "S3a": f"SELECT trader_id, symbol, {_S3_AGGS} FROM s GROUP BY trader_id, symbol, "
           "trade_time // 60000 ORDER BY trade_time // 60000, MIN(rn)",
}
