"""Expressions: a bound expression becomes (value code, null code) plus the statements
that compute them.

Every value is a local of the generated kernel; its null flag is a boolean expression
(the constant ``"False"`` when the value cannot be null in this kernel variant, which
lets later code drop the null branches). String values are dictionary codes: a literal
compared with a string column becomes ``LIT[k]`` (its code in the owner column's
dictionary, ``spec.literals``) and an ordering of strings reads ``RANK{k}`` (the ranks of
``spec.rank_columns``).
"""

from __future__ import annotations

from velokern.batch import STRING
from velokern.codegen.common import indent
from velokern.codegen.spec import KernelSpec
from velokern.plan import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    AggRef,
    Binary,
    BoundQuery,
    Case,
    Cast,
    Col,
    Expr,
    Func,
    InList,
    IsNull,
    KeyRef,
    Lit,
    OverRef,
    PlanError,
    Unary,
    WinRef,
    compute_type,
    is_float,
    is_int,
    is_time,
    type_of,
)


class ExprGen:
    """Expression -> (value code, null code); statements go to ``self.lines``."""

    def __init__(self, bq: BoundQuery, spec: KernelSpec, types: dict[str, str]):
        self.bq = bq
        self.spec = spec
        self.types = types
        self.lines: list[str] = []
        self.n = 0
        self.env: dict | None = None
        self.refs: dict[str, tuple[str, str]] = {}  # KeyRef/AggRef -> (v, n)

    def tmp(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def emit(self, line: str) -> None:
        self.lines.extend(line.split("\n"))

    def emit_block(self, lines: list[str], n: int) -> None:
        """Emit ``lines`` (each may hold several) indented by ``n``: a block's body."""
        self.lines.extend(indent("\n".join(lines).split("\n"), n))

    def emit_where(self, where: Expr | None, counted: bool) -> None:
        """Skip the row unless WHERE holds (``counted``: count it in ``filtered``)."""
        if where is None:
            return
        wv, wn = self.gen(where)
        skip = "    filtered += 1\n    continue" if counted else "    continue"
        self.emit(f"if not ({wv} and not {wn}):\n{skip}")

    def type(self, e: Expr) -> str:
        return type_of(e, self.types, self.bq.query, self.env)

    # --------------------------------------------------------------- strings
    def owner(self, e: Expr) -> str | None:
        """The column whose dictionary a string-valued expression's codes come from."""
        if isinstance(e, Col):
            return e.name
        if isinstance(e, KeyRef):
            return self.owner(self.bq.keys[e.i])
        if isinstance(e, AggRef):
            a = self.bq.aggs[e.i]
            return None if a.arg is None else self.owner(a.arg)
        return None

    def literal_code(self, owner: str, value: str) -> str:
        key = (owner, value)
        if key not in self.spec.literals:
            self.spec.literals.append(key)
        return f"LIT[{self.spec.literals.index(key)}]"

    def rank_array(self, column: str) -> str:
        if column not in self.spec.rank_columns:
            self.spec.rank_columns.append(column)
        return f"RANK{self.spec.rank_columns.index(column)}"

    # --------------------------------------------------------------- values
    def col(self, name: str) -> tuple[str, str]:
        t = self.types[name]
        k = self.spec.inputs.index((name, "data"))
        v = self.tmp()
        rd = f"c{k}[i]"
        if is_int(t) or is_time(t):
            rd = f"np.int64({rd})"
        elif is_float(t):
            rd = f"np.float64({rd})"
        self.emit(f"{v} = {rd}")
        if name in self.spec.nullable:
            n = self.tmp()
            self.emit(f"{n} = not m{self.spec.nullable.index(name)}[i]")
            return v, n
        return v, "False"

    def conv(self, code: str, frm: str, to: str) -> str:
        if to == FLOAT and frm != FLOAT:
            return f"np.float64({code})"
        if to == INT and frm != INT:
            return f"np.int64({code})"
        return code

    def gen(self, e: Expr) -> tuple[str, str]:
        """(value code, null code) of expression ``e``; statements go to ``lines``."""
        handler = _HANDLERS.get(type(e))
        if handler is None:
            raise PlanError(f"unsupported expression {e}")
        return handler(self, e)

    def ref(self, e: KeyRef | AggRef | WinRef | OverRef) -> tuple[str, str]:
        """A key, aggregate, window bound or window function computed earlier."""
        if isinstance(e, WinRef):
            return self.refs["WinEnd" if e.end else "WinStart"]
        return self.refs[f"{type(e).__name__}{e.i}"]

    def lit(self, e: Lit) -> tuple[str, str]:
        """A literal (a string literal only in a comparison with a string column)."""
        if e.type == NULL:
            return "0", "True"
        if e.type == STRING:
            raise PlanError(f"string literal {e.value!r} must be compared with a string "
                            "column")
        if e.type == FLOAT:
            return f"np.float64({e.value!r})", "False"
        if e.type == INT:
            return f"np.int64({e.value!r})", "False"
        return repr(bool(e.value)), "False"

    def unary(self, e: Unary) -> tuple[str, str]:
        """NOT x, -x."""
        xv, xn = self.gen(e.x)
        v = self.tmp()
        self.emit(f"{v} = not {xv}" if e.op == "not" else f"{v} = -{xv}")
        return v, xn

    def is_null(self, e: IsNull) -> tuple[str, str]:
        """x IS [NOT] NULL (never null itself)."""
        _, xn = self.gen(e.x)
        return (f"(not {xn})" if e.negated else f"({xn})"), "False"

    def nor(self, *ns: str) -> str:
        real = [n for n in ns if n != "False"]
        if not real:
            return "False"
        if "True" in real:
            return "True"
        return "(" + " or ".join(real) + ")"

    def binary(self, e: Binary) -> tuple[str, str]:
        if e.op in ("and", "or"):
            return self.logical(e)
        lt, rt = self.type(e.l), self.type(e.r)
        if e.op in ("=", "<>", "<", "<=", ">", ">=") and STRING in (lt, rt):
            return self.string_compare(e)
        av, an = self.gen(e.l)
        bv, bn = self.gen(e.r)
        n = self.nor(an, bn)
        v = self.tmp()
        if e.op in ("=", "<>", "<", "<=", ">", ">="):
            self.emit(f"{v} = {self.compare(e.op, av, lt, bv, rt)}")
            return v, n
        return self.arith(e, (av, lt), (bv, rt), v, n)

    def logical(self, e: Binary) -> tuple[str, str]:
        """AND / OR in SQL's three-valued logic."""
        op = e.op
        av, an = self.gen(e.l)
        bv, bn = self.gen(e.r)
        v, n = self.tmp(), self.tmp()
        if an == "False" and bn == "False":
            self.emit(f"{v} = {av} {op} {bv}")
            return v, "False"
        if op == "and":
            self.emit(f"{n} = ({an} or {bn}) and not ((not {an} and not {av}) or "
                      f"(not {bn} and not {bv}))")
            self.emit(f"{v} = (not {n}) and ({an} or {av}) and ({bn} or {bv})")
        else:
            self.emit(f"{n} = ({an} or {bn}) and not ((not {an} and {av}) or "
                      f"(not {bn} and {bv}))")
            self.emit(f"{v} = (not {n}) and ((not {an} and {av}) or (not {bn} and {bv}))")
        return v, n

    def compare(self, op: str, av: str, lt: str, bv: str, rt: str) -> str:
        """The code of a comparison of two numbers (floats in NaN-last order)."""
        if is_float(lt) or is_float(rt):
            a, b = self.conv(av, lt, FLOAT), self.conv(bv, rt, FLOAT)
            return {
                "=": f"f_eq({a}, {b})", "<>": f"not f_eq({a}, {b})",
                "<": f"f_lt({a}, {b})", "<=": f"f_le({a}, {b})",
                ">": f"f_lt({b}, {a})", ">=": f"f_le({b}, {a})",
            }[op]
        pyop = "!=" if op == "<>" else ("==" if op == "=" else op)
        return f"{av} {pyop} {bv}"

    def arith(self, e: Binary, left: tuple[str, str], right: tuple[str, str], v: str,
              n: str) -> tuple[str, str]:
        """Arithmetic into ``v`` (null ``n``): a division or modulo by zero is NULL."""
        op, res = e.op, self.type(e)
        (av, lt), (bv, rt) = left, right
        if op == "/":
            self.emit(f"{v} = np.float64({av}) / np.float64({bv})")
            return v, n
        if res == NULL:
            return "0", "True"
        a, b = self.conv(av, compute_type(lt), res), self.conv(bv, compute_type(rt), res)
        if op in ("+", "-", "*"):
            self.emit(f"{v} = {a} {op} {b}")
            return v, n
        zero = self.tmp()
        if op == "//":
            self.emit(f"{zero} = {b} == 0")
            if res == INT:
                self.emit(f"{v} = int_div({a}, {b}) if not {zero} else np.int64(0)")
            else:
                self.emit(f"{v} = ({a} / {b}) if not {zero} else 0.0")
            return v, self.nor(n, zero)
        if op == "%":
            if res == INT:
                self.emit(f"{zero} = {b} == 0")
                self.emit(f"{v} = int_mod({a}, {b}) if not {zero} else np.int64(0)")
                return v, self.nor(n, zero)
            self.emit(f"{v} = np.fmod({a}, {b})")
            return v, n
        raise PlanError(f"unsupported operator {op}")

    def string_compare(self, e: Binary) -> tuple[str, str]:
        if e.op not in ("=", "<>"):
            raise PlanError(f"strings can be compared with = and <> only, not {e.op}")
        sides = [e.l, e.r]
        owners = [self.owner(s) if not isinstance(s, Lit) else None for s in sides]
        lits = [s for s in sides if isinstance(s, Lit) and s.type == STRING]
        exprs = [s for s in sides if not (isinstance(s, Lit))]
        pyop = "==" if e.op == "=" else "!="
        if any(isinstance(s, Lit) and s.type == NULL for s in sides):
            return "False", "True"
        if len(lits) == 1 and len(exprs) == 1:
            owner = self.owner(exprs[0])
            xv, xn = self.gen(exprs[0])
            v = self.tmp()
            self.emit(f"{v} = {xv} {pyop} {self.literal_code(owner, lits[0].value)}")
            return v, xn
        if len(exprs) == 2 and owners[0] is not None and owners[0] == owners[1]:
            av, an = self.gen(e.l)
            bv, bn = self.gen(e.r)
            v = self.tmp()
            self.emit(f"{v} = {av} {pyop} {bv}")
            return v, self.nor(an, bn)
        if len(lits) == 2:
            same = lits[0].value == lits[1].value
            return repr(same if e.op == "=" else not same), "False"
        raise PlanError(
            "comparing two different string columns is not supported (each string column "
            f"has its own dictionary): {e}"
        )

    def in_list(self, e: InList) -> tuple[str, str]:
        xt = self.type(e.x)
        xv, xn = self.gen(e.x)
        terms = []
        has_null = any(v.type == NULL for v in e.values)
        for lit in e.values:
            if lit.type == NULL:
                continue
            if xt == STRING:
                terms.append(f"{xv} == {self.literal_code(self.owner(e.x), lit.value)}")
            elif is_float(xt) or lit.type == FLOAT:
                terms.append(f"f_eq(np.float64({xv}), np.float64({lit.value!r}))")
            elif xt == BOOL:
                terms.append(f"{xv} == {bool(lit.value)!r}")
            else:
                terms.append(f"{xv} == np.int64({lit.value!r})")
        hit = self.tmp()
        self.emit(f"{hit} = " + (" or ".join(terms) if terms else "False"))
        v, n = self.tmp(), self.tmp()
        # x IN (..., NULL): TRUE on a hit, else NULL
        self.emit(f"{n} = {xn} or ({has_null!r} and not {hit})")
        self.emit(f"{v} = ({'not ' if e.negated else ''}{hit}) and not {n}")
        return v, n

    def case(self, e: Case) -> tuple[str, str]:
        res = self.type(e)
        parts = []
        for cond, val in e.whens:
            cv, cn = self.gen(cond)
            vv, vn = self.gen(val)
            parts.append((cv, cn, self.conv(vv, compute_type(self.type(val)), res), vn))
        if e.default is not None:
            dv, dn = self.gen(e.default)
            dv = self.conv(dv, compute_type(self.type(e.default)), res)
        else:
            dv, dn = ("np.float64(0.0)" if res == FLOAT else
                      "np.int64(0)" if res in (INT, STRING) or is_time(res) else "False"), "True"
        v, n = self.tmp(), self.tmp()
        first = True
        for cv, cn, vv, vn in parts:
            kw = "if" if first else "elif"
            first = False
            self.emit(f"{kw} {cv} and not {cn}:\n    {v} = {vv}\n    {n} = {vn}")
        if first:
            self.emit(f"{v} = {dv}\n{n} = {dn}")
        else:
            self.emit(f"else:\n    {v} = {dv}\n    {n} = {dn}")
        return v, n

    def cast(self, e: Cast) -> tuple[str, str]:
        xt = compute_type(self.type(e.x))
        xv, xn = self.gen(e.x)
        if xt == NULL:
            return "0", "True"
        v = self.tmp()
        if e.to == INT and xt == FLOAT:
            bad = self.tmp()
            self.emit(f"{v}, {bad} = float_to_int({xv})")
            return v, self.nor(xn, bad)
        if e.to == BOOL:
            self.emit(f"{v} = {xv} != 0")
            return v, xn
        self.emit(f"{v} = {self.conv(xv, xt, e.to)}")
        return v, xn

    def func(self, e: Func) -> tuple[str, str]:
        res = self.type(e)
        if e.name == "coalesce":
            v, n = self.tmp(), self.tmp()
            vals = [(self.gen(a), compute_type(self.type(a))) for a in e.args]
            (fv, fn), ft = vals[0]
            self.emit(f"{v} = {self.conv(fv, ft, res)}\n{n} = {fn}")
            for (av, an), at in vals[1:]:
                self.emit(f"if {n}:\n    {v} = {self.conv(av, at, res)}\n    {n} = {an}")
            return v, n
        xt = compute_type(self.type(e.args[0]))
        xv, xn = self.gen(e.args[0])
        if res == NULL:
            return "0", "True"
        v = self.tmp()
        if e.name == "abs":
            self.emit(f"{v} = abs({xv})")
        elif e.name == "round":
            digits = e.args[1].value if len(e.args) == 2 else 0
            fn = "round_half_away" if xt == FLOAT else "round_int"
            self.emit(f"{v} = {fn}({xv}, {int(digits)})")
        elif e.name in ("floor", "ceil"):
            self.emit(f"{v} = np.{e.name}(np.float64({xv}))")
        else:
            raise PlanError(f"unsupported function {e.name}")
        return v, xn



__all__ = ["ExprGen"]


#: the generator of each kind of expression node
_HANDLERS = {
    Col: lambda g, e: g.col(e.name),
    KeyRef: ExprGen.ref,
    AggRef: ExprGen.ref,
    WinRef: ExprGen.ref,
    OverRef: ExprGen.ref,
    Lit: ExprGen.lit,
    Unary: ExprGen.unary,
    IsNull: ExprGen.is_null,
    Binary: ExprGen.binary,
    InList: ExprGen.in_list,
    Case: ExprGen.case,
    Cast: ExprGen.cast,
    Func: ExprGen.func,
}
