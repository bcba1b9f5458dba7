"""The parameters of a dissection run, checked before anything starts."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netdissect.errors import NetDissectError

CACHE_DTYPES = {"float32": np.float32, "float16": np.float16}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
MAX_TOPK_BYTES = 4 << 30  # the top images' maps of all layers together


@dataclass
class DissectConfig:
    """Parameters of a dissection run (see :func:`netdissect.dissect`)."""

    quantile: float = 0.005
    iou_threshold: float = 0.04
    topk: int = 10
    batch_size: int = 64
    num_workers: int | None = None
    cache_dtype: str = "float32"
    device: str = "cpu"
    skip_bad: bool = False
    split: str | None = None
    limit: int | None = None
    channels_last: bool = True
    precision: str = "fp32"
    quantile_memory: int = 256 << 20
    seed: int = 0

    def check(self) -> None:
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise NetDissectError(f"{name} must be an integer >= {low}, got {v!r}")

        if not isinstance(self.quantile, (int, float)) or not 0 < self.quantile < 1:
            raise NetDissectError(f"quantile must be in (0, 1), got {self.quantile!r}")
        if not isinstance(self.iou_threshold, (int, float)) or not 0 <= self.iou_threshold <= 1:
            raise NetDissectError(f"iou_threshold must be in [0, 1], got {self.iou_threshold!r}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise NetDissectError(f"cache_dtype must be one of {sorted(CACHE_DTYPES)}, got {self.cache_dtype!r}")
        integer("batch_size", 1)
        integer("topk", 1)
        integer("quantile_memory", 1 << 12)
        integer("seed", 0)
        if self.num_workers is not None:
            integer("num_workers", 0)
        if self.limit is not None:
            integer("limit", 1)
        if self.precision not in PRECISIONS:
            raise NetDissectError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return flags


def native_bf16(device: str) -> tuple[bool, str]:
    """Whether ``device`` runs bfloat16 matrix work natively, and what was found.

    CUDA: compute capability 8.0 or newer (Ampere, Hopper, ...).  CPU: the AVX512-BF16 or
    AMX-BF16 instructions (x86) or the BF16 extension (Arm), with oneDNN's bf16 kernels.
    Elsewhere bf16 is emulated and slower than fp32.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        return major >= 8, f"CUDA compute capability {major}.{minor}"
    if dev.type != "cpu":
        return False, f"device {dev.type}"
    flags = _cpu_flags()
    native = {"avx512_bf16", "amx_bf16", "bf16"} & flags
    onednn = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    cap = torch.backends.cpu.get_cpu_capability()
    found = f"CPU capability {cap}, bf16 instructions: {', '.join(sorted(native)) or 'none'}"
    return bool(native) and onednn, found


def resolve_precision(precision: str, device: str) -> tuple[str, str | None]:
    """The precision to run and, when it differs from the one asked for, why."""
    if precision != "bf16":
        return precision, None
    ok, found = native_bf16(device)
    if ok:
        return "bf16", None
    why = (f"--precision bf16 asked for, but this device has no native bf16 ({found}): emulated bf16 is "
           "several times slower than fp32 here, so fp32 is used")
    warnings.warn(why, RuntimeWarning, stacklevel=3)
    return "fp32", why
