"""Stateless queries (filter and project): ``project_part``, which writes the rows of
``start:end`` that pass WHERE, and its prange wrapper ``project_all``."""

from __future__ import annotations

from velokern.codegen.common import ROW, indent, prologue_inputs
from velokern.codegen.expressions import ExprGen
from velokern.codegen.outputs import row_body
from velokern.codegen.parallel import PROJECT_PART, part_signature, prange_wrapper
from velokern.codegen.spec import KernelSpec
from velokern.plan import BoundQuery


def gen_stateless(bq: BoundQuery, spec: KernelSpec, types) -> str:
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
