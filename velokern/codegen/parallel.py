"""The per-batch kernels' signatures and their ``prange`` wrappers (one template).

Each per-batch kernel ``*_part`` works on one partition's rows ``start:end``; its
wrapper ``*_all`` runs it for every partition in a ``prange``. The wrapper's arguments
follow from the kernel's: ``part`` (the kernel's address) first, then the kernel's own
arguments, where the per-partition ones (``start``, ``end``, ``obase``) become arrays
indexed by partition and the partition ``p`` becomes the loop index. A stateful kernel
(one with a state ``S`` and partition ``p``) runs only where ``active[p]`` and returns
(row it stopped at, rows written) into ``stops``/``counts``; a stateless one returns
the rows written into ``counts``.

A wrapper calls its kernel through the address passed as ``part`` (see
:mod:`velokern.kernels.calls`): a direct call would link the kernel into the wrapper
and compile it a second time. A prange index is unsigned: a stateful wrapper passes it
on as int64 so V1 and V2 share one compiled ``*_part`` signature.
"""

from __future__ import annotations

from velokern.codegen.common import indent

_OUT = ("OI", "OF", "OB", "OC", "OM")
_INPUT = ("C", "M", "R", "idx", "use_idx", "start", "end")
#: arguments of the per-batch kernels, in order
PROJECT_PART = (*_INPUT, *_OUT, "orow")
BATCH_PART = ("S", "p", *_INPUT, "obase", "seq_base", "emit", *_OUT, "oseq")
ROWS_PART = ("S", "p", *_INPUT, "obase", *_OUT, "orow")

#: a kernel's per-partition arguments and the wrapper's arrays of them
_PER_PARTITION = {"start": "starts", "end": "ends", "obase": "obases"}


def part_signature(name: str, params: tuple[str, ...]) -> str:
    """The ``def`` line of per-batch kernel ``name``."""
    return f"def {name}({', '.join(params)}):"


def _wrapper_params(params: tuple[str, ...], stateful: bool) -> list[str]:
    out = ["part"] + [_PER_PARTITION.get(a, a) for a in params if a != "p"]
    if stateful:  # the active flags follow the per-partition arrays
        last = max(k for k, a in enumerate(out) if a in _PER_PARTITION.values())
        out.insert(last + 1, "active")
    return out + (["stops", "counts"] if stateful else ["counts"])


def prange_wrapper(name: str, params: tuple[str, ...]) -> list[str]:
    """The source of ``name`` (``*_all``): kernel ``part`` of arguments ``params`` run
    on every partition in a prange (no trailing blank lines)."""
    stateful = "p" in params
    args = ", ".join(f"{_PER_PARTITION[a]}[p]" if a in _PER_PARTITION else a
                     for a in params)
    if stateful:
        loop = ["for q in prange(len(starts)):",
                "    p = np.int64(q)  # the prange index is unsigned: one signature for V1 "
                "and V2",
                "    if active[p]:",
                f"        r = call_pair(part, ({args}))",
                "        stops[p] = r[0]",
                "        counts[p] = r[1]"]
    else:
        loop = ["for p in prange(len(starts)):",
                f"    counts[p] = call_int(part, ({args}))"]
    return ["@njit(**PJIT)", f"def {name}({', '.join(_wrapper_params(params, stateful))}):",
            *indent(loop, 4)]


__all__ = ["BATCH_PART", "PROJECT_PART", "ROWS_PART", "part_signature", "prange_wrapper"]
