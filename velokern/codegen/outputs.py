"""Row outputs: the stores of one output row into the output packs.

The output columns are packed by type: ``OI`` int64, ``OF`` float64, ``OB`` bool,
``OC`` int32 string codes, and ``OM`` holds the validity of those that can be null.
Each store is recorded as an :class:`~velokern.codegen.spec.OutCol` of the spec.
"""

from __future__ import annotations

from velokern.batch import STRING
from velokern.codegen.expressions import ExprGen
from velokern.codegen.spec import OutCol
from velokern.plan import BOOL, Col, is_float, is_time, numpy_dtype


def _dtype(t: str) -> str:
    """The dtype of an output column of logical type ``t``."""
    return "int64" if is_time(t) else numpy_dtype(t).name


def out_lines(g: ExprGen, outputs, pos: str, passthrough: bool = False) -> list[str]:
    """Evaluate outputs and store them at index ``pos``; records the output spec.

    With ``passthrough`` (stateless queries), an output that is a plain input column is
    not copied by the kernel: it is OutCol pack "C" (row = its index in C), gathered by
    the engine from the input with the selected row numbers.
    """
    spec = g.spec
    spec.outputs = []
    stores = []
    rows = {"OI": 0, "OF": 0, "OB": 0, "OC": 0}
    om = 0
    for (name, e), t in outputs:
        if passthrough and isinstance(e, Col):
            spec.outputs.append(OutCol(name, _dtype(t), "C",
                                       spec.inputs.index((e.name, "data")), -1))
            continue
        v, n = g.gen(e)
        dt = _dtype(t)
        # string codes go to the int32 pack OC: the output column is that row as is (an
        # int64 row cast afterwards cost twice the bytes, each a fresh page of a kept
        # output, plus the cast)
        pack = ("OB" if t == BOOL else "OF" if is_float(t) else "OC" if t == STRING
                else "OI")
        mask_row = -1
        stores.append(f"{pack}[{rows[pack]}, {pos}] = {v}")
        if n != "False":
            mask_row = om
            stores.append(f"OM[{om}, {pos}] = not {n}")
            om += 1
        spec.outputs.append(OutCol(name, dt, pack, rows[pack], mask_row))
        rows[pack] += 1
    return stores


def row_body(g: ExprGen, bq, pos: str) -> list[str]:
    """The end of a one-row-per-input-row loop body (stateless queries, ROWS windows):
    ``g``'s statements, the output stores at ``pos``, and the input row number kept."""
    stores = out_lines(g, list(zip(bq.outputs, bq.output_types)), pos, passthrough=True)
    return g.lines + stores + ["orow[nonneg(k)] = i", "k += 1"]


__all__ = ["out_lines", "row_body"]
