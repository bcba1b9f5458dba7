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


def union_rule_cases(acts: np.ndarray, ds, thresholds: np.ndarray, iou: np.ndarray) -> int:
    """How many (unit, concept) pairs with IoU > 0 have the unit's mask on some image that lacks the
    concept's primary category: the pairs whose IoU a wrong union rule (counting such images) changes."""
    N, C = acts.shape[:2]
    live = (acts > thresholds[None, :, None, None]).reshape(N, C, -1).any(2)            # (N, C)
    lack = ~np.array([ds.load_labels(i).has_category for i in range(N)])[:, ds.concepts.primary]  # (N, K)
    return int(((iou > 0)[None] & live[:, :, None] & lack[:, None, :]).any(0).sum())


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


def reference_pnas(acts: np.ndarray, labels: list, numbers: list, q: float):
    """PNAS mode (algorithms.md section 2): ``labels[i]`` (P, sh, sw) label numbers (0 none) of
    image i (an image-level label: a plane full of its number); concept c has number ``numbers[c]``.

    T_k = quantile of the upsampled maps over every pixel of every image; IoU one pooled count over
    all pixels.  Returns (thresholds (C,), iou (C, K)).
    """
    N, C, h, w = acts.shape
    K = len(numbers)
    sh, sw = labels[0].shape[1:]
    up = np.stack([[bilinear(acts[i, k], sh, sw) for k in range(C)] for i in range(N)])  # (N, C, sh, sw)
    thresholds = np.array([np.quantile(up[:, k].ravel(), 1 - q) for k in range(C)])
    inter = np.zeros((C, K))
    union = np.zeros((C, K))
    for i in range(N):
        for c in range(K):
            lab = np.zeros((sh, sw), bool)
            for plane in labels[i]:
                lab |= plane == numbers[c]
            for k in range(C):
                m = up[i, k] > thresholds[k]
                inter[k, c] += np.logical_and(m, lab).sum()
                union[k, c] += np.logical_or(m, lab).sum()
    return thresholds, np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def reference_segmenter_broden(acts: np.ndarray, labels: list, categories: list, q: float):
    """CVPR mode with segmenter labels: thresholds at the layer's resolution; concept c (number
    c + 1, category ``categories[c]``) counts only on images holding a label of its category."""
    N, C, h, w = acts.shape
    K = len(categories)
    sh, sw = labels[0].shape[1:]
    thresholds = np.array([np.quantile(acts[:, k].astype(np.float64).ravel(), 1 - q) for k in range(C)])
    inter = np.zeros((C, K))
    union = np.zeros((C, K))
    for i in range(N):
        held = {categories[n - 1] for n in np.unique(labels[i]) if n > 0}
        masks = [bilinear(acts[i, k], sh, sw) > thresholds[k] for k in range(C)]
        for c in range(K):
            if categories[c] not in held:
                continue
            lab = np.zeros((sh, sw), bool)
            for plane in labels[i]:
                lab |= plane == c + 1
            for k in range(C):
                inter[k, c] += np.logical_and(masks[k], lab).sum()
                union[k, c] += np.logical_or(masks[k], lab).sum()
    return thresholds, np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def reference_quad(plane: np.ndarray, objects: set):
    """{(label, side): bool mask} of the quad parts of one plane: 4-connected components by flood
    fill, each split at (top + bottom + 1) // 2 and (left + right + 1) // 2."""
    sh, sw = plane.shape
    seen = np.zeros(plane.shape, bool)
    out = {}
    for y in range(sh):
        for x in range(sw):
            n = int(plane[y, x])
            if n not in objects or seen[y, x]:
                continue
            stack, comp = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                comp.append((cy, cx))
                for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                    if 0 <= ny < sh and 0 <= nx < sw and not seen[ny, nx] and plane[ny, nx] == n:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            ys, xs = [p[0] for p in comp], [p[1] for p in comp]
            vmid, hmid = (min(ys) + max(ys) + 1) // 2, (min(xs) + max(xs) + 1) // 2
            for cy, cx in comp:
                for side, inside in (("top", cy < vmid), ("bottom", cy >= vmid), ("left", cx < hmid),
                                     ("right", cx >= hmid)):
                    if inside:
                        out.setdefault((n, side), np.zeros(plane.shape, bool))[cy, cx] = True
    return out
