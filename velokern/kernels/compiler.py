"""Load generated kernel modules from an on-disk cache so numba can cache their code.

A generated module is written once to ``<cache dir>/vk_<hash>.py`` (the hash covers the
source, the helper kernels it calls, and the velokern, numba and numpy versions) and
imported from there; its functions use ``@njit(cache=True)``, so a new process that runs
a query it has seen before loads machine code from numba's cache instead of compiling.
The cache directory is ``$VELOKERN_CACHE_DIR`` or ``~/.cache/velokern/kernels``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

import numba
import numpy as np

from velokern._version import __version__
from velokern.cachedir import cache_dir, write_atomically

_LOADED: dict[str, ModuleType] = {}
_LOCK = threading.Lock()


def _helpers_digest() -> str:
    """Digest of the hand-written kernels generated code calls: numba's cache does not
    notice when a called function changes, so they are part of every module's key."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("scalar.py", "hashtable.py", "windows.py", "calls.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


_HELPERS = _helpers_digest()


def source_key(source: str) -> str:
    h = hashlib.sha256()
    for part in (__version__, numba.__version__, np.__version__, _HELPERS, source):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def load_module(source: str) -> ModuleType:
    """Import (writing first when new) the generated module with this source."""
    key = source_key(source)
    with _LOCK:
        mod = _LOADED.get(key)
        if mod is not None:
            return mod
        name = f"vk_{key}"
        path = cache_dir() / f"{name}.py"
        if not path.exists() or path.read_text() != source:
            write_atomically(path, source.encode())
        spec = importlib.util.spec_from_file_location(f"velokern._kernels.{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        _LOADED[key] = mod
        return mod
