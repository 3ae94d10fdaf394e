"""Where velokern keeps what it compiles for later processes: ``$VELOKERN_CACHE_DIR``, or
``~/.cache/velokern/kernels`` (generated kernel modules and numba's machine code; parsed
queries in its ``queries/`` folder)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def cache_dir(sub: str | None = None) -> Path:
    env = os.environ.get("VELOKERN_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "velokern" / "kernels"
    if sub:
        base = base / sub
    base.mkdir(parents=True, exist_ok=True)
    return base


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a concurrent reader (another process running
    the same query) sees the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
