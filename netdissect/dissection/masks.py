"""Unit masks M_k(x) = upsample(A_k(x)) > T_k, computed only where they can be non-empty.

Bilinear upsampling (``align_corners=False``) gives each output pixel a
convex combination of a 2 x 2 block of cells (y0..y1, x0..x1).  Pixels that
share their top-left cell (y0, x0) form a rectangular *block*, and a block's
pixels can exceed T_k only if the max of its 2 x 2 cells does.  So instead of
upsampling every unit to full resolution (the cost that dominates public
implementations), we find the blocks whose cell max exceeds the threshold.
Within a block, along each pixel row, the bilinear value is monotone in x (a
linear function of a monotone weight), so the row's mask is one run at its
start or its end: the two end pixels decide whether the row is all in, all
out, or split, and a binary search finds the split.  Values are computed in
float64 with PyTorch's own formula, so the result equals thresholding the
full upsampled map.

    >>> import torch
    >>> um = UnitMasks(7, 7, 112, 112)
    >>> acts = torch.rand(2, 512, 7, 7)                      # (images, units, h, w)
    >>> hits = um.hits(acts, torch.full((512,), 0.9, dtype=torch.float64))
    >>> hits.area.shape                                      # mask areas
    torch.Size([2, 512])
    >>> area, inter = um.count(acts, thresholds, labels)     # doctest: +SKIP

:meth:`UnitMasks.count` is what dissection calls: mask areas and the overlap
of every mask with the pixel labels.  On the CPU it runs the compiled kernel
of :mod:`netdissect.dissection.kernel` (the same masks, no hit list); on a GPU,
or without numba, it counts :meth:`UnitMasks.hits` with torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from netdissect.dissection import kernel


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
        self.tables = self._kernel_tables()
        self.use_kernel = self.device.type == "cpu" and kernel.available()

    def _kernel_tables(self):
        """Block cells, starts and sizes, and per-pixel weights, along y then x, as numpy arrays."""
        out = []
        for axis, n_in, n_out in ((self.y, self.h, self.sh), (self.x, self.w, self.sw)):
            _, _, l0, l1 = _axis(n_in, n_out)
            out += [axis[k].cpu().numpy() for k in ("cell", "cell1", "start", "count")]
            out += [l0, l1]
        return tuple(out)

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
            "cell1": t(np.minimum(np.asarray(cells) + 1, n_in - 1), torch.long),
            # NaN weights past a short block's end: those slots never compare greater than T
            "w0": t(np.where(valid, l0[pix], np.nan)), "w1": t(np.where(valid, l1[pix], np.nan)),
            "pix": t(np.where(valid, pix, 0), torch.long), "n": len(start), "count": t(count, torch.long),
        }

    def block_max(self, acts: torch.Tensor) -> torch.Tensor:
        """(B, C, blocks_y, blocks_x): max over each block's 2 x 2 source cells (edges replicated)."""
        Y, X = self.y, self.x
        rows = torch.maximum(acts.index_select(2, Y["cell"]), acts.index_select(2, Y["cell1"]))
        return torch.maximum(rows.index_select(3, X["cell"]), rows.index_select(3, X["cell1"]))

    def count(self, acts: torch.Tensor, thresholds: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask areas float64 (B, C) and intersections float64 (C, K) with the pixel labels.

        ``labels``: the :class:`netdissect.stats.LabelBatch` of the same B images (concept
        column per pixel and plane, K for none).  Image-level labels are not counted here.
        """
        C = acts.shape[1]
        K = labels.label_area.shape[0]
        if self.use_kernel:
            area, inter = kernel.count(self.tables, acts.float().numpy(), thresholds.double().numpy(),
                                       labels.planes.numpy(), labels.pixels, self.sw, K)
            return torch.from_numpy(area).double(), torch.from_numpy(inter).double()
        hits = self.hits(acts, thresholds)
        inter = torch.zeros((C, K), dtype=torch.float64, device=acts.device)
        if len(hits.pixel) and labels.planes.shape[0]:
            cols = labels.planes.index_select(1, hits.image * labels.pixels + hits.pixel)  # (planes, n)
            # column K of each unit's row collects "no concept here" and is dropped
            keys = (hits.unit * (K + 1)).unsqueeze(0) + cols
            inter += torch.bincount(keys.view(-1), minlength=C * (K + 1)).view(C, K + 1)[:, :K].double()
        return hits.area, inter

    def hits(self, acts: torch.Tensor, thresholds: torch.Tensor) -> Hits:
        """Mask pixels of every unit on every image of the batch.

        ``acts`` (B, C, h, w); ``thresholds`` float64 (C,).  A pixel is in the
        mask when its upsampled value is strictly above the unit's threshold.
        """
        B, C, h, w = acts.shape
        dev = acts.device
        t64 = thresholds.to(dev, torch.float64)
        a = acts.double().contiguous()
        # a computed pixel may round a little above its cells' max: keep the kernels' margin
        bm = self.block_max(a) + kernel._SLACK * self.block_max(a.abs())
        cand = (bm > t64.view(1, C, 1, 1)).flatten().nonzero()[:, 0]  # flat (b, k, jy, jx)
        BY, BX = self.y["size"], self.x["size"]
        a = a.view(-1)
        out_bk, out_p = [], []
        step = max(1, self.chunk_pixels // (BY * BX))
        for s in range(0, len(cand), step):
            bk, p = self._chunk(cand[s:s + step], a, t64, B, C, h, w)
            out_bk.append(bk)
            out_p.append(p)
        if out_bk:
            hbk, hp = torch.cat(out_bk), torch.cat(out_p)
        else:
            hbk = hp = torch.zeros(0, dtype=torch.long, device=dev)
        area = torch.bincount(hbk, minlength=B * C).double().view(B, C)
        return Hits(area, hbk // C, hbk % C, hp)

    def _chunk(self, f, a, t64, B, C, h, w):
        """Hits of candidate blocks ``f`` (flat (b, k, jy, jx) indices): (b * C + k, pixel) per hit."""
        Y, X = self.y, self.x
        nby, nbx, BY, BX = Y["n"], X["n"], Y["size"], X["size"]
        sel = torch.index_select
        jx = f % nbx
        jy = (f // nbx) % nby
        bk = f // (nbx * nby)  # b * C + k
        by, bx = sel(Y["cell"], 0, jy), sel(X["cell"], 0, jx)
        by1, bx1 = (by + 1).clamp_max(h - 1), (bx + 1).clamp_max(w - 1)
        base = bk * (h * w)
        a00, a01 = sel(a, 0, base + by * w + bx), sel(a, 0, base + by * w + bx1)
        a10, a11 = sel(a, 0, base + by1 * w + bx), sel(a, 0, base + by1 * w + bx1)
        # one entry per pixel row of every candidate block
        rows_per = sel(Y["count"], 0, jy)
        rn = torch.repeat_interleave(torch.arange(len(f), device=f.device), rows_per)
        first = torch.cumsum(rows_per, 0) - rows_per
        oy = torch.arange(len(rn), device=f.device) - sel(first, 0, rn)
        ytab = sel(jy, 0, rn) * BY + oy
        h0, h1 = sel(Y["w0"].view(-1), 0, ytab), sel(Y["w1"].view(-1), 0, ytab)
        w0, w1 = X["w0"].view(-1), X["w1"].view(-1)
        cnt_b = sel(X["count"], 0, jx)
        thr_b = sel(t64, 0, bk % C)
        thr = sel(thr_b, 0, rn)

        def column(slot):  # per block: the bilinear value at x-slot ``slot`` on source rows by and by1
            i = jx * BX + slot
            x0, x1 = sel(w0, 0, i), sel(w1, 0, i)
            return x0 * a00 + x1 * a01, x0 * a10 + x1 * a11

        # PyTorch's association: h0 * (w0 * a00 + w1 * a01) + h1 * (w0 * a10 + w1 * a11)
        top, bot = column(torch.zeros_like(cnt_b))
        first_in = h0 * sel(top, 0, rn) + h1 * sel(bot, 0, rn) > thr
        top, bot = column(cnt_b - 1)
        last_in = h0 * sel(top, 0, rn) + h1 * sel(bot, 0, rn) > thr
        cnt = sel(cnt_b, 0, rn)
        # all in: [0, cnt); all out: empty; split: binary search for the first slot that differs from slot 0
        start = torch.zeros_like(cnt)
        stop = torch.where(first_in, cnt, torch.zeros_like(cnt))
        split = (first_in != last_in).nonzero()[:, 0]
        if len(split):
            lo = torch.zeros(len(split), dtype=torch.long, device=f.device)  # same as slot 0
            hi = sel(cnt, 0, split) - 1  # differs from slot 0
            sn = sel(rn, 0, split)
            r00, r01, r10, r11 = (sel(v, 0, sn) for v in (a00, a01, a10, a11))
            sh0, sh1, sthr, sjx = sel(h0, 0, split), sel(h1, 0, split), sel(thr, 0, split), sel(jx, 0, sn)
            f_in = sel(first_in, 0, split)
            while bool((hi - lo > 1).any()):
                mid = (lo + hi) // 2
                i = sjx * BX + mid
                x0, x1 = sel(w0, 0, i), sel(w1, 0, i)
                above = sh0 * (x0 * r00 + x1 * r01) + sh1 * (x0 * r10 + x1 * r11) > sthr
                differs = above != f_in
                hi = torch.where(differs, mid, hi)
                lo = torch.where(differs, lo, mid)
            # increasing rows (slot 0 out): run [hi, cnt); decreasing rows (slot 0 in): run [0, hi)
            start[split] = torch.where(f_in, torch.zeros_like(hi), hi)
            stop[split] = torch.where(f_in, hi, sel(cnt, 0, split))
        length = stop - start
        hit_row = torch.repeat_interleave(torch.arange(len(rn), device=f.device), length)
        offs = torch.cumsum(length, 0) - length
        slot = sel(start, 0, hit_row) + torch.arange(len(hit_row), device=f.device) - sel(offs, 0, hit_row)
        ypix = sel(Y["pix"].view(-1), 0, sel(ytab, 0, hit_row))
        xpix = sel(X["pix"].view(-1), 0, sel(sel(jx, 0, rn), 0, hit_row) * BX + slot)
        return sel(bk, 0, sel(rn, 0, hit_row)), ypix * self.sw + xpix
