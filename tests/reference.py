"""A plain, slow reference implementation of Network Dissection (algorithms.md section 1).

Loops over images, units and concepts with numpy only; independent of
netdissect's streaming code except for reading the dataset files.
"""
from __future__ import annotations

import numpy as np


def bilinear(a: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Resize (h, w) to (sh, sw), align_corners=False (half-pixel centres), edge-clamped."""
    h, w = a.shape
    ys = (np.arange(sh) + 0.5) * h / sh - 0.5
    xs = (np.arange(sw) + 0.5) * w / sw - 0.5
    ys, xs = np.clip(ys, 0, None), np.clip(xs, 0, None)
    y0 = np.minimum(np.floor(ys).astype(int), h - 1)
    x0 = np.minimum(np.floor(xs).astype(int), w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = a.astype(np.float64)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def reference_dissect(acts: np.ndarray, ds, q: float):
    """acts: (N, C, h, w) activations (as the engine caches them); ds: a netdissect.data.Broden.

    Returns (thresholds (C,), iou (C, K)) with K = len(ds.concepts).
    """
    N, C, h, w = acts.shape
    thresholds = np.array([np.quantile(acts[:, k].astype(np.float64).ravel(), 1 - q) for k in range(C)])
    cons = ds.concepts
    K = len(cons)
    inter = np.zeros((C, K))
    union = np.zeros((C, K))
    for i in range(N):
        s = ds.load_labels(i)
        sh, sw = ds.rows[i].sh, ds.rows[i].sw
        masks = [bilinear(acts[i, k], sh, sw) > thresholds[k] for k in range(C)]
        for c in range(K):
            g = cons.primary[c]
            if not s.has_category[g]:
                continue  # only images holding a label of c's primary category count
            num = cons.numbers[c]
            if num in s.image_labels:
                lab = np.ones((sh, sw), bool)
            else:
                lab = np.zeros((sh, sw), bool)
                for plane in s.planes:
                    lab |= plane == num
            for k in range(C):
                inter[k, c] += np.logical_and(masks[k], lab).sum()
                union[k, c] += np.logical_or(masks[k], lab).sum()
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return thresholds, iou


def layer_activations(model, ds, layer) -> np.ndarray:
    """(N, C, h, w): the layer's activations for every image of ``ds``, one image at a time."""
    import torch

    from netdissect.hooks import Trace

    out = []
    with torch.inference_mode():
        for i in range(len(ds)):
            x = torch.from_numpy(ds.load_image(i).copy()).permute(2, 0, 1)[None].float().div_(255)
            with Trace(model, layer, stop=True) as t:
                model(x)
            out.append(t.output[0].numpy())
    return np.stack(out)
