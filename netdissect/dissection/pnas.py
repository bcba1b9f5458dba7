"""PNAS 2020 thresholds: the top quantile of the *upsampled* activation over every label pixel.

    T_k = numpy.quantile(S_k over every pixel of every image, 1 - q),
    S_k = bilinear(A_k, (sh, sw)), align_corners=False, in float64

(algorithms.md section 2).  Computed exactly after pass 1 from the
activation cache: each block of images is upsampled in float64 with the very
formula and association the mask counting uses (:mod:`.masks`), so
``S_k > T_k`` selects exactly the pixels pass 2 counts; the ``k`` largest
values per unit are kept (``kept_count``), merged over torchrun ranks, and
numpy's linear interpolation gives the threshold to the last bit.
"""
from __future__ import annotations

import numpy as np
import torch

from netdissect.dissection.masks import _axis
from netdissect.errors import DatasetError
from netdissect.stats.quantile import _interpolate, _positions, kept_count


def upsample64(acts: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """float64 (B, C, sh, sw): bilinear (align_corners=False) as :class:`UnitMasks` computes it."""
    B, C, h, w = acts.shape
    y0, y1, h0, h1 = (torch.as_tensor(v, device=acts.device) for v in _axis(h, sh))
    x0, x1, w0, w1 = (torch.as_tensor(v, device=acts.device) for v in _axis(w, sw))
    a = acts.double()
    r0, r1 = a.index_select(2, y0), a.index_select(2, y1)  # (B, C, sh, w)
    top = w0 * r0.index_select(3, x0) + w1 * r0.index_select(3, x1)
    bot = w0 * r1.index_select(3, x0) + w1 * r1.index_select(3, x1)
    return h0.view(-1, 1) * top + h1.view(-1, 1) * bot


def pnas_thresholds(state, name: str, group, block_values: int = 1 << 24) -> np.ndarray:
    """float64 (C,) PNAS thresholds of layer ``name`` over every rank's rows (not skipped)."""
    used = [i for i in range(len(state.probe)) if i not in state.skipped]
    sizes = state.source.mask_sizes(used)
    sizes = sorted({tuple(s) for part in group.gather([list(map(tuple, sizes))]) for s in part[0]})
    if len(sizes) != 1:
        raise DatasetError(f"--iou pnas needs one label size for every image; {state.probe.describe()} has "
                           f"{len(sizes)} ({sizes[:4]}): use --iou broden, or resize the masks")
    sh, sw = sizes[0]
    C, h, w = state.shapes[name]
    S = sh * sw
    keep = kept_count(state.cfg.quantile, len(state.probe) * S)
    dev = state.device
    top = torch.empty((C, 0), dtype=torch.float64, device=dev)
    n = 0
    if name in state.caches:
        cache = state.caches[name]
        step = max(1, block_values // max(1, C * S))
        for s in range(0, state.hi - state.lo, step):
            e = min(s + step, state.hi - state.lo)
            rows = [j for j in range(e - s) if state.lo + s + j not in state.skipped]
            if not rows:
                continue
            a = torch.from_numpy(cache.read(s, e)).to(dev)
            if len(rows) < e - s:
                a = a[rows]
            up = upsample64(a.float(), sh, sw).transpose(0, 1).reshape(C, -1)
            n += up.shape[1]
            both = torch.cat([top, up], 1)
            top = both.topk(min(keep, both.shape[1]), dim=1, sorted=False).values if both.shape[1] > keep else both
    parts = group.gather((n, top.cpu().numpy()))
    n = sum(p[0] for p in parts)
    if n == 0:
        return np.full(C, np.nan)
    allv = torch.from_numpy(np.concatenate([p[1] for p in parts], 1))
    lo, hi, t = _positions(state.cfg.quantile, n)
    d_lo, d_hi = n - 1 - lo, n - 1 - hi
    srt = allv.topk(d_lo + 1, dim=1, sorted=True).values
    return _interpolate(srt[:, d_lo].numpy(), srt[:, d_hi].numpy(), t)
