"""The state layout of one query: which row of which pack holds each per-group array,
and the lines that bind a kernel's locals to the slots of ``S``.

The slots of ``S`` and the fixed meta columns are named in
:mod:`velokern.kernels.layout`; the pack rows are per query, laid out here (a
:class:`PackRows` hands out rows in the order arrays are added) and referenced by the
arrays' names.
"""

from __future__ import annotations

from velokern.batch import STRING
from velokern.codegen.spec import StateArray
from velokern.kernels.layout import PACK_SLOTS, PACKS, STATE_SLOTS
from velokern.plan import BOOL, is_int, is_time


def state_type(t: str | None) -> str:
    """Storage dtype (a PACKS key) of an aggregate's held value of input type ``t``."""
    if t is None or is_int(t) or is_time(t):
        return "int64"
    if t == STRING:
        return "int32"
    if t == BOOL:
        return "uint8"
    return "float64"


class PackRows:
    """The per-group arrays of a query as rows of the I/F/B packs."""

    def __init__(self) -> None:
        self.rows = {pack: 0 for pack in PACK_SLOTS}  # rows used of each pack
        self.arrays: list[StateArray] = []

    def add(self, name: str, dtype: str, n: int = 1) -> int:
        """Add array ``name`` (``n`` > 1: arrays ``name_0`` ...) of storage ``dtype``;
        returns its (first) row."""
        pack = PACKS[dtype]
        first = self.rows[pack]
        for k in range(n):
            self.arrays.append(StateArray(name if n == 1 else f"{name}_{k}", dtype, pack,
                                          self.rows[pack]))
            self.rows[pack] += 1
        return first

    def row(self, name: str) -> int:
        """The row of array ``name`` in its pack."""
        return next(a.row for a in self.arrays if a.name == name)


def bind_slots(names: tuple[str, ...]) -> list[str]:
    """Locals for the slots ``names`` of ``S`` (in slot order): partition ``p``'s part."""
    return [f"{name} = S[{k}][p]" for k, name in enumerate(STATE_SLOTS) if name in names]


def bind_packs(arrays: list[StateArray]) -> list[str]:
    """Locals ``I_``, ``F_``, ``B_`` for partition ``p``'s packs, then one per array."""
    lines = [f"{pk}_ = S[{slot}][p]" for pk, slot in PACK_SLOTS.items()]
    return lines + [f"{a.name} = {a.pack}_[{a.row}]" for a in arrays]


__all__ = ["PackRows", "bind_packs", "bind_slots", "state_type"]
