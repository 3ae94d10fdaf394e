"""What a generated module hands the engine: the kernel spec, its output columns and
its per-group state arrays (the records the generator fills in; no source here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StateArray:
    """A named per-group array: row ``row`` of pack ``pack`` (I, F or B)."""

    name: str
    dtype: str
    pack: str
    row: int


@dataclass
class OutCol:
    """An output column: row ``row`` of output pack ``pack`` (OI, OF, OB or OC; or "C": the
    input column ``C[row]`` passed through), its final dtype, and its row in OM (-1 when
    the kernel does not produce a mask for it)."""

    name: str
    dtype: str
    pack: str
    row: int
    mask_row: int


@dataclass
class KernelSpec:
    """What the engine needs to call a generated module."""

    source: str
    stateful: bool
    inputs: list[tuple[str, str]]  # (column, "data" | "bits") in C order
    nullable: list[str]  # columns whose masks are in M, in order
    literals: list[tuple[str, str]]  # (owner column, string) -> R[0][k]
    rank_columns: list[str]  # string columns whose ranks are R[1 + k]
    outputs: list[OutCol]
    state: list[StateArray] = field(default_factory=list)
    pack_rows: dict[str, int] = field(default_factory=dict)  # rows of I, F, B
    meta_cols: dict[str, int] = field(default_factory=dict)
    distinct: list[str] = field(default_factory=list)  # aggregate prefixes with a set
    num_keys: int = 0
    direct: bool = False  # keys use the direct map (all string/bool columns)
    rows_row: int = -1  # row of the per-group row count in pack I
    unmaintained_counts: list[int] = field(default_factory=list)  # I rows equal to rows
    num_part_keys: int = 0  # leading keys hash partitioning uses (all but the window)
    # (C index, column) of each partitioning key when every one is a plain integer, time
    # or string-code column, whose values are their key bits: V2 hands those columns to
    # the shim as they are when none of them has a null in the batch (else key_bits)
    raw_keys: tuple[tuple[int, str], ...] | None = None
    windowed: bool = False  # key 0 is the window start; R ends with (WIN, WM, LATEBUF)
    max_windows: int = 1  # windows one record can belong to
    rows_window: bool = False  # ROWS window functions: one output row per input row
    ttl: bool = False  # ROWS windows with a state TTL: R ends with (TTL, WM, unused)
    # the engine's output pack layouts by (rows, pool threshold): not part of the spec
    layouts: dict = field(default_factory=dict, repr=False, compare=False)

    def out_rows(self) -> dict[str, int]:
        rows = {"OI": 0, "OF": 0, "OB": 0, "OC": 0, "OM": 0, "C": 0}
        for o in self.outputs:
            rows[o.pack] += 1
            if o.mask_row >= 0:
                rows["OM"] += 1
        return rows


__all__ = ["KernelSpec", "OutCol", "StateArray"]
