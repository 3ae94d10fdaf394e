"""The checkpoint payload: an engine's whole state as plain data, and back.

:func:`snapshot` gathers what each stage holds (numpy arrays, numbers, strings, lists
and dicts: what :mod:`velokern.checkpoint` stores); :func:`load` gives it back to the
stages of a new engine, which then continues exactly as the old one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from velokern.batch import Schema, StringDictionary
from velokern.exec.context import JobContext
from velokern.exec.input import InputStage
from velokern.exec.state import KeyedState

__all__ = ["load", "snapshot"]


def snapshot(ctx: JobContext, inputs: InputStage, state: KeyedState,
             sessions) -> dict[str, Any]:
    """The payload of one engine (the caller holds the job's lock)."""
    return {
        "sql": ctx.sql,
        "schema": None if inputs.bound is None else [list(f) for f in inputs.bound.schema],
        "allowed_lateness_ms": ctx.allowed_lateness_ms,
        "nullable": sorted(inputs.nullable),
        "num_partitions": ctx.num_partitions,
        "watermark": int(ctx.watermark),
        "seq": int(ctx.seq),
        "metrics": {k: v.copy() if isinstance(v, np.ndarray) else v
                    for k, v in ctx.metrics.items()},
        "dicts": {c: d.values for c, d in inputs.dicts.items()},
        "state": None if state.arrays is None else [a.copy() for a in state.arrays],
        "sessions": None if sessions is None else sessions.snapshot(),
    }


def load(snap: Mapping[str, Any], ctx: JobContext, inputs: InputStage, state: KeyedState,
         sessions, bind_partitions) -> None:
    """Adopt a snapshot's state (the stages are new: they have seen no batch)."""
    if snap["schema"] is not None and inputs.bound is None:
        inputs.bind_schema(Schema([tuple(f) for f in snap["schema"]]))
    inputs.dicts = {c: StringDictionary(v) for c, v in snap["dicts"].items()}
    inputs.nullable = set(snap["nullable"])
    if snap["num_partitions"] is not None:
        bind_partitions(snap["num_partitions"])
    ctx.watermark = int(snap["watermark"])
    ctx.seq = int(snap["seq"])
    ctx.metrics.update({k: v.copy() if isinstance(v, np.ndarray) else v
                        for k, v in snap["metrics"].items()})
    if snap["state"] is not None:
        try:
            state.adopt(inputs.variant()[0], [np.array(a) for a in snap["state"]])
        except ValueError as ex:
            raise ValueError(f"{ex} (query {ctx.sql!r})") from None
    if snap["sessions"] is not None:
        sessions.restore(snap["sessions"])
