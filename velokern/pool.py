"""Recycled memory for an engine's output columns.

An engine's large output packs (see :mod:`velokern.codegen`) are carved from
one block per batch, and an output's columns are views of them. Once a consumer has
dropped every column of an output, the block's memory can serve the next batch as it
is: new memory instead costs a page fault per 4 KiB page on first write, and on the
machines measured here that is as much time as the kernels spend on the bytes (~0.45
ns per byte). Left to the C allocator, whether a freed block comes back depends on its
thresholds for returning memory to the system, so the same job ran with anywhere from
0 to 5,700 page faults per 18 batches of S3a as the sizes of its arrays changed.

A block is reused only when nothing but the pool refers to it: every array carved from
it (and every view of those) holds a reference to it, so an output that is still alive,
in whole or in part, keeps its block out of reach. Each request trims the blocks
nobody uses to ``max_free_bytes`` (oldest first; the block handed out is in use);
blocks smaller than ``min_bytes`` are not pooled (the allocator serves small sizes
from memory it keeps anyway).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from velokern import config

__all__ = ["BlockPool"]


class BlockPool:
    """Byte blocks handed out for output packs and taken back once unused."""

    def __init__(self, max_free_bytes: int | None = None, min_bytes: int | None = None):
        self.max_free_bytes = (config.POOL_MAX_FREE_BYTES if max_free_bytes is None
                               else max_free_bytes)
        self.min_bytes = config.POOL_MIN_BYTES if min_bytes is None else min_bytes
        self._blocks: list[np.ndarray] = []  # oldest first
        self._lock = threading.Lock()

    def _unused(self, i: int) -> bool:
        """Nothing but the pool refers to block i: its only references are the list's
        and the one ``getrefcount`` gets as its argument."""
        return sys.getrefcount(self._blocks[i]) == 2

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 block of at least ``nbytes`` (at most twice that when recycled)."""
        if nbytes < self.min_bytes:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            blocks = self._blocks
            for i in range(len(blocks)):
                if nbytes <= blocks[i].nbytes <= 2 * nbytes and self._unused(i):
                    block = blocks.pop(i)
                    break
            else:
                block = np.empty(nbytes, np.uint8)
            blocks.append(block)
            # on every take: outputs released in bulk (a consumer that held many) must
            # not stay in the pool beyond the limit while the blocks kept are reused
            self._trim()
            return block

    def _trim(self) -> None:
        """Drop the oldest unused blocks while they hold more than max_free_bytes."""
        unused = [self._unused(i) for i in range(len(self._blocks))]
        free = sum(b.nbytes for b, u in zip(self._blocks, unused) if u)
        keep = []
        for b, u in zip(self._blocks, unused):
            if u and free > self.max_free_bytes:
                free -= b.nbytes
            else:
                keep.append(b)
        self._blocks = keep

    def stats(self) -> dict[str, int]:
        """Blocks held, and how many of them (and bytes) no output uses any more."""
        with self._lock:
            unused = [i for i in range(len(self._blocks)) if self._unused(i)]
            return {"blocks": len(self._blocks), "unused_blocks": len(unused),
                    "unused_bytes": sum(self._blocks[i].nbytes for i in unused)}
