"""Stateless queries (filter and project): ``project_part``, which writes the rows of
``start:end`` that pass WHERE, and its prange wrapper ``project_all``."""

from __future__ import annotations

from velokern.codegen.common import ROW, indent, prologue_inputs
from velokern.codegen.expressions import ExprGen
from velokern.codegen.outputs import out_lines, row_body
from velokern.codegen.parallel import PROJECT_PART, part_signature, prange_wrapper
from velokern.codegen.spec import KernelSpec
from velokern.plan import BoundQuery, Col


def _selection_only(bq: BoundQuery, spec: KernelSpec, types) -> list[str] | None:
    """The loop body of a filter whose outputs are all input columns: each row's values
    are stored at ``k`` and ``k`` moves past the rows WHERE keeps, without a branch (a
    filter keeping about half of random rows mispredicted every other row: S0 on random
    amounts, ~6 ns a row), and the kernel writes the output columns in the same pass
    (no second pass taking the kept rows out of the input). None for any other query:
    a computed output is not evaluated on a row WHERE drops."""
    if bq.where is None or not all(isinstance(e, Col) for _, e in bq.outputs):
        return None
    g = ExprGen(bq, spec, types)
    wv, wn = g.gen(bq.where)
    stores = out_lines(g, list(zip(bq.outputs, bq.output_types)), "nonneg(k)")
    return g.lines + stores + ["orow[nonneg(k)] = i", f"k += ({wv}) and not ({wn})"]


def gen_stateless(bq: BoundQuery, spec: KernelSpec, types) -> str:
    loop = _selection_only(bq, spec, types)
    if loop is None:
        g = ExprGen(bq, spec, types)
        g.emit_where(bq.where, counted=False)
        loop = row_body(g, bq, "nonneg(k)")
    src = ["@njit(**JIT)", part_signature("project_part", PROJECT_PART)]
    src += indent(prologue_inputs(spec), 4)
    src += indent(["k = start", "for j in range(start, end):", "    " + ROW], 4)
    src += indent(loop, 8)
    src += indent(["return k - start"], 4)
    src += ["", "", *prange_wrapper("project_all", PROJECT_PART), ""]
    return "\n".join(src)


__all__ = ["gen_stateless"]
