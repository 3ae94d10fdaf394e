"""SQL text -> logical plan (sqlglot for standard SQL, plus velokern's streaming clauses)."""

from velokern.sql.parser import parse_sql

__all__ = ["parse_sql"]
