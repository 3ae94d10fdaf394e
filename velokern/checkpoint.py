"""Checkpoint files: a job's state written atomically, read back only when it matches.

A checkpoint is one file, ``<dir>/checkpoint.vkcp``:

- line 1: a JSON header (format version, velokern version, the job's SQL, processor,
  source and sink identities, batches consumed, a SHA-256 of the payload);
- then the payload: a pickle of plain data (numpy arrays, numbers, strings, lists,
  dicts), read back by an unpickler that refuses every other type.

Writing goes to a temporary file in the same directory, is fsynced, then renamed over
the old checkpoint (and the directory fsynced), so a crash leaves either the old or the
new checkpoint, never half of one. Reading checks the header against the job *before*
loading anything, so a checkpoint of another query, schema, processor or velokern
version is refused with :class:`CheckpointError` and no state is touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

from velokern._version import __version__

__all__ = ["CHECKPOINT_FILE", "FORMAT", "CheckpointError", "read_checkpoint",
           "write_checkpoint"]

FORMAT = 1
CHECKPOINT_FILE = "checkpoint.vkcp"

# what a payload may contain besides builtins (numpy arrays, dtypes and scalars)
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used by this job (names the file and the mismatch)."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(directory: str | os.PathLike, header: dict[str, Any],
                     payload: dict[str, Any]) -> Path:
    """Atomically replace ``directory``'s checkpoint; returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    head = dict(header, format=FORMAT, velokern=__version__,
                sha256=hashlib.sha256(body).hexdigest(), payload_bytes=len(body))
    target = d / CHECKPOINT_FILE
    tmp = d / f".{CHECKPOINT_FILE}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(json.dumps(head, sort_keys=True).encode() + b"\n")
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(d)
    return target


def read_header(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The header of ``directory``'s checkpoint, or None when there is none."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    with open(path, "rb") as f:
        line = f.readline()
    try:
        head = json.loads(line)
    except ValueError:
        raise CheckpointError(f"checkpoint {path} is not a velokern checkpoint (its header "
                              f"is not JSON)") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {head.get('format')!r}; this "
                              f"velokern ({__version__}) reads format {FORMAT}")
    return head


def read_checkpoint(directory: str | os.PathLike,
                    expect: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(header, payload)`` of ``directory``'s checkpoint, None when there is none.

    Every key of ``expect`` must equal the header's value (the query, the processor,
    the source...), and the header's velokern version must be this one; otherwise
    :class:`CheckpointError` names the first difference. The payload is loaded only
    after those checks and its checksum.
    """
    path = Path(directory) / CHECKPOINT_FILE
    head = read_header(directory)
    if head is None:
        return None
    if head.get("velokern") != __version__:
        raise CheckpointError(f"checkpoint {path} was written by velokern "
                              f"{head.get('velokern')}; this is {__version__} (state layouts "
                              f"differ between versions: start the job afresh)")
    for key, want in expect.items():
        got = head.get(key)
        if got != want:
            raise CheckpointError(f"checkpoint {path} belongs to another job: its {key} is "
                                  f"{got!r}, this job's is {want!r}")
    with open(path, "rb") as f:
        f.readline()
        body = f.read()
    if len(body) != head.get("payload_bytes") or \
            hashlib.sha256(body).hexdigest() != head.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is damaged (its payload does not match "
                              f"its checksum)")
    try:
        payload = _PlainUnpickler(io.BytesIO(body)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    return head, payload
