"""Latent samples of a generator as a probe: one row per z.

    >>> from netdissect.probe.latent import LatentSamples
    >>> probe = LatentSamples(5, seed=1, dim=4)
    >>> probe.batch([probe.load(0), probe.load(1)], "cpu").shape
    torch.Size([2, 4])
    >>> bool((LatentSamples(9, seed=1, dim=4).z[:5] == probe.z).all())   # row i does not depend on n
    True

Row ``i`` of seed ``s`` is row ``i`` of ``numpy.random.RandomState(s).standard_normal((n, dim))``,
float32: the draw the PNAS 2020 experiments use (so seeds name the paper's samples), stable across
numpy versions (``RandomState`` is numpy's frozen legacy generator), and independent of ``n``
(the stream fills rows in order).  The model fed by this probe is the generator; its *output* is
the image a concept source segments (:class:`netdissect.concepts.generated.GeneratedLabels`).
"""
from __future__ import annotations

import numpy as np
import torch

from netdissect.errors import NetDissectError
from netdissect.probe import Probe

__all__ = ["LatentSamples", "latent_z"]

MAX_SEED = 2 ** 32 - 1


def latent_z(n: int, seed: int, dim: int) -> np.ndarray:
    """``(n, dim)`` float32: ``RandomState(seed).standard_normal((n, dim))``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise NetDissectError(f"the number of samples must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise NetDissectError(f"the latent seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise NetDissectError(f"the latent size must be a positive integer, got {dim!r}")
    need = int(n) * int(dim) * 12  # the float64 draw and its float32 copy, at once
    have = available_memory()
    if have is not None and need > have:
        raise NetDissectError(f"{int(n)} latent samples of size {int(dim)} need {need / 2 ** 30:.1f} GiB of memory to "
                              f"draw, and {have / 2 ** 30:.1f} GiB is available: give fewer samples (--samples)")
    return np.random.RandomState(int(seed)).standard_normal((int(n), int(dim))).astype(np.float32)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else physical memory; None
    when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class LatentSamples(Probe):
    """``n`` latent vectors of size ``dim`` drawn with ``seed`` (see the module's docstring)."""

    loads_from_memory = True  # every z is drawn up front

    def __init__(self, n: int, seed: int, dim: int):
        self.z = latent_z(n, seed, dim)
        self.n, self.seed, self.dim = int(n), int(seed), int(dim)

    def __len__(self) -> int:
        return self.n

    def identity(self) -> dict:
        return {"kind": "latent", "samples": self.n, "seed": self.seed, "dim": self.dim,
                "draw": "numpy.random.RandomState(seed).standard_normal((samples, dim)), float32"}

    def where(self, i: int) -> str:
        return f"sample {i} of seed {self.seed}"

    def describe(self) -> str:
        return f"{self.n} latent samples of seed {self.seed}"

    def load(self, i: int) -> np.ndarray:
        return self.z[i]

    def batch(self, payloads: list[np.ndarray], device) -> torch.Tensor:
        return torch.from_numpy(np.stack(payloads)).to(device)

    def row_names(self) -> list[str]:
        return [f"seed{self.seed}/{i:06d}" for i in range(self.n)]
