"""On-disk activation cache: one fixed-size record per dataset row, compact dtype.

Written with plain file writes (not mmap), so the cached activations live in
the kernel's page cache, not in the process: memory does not grow with the
dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from netdissect.errors import NetDissectError


class ActivationCache:
    """Activations of one layer for N rows, shape (C, h, w) each, in ``dtype``.

    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/layer4.acts"
    >>> cache = ActivationCache(path, rows=100, shape=(512, 7, 7))
    >>> cache.write(0, np.ones((64, 512, 7, 7), np.float32))         # rows 0..63
    >>> cache.read(0, 64).shape
    (64, 512, 7, 7)
    >>> cache.close()
    """

    def __init__(self, path: str | os.PathLike, rows: int, shape: tuple[int, ...], dtype="float32",
                 existing: bool = False):
        self.path = Path(path)
        self.rows, self.shape, self.dtype = int(rows), tuple(shape), np.dtype(dtype)
        self.record = int(np.prod(self.shape)) * self.dtype.itemsize
        size = self.rows * self.record
        if existing:  # resume or merge: the cache must be there, whole
            fix = "the run cannot be resumed from it: start afresh (remove the run's .work folder)"
            if not self.path.exists():
                raise NetDissectError(f"activation cache {self.path} is missing; {fix}")
            got = os.path.getsize(self.path)
            if got != size:
                raise NetDissectError(f"activation cache {self.path} holds {got:,} bytes, not {size:,} "
                                      f"({self.rows} rows of {self.shape} {self.dtype}): truncated or replaced; {fix}")
            self._f = open(self.path, "r+b")
            return
        self._f = open(self.path, "w+b")
        self._f.truncate(size)

    def write(self, start: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape[1:] != self.shape:
            raise ValueError(f"cache {self.path.name}: expected rows of shape {self.shape}, got {values.shape[1:]}")
        self._f.seek(start * self.record)
        self._f.write(memoryview(values).cast("B"))  # no copy of the batch

    def read(self, start: int, stop: int) -> np.ndarray:
        n = stop - start
        out = np.empty((n, *self.shape), dtype=self.dtype)
        self._f.seek(start * self.record)
        got = self._f.readinto(memoryview(out).cast("B"))
        if got != n * self.record:
            raise NetDissectError(f"activation cache {self.path} is truncated (rows {start}..{stop}): "
                                  "start the run afresh (remove its .work folder)")
        return out

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
