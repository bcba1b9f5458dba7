"""Unit masks M_k(x) = upsample(A_k(x)) > T_k, computed only where they can be non-empty.

Bilinear upsampling (``align_corners=False``) gives each output pixel a
convex combination of a 2 x 2 block of cells (y0..y1, x0..x1).  Pixels that
share their top-left cell (y0, x0) form a rectangular *block*, and a block's
pixels can exceed T_k only if the max of its 2 x 2 cells does.  So instead of
upsampling every unit to full resolution (the cost that dominates public
implementations), we find the blocks whose cell max exceeds the threshold and
evaluate the exact bilinear formula (in float64) on their pixels alone.  The
result is identical to thresholding the full upsampled map.

    >>> um = UnitMasks(7, 7, 112, 112)
    >>> hits = um.hits(acts, thresholds)   # doctest: +SKIP
    >>> hits.area.shape                    # (images, units) mask areas
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _axis(n_in: int, n_out: int):
    """PyTorch's bilinear source indices and weights along one axis (align_corners=False)."""
    scale = n_in / n_out
    dst = np.arange(n_out, dtype=np.float64)
    src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = src - i0  # at the last cell i1 == i0, so the weights do not matter there
    return i0, i1, 1.0 - l1, l1


@dataclass
class Hits:
    """Mask pixels of one batch: ``area`` float64 (B, C); each hit is (image, unit, pixel)."""

    area: torch.Tensor
    image: torch.Tensor
    unit: torch.Tensor
    pixel: torch.Tensor


class UnitMasks:
    """Exact thresholded bilinear upsampling from (h, w) cells to (sh, sw) pixels, sparse."""

    def __init__(self, h: int, w: int, sh: int, sw: int, device="cpu", chunk_pixels: int = 1 << 22):
        self.h, self.w, self.sh, self.sw = h, w, sh, sw
        self.device = torch.device(device)
        self.chunk_pixels = chunk_pixels
        self.y = self._blocks(h, sh)
        self.x = self._blocks(w, sw)

    def _blocks(self, n_in, n_out):
        """Runs of output pixels that share their source cells, cut to at most ceil(n_out / n_in) pixels."""
        i0, i1, l0, l1 = _axis(n_in, n_out)
        limit = max(1, -(-n_out // n_in))
        starts, cells = [], []
        for p in range(n_out):
            if p == 0 or i0[p] != i0[p - 1] or p - starts[-1] >= limit:
                starts.append(p)
                cells.append(i0[p])
        start = np.asarray(starts, np.int64)
        count = np.diff(np.append(start, n_out))
        size = int(count.max())
        off = np.arange(size)
        pix = np.minimum(start[:, None] + off[None, :], n_out - 1)
        valid = off[None, :] < count[:, None]
        t = lambda a, dt=torch.float64: torch.as_tensor(a, dtype=dt, device=self.device)  # noqa: E731
        return {
            "start": t(start, torch.long), "cell": t(np.asarray(cells), torch.long), "size": size,
            "w0": t(np.where(valid, l0[pix], 0.0)), "w1": t(np.where(valid, l1[pix], 0.0)),
            "valid": t(valid, torch.bool),
        }

    def block_max(self, acts: torch.Tensor) -> torch.Tensor:
        """(B, C, blocks_y, blocks_x): max over each block's 2 x 2 source cells (edges replicated)."""
        padded = F.pad(acts, (0, 1, 0, 1), mode="replicate")
        cell_max = F.max_pool2d(padded, kernel_size=2, stride=1)  # (B, C, h, w) by top-left cell
        return cell_max[:, :, self.y["cell"]][:, :, :, self.x["cell"]]

    def hits(self, acts: torch.Tensor, thresholds: torch.Tensor) -> Hits:
        """Mask pixels of every unit on every image of the batch.

        ``acts`` (B, C, h, w); ``thresholds`` float64 (C,).  A pixel is in the
        mask when its upsampled value is strictly above the unit's threshold.
        """
        B, C, h, w = acts.shape
        dev = acts.device
        t64 = thresholds.to(dev, torch.float64)
        bm = self.block_max(acts.float()).double()
        cand = (bm > t64.view(1, C, 1, 1)).nonzero()  # (nb, 4): b, k, by, bx
        area = torch.zeros(B * C, dtype=torch.float64, device=dev)
        out_b, out_k, out_p = [], [], []
        Y, X = self.y, self.x
        per_block = Y["size"] * X["size"]
        step = max(1, self.chunk_pixels // max(per_block, 1))
        a = acts.double()
        for s in range(0, len(cand), step):
            c = cand[s:s + step]
            b, k, jy, jx = c.unbind(1)
            by, bx = Y["cell"][jy], X["cell"][jx]
            by1 = (by + 1).clamp_max(h - 1)
            bx1 = (bx + 1).clamp_max(w - 1)
            a00, a01 = a[b, k, by, bx], a[b, k, by, bx1]
            a10, a11 = a[b, k, by1, bx], a[b, k, by1, bx1]
            wx0, wx1 = X["w0"][jx], X["w1"][jx]  # (n, BX)
            wy0, wy1 = Y["w0"][jy], Y["w1"][jy]  # (n, BY)
            # same association as PyTorch's kernel: h0 * (w0 * a00 + w1 * a01) + h1 * (w0 * a10 + w1 * a11)
            r0 = wx0 * a00[:, None] + wx1 * a01[:, None]
            r1 = wx0 * a10[:, None] + wx1 * a11[:, None]
            up = wy0[:, :, None] * r0[:, None, :] + wy1[:, :, None] * r1[:, None, :]  # (n, BY, BX)
            n, oy, ox = (up > t64[k].view(-1, 1, 1)).nonzero().unbind(1)
            keep = Y["valid"][jy[n], oy] & X["valid"][jx[n], ox]  # slots past a short block's end
            n, oy, ox = n[keep], oy[keep], ox[keep]
            if len(n) == 0:
                continue
            pix = (Y["start"][jy[n]] + oy) * self.sw + X["start"][jx[n]] + ox
            out_b.append(b[n])
            out_k.append(k[n])
            out_p.append(pix)
        if out_b:
            hb, hk, hp = torch.cat(out_b), torch.cat(out_k), torch.cat(out_p)
            area.index_add_(0, hb * C + hk, torch.ones(len(hb), dtype=torch.float64, device=dev))
        else:
            hb = hk = hp = torch.zeros(0, dtype=torch.long, device=dev)
        return Hits(area.view(B, C), hb, hk, hp)
