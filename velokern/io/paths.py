"""A job's files checked before it starts: no sink may write over what the job reads, or
over the other sink.

A sink that is the job's own source file would overwrite the input the job is reading;
a sink inside a source directory would be read as input by the next run over that
directory; a ``late_sink`` that is the same file as the ``sink`` would have two staged
writers assemble one file (the job failed at its end with an unreadable staged segment,
or crashed). Paths are compared after resolving symbolic links (and ``..``), and files
that exist are also compared by identity, so a hard link is the same file too.
"""

from __future__ import annotations

import os
from typing import Any

from velokern.io.sinks import Sink, SinkError
from velokern.io.sources import Source

__all__ = ["PathConflictError", "check_job_paths"]


class PathConflictError(SinkError):
    """A sink would write over the job's input or over its other sink."""


def check_job_paths(source: Any, sink: Any, late_sink: Any = None) -> None:
    """Raise :class:`PathConflictError`, naming both paths, when ``sink`` or
    ``late_sink`` is a source file or lies inside a source directory, or when they are
    the same file. The arguments are what :class:`~velokern.server.StreamJob` takes
    (paths, Source and Sink objects, anything else); nothing is opened or written."""
    outputs = [(role, p) for role, spec in (("sink", sink), ("late_sink", late_sink))
               for p in _sink_locations(spec)]
    for i, (role, path) in enumerate(outputs):
        for other_role, other in outputs[i + 1:]:
            if _same_file(path, other):
                raise PathConflictError(
                    f"{role} {path!r} and {other_role} {other!r} are the same file "
                    f"({os.path.realpath(path)}): give each sink a file of its own")
        for src in _source_locations(source):
            _check_against_source(role, path, src)


def _check_against_source(role: str, path: str, src: str) -> None:
    if _same_file(path, src):
        raise PathConflictError(
            f"{role} {path!r} is the job's source {src!r} ({os.path.realpath(src)}): the "
            "job would overwrite its own input; write to another file")
    directory = os.path.realpath(src)
    if os.path.isdir(directory) and _inside(os.path.realpath(path), directory):
        raise PathConflictError(
            f"{role} {path!r} is inside the job's source directory {src!r} ({directory}): "
            "its output would be read as input by the next run over the directory; "
            "write it elsewhere")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives
        return False


def _source_locations(spec: Any) -> list[str]:
    """The paths a source spec reads, as :func:`~velokern.io.open_source` would."""
    if isinstance(spec, Source):
        return spec.locations()
    if isinstance(spec, (str, os.PathLike)):
        path = os.fsdecode(spec)
        return [] if path.startswith("scenario:") else [path]
    if isinstance(spec, (list, tuple)) and spec and all(
            isinstance(p, (str, os.PathLike)) for p in spec):
        return [os.fsdecode(p) for p in spec]
    return []


def _sink_locations(spec: Any) -> list[str]:
    """The files a sink spec writes, as :func:`~velokern.io.open_sink` would."""
    if isinstance(spec, Sink):
        return spec.locations()
    if isinstance(spec, (str, os.PathLike)):
        path = os.fsdecode(spec)
        return [] if path == "memory" else [path]
    return []
