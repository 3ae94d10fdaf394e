"""SQL text -> :class:`velokern.plan.Query`, using sqlglot for standard SQL.

velokern's streaming clauses are taken off the statement before sqlglot sees it, with
sqlglot's own tokenizer (so text inside string literals is never touched):

* ``EMIT CHANGES`` / ``EMIT FINAL`` at the end of the statement.

Everything velokern does not run raises :class:`~velokern.plan.PlanError` naming the
construct and its line and column.
"""

from __future__ import annotations

import functools
import math

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from velokern.aggregates import REGISTRY as AGGREGATES
from velokern.batch import STRING
from velokern.plan import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    Agg,
    Binary,
    Case,
    Cast,
    Col,
    Expr,
    Func,
    InList,
    IsNull,
    Lit,
    Over,
    PlanError,
    Query,
    Unary,
    WindowSpec,
)

__all__ = ["parse", "parse_duration"]

DIALECT = "duckdb"

_BINARY = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.IntDiv: "//",
    exp.Mod: "%",
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.And: "and",
    exp.Or: "or",
}

def _aggregate_spellings() -> tuple[dict[type, dict[str, str]], dict[str, str]]:
    """From the aggregate registry: sqlglot expression class -> {form: aggregate} (form
    "*" for COUNT(*), "distinct" for COUNT(DISTINCT x), "" for a plain call), and the
    lower-case names sqlglot leaves as exp.Anonymous -> aggregate."""
    by_class: dict[type, dict[str, str]] = {}
    by_name: dict[str, str] = {}
    for a in AGGREGATES.values():
        for cls_name in a.sqlglot:
            cls = getattr(exp, cls_name, None)
            if cls is not None:
                by_class.setdefault(cls, {})[a.form] = a.name
        if a.form == "":
            for name in a.sql:
                by_name.setdefault(name, a.name)
    return by_class, by_name


_AGGS, _ANON_AGGS = _aggregate_spellings()

_FUNCS = {exp.Abs: "abs", exp.Round: "round", exp.Floor: "floor", exp.Ceil: "ceil"}

_CAST_TYPES = {
    **{t: INT for t in ("BIGINT", "INT", "INTEGER", "SMALLINT", "TINYINT", "INT64", "INT32",
                        "INT16", "INT8", "LONG", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT")},
    **{t: FLOAT for t in ("DOUBLE", "FLOAT64", "DOUBLE PRECISION", "DECIMAL", "NUMERIC")},
    "BOOLEAN": BOOL,
    "BOOL": BOOL,
}

# keyword tokens used to locate constructs that carry no position of their own
_KEYWORD_OF = {
    exp.Join: TokenType.JOIN,
    exp.Order: TokenType.ORDER_BY,
    exp.Limit: TokenType.LIMIT,
    exp.Offset: TokenType.OFFSET,
    exp.Subquery: TokenType.L_PAREN,
    exp.Union: TokenType.UNION,
    exp.Window: TokenType.OVER,
    exp.Distinct: TokenType.DISTINCT,
    exp.Qualify: TokenType.QUALIFY,
}


#: sqlglot class -> the _Converter method for it and for its subclasses (the nearest
#: class of a node's class hierarchy that has an entry wins)
_CONVERTERS = {
    exp.Paren: "_paren",
    exp.Column: "_column",
    exp.Literal: "_literal",
    exp.Boolean: "_boolean",
    exp.Null: "_null",
    exp.Neg: "_neg",
    exp.Not: "_not",
    exp.Is: "_is",
    exp.Between: "_between",
    exp.In: "_in",
    exp.Case: "_case",
    exp.If: "_if",
    exp.Cast: "_cast",
    exp.TryCast: "_cast",
    exp.Coalesce: "_coalesce",
    exp.IgnoreNulls: "_ignore_nulls",
    exp.RespectNulls: "_respect_nulls",
    exp.Anonymous: "_anonymous",
    exp.Window: "_over",
    exp.Subquery: "_subquery",
    exp.Select: "_subquery",
    exp.Exists: "_subquery",
    exp.Star: "_star",
    exp.Func: "_unsupported_function",
}

#: sqlglot class -> the _Converter method for exactly that class (not its subclasses);
#: looked up before _CONVERTERS
_EXACT_CONVERTERS = {
    **dict.fromkeys(_BINARY, "_binary"),
    **dict.fromkeys(_FUNCS, "_function"),
    **dict.fromkeys(_AGGS, "_aggregate"),
}


@functools.cache
def _converter_of(cls: type) -> str:
    """The name of the _Converter method that converts a node of sqlglot class ``cls``."""
    if cls in _EXACT_CONVERTERS:
        return _EXACT_CONVERTERS[cls]
    for base in cls.__mro__:
        if base in _CONVERTERS:
            return _CONVERTERS[base]
    return "_unsupported"


class _Ctx:
    def __init__(self, sql: str, tokens):
        self.sql = sql
        self.tokens = tokens
        self.positions: dict[int, tuple[int, int]] = {}

    def pos(self, node: exp.Expression) -> tuple[int, int] | None:
        for cls, tt in _KEYWORD_OF.items():
            if isinstance(node, cls):
                for tok in self.tokens:
                    if tok.token_type == tt:
                        return _line_col(self.sql, tok.start)
        for n in node.walk():
            m = n.meta if hasattr(n, "meta") else {}
            if "line" in m and "col" in m:
                start = m.get("start")
                if start is not None:
                    return _line_col(self.sql, start)
                # sqlglot reports the column of the token's last character
                return (m["line"], m["col"])
        return None

    def error(self, node: exp.Expression, msg: str) -> PlanError:
        p = self.pos(node)
        where = f" at line {p[0]}, column {p[1]}" if p else ""
        return PlanError(f"{msg}{where}")

    def mark(self, e: Expr, node: exp.Expression) -> Expr:
        p = self.pos(node)
        if p is not None:
            self.positions[id(e)] = p
        return e


def _line_col(sql: str, offset: int) -> tuple[int, int]:
    before = sql[:offset]
    line = before.count("\n") + 1
    col = offset - (before.rfind("\n") + 1) + 1
    return line, col


def _strip_streaming_clauses(sql: str) -> tuple[str, str | None, list]:
    try:
        tokens = sqlglot.tokenize(sql, read=DIALECT)
    except TokenError as exc:
        raise PlanError(f"cannot read SQL: {exc}") from exc
    toks = list(tokens)
    while toks and toks[-1].token_type == TokenType.SEMICOLON:
        sql = sql[: toks[-1].start]
        toks.pop()
    emit = None
    if len(toks) >= 2 and toks[-2].text.upper() == "EMIT":
        word = toks[-1].text.upper()
        if word not in ("CHANGES", "FINAL"):
            raise PlanError(
                f"EMIT must be followed by CHANGES or FINAL, got {toks[-1].text!r} at line "
                f"{toks[-1].line}"
            )
        emit = word.lower()
        sql = sql[: toks[-2].start]
        toks = toks[:-2]
    for t in toks:
        if t.text.upper() == "EMIT":
            line, col = _line_col(sql, t.start)
            raise PlanError(f"EMIT CHANGES / EMIT FINAL must end the statement (line {line}, "
                            f"column {col})")
    return sql, emit, toks


# --------------------------------------------------------------------------- windows
_UNITS_MS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds", "msec"), 1),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1000),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}
_WINDOW_CLAUSES = {"TUMBLING": "tumbling", "SLIDING": "sliding", "HOPPING": "sliding",
                   "SESSION": "session"}
_GROUP_WINDOWS = {"TUMBLE": "tumbling", "HOP": "sliding", "SESSION": "session"}
_OPTIONS = ("allowed_lateness", "state_ttl")


def _matching_paren(toks: list, i: int) -> int:
    """Index of the R_PAREN closing the L_PAREN at ``toks[i]``."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].token_type == TokenType.L_PAREN:
            depth += 1
        elif toks[j].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return j
    raise PlanError(f"unbalanced parentheses after {toks[i - 1].text!r} at line "
                    f"{toks[i - 1].line}")


def _split_args(toks: list) -> list[list]:
    args: list[list] = [[]]
    depth = 0
    for t in toks:
        if t.token_type == TokenType.COMMA and depth == 0:
            args.append([])
            continue
        depth += t.token_type == TokenType.L_PAREN
        depth -= t.token_type == TokenType.R_PAREN
        args[-1].append(t)
    return [a for a in args if a]


def parse_duration(text: str) -> int:
    """Milliseconds of a duration: ``500ms``, ``30s``, ``1m``, ``1h``, ``1d``,
    ``'10 minutes'``, or a bare number of milliseconds."""
    raw = text.strip().strip("'").strip()
    num = raw.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    unit = raw[len(num):].strip().lower() or "ms"
    try:
        value = float(num)
    except ValueError:
        value = None
    if value is None or unit not in _UNITS_MS or value < 0:
        raise PlanError(f"cannot read duration {text!r} (use e.g. 500ms, 30s, 1m, 1h, 1d or "
                        "INTERVAL '1' MINUTE)")
    ms = value * _UNITS_MS[unit]
    if ms != int(ms):
        raise PlanError(f"duration {text!r} is not a whole number of milliseconds")
    return int(ms)


def _duration_arg(arg: list) -> int | None:
    """Milliseconds of a window argument that is a duration, None when it is a column."""
    kinds = [t.token_type for t in arg]
    texts = [t.text for t in arg]
    if kinds[0] == TokenType.INTERVAL:
        return parse_duration(" ".join(texts[1:]))
    if kinds == [TokenType.STRING] or kinds[0] == TokenType.NUMBER:
        return parse_duration("".join(texts))
    if len(arg) == 1:
        return None  # a column name
    raise PlanError(f"cannot read window argument {' '.join(texts)!r} at line {arg[0].line}")


def _window_spec(kind: str, name: str, arg_toks: list, flink_hop: bool) -> WindowSpec:
    args = _split_args(arg_toks)
    where = f"{name}(...) at line {arg_toks[0].line if arg_toks else '?'}"
    col = None
    if args and _duration_arg(args[0]) is None:
        col = args[0][0].text
        args = args[1:]
    durations = [_duration_arg(a) for a in args]
    if any(d is None for d in durations):
        raise PlanError(f"{where}: only the first argument may be the time column")
    want = 2 if kind == "sliding" else 1
    if len(durations) != want:
        shape = ("(time_column, size)" if kind == "tumbling" else
                 "(time_column, gap)" if kind == "session" else
                 "(time_column, slide, size)" if flink_hop else "(time_column, size, slide)")
        raise PlanError(f"{where}: expected {name}{shape}, the time column optional")
    if kind in ("tumbling", "session"):  # a session's "size" is its gap
        size = slide = durations[0]
    elif flink_hop:
        slide, size = durations
    else:
        size, slide = durations
    if size <= 0 or slide <= 0:
        raise PlanError(f"{where}: window size and slide must be positive")
    if slide > size:
        raise PlanError(f"{where}: the slide ({slide} ms) is longer than the window "
                        f"({size} ms), so some records would belong to no window")
    return WindowSpec(kind, col, size, slide)


def _extract_windows(sql: str, toks: list) -> tuple[str, list, WindowSpec | None, dict]:
    """Take the streaming window clauses off the statement: ``WINDOW TUMBLING(...)`` /
    ``SLIDING`` / ``HOPPING`` / ``SESSION``, the group-window functions ``TUMBLE(...)`` /
    ``HOP(...)`` / ``SESSION(...)`` in GROUP BY, and ``WITH (option = value, ...)``.
    The text they take is blanked (so positions of the rest stay right)."""
    scan = _ClauseScan(toks)
    scan.run()
    if len(scan.windows) > 1:
        raise PlanError("a query can have one time window; this one has "
                        f"{len(scan.windows)}")
    if not scan.cut:
        return sql, toks, None, scan.options
    body, kept = _blank(sql, toks, scan.cut)
    return body, kept, scan.windows[0] if scan.windows else None, scan.options


class _ClauseScan:
    """One pass over the tokens: the streaming clauses' windows, options and token ranges."""

    def __init__(self, toks: list):
        self.toks = toks
        self.cut: list[tuple[int, int]] = []
        self.windows: list[WindowSpec] = []
        self.options: dict[str, object] = {}
        self.in_group = False  # inside the top-level GROUP BY list
        self.depth = 0  # parenthesis depth

    def run(self) -> None:
        """Scan every token, skipping over each clause taken."""
        i = 0
        while i < len(self.toks):
            self._track(self.toks[i])
            close = self._take_clause(i)
            i = i + 1 if close is None else close + 1

    def _track(self, t) -> None:
        """Follow the parenthesis depth and whether the scan is in the GROUP BY list."""
        if t.token_type == TokenType.L_PAREN:
            self.depth += 1
        elif t.token_type == TokenType.R_PAREN:
            self.depth -= 1
        if self.depth != 0:
            return
        if t.token_type == TokenType.GROUP_BY:
            self.in_group = True
        elif t.token_type in (TokenType.HAVING, TokenType.WINDOW, TokenType.WITH):
            self.in_group = False

    def _take_clause(self, i: int) -> int | None:
        """Take the clause starting at token ``i``: the index of its last token, else None."""
        if self.depth != 0:
            return None
        t = self.toks[i]
        nxt = self.toks[i + 1] if i + 1 < len(self.toks) else None
        if nxt is None:
            return None
        if t.token_type == TokenType.WINDOW and nxt.text.upper() in _WINDOW_CLAUSES:
            return self._window_clause(i)
        if (self.in_group and t.text.upper() in _GROUP_WINDOWS
                and nxt.token_type == TokenType.L_PAREN):
            return self._group_window(i)
        if i > 0 and t.token_type == TokenType.WITH and nxt.token_type == TokenType.L_PAREN:
            return self._with_options(i)
        return None

    def _window_clause(self, i: int) -> int:
        """``WINDOW TUMBLING(...)`` / ``SLIDING`` / ``HOPPING`` / ``SESSION``."""
        toks = self.toks
        nxt = toks[i + 1]
        if i + 2 >= len(toks) or toks[i + 2].token_type != TokenType.L_PAREN:
            raise PlanError(f"WINDOW {nxt.text} needs its arguments in parentheses "
                            f"(line {nxt.line})")
        close = _matching_paren(toks, i + 2)
        self.windows.append(_window_spec(_WINDOW_CLAUSES[nxt.text.upper()], nxt.text.upper(),
                                         toks[i + 3:close], False))
        self.cut.append((i, close))
        return close

    def _group_window(self, i: int) -> int:
        """``TUMBLE(...)`` / ``HOP(...)`` / ``SESSION(...)`` in GROUP BY, with its comma."""
        # (or with the GROUP BY itself when it is the only item)
        toks = self.toks
        up = toks[i].text.upper()
        close = _matching_paren(toks, i + 1)
        self.windows.append(_window_spec(_GROUP_WINDOWS[up], up, toks[i + 2:close],
                                         up == "HOP"))
        a, b = i, close
        prev = toks[a - 1]
        after = toks[b + 1] if b + 1 < len(toks) else None
        if prev.token_type == TokenType.COMMA:
            a -= 1
        elif after is not None and after.token_type == TokenType.COMMA:
            b += 1
        elif prev.token_type == TokenType.GROUP_BY:
            a -= 1  # the only GROUP BY item: the window is the whole grouping
        self.cut.append((a, b))
        return close

    def _with_options(self, i: int) -> int:
        """``WITH (name = 'value', ...)`` after the query (options of ``_OPTIONS``)."""
        toks = self.toks
        close = _matching_paren(toks, i + 1)
        for arg in _split_args(toks[i + 2:close]):
            if len(arg) != 3 or arg[1].token_type != TokenType.EQ:
                raise PlanError("WITH (...) takes options as name = 'value' (line "
                                f"{arg[0].line}): {' '.join(x.text for x in arg)}")
            key = arg[0].text.lower()
            if key not in _OPTIONS:
                raise PlanError(f"unknown option {arg[0].text!r} in WITH (...) (line "
                                f"{arg[0].line}); options: {', '.join(_OPTIONS)}")
            self.options[key] = parse_duration(arg[2].text)
        self.cut.append((i, close))
        return close


def _blank(sql: str, toks: list, cut: list[tuple[int, int]]) -> tuple[str, list]:
    """``sql`` with the cut token ranges blanked (newlines kept), and the tokens left."""
    chars = list(sql)
    drop = set()
    for a, b in cut:
        for k in range(toks[a].start, toks[b].end + 1):
            if chars[k] != "\n":
                chars[k] = " "
        drop.update(range(a, b + 1))
    return "".join(chars), [t for k, t in enumerate(toks) if k not in drop]


def _buffer_frames(sql: str) -> str:
    """``OVER (ROWS WINDOW BUFFER n ROWS PARTITION BY ...)`` -> the standard frame
    ``OVER (PARTITION BY ... ROWS BETWEEN n-1 PRECEDING AND CURRENT ROW)``."""
    while True:
        try:
            toks = list(sqlglot.tokenize(sql, read=DIALECT))
        except TokenError as exc:
            raise PlanError(f"cannot read SQL: {exc}") from exc
        hit = None
        for i in range(len(toks) - 4):
            w = [t.text.upper() for t in toks[i:i + 5]]
            if w[0] == "ROWS" and w[1] == "WINDOW" and w[2] == "BUFFER" and w[4] == "ROWS":
                hit = i
        if hit is None:
            return sql
        n = toks[hit + 3]
        if n.token_type != TokenType.NUMBER or int(float(n.text)) < 1:
            raise PlanError(f"ROWS WINDOW BUFFER needs a positive row count, got {n.text!r} "
                            f"(line {n.line})")
        depth = 0
        close = None
        for t in toks[hit + 5:]:
            if t.token_type == TokenType.L_PAREN:
                depth += 1
            elif t.token_type == TokenType.R_PAREN:
                if depth == 0:
                    close = t
                    break
                depth -= 1
        if close is None:
            raise PlanError(f"ROWS WINDOW BUFFER must be inside OVER (...) (line {n.line})")
        frame = f" ROWS BETWEEN {int(n.text) - 1} PRECEDING AND CURRENT ROW"
        sql = (sql[:toks[hit].start] + sql[toks[hit + 4].end + 1:close.start] + frame
               + sql[close.start:])


def parse(sql: str) -> Query:
    """Parse one streaming SELECT statement (non-empty text) into a :class:`Query`.
    Callers use :func:`velokern.sql.parse_sql`, which keeps parsed queries."""
    original = sql
    sql = _buffer_frames(sql)
    body, emit, toks = _strip_streaming_clauses(sql)
    body, toks, window, options = _extract_windows(body, toks)
    tree = _read_statement(body)
    ctx = _Ctx(body, toks)
    _check_supported(ctx, tree)
    source, qualifiers = _source_stream(ctx, tree)
    conv = _Converter(ctx, qualifiers)
    select, star = _select_items(conv, tree)
    args = tree.args
    where = conv.expr(args["where"].this) if args.get("where") else None
    group_by = _group_by(conv, args.get("group"), select)
    having = conv.expr(args["having"].this) if args.get("having") else None
    if window is None and "allowed_lateness" in options:
        raise PlanError("allowed_lateness applies to time windows; this query has no "
                        "WINDOW")
    q = Query(source=source, select=select, where=where, group_by=group_by, having=having,
              emit=emit, star=star, sql=original, positions=ctx.positions, window=window,
              allowed_lateness_ms=options.get("allowed_lateness"),
              state_ttl_ms=options.get("state_ttl"))
    if "state_ttl" in options and not q.has_over:
        raise PlanError("state_ttl applies to ROWS window functions (OVER (PARTITION BY ... "
                        "ORDER BY t ROWS ...)); this query has none")
    return q


def _read_statement(body: str) -> exp.Expression:
    """The one statement of ``body``, parsed by sqlglot (syntax errors with line and column)."""
    try:
        statements = sqlglot.parse(body, read=DIALECT)
    except ParseError as exc:
        errs = exc.errors or [{}]
        e0 = errs[0]
        raise PlanError(
            f"SQL syntax error at line {e0.get('line', '?')}, column {e0.get('col', '?')}: "
            f"{e0.get('description', exc)}"
        ) from exc
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise PlanError(f"expected one SELECT statement, got {len(statements)}")
    return statements[0]


#: clauses of a SELECT that velokern does not run (sqlglot's argument name, what to say)
_UNSUPPORTED_CLAUSES = (
    ("joins", "JOIN (velokern reads a single stream)"),
    ("order", "ORDER BY on an unbounded stream"),
    ("limit", "LIMIT on an unbounded stream"),
    ("offset", "OFFSET on an unbounded stream"),
    ("distinct", "SELECT DISTINCT"),
    ("qualify", "QUALIFY"),
    ("windows", "named WINDOW definitions"),
    ("with_", "WITH (common table expressions)"),
    ("with", "WITH (common table expressions)"),
    ("laterals", "LATERAL"),
    ("pivots", "PIVOT"),
)


def _check_supported(ctx: _Ctx, tree: exp.Expression) -> None:
    """The statement is a SELECT without the clauses of ``_UNSUPPORTED_CLAUSES``."""
    if not isinstance(tree, exp.Select):
        raise ctx.error(tree, f"only SELECT queries run on a stream, got {tree.key.upper()}")
    for key, what in _UNSUPPORTED_CLAUSES:
        v = tree.args.get(key)
        if v:
            node = v[0] if isinstance(v, list) else v
            raise ctx.error(node, f"unsupported SQL construct: {what}")


def _source_stream(ctx: _Ctx, tree: exp.Select) -> tuple[str, set[str]]:
    """The stream FROM names, and the qualifiers a column may have (its name and alias)."""
    frm = tree.args.get("from_") or tree.args.get("from")
    if frm is None:
        raise PlanError("a streaming query needs FROM <stream name>")
    src = frm.this
    if not isinstance(src, exp.Table) or not isinstance(src.this, exp.Identifier):
        raise ctx.error(src, "unsupported SQL construct: FROM must name one stream "
                             "(subqueries and table functions are not supported)")
    source = src.name
    alias = src.alias or None
    return source, {source, alias} - {None}


def _select_items(conv: _Converter, tree: exp.Select) -> tuple[list[tuple[str, Expr]], bool]:
    """The SELECT list as (output name, expression) pairs, and whether it has ``*``."""
    select: list[tuple[str, Expr]] = []
    star = False
    for item in tree.expressions:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and
                                          isinstance(item.this, exp.Star)):
            star = True
            continue
        if isinstance(item, exp.Alias):
            name = item.alias
            e = conv.expr(item.this)
        else:
            e = conv.expr(item)
            name = item.name if isinstance(item, exp.Column) else _readable_name(item)
        select.append((name, e))
    return select, star


def _group_by(conv: _Converter, grp: exp.Group | None, select) -> list[Expr]:
    """The GROUP BY items; ROLLUP, CUBE and GROUPING SETS are refused."""
    group_by: list[Expr] = []
    if grp is None:
        return group_by
    aliases = {n: e for n, e in select}
    for g in grp.expressions:
        group_by.append(_group_item(conv, g, select, aliases))
    for key in ("rollup", "cube", "grouping_sets"):
        if grp.args.get(key):
            raise conv.ctx.error(grp, f"unsupported SQL construct: GROUP BY {key.upper()}")
    return group_by


def _group_item(conv: _Converter, g: exp.Expression, select, aliases: dict) -> Expr:
    """One GROUP BY item: a SELECT position, an alias (not an input column) or an expression."""
    if isinstance(g, exp.Literal) and not g.is_string:
        k = int(g.this)
        if not 1 <= k <= len(select):
            raise conv.ctx.error(g, f"GROUP BY position {k} is out of range")
        return select[k - 1][1]
    if (isinstance(g, exp.Column) and not g.table and g.name in aliases
            and not _is_input_column_name(g.name, select)):
        return aliases[g.name]
    return conv.expr(g)


def _is_input_column_name(name: str, select) -> bool:
    # "GROUP BY x" where x is both an alias and (probably) an input column: SQL resolves
    # to the input column, so we only use the alias when it is not a plain column itself.
    return any(isinstance(e, Col) and e.name == name for _, e in select)


def _readable_name(node: exp.Expression) -> str:
    return node.sql(dialect=DIALECT)


class _Converter:
    """sqlglot expression -> velokern expression (:mod:`velokern.plan`), with positions
    recorded in the context for error messages."""

    def __init__(self, ctx: _Ctx, qualifiers: set[str]):
        self.ctx = ctx
        self.qualifiers = qualifiers

    def expr(self, node: exp.Expression) -> Expr:
        """Convert ``node`` and record its position in the SQL."""
        return self.ctx.mark(self._expr(node), node)

    def _expr(self, node: exp.Expression) -> Expr:
        """Convert ``node`` (its position not recorded) with the method for its class."""
        return getattr(self, _converter_of(type(node)))(node)

    def _paren(self, node: exp.Paren) -> Expr:
        """``(x)``: x."""
        return self.expr(node.this)

    def _column(self, node: exp.Column) -> Col:
        """A column, qualified by nothing or by the stream's name or alias."""
        ctx = self.ctx
        if isinstance(node.this, exp.Star):
            raise ctx.error(node, "'*' is only allowed as SELECT * or COUNT(*)")
        if node.table and node.table not in self.qualifiers:
            raise ctx.error(node, f"unknown stream {node.table!r} in column "
                                  f"{node.sql(dialect=DIALECT)!r}")
        return Col(node.name)

    def _literal(self, node: exp.Literal) -> Lit:
        """A string or number literal (an integer when it reads as one)."""
        if node.is_string:
            return Lit(node.this, STRING)
        text = node.this
        try:
            return Lit(int(text), INT)
        except ValueError:
            value = float(text)
        if math.isinf(value):
            raise PlanError(f"number literal {text} is outside the float64 range (its "
                            "largest magnitude is 1.7976931348623157e308)")
        return Lit(value, FLOAT)

    def _boolean(self, node: exp.Boolean) -> Lit:
        """TRUE / FALSE."""
        return Lit(bool(node.this), BOOL)

    def _null(self, node: exp.Null) -> Lit:
        """NULL."""
        return Lit(None, NULL)

    def _neg(self, node: exp.Neg) -> Expr:
        """Unary minus (folded into a number literal)."""
        inner = self.expr(node.this)
        if isinstance(inner, Lit) and inner.type in (INT, FLOAT):
            return Lit(-inner.value, inner.type)
        return Unary("neg", inner)

    def _not(self, node: exp.Not) -> Expr:
        """NOT x; NOT (x IS NULL) and NOT (x IN (...)) become their negated forms."""
        inner = node.this
        if isinstance(inner, exp.Is):
            return IsNull(self._is_null_arg(inner), negated=True)
        if isinstance(inner, exp.In):
            x = self._in(inner)
            return InList(x.x, x.values, negated=True)
        return Unary("not", self.expr(inner))

    def _is(self, node: exp.Is) -> IsNull:
        """x IS NULL."""
        return IsNull(self._is_null_arg(node))

    def _binary(self, node: exp.Binary) -> Binary:
        """Arithmetic, comparison, AND and OR (the operators of ``_BINARY``)."""
        return Binary(_BINARY[type(node)], self.expr(node.this), self.expr(node.expression))

    def _between(self, node: exp.Between) -> Binary:
        """x BETWEEN lo AND hi -> x >= lo AND x <= hi."""
        x = self.expr(node.this)
        lo, hi = self.expr(node.args["low"]), self.expr(node.args["high"])
        if node.args.get("symmetric"):
            raise self.ctx.error(node, "unsupported SQL construct: BETWEEN SYMMETRIC")
        return Binary("and", Binary(">=", x, lo), Binary("<=", x, hi))

    def _case(self, node: exp.Case) -> Case:
        """CASE WHEN ... and the simple CASE x WHEN v ... (x = v conditions)."""
        if node.this is not None:
            base = self.expr(node.this)
            whens = tuple(
                (Binary("=", base, self.expr(w.this)), self.expr(w.args["true"]))
                for w in node.args["ifs"]
            )
        else:
            whens = tuple(
                (self.expr(w.this), self.expr(w.args["true"])) for w in node.args["ifs"]
            )
        default = node.args.get("default")
        return Case(whens, None if default is None else self.expr(default))

    def _if(self, node: exp.If) -> Case:
        """IF(cond, a[, b]) -> CASE WHEN cond THEN a ELSE b END."""
        default = node.args.get("false")
        return Case(((self.expr(node.this), self.expr(node.args["true"])),),
                    None if default is None else self.expr(default))

    def _cast(self, node: exp.Cast) -> Cast:
        """CAST / TRY_CAST to an integer, floating-point or boolean type."""
        to = node.to.sql(dialect=DIALECT).upper()
        base = to.split("(")[0].strip()
        if base not in _CAST_TYPES:
            raise self.ctx.error(node, f"unsupported CAST target type {to}")
        return Cast(self.expr(node.this), _CAST_TYPES[base])

    def _function(self, node: exp.Func) -> Func:
        """ABS, ROUND (with its decimals), FLOOR, CEIL."""
        args = [self.expr(node.this)]
        extra = node.args.get("decimals")
        if extra is not None:
            args.append(self.expr(extra))
        return Func(_FUNCS[type(node)], tuple(args))

    def _coalesce(self, node: exp.Coalesce) -> Func:
        """COALESCE(a, b, ...)."""
        args = [self.expr(node.this)] + [self.expr(a) for a in node.expressions]
        return Func("coalesce", tuple(args))

    def _ignore_nulls(self, node: exp.IgnoreNulls) -> Agg:
        """agg(x) IGNORE NULLS, for the aggregates whose registry entry allows it."""
        inner = self._expr(node.this)
        if not isinstance(inner, Agg) or not AGGREGATES[inner.func].ignore_nulls:
            names = "/".join(a.name.upper() for a in AGGREGATES.values() if a.ignore_nulls)
            raise self.ctx.error(node, f"IGNORE NULLS is supported on {names} only")
        return Agg(inner.func, inner.arg, ignore_nulls=True)

    def _respect_nulls(self, node: exp.RespectNulls) -> Expr:
        """agg(x) RESPECT NULLS: the default, so agg(x)."""
        return self._expr(node.this)

    def _aggregate(self, node: exp.Expression) -> Agg:
        """A call of a registry aggregate that sqlglot parses into its own class."""
        return self._agg(node, _AGGS[type(node)])

    def _anonymous(self, node: exp.Anonymous) -> Agg:
        """A function sqlglot does not know: a registry aggregate by name, else an error."""
        fname = node.name.lower()
        if fname in _ANON_AGGS and len(node.expressions) == 1:
            return Agg(_ANON_AGGS[fname], self.expr(node.expressions[0]))
        raise self.ctx.error(node, f"unknown function {node.name.upper()}")

    def _subquery(self, node: exp.Expression) -> Expr:
        """A subquery or EXISTS (refused)."""
        raise self.ctx.error(node, "unsupported SQL construct: subquery")

    def _star(self, node: exp.Star) -> Expr:
        """A ``*`` outside SELECT * and COUNT(*) (refused)."""
        raise self.ctx.error(node, "'*' is only allowed as SELECT * or COUNT(*)")

    def _unsupported_function(self, node: exp.Func) -> Expr:
        """A function sqlglot knows and velokern does not run (refused)."""
        raise self.ctx.error(node, f"unsupported function {node.sql_name()}")

    def _unsupported(self, node: exp.Expression) -> Expr:
        """Any other construct (refused, naming it)."""
        raise self.ctx.error(node, f"unsupported SQL construct: {node.key.upper()} "
                                   f"({node.sql(dialect=DIALECT)})")

    def _agg(self, node: exp.Expression, forms: dict[str, str]) -> Agg:
        """An aggregate call sqlglot parsed into a typed expression (``forms``: the
        registry's aggregates of that class, by form)."""
        ctx = self.ctx
        arg = node.this
        form = "*" if arg is None or isinstance(arg, exp.Star) else (
            "distinct" if isinstance(arg, exp.Distinct) else "")
        if form == "*" and "*" not in forms:
            form = ""  # SUM(*): the argument is refused as an expression
        plain = forms.get("", next(iter(forms.values())))
        if form not in forms:
            raise ctx.error(node, f"unsupported SQL construct: {plain.upper()}(DISTINCT ...)")
        name = forms[form]
        if form == "*":
            return Agg(name, None)
        if form == "distinct":
            if len(arg.expressions) != 1:
                raise ctx.error(node, f"{node.sql_name()}(DISTINCT ...) takes exactly one "
                                      "expression")
            return Agg(name, self.expr(arg.expressions[0]), distinct=True)
        if node.args.get("expressions"):
            raise ctx.error(node, f"{name.upper()} takes one argument")
        return Agg(name, self.expr(arg))

    def _over(self, node: exp.Window) -> Over:
        """A ROWS window function (arrival order is the ORDER BY: a stream is read in
        the order its records come)."""
        ctx = self.ctx
        if node.args.get("alias"):
            raise ctx.error(node, "unsupported SQL construct: named windows")
        fn = node.this
        if isinstance(fn, (exp.IgnoreNulls, exp.RespectNulls)):
            raise ctx.error(node, "IGNORE/RESPECT NULLS is not supported in OVER (...)")
        part = tuple(self.expr(e) for e in node.args.get("partition_by") or [])
        order_by = node.args.get("order")
        keys = order_by.expressions if order_by is not None else []
        order = self.expr(keys[0].this) if len(keys) == 1 else None
        spec = node.args.get("spec")
        rows = 0
        if spec is not None:
            start, side, end = spec.args.get("start"), spec.args.get("start_side"), \
                spec.args.get("end")
            ok = (str(spec.args.get("kind", "")).upper() == "ROWS"
                  and isinstance(start, exp.Literal) and not start.is_string
                  and str(side).upper() == "PRECEDING" and str(end).upper() == "CURRENT ROW"
                  and not spec.args.get("end_side"))
            if not ok:
                raise ctx.error(node, "unsupported window frame: velokern runs ROWS BETWEEN n "
                                      "PRECEDING AND CURRENT ROW (or ROWS WINDOW BUFFER n ROWS)")
            rows = int(start.this) + 1
        if isinstance(fn, exp.RowNumber):
            return Over("row_number", None, part, order=order)
        if isinstance(fn, exp.Lead):
            raise ctx.error(node, "LEAD needs rows that have not arrived yet; a streaming "
                                  "frame ends at the current row (use LAG)")
        if isinstance(fn, exp.Lag):
            off = fn.args.get("offset")
            k = 1 if off is None else (int(off.this) if isinstance(off, exp.Literal) and
                                       not off.is_string else None)
            if k is None or k < 1:
                raise ctx.error(node, "LAG's offset must be a positive integer literal")
            d = fn.args.get("default")
            default = None if d is None else self.expr(d)
            if default is not None and not isinstance(default, Lit):
                raise ctx.error(node, "LAG's default must be a literal")
            return Over("lag", self.expr(fn.this), part, 0, k, default, order)
        inner = self._expr(fn)
        if not isinstance(inner, Agg) or inner.func not in ("avg", "sum", "min", "max",
                                                            "count", "count_star"):
            raise ctx.error(node, f"unsupported window function {fn.sql(dialect=DIALECT)} "
                                  "OVER (...): velokern runs AVG, SUM, MIN, MAX, COUNT, LAG, "
                                  "ROW_NUMBER")
        if rows == 0:
            raise ctx.error(node, f"{inner.func.upper().replace('_STAR', '')} OVER (...) "
                                  "needs a frame: ROWS BETWEEN n PRECEDING AND CURRENT ROW (or "
                                  "ROWS WINDOW BUFFER n ROWS)")
        return Over(inner.func, inner.arg, part, rows, order=order)

    def _is_null_arg(self, node: exp.Is) -> Expr:
        """The operand of ``x IS NULL`` (IS followed by anything but NULL is refused)."""
        if not isinstance(node.expression, exp.Null):
            raise self.ctx.error(node, "only IS NULL / IS NOT NULL are supported after IS")
        return self.expr(node.this)

    def _in(self, node: exp.In) -> InList:
        """x IN (literal, ...) (a subquery or a non-literal value is refused)."""
        if node.args.get("query") is not None:
            raise self.ctx.error(node, "unsupported SQL construct: IN (subquery)")
        vals = []
        for v in node.expressions:
            e = self.expr(v)
            if not isinstance(e, Lit):
                raise self.ctx.error(v, "IN (...) accepts literal values only")
            vals.append(e)
        return InList(self.expr(node.this), tuple(vals))
