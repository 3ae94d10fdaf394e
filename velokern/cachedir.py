"""Where velokern keeps what it compiles for later processes: ``$VELOKERN_CACHE_DIR``, or
``~/.cache/velokern/kernels`` (generated kernel modules and numba's machine code; parsed
queries in its ``queries/`` folder)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str | None = None) -> Path:
    env = os.environ.get("VELOKERN_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "velokern" / "kernels"
    if sub:
        base = base / sub
    base.mkdir(parents=True, exist_ok=True)
    return base
