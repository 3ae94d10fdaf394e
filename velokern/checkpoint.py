"""Checkpoint files: a job's state written atomically, read back only when it matches.

A checkpoint is one file, ``<dir>/checkpoint.vkcp``:

- line 1: a JSON header (format version, velokern version, the job's SQL, processor,
  source and sink identities, batches consumed, a SHA-256 of the payload);
- then the payload (format 2): an 8-byte little-endian length, a JSON tree of plain
  data (dicts with string keys, lists, strings, numbers, booleans, None; a numpy array
  is ``{"\\u0000ndarray": [dtype, shape, offset]}``, bytes ``{"\\u0000bytes": hex}``),
  then the arrays' raw bytes. Nothing in it can run code when read: there is no pickle
  (format 1's pickles are refused by their format number), an array's dtype must be one
  of a fixed list of numeric, boolean and datetime dtypes (never object), and its shape
  must fit the bytes that are there. What the tree means is checked by its reader
  (:func:`velokern.exec.payload.validate` for the engine's part).

Writing goes to a temporary file in the same directory, is fsynced, then renamed over
the old checkpoint (and the directory fsynced), so a crash leaves either the old or the
new checkpoint, never half of one. Reading checks the header against the job *before*
loading anything, so a checkpoint of another query, schema, processor or velokern
version is refused with :class:`CheckpointError` and no state is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from velokern._version import __version__

__all__ = ["CHECKPOINT_FILE", "FORMAT", "CheckpointError", "read_checkpoint",
           "write_checkpoint"]

FORMAT = 2
CHECKPOINT_FILE = "checkpoint.vkcp"

_ARRAY = "\0ndarray"
_BYTES = "\0bytes"
# the dtypes a stored array may have (by numpy's dtype.str): never object or void
_DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", *(f"{k}8[{u}]" for k in "Mm" for u in ("D", "s", "ms", "us", "ns")))}
_MAX_DEPTH = 64


class CheckpointError(ValueError):
    """A checkpoint that cannot be used by this job (names the file and the mismatch)."""


def _plain(v: Any, blobs: list[bytes], at: list[int]) -> Any:
    """``v`` as a JSON-able tree; arrays' bytes appended to ``blobs``."""
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise TypeError("a checkpoint dict has a key that is not a string")
        return {k: _plain(x, blobs, at) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, blobs, at) for x in v]
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        if a.dtype.str not in _DTYPES:
            raise TypeError(f"a checkpoint cannot hold a {a.dtype} array")
        blobs.append(a.tobytes())
        at[0] += a.nbytes
        return {_ARRAY: [a.dtype.str, list(a.shape), at[0] - a.nbytes]}
    if isinstance(v, bytes):
        return {_BYTES: v.hex()}
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"a checkpoint cannot hold a {type(v).__name__}")


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The payload's bytes (format 2)."""
    blobs: list[bytes] = []
    tree = json.dumps(_plain(payload, blobs, [0]), separators=(",", ":")).encode()
    return struct.pack("<Q", len(tree)) + tree + b"".join(blobs)


def _array(spec: Any, blob: memoryview) -> np.ndarray:
    if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str)
            and isinstance(spec[1], list) and _is_int(spec[2])):
        raise ValueError("an array entry is not [dtype, shape, offset]")
    dtype = _DTYPES.get(spec[0])
    if dtype is None:
        raise ValueError(f"an array has dtype {spec[0]!r}, which a checkpoint may not hold")
    shape, off = spec[1], spec[2]
    if not all(_is_int(n) and 0 <= n < 1 << 40 for n in shape) or len(shape) > 8:
        raise ValueError(f"an array has shape {shape!r}")
    count = 1
    for n in shape:
        count *= n
    if off < 0 or off + count * dtype.itemsize > len(blob):
        raise ValueError(f"an array ({spec[0]}, shape {shape}) lies outside the payload")
    return np.frombuffer(blob, dtype, count, off).reshape(shape).copy()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tree(v: Any, blob: memoryview, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError("the payload nests too deep")
    if isinstance(v, list):
        return [_tree(x, blob, depth + 1) for x in v]
    if isinstance(v, dict):
        if len(v) == 1 and _ARRAY in v:
            return _array(v[_ARRAY], blob)
        if len(v) == 1 and _BYTES in v:
            if not isinstance(v[_BYTES], str):
                raise ValueError("a bytes entry is not a hex string")
            return bytes.fromhex(v[_BYTES])
        return {k: _tree(x, blob, depth + 1) for k, x in v.items()}
    return v


def decode_payload(body: bytes) -> dict[str, Any]:
    """The payload of :func:`encode_payload`'s bytes; ValueError when they are not one."""
    if len(body) < 8:
        raise ValueError("the payload is truncated")
    (n,) = struct.unpack("<Q", body[:8])
    if n > len(body) - 8:
        raise ValueError("the payload's tree runs past its end")
    try:
        tree = json.loads(body[8:8 + n])
    except (ValueError, RecursionError):
        raise ValueError("the payload's tree is not JSON") from None
    out = _tree(tree, memoryview(body)[8 + n:])
    if not isinstance(out, dict):
        raise ValueError("the payload is not a mapping")
    return out


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
    body = encode_payload(payload)
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
        payload = decode_payload(body)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    return head, payload
