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
    """float64 (sh, sw, B, C): bilinear (align_corners=False) as :class:`UnitMasks` computes it,
    ``h0 * (w0 * a00 + w1 * a01) + h1 * (w0 * a10 + w1 * a11)``: the x-interpolation of every source
    row first (on the small map), then the rows combined.  Pixels lead (each gather copies whole
    (B, C) planes, the fast way on a CPU)."""
    B, C, h, w = acts.shape
    y0, y1, h0, h1 = (torch.as_tensor(v, device=acts.device) for v in _axis(h, sh))
    x0, x1, w0, w1 = (torch.as_tensor(v, device=acts.device) for v in _axis(w, sw))
    a = acts.double().permute(2, 3, 0, 1).contiguous()  # (h, w, B, C)
    rows = w0.view(1, -1, 1, 1) * a.index_select(1, x0) + w1.view(1, -1, 1, 1) * a.index_select(1, x1)
    return h0.view(-1, 1, 1, 1) * rows.index_select(0, y0) + h1.view(-1, 1, 1, 1) * rows.index_select(0, y1)


def pnas_thresholds(state, name: str, group, block_values: int = 1 << 22) -> np.ndarray:
    """float64 (C,) PNAS thresholds of layer ``name`` over every rank's rows (not skipped).

    Once ``keep`` values per unit are held, an image whose peak activation does not exceed any
    unit's smallest kept value is not upsampled at all (an upsampled value is a convex combination
    of the map's values, so it cannot exceed the peak)."""
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
            n += len(a) * S
            if top.shape[1] >= keep:  # only images that can still enter some unit's top values
                floor = top.min(1).values
                a = a[(a.flatten(2).amax(2).double() > floor).any(1)]
                if not len(a):
                    continue
            up = upsample64(a.float(), sh, sw).view(-1, C).T
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
