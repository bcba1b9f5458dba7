"""Image strips of a unit's top images: the region above threshold kept, the rest dimmed.

    >>> from netdissect.report.strips import StripWriter
    >>> writer = StripWriter(Path("RUN/report/img"), source)           # doctest: +SKIP
    >>> strips = [writer.plan(layer, u, number, "layer4") for u, number in labels]  # doctest: +SKIP
    >>> writer.draw(strips, workers=4)   # the missing ones, in 4 processes  # doctest: +SKIP
    >>> strips[12].files()          # {'img': 'img/layer4/u00012-3fa2c1d09b7e.jpg', 'gt': ...}
    >>> writer.remove_unused()      # after the last unit: delete images of older renders

For each of the unit's top-k images the activation map from ``topk.npz`` is
upsampled bilinearly (``align_corners=False``) to the image size; pixels
strictly above the unit's threshold keep their colour, the others are
dimmed.  The tiles are laid out ``cols`` per row in one JPEG per unit.  A
transparent PNG of the same layout outlines the ground-truth mask of the
unit's label concept (shown on hover or toggle).

Caching: a file's name carries a hash of everything it is drawn from (maps,
threshold, image paths, concept, dataset, tile size, renderer version), so
an unchanged unit is not drawn again, a changed one gets a new name, and
:meth:`StripWriter.remove_unused` deletes the files no unit uses any more
(stale images of a previous run written into the same folder).

Drawing is independent per unit, so :meth:`StripWriter.draw` spreads the
missing strips over worker processes (each opens the dataset itself); the
files are the same whatever the number of workers.
"""
from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.atomic import save_image
from netdissect.report.images import ImageSource

RENDER_VERSION = 3
EMPTY_TILE = (238, 240, 243)
GAP_COLOR = (255, 255, 255)
OUTLINE = (0, 229, 255, 255)
HALO = (0, 0, 0, 150)


def _erode(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    return ~_erode(~mask)


def edge(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner boundary of a bool mask, ``width`` pixels thick (image borders do not count)."""
    inner = np.pad(mask, 1, mode="edge")
    for _ in range(width):
        inner = _erode(inner)
    return mask & ~inner[1:-1, 1:-1]


def upsample(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 (H, W): a (h, w) activation map resized bilinearly with ``align_corners=False``."""
    t = torch.from_numpy(np.asarray(amap, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _resize_bool(mask: np.ndarray, tile: int) -> np.ndarray:
    if mask.shape == (tile, tile):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((tile, tile), Image.BILINEAR)
    return np.asarray(im) > 127


def highlight_tile(image: np.ndarray | None, amap: np.ndarray, threshold: float, tile: int) -> np.ndarray:
    """uint8 (tile, tile, 3): the image with the above-threshold region kept, the rest dimmed.

    Without an image (dataset gone) the map itself is drawn in grey, the region in amber.
    """
    if image is not None:
        h, w = image.shape[:2]
        region = upsample(amap, (h, w)) > threshold
        img = image.astype(np.float32)
        dim = img * 0.28 + 14.0
        out = np.where(region[..., None], img, dim).astype(np.uint8)
        if (h, w) != (tile, tile):
            out = np.asarray(Image.fromarray(out).resize((tile, tile), Image.LANCZOS))
        region = _resize_bool(region, tile)
    else:
        up = upsample(amap, (tile, tile))
        lo, hi = float(up.min()), float(up.max())
        norm = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
        grey = (48 + 120 * norm)[..., None].repeat(3, axis=2)
        region = up > threshold
        amber = np.array([255, 176, 32], np.float32)
        out = np.where(region[..., None], 0.45 * grey + 0.55 * amber, grey).astype(np.uint8)
    out = out.copy()
    line = edge(region, 1)
    out[line] = (0.3 * out[line] + 0.7 * 255).astype(np.uint8)
    return out


def outline_tile(mask: np.ndarray, tile: int) -> np.ndarray:
    """uint8 (tile, tile, 4): the mask's outline in cyan on a dark halo, transparent elsewhere."""
    m = _resize_bool(mask, tile)
    line = edge(m, 2)
    rgba = np.zeros((tile, tile, 4), np.uint8)
    if m.all():  # an image-level concept (scene, texture) covers the whole image: frame it
        line = edge(np.ones_like(m), 3)
    halo = _dilate(line) & ~line
    rgba[halo] = HALO
    rgba[line] = OUTLINE
    return rgba


def layout(k: int, cols: int) -> tuple[int, int]:
    """(columns, rows) of the grid a unit's k tiles are laid out in."""
    c = max(1, min(k, cols))
    return c, max(1, math.ceil(k / c))


@dataclass
class Strip:
    """One unit's strip: its files, and what drawing it needs when they do not exist yet."""

    img: Path
    gt: Path
    none: Path
    rel_dir: str
    image_paths: list  # the top images' paths (None for an empty slot)
    maps: np.ndarray  # float16 (k, h, w)
    threshold: float
    concept_number: int
    pending: bool = field(default=True)

    def files(self) -> dict:
        """``{'img': rel_path, 'gt': rel_path or None}`` (relative to the report), once drawn."""
        if self.pending:
            raise RuntimeError(f"{self.img.name} is not drawn yet: call StripWriter.draw first")
        gt = f"{self.rel_dir}/{self.gt.name}" if self.gt.exists() else None
        return {"img": f"{self.rel_dir}/{self.img.name}", "gt": gt}


@dataclass(frozen=True)
class _Style:
    tile: int
    cols: int
    gap: int
    quality: int

    def size(self, k: int) -> tuple[int, int]:
        c, r = layout(k, self.cols)
        return c * self.tile + (c - 1) * self.gap, r * self.tile + (r - 1) * self.gap


def _draw(strip: Strip, style: _Style, source: ImageSource) -> None:
    """Draw one strip's JPEG and its outline PNG (or the marker that it has no outline)."""
    k = len(strip.image_paths)
    w, h = style.size(k)
    canvas = Image.new("RGB", (w, h), GAP_COLOR)
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    any_outline = False
    for j, path in enumerate(strip.image_paths):
        c, r = j % style.cols, j // style.cols
        xy = (c * (style.tile + style.gap), r * (style.tile + style.gap))
        if path is None:
            canvas.paste(Image.new("RGB", (style.tile, style.tile), EMPTY_TILE), xy)
            continue
        amap = strip.maps[j].astype(np.float32)
        tile = highlight_tile(source.image(path), amap, strip.threshold, style.tile)
        canvas.paste(Image.fromarray(tile), xy)
        mask = source.concept_mask(path, strip.concept_number) if strip.concept_number > 0 else None
        if mask is not None:
            overlay.paste(Image.fromarray(outline_tile(mask, style.tile), "RGBA"), xy)
            any_outline = True
    save_image(strip.img, canvas, quality=style.quality, optimize=True)
    if any_outline:
        save_image(strip.gt, overlay, compress_level=6)
    else:
        strip.none.parent.mkdir(parents=True, exist_ok=True)
        strip.none.touch()


_WORKER: dict = {}  # in a drawing process: its own ImageSource and style


def _worker_init(root, style: _Style) -> None:
    torch.set_num_threads(1)
    _WORKER["source"], _WORKER["style"] = ImageSource(root), style


def _worker_draw(strip: Strip) -> list[str]:
    """Draw in a worker process; returns the warnings this strip added to the worker's source."""
    source = _WORKER["source"]
    before = len(source.warnings)
    _draw(strip, _WORKER["style"], source)
    return source.warnings[before:]


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class StripWriter:
    """Write (or reuse) one strip per unit under ``img_dir``; see the module docstring."""

    def __init__(self, img_dir: Path, source: ImageSource, tile: int = 112, cols: int = 5,
                 gap: int = 2, quality: int = 86):
        self.img_dir = Path(img_dir)
        self.source = source
        self.tile, self.cols, self.gap, self.quality = tile, cols, gap, quality
        self.style = _Style(tile, cols, gap, quality)
        self.used: set[Path] = set()
        self.rendered = 0
        self.reused = 0

    def size(self, k: int) -> tuple[int, int]:
        """(width, height) in pixels of a strip of k images."""
        return self.style.size(k)

    def _key(self, layer, unit: int, concept_number: int) -> str:
        h = hashlib.sha256()
        h.update(repr((RENDER_VERSION, self.tile, self.cols, self.gap, self.quality,
                       self.source.identity(), float(layer.thresholds[unit]), int(concept_number))).encode())
        for i in layer.top_images[unit]:
            h.update((layer.image_paths[i] if i >= 0 else "-").encode() + b"\0")
        h.update(np.ascontiguousarray(layer.top_maps[unit]).tobytes())
        return h.hexdigest()[:12]

    def plan(self, layer, unit: int, concept_number: int, folder: str) -> Strip:
        """The strip of one unit: reused when its files exist, else drawn by :meth:`draw`."""
        key = self._key(layer, unit, concept_number)
        stem = self.img_dir / folder / f"u{unit:05d}-{key}"
        img, gt, none = stem.with_suffix(".jpg"), stem.with_name(stem.name + "-gt.png"), \
            stem.with_name(stem.name + "-nogt")
        paths = [layer.image_paths[i] if i >= 0 else None for i in layer.top_images[unit]]
        strip = Strip(img, gt, none, f"{self.img_dir.name}/{folder}", paths, layer.top_maps[unit],
                      float(layer.thresholds[unit]), int(concept_number))
        if img.exists() and (gt.exists() or none.exists()):
            strip.pending = False
            self.reused += 1
        self.used.update((img, gt, none))  # remove_unused keeps whichever of gt/none exists
        return strip

    def draw(self, strips, workers: int | None = None, progress: bool = False) -> None:
        """Draw the strips of ``strips`` that are not on disk yet.

        ``workers``: processes to draw in (None: one per core, at most 8; 0 or 1: this process).
        A pool is used only for more than 16 strips, where it pays for its start-up.
        """
        todo = [s for s in strips if s.pending]
        if not todo:
            return
        workers = default_workers() if workers is None else workers
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="report: drawing strips", unit="strip", file=sys.stderr)
        if workers > 1 and len(todo) > 16:
            ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
            root = self.source.root if self.source.available else None
            with ctx.Pool(min(workers, len(todo)), _worker_init, (root, self.style)) as pool:
                for warnings in pool.imap(_worker_draw, todo, chunksize=4):
                    self.source.add_warnings(warnings)
                    if bar is not None:
                        bar.update()
        else:
            for s in todo:
                _draw(s, self.style, self.source)
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
        for s in todo:
            s.pending = False
        self.rendered += len(todo)

    def unit(self, layer, unit: int, concept_number: int, folder: str) -> dict:
        """Files for one unit, drawn now if needed: ``{'img': rel_path, 'gt': rel_path or None}``."""
        strip = self.plan(layer, unit, concept_number, folder)
        self.draw([strip], workers=0)
        return strip.files()

    def remove_unused(self) -> int:
        """Delete files under ``img_dir`` that no unit of this render uses; returns how many."""
        removed = 0
        if not self.img_dir.is_dir():
            return 0
        for p in sorted(self.img_dir.rglob("*"), reverse=True):
            if p.is_file() and p not in self.used:
                p.unlink()
                removed += 1
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        return removed
