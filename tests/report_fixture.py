"""A tiny Broden-format dataset and a run directory (docs/run-format.md) for the report tests.

    >>> from report_fixture import make_dataset, make_run
    >>> ds = make_dataset(tmp_path / "broden")                    # doctest: +SKIP
    >>> run = make_run(tmp_path / "run", ds)                      # doctest: +SKIP

The dataset holds simple shapes (discs, boxes, bars) on coloured backgrounds,
with colour/object/part/material masks and scene/texture image labels.  The
run is a miniature dissection of synthetic activations that respond to
chosen concepts: thresholds, IoUs, labels and top images are computed the
way the engine computes them, so the numbers are plausible and consistent.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

IMG, SEG = 112, 56
CONCEPTS = [  # number, name, category
    (1, "red", "color"), (2, "green", "color"), (3, "blue", "color"), (4, "yellow", "color"),
    (5, "disc", "object"), (6, "box", "object"), (7, "bar", "object"),
    (8, "rim", "part"), (9, "wood", "material"), (10, "metal", "material"),
    (11, "beach", "scene"), (12, "street", "scene"), (13, "striped", "texture"), (14, "dotted", "texture"),
]
CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
PIXEL = ["color", "object", "part", "material"]
RGB = {1: (200, 40, 40), 2: (50, 160, 70), 3: (40, 80, 200), 4: (230, 200, 40)}


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _plane(draw_fn) -> np.ndarray:
    im = Image.new("L", (SEG, SEG), 0)
    draw_fn(ImageDraw.Draw(im))
    return np.asarray(im) > 0


def _save_mask(path: Path, labels: np.ndarray) -> None:
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb).save(path)


def make_dataset(root: Path, n: int = 16, seed: int = 0) -> Path:
    """Write a Broden-format dataset of ``n`` images under ``root``; return root."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        bg, fg = rng.choice([1, 2, 3, 4], size=2, replace=False)
        shape = 5 + i % 3
        cx, cy = rng.integers(14, SEG - 14, size=2)
        r = int(rng.integers(8, 13))
        box = [cx - r, cy - r, cx + r, cy + r]
        if shape == 5:
            obj = _plane(lambda d: d.ellipse(box, fill=1))
            rim = obj & ~_plane(lambda d: d.ellipse([box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3], fill=1))
        elif shape == 6:
            obj = _plane(lambda d: d.rectangle(box, fill=1))
            rim = np.zeros_like(obj)
        else:
            obj = _plane(lambda d: d.rectangle([box[0] - 6, cy - 4, box[2] + 6, cy + 4], fill=1))
            rim = np.zeros_like(obj)
        striped = i % 4 == 0
        # the image: background, stripes, the shape, at twice the mask size
        up = lambda m: np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((IMG, IMG), Image.NEAREST)) > 0  # noqa: E731
        img = np.empty((IMG, IMG, 3), np.float32)
        img[:] = RGB[bg]
        if striped:
            img[(np.arange(IMG) // 6) % 2 == 0, :] *= 0.75
        img[up(obj)] = RGB[fg]
        img[up(rim)] *= 0.6
        img += rng.normal(0, 6, img.shape)
        name = f"img{i:03d}"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"{name}.jpg", quality=92)
        color = np.where(obj, fg, bg).astype(np.int32)
        _save_mask(root / "images" / f"{name}_color.png", color)
        _save_mask(root / "images" / f"{name}_object.png", obj * shape)
        cells = {"color": f"{name}_color.png", "object": f"{name}_object.png"}
        if rim.any():
            _save_mask(root / "images" / f"{name}_part.png", rim * 8)
            cells["part"] = f"{name}_part.png"
        if shape != 7:
            _save_mask(root / "images" / f"{name}_material.png", obj * (9 if shape == 6 else 10))
            cells["material"] = f"{name}_material.png"
        cells["scene"] = "11" if bg in (3, 4) else "12"
        cells["texture"] = "13" if striped else ("14" if i % 4 == 1 else "")
        rows.append([f"{name}.jpg", "train", IMG, IMG, SEG, SEG] + [cells.get(c, "") for c in CATEGORIES])
    _write_csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw"] + CATEGORIES, rows)
    _write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
               [[0, "-", "", 0, 0, ""]] + [[k, nm, f"{c}(1)", 1, 1.0, ""] for k, nm, c in CONCEPTS])
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
               [[c, 0, 0, 0, 0] for c in CATEGORIES])
    return root


def _concept_masks(ds) -> tuple[np.ndarray, np.ndarray]:
    """bool (N, K, SEG, SEG) concept masks and bool (N, G) category presence."""
    K = len(ds.concepts)
    masks = np.zeros((len(ds), K, SEG, SEG), bool)
    has = np.zeros((len(ds), len(ds.concepts.categories)), bool)
    for i in range(len(ds)):
        s = ds.load_labels(i)
        has[i] = s.has_category
        for k, num in enumerate(ds.concepts.numbers):
            masks[i, k] = (s.planes == num).any(axis=0) if len(s.planes) else False
            if num in s.image_labels:
                masks[i, k] = True
    return masks, has


def make_run(out: Path, dataset: Path, layers=(("layer3", 24, 8), ("layer4", 40, 4)),
             topk: int = 10, seed: int = 1, quantile: float = 0.05, iou_threshold: float = 0.04) -> Path:
    """Write a run directory for ``dataset`` with synthetic units; return ``out``."""
    from netdissect.data import Broden
    from netdissect.data.digest import files_digest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = Broden(dataset)
    names, cats = ds.concepts.names, ds.concepts.primary_names
    G = ds.concepts.categories
    masks, has = _concept_masks(ds)
    N, K = masks.shape[:2]
    rng = np.random.default_rng(seed)
    summary_layers = {}
    for li, (lname, C, h) in enumerate(layers):
        small = F.adaptive_avg_pool2d(torch.from_numpy(masks.astype(np.float32)), h).numpy()  # (N,K,h,h)
        acts = rng.normal(0, 0.25, (N, C, h, h)).astype(np.float32)
        target = rng.integers(0, K, size=C)
        strength = rng.uniform(0.0, 2.5, size=C)
        for u in range(C):
            acts[:, u] += strength[u] * small[:, target[u]]
        acts[:, C - 1] = 0.0  # a dead unit
        flat = acts.transpose(1, 0, 2, 3).reshape(C, -1)
        thr = np.quantile(flat, 1 - quantile, axis=1).astype(np.float32)
        up = F.interpolate(torch.from_numpy(acts), size=(SEG, SEG), mode="bilinear", align_corners=False).numpy()
        M = up > thr[None, :, None, None]  # (N, C, SEG, SEG)
        iou = np.zeros((C, K), np.float32)
        for k in range(K):
            sel = has[:, G.index(cats[k])]
            Mk, Lk = M[sel], masks[sel, k][:, None]
            inter = (Mk & Lk).sum(axis=(0, 2, 3))
            union = (Mk | Lk).sum(axis=(0, 2, 3))
            iou[:, k] = np.where(union > 0, inter / np.maximum(union, 1), 0)
        peak = acts.reshape(N, C, -1).max(axis=2)  # (N, C)
        order = np.argsort(-peak, axis=0, kind="stable")[:topk].T  # (C, topk)
        images = np.full((C, topk), -1, np.int64)
        images[:, : order.shape[1]] = order
        images[C - 2, topk - 3:] = -1  # a unit with fewer than k images
        values = np.where(images >= 0, np.take_along_axis(peak.T, np.maximum(images, 0), axis=1), 0).astype(np.float32)
        maps = np.zeros((C, topk, h, h), np.float16)
        for u in range(C):
            for j, i in enumerate(images[u]):
                if i >= 0:
                    maps[u, j] = acts[i, u]
        rows, det_units, uniq = [], {c: 0 for c in G}, {c: set() for c in G}
        for u in range(C):
            dead = not M[:, u].any()
            best = int(np.argmax(iou[u]))
            label, cat, score = ("", "", 0.0) if dead else (names[best], cats[best], float(iou[u, best]))
            det = int(score > iou_threshold)
            if det:
                det_units[cat] += 1
                uniq[cat].add(label)
            row = [u, label, cat, f"{score:.6f}", f"{thr[u]:.6f}", det]
            for g in G:
                ks = [k for k in range(K) if cats[k] == g]
                kb = ks[int(np.argmax(iou[u, ks]))]
                row += ["", "0.000000"] if dead else [names[kb], f"{iou[u, kb]:.6f}"]
            rows.append(row)
        folder = out / lname
        folder.mkdir(exist_ok=True)
        _write_csv(folder / "units.csv", ["unit", "label", "category", "iou", "threshold", "detector"]
                   + [f"{g}_{x}" for g in G for x in ("label", "iou")], rows)
        np.savez(folder / "iou.npz", iou=iou, concept_names=np.array(names), concept_categories=np.array(cats),
                 concept_numbers=ds.concepts.numbers.astype(np.int32), thresholds=thr)
        np.savez(folder / "topk.npz", images=images, values=values, maps=maps,
                 image_paths=np.array([r.image for r in ds.rows]))
        np.save(folder / "thresholds.npy", thr)
        summary_layers[lname] = {
            "shape": [C, h, h], "mask_size": [SEG, SEG], "n_units": C,
            "n_detectors": int(sum(det_units.values())),
            "unique_detectors": {g: len(uniq[g]) for g in G},
            "detector_units": det_units,
            "dead_units": int(sum(1 for r in rows if not r[1])),
        }
    summary = {
        "format_version": 1, "netdissect_version": "0.1.0", "created": "2026-11-21T22:00:00Z",
        "model": {"spec": "synthetic:tiny", "weights": "none", "normalize": "imagenet", "sha256": "0" * 64},
        "dataset": {"path": str(Path(dataset).resolve()), "name": Path(dataset).name, "n_images": N,
                    "n_used": N, "skipped": [], "categories": G, "n_concepts": K,
                    "files_digest": files_digest(ds.image_dir, [r.image for r in ds.rows])},
        "config": {"quantile": quantile, "iou_threshold": iou_threshold, "topk": topk, "batch_size": 8,
                   "cache_dtype": "float16"},
        "layers": summary_layers,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out
