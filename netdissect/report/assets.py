"""The report's image files: thumbnails of the top images and ground-truth outlines, in sheets.

    >>> from netdissect.report.assets import AssetWriter
    >>> writer = AssetWriter(Path("RUN/report/img"), source, tile=112)   # doctest: +SKIP
    >>> plan = writer.plan_unit(layer, unit, concept_number)             # doctest: +SKIP
    >>> writer.draw(workers=2)      # the missing sheets, in 2 processes  # doctest: +SKIP
    >>> writer.resolve(plan)        # {'t': [tile ids], 'g': [outline ids]}  # doctest: +SKIP
    >>> writer.sheets()  # {'t': ['img/t-3fa2c1d09b7e.jpg', ...], 'g': [...], 'cols': 8}  # doctest: +SKIP
    >>> writer.remove_unused()  # after index.html: delete files of older renders  # doctest: +SKIP

The page draws each unit's strip itself (``templates/report.js``): for every
top image it draws the thumbnail on a canvas, upsamples the unit's
activation map (embedded in the page, from ``topk.npz``) bilinearly with
``align_corners=False`` and dims the pixels that are not strictly above the
unit's threshold.  So Python writes only what the browser cannot compute:

- ``t-HASH.jpg``: sheets of 64 ``tile`` x ``tile`` thumbnails, 8 per row, one
  per distinct top image as the model saw it (top images repeat across units:
  each is decoded once, at reduced scale where JPEG allows, and written once;
  the image source draws it, :meth:`ImageSource.thumbnail`: an image folder's
  images are resized/cropped as the run fed them);
- ``g-HASH.png``: sheets of 64 cyan outlines of a label concept's
  ground-truth mask in one image (palette PNG, transparent elsewhere), one per
  distinct (image, pixel-level concept); image-level concepts (scenes,
  textures) cover the whole image, and the page frames the tile itself; only
  for sources with the run's ground-truth masks (``source.masks``: a Broden
  dataset whose masks labelled the run, not a segmenter's labels);
- ``*.json`` beside each sheet: its cells that hold nothing (an image that
  could not be read; an image that does not hold the concept).

Writing a few dozen sheets instead of thousands of small files is what makes
the report fast on slow file systems.  Caching: a sheet's name is a hash of
what it is drawn from (the source's identity, image paths, the ``os.stat`` size and mtime of each
image and of its mask files, concept numbers, tile size, renderer version),
so rerunning the report redraws only sheets whose content changed, and
:meth:`AssetWriter.remove_unused` deletes what this render does not use.
Sheets are independent, so :meth:`AssetWriter.draw` spreads them over forked
worker processes; the files are the same byte for byte whatever the number
of workers.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from netdissect.atomic import write_with
from netdissect.errors import NetDissectError
from netdissect.report.images import ImageSource, thumbnail  # noqa: F401 - thumbnail: kept importable here
from netdissect.workers import worker_init

RENDER_VERSION = 6  # 6: formula outlines (kind "f")
SHEET = 64      # tiles per sheet
SHEET_COLS = 8
OUTLINE = (0, 229, 255)
FORMULA_OUTLINE = (255, 40, 200)  # `netdissect explain`'s formula: magenta, apart from the label's cyan
HALO = (0, 0, 0)
HALO_ALPHA = 150
QUALITY = 85


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


def _resize_bool(mask: np.ndarray, tile: int) -> np.ndarray:
    if mask.shape == (tile, tile):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((tile, tile), Image.BILINEAR)
    return np.asarray(im) > 127


def formula_mask(source: ImageSource, path: str, terms: tuple) -> np.ndarray | None:
    """bool mask of a formula of concepts in one image: ``terms`` ((op, number), ...), the first op
    ``""``, then "AND", "OR", "AND NOT" applied left to right (netdissect.explain.Formula) on the
    concepts' ground-truth masks (a concept the image lacks is empty; an image-level one covers it).
    None when the formula is empty there or no mask can be read."""
    masks = [source.concept_mask(path, int(n)) for _, n in terms]
    shape = next((m.shape for m in masks if m is not None), None)
    if shape is None:
        return None
    out = None
    for (op, _), m in zip(terms, masks):
        m = np.zeros(shape, bool) if m is None else (m if m.shape == shape else _resize_to(m, shape))
        if out is None:
            out = m.copy()
        elif op == "AND":
            out &= m
        elif op == "OR":
            out |= m
        else:
            out &= ~m
    return out if out.any() else None


def _resize_to(mask: np.ndarray, shape: tuple) -> np.ndarray:
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(im) > 127


def outline_image(mask: np.ndarray | None, tile: int, color=OUTLINE, inset: int = 0) -> Image.Image:
    """Palette PNG image (tile x tile): the mask's outline in cyan (or ``color``) on a dark halo,
    transparent elsewhere.  ``inset``: draw the line that many pixels inside the mask's edge (the
    formula's outline, so that it stays visible beside the label's where the two masks agree).

    ``mask=None``: the frame of an image-level concept (the whole image).
    """
    m = np.ones((tile, tile), bool) if mask is None else _resize_bool(mask, tile)
    if m.all():  # the whole image: a frame 3 px wide (edge() does not count the image border)
        line = np.zeros_like(m)
        line[inset:tile - inset, inset:tile - inset] = True
        line[3 + inset:tile - 3 - inset, 3 + inset:tile - 3 - inset] = False
    else:
        inner = m
        for _ in range(inset):
            inner = _erode(inner)
        line = edge(inner if inner.any() else m, 2)
    halo = _dilate(line) & ~line
    idx = np.zeros((tile, tile), np.uint8)
    idx[halo] = 1
    idx[line] = 2
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, *HALO, *color])
    im.info["transparency"] = bytes([0, HALO_ALPHA, 255])
    return im


def _save(path: Path, image: Image.Image, **params) -> None:
    """Atomic (temp file + rename) without fsync: these files are a cache, named by their content."""
    fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
    write_with(path, lambda tmp: image.save(tmp, format=fmt, **params))


def _sheet_image(kind: str, n: int, tile: int) -> Image.Image:
    rows = -(-n // SHEET_COLS)
    if kind == "t":
        return Image.new("RGB", (SHEET_COLS * tile, rows * tile), (238, 240, 243))
    im = Image.new("P", (SHEET_COLS * tile, rows * tile), 0)
    im.putpalette([0, 0, 0, *HALO, *(FORMULA_OUTLINE if kind == "f" else OUTLINE)])
    return im


def _draw_sheet(job: tuple, source: ImageSource, tile: int) -> list[str]:
    """Draw one sheet and its sidecar; returns the warnings it added to ``source``."""
    kind, file, side, items = job
    before = len(source.warnings)
    sheet = _sheet_image(kind, len(items), tile)
    empty = []
    for cell, item in enumerate(items):
        xy = ((cell % SHEET_COLS) * tile, (cell // SHEET_COLS) * tile)
        if kind == "t":
            im = source.thumbnail(item, tile)  # the image as the model saw it; None: warned
            if im is None:
                empty.append(cell)
                continue
            sheet.paste(im, xy)
        elif kind == "f":
            mask = formula_mask(source, *item)
            if mask is None:
                empty.append(cell)
                continue
            sheet.paste(outline_image(mask, tile, FORMULA_OUTLINE, inset=3), xy)
        else:
            mask = source.concept_mask(*item)
            if mask is None:
                empty.append(cell)
                continue
            sheet.paste(outline_image(mask, tile), xy)
    if kind == "t":
        _save(file, sheet, quality=QUALITY)
    else:
        sheet.info["transparency"] = bytes([0, HALO_ALPHA, 255])
        _save(file, sheet, compress_level=6)
    write_with(side, lambda tmp: Path(tmp).write_text(json.dumps({"empty": empty})))
    return source.warnings[before:]


_WORKER: dict = {}  # in a forked drawing process: the parent's ImageSource and tile size


def _worker_draw(job: tuple) -> list[str]:
    return _draw_sheet(job, _WORKER["source"], _WORKER["tile"])


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class AssetWriter:
    """Plan and write (or reuse) the report's image sheets under ``img_dir``; see the module docstring."""

    def __init__(self, img_dir: Path, source: ImageSource, tile: int = 112):
        self.img_dir = Path(img_dir)
        self.source = source
        self.tile = tile
        self._thumbs: set[str] = set()
        self._outlines: set[tuple[str, int]] = set()
        self._formulas: set[tuple[str, tuple]] = set()  # (path, formula terms): `netdissect explain`'s formula
        self._ids: dict = {}        # ('t', path) / ('g', path, number) / ('f', path, terms) -> tile id
        self._files: dict[str, list[str]] = {"t": [], "g": [], "f": []}
        self._jobs: list[tuple] = []
        self.used: set[str] = set()
        self.drawn = 0
        self.reused = 0

    def plan_unit(self, layer, unit: int, concept_number: int, formula: tuple | None = None) -> list:
        """What one unit's strip shows: per top image, its path (None: an empty slot), the concept and
        the unit's formula (``((op, number), ...)``, first op ``""``; None: not explained)."""
        plan = []
        for i in layer.top_images[unit]:
            if i < 0:
                plan.append(None)
                continue
            path = layer.image_paths[i]
            plan.append((path, concept_number, formula))
            if self.source.available:
                self._thumbs.add(path)
                if concept_number > 0 and self.source.masks and self.source.image_level(path, concept_number) is False:
                    self._outlines.add((path, concept_number))
                if formula and self.source.masks:
                    self._formulas.add((path, formula))
        return plan

    def _digest(self, *parts) -> str:
        return hashlib.sha256(repr((RENDER_VERSION, self.tile) + parts).encode()).hexdigest()[:16]

    def _plan_sheets(self) -> None:
        for kind, items in (("t", sorted(self._thumbs)), ("g", sorted(self._outlines)), ("f", sorted(self._formulas))):
            for s in range(0, len(items), SHEET):
                chunk = items[s: s + SHEET]
                if kind == "t":
                    stamps = [self.source.stamp(p) for p in chunk]
                else:
                    stamps = [self.source.stamp(p, masks=True) for p, _ in chunk]
                name = f"{kind}-{self._digest(kind, self.source.identity(), chunk, stamps)}"
                file = self.img_dir / f"{name}.{'jpg' if kind == 't' else 'png'}"
                side = self.img_dir / f"{name}.json"
                sheet = len(self._files[kind])
                self._files[kind].append(f"{self.img_dir.name}/{file.name}")
                self.used.update((str(file), str(side)))
                for cell, item in enumerate(chunk):
                    key = ("t", item) if kind == "t" else (kind, *item)
                    self._ids[key] = sheet * SHEET + cell
                if file.exists() and side.exists():
                    self.reused += 1
                else:
                    self._jobs.append((kind, file, side, chunk))

    def draw(self, workers: int | None = None, progress: bool = False, meanwhile=None) -> None:
        """Write the sheets that are not on disk yet.

        ``workers``: processes to draw in (None: one per core, at most 8; 0 or 1: this process).
        A pool is used only for more than 2 sheets.  ``meanwhile()``, if given, runs in this
        process while the workers draw (the report draws its charts then).
        """
        self._plan_sheets()
        jobs, self._jobs = self._jobs, []
        workers = default_workers() if workers is None else workers
        pooled = workers > 1 and len(jobs) > 2 and "fork" in multiprocessing.get_all_start_methods()
        if jobs:
            self.img_dir.mkdir(parents=True, exist_ok=True)
        bar = None
        if progress and jobs:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(j[3]) for j in jobs), desc="report: images", unit="tile", file=sys.stderr)
        if pooled:
            _WORKER.update(source=self.source, tile=self.tile)  # inherited by the forked workers
            try:
                with multiprocessing.get_context("fork").Pool(min(workers, len(jobs)),
                                                              initializer=worker_init()) as pool:
                    pending = pool.map_async(_worker_draw, jobs, chunksize=1)
                    if meanwhile is not None:
                        meanwhile()
                    for warnings in pending.get():
                        self.source.add_warnings(warnings)
            finally:
                _WORKER.clear()
            if bar is not None:
                bar.update(bar.total)
        else:
            if meanwhile is not None:
                meanwhile()
            for job in jobs:
                _draw_sheet(job, self.source, self.tile)
                if bar is not None:
                    bar.update(len(job[3]))
        if bar is not None:
            bar.close()
        self.drawn += len(jobs)
        self._empty = set()
        for kind, files in self._files.items():
            for sheet, rel in enumerate(files):
                side = (self.img_dir.parent / rel).with_suffix(".json")
                try:
                    empty = json.loads(side.read_text())["empty"]
                except (OSError, ValueError, KeyError):
                    empty = list(range(SHEET))
                self._empty.update((kind, sheet * SHEET + c) for c in empty)

    def resolve(self, plan: list) -> dict:
        """``{'t': [...], 'g': [...]}`` for a planned unit, once drawn.

        ``t``: the thumbnail's tile id (sheet * 64 + cell); -1 an empty slot (fewer than k top images);
        -2 no image to show (dataset gone, or the image unreadable: the page draws the map alone).
        ``g``: the outline's tile id; -1 no outline (the image does not hold the concept);
        -3 an image-level concept the image holds (the page frames the whole tile).
        ``f`` (only for a unit with a formula): the formula's outline tile id; -1 none (empty there).
        """
        t, g, f = [], [], []
        for item in plan:
            if item is None:
                t.append(-1)
                g.append(-1)
                f.append(-1)
                continue
            path, number, formula = item
            j = self._ids.get(("f", path, formula), -1) if formula else -1
            f.append(-1 if j < 0 or ("f", j) in self._empty else j)
            i = self._ids.get(("t", path), -2)
            t.append(-2 if i < 0 or ("t", i) in self._empty else i)
            if number <= 0 or not self.source.available or not self.source.masks:
                g.append(-1)
            elif self.source.image_level(path, number):
                g.append(-3)
            else:
                j = self._ids.get(("g", path, number), -1)
                g.append(-1 if j < 0 or ("g", j) in self._empty else j)
        out = {"t": t, "g": g}
        if any(item is not None and item[2] for item in plan):
            out["f"] = f
        return out

    def sheets(self) -> dict:
        """Sheet files (relative to the report folder) by kind, and the sheets' tile geometry."""
        return {"t": list(self._files["t"]), "g": list(self._files["g"]), "f": list(self._files["f"]), "per": SHEET,
                "cols": SHEET_COLS}

    def remove_unused(self) -> int:
        """Delete files under ``img_dir`` that no unit of this render uses; returns how many."""
        removed = 0
        if not self.img_dir.is_dir():
            return 0
        for p in sorted(self.img_dir.rglob("*"), reverse=True):
            if p.is_file() and str(p) not in self.used:
                p.unlink()
                removed += 1
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        return removed


def check_out_dir(out: Path, what: str = "--out") -> None:
    """Refuse an output folder that is a file, or lies under a file, in one line naming it."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == out else f"lies under the file {p}"
                raise NetDissectError(f"{what} {out}: {where}, not a folder; choose a folder path "
                                      "(a new or existing folder)")
            return
