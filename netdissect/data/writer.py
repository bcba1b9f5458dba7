"""Write a concept dataset in the Broden format (what :class:`Broden` reads).

    >>> from netdissect.data.writer import BrodenWriter
    >>> from netdissect.data.synth import generate, CATALOGUE
    >>> with BrodenWriter("out/world", CATALOGUE.lists, CATALOGUE.numbers) as w:
    ...     for s in generate(3, seed=2017, size=32):
    ...         name = w.add(s.image, s.masks, s.labels, split="train")   # the image's file name
    >>> sorted(p.name for p in Path("out/world").glob("*.csv"))
    ['c_color.csv', 'c_material.csv', 'c_object.csv', 'c_part.csv', 'c_scene.csv', 'c_texture.csv', 'category.csv', 'index.csv', 'label.csv']
    >>> from netdissect.data import Broden
    >>> len(Broden("out/world")), len(list(Path("out/world/images").glob("*.jpg")))
    (3, 3)

The layout follows ``broden-format.md``: one ``index.csv`` row per image
(``image,split,ih,iw,sh,sw`` and one column per category), pixel
categories as mask PNGs whose label is ``R + 256 * G`` (the global label
number), image-level categories as numbers joined by ``;``.  ``label.csv``
lists every label with its categories and counts (``material(36);object(3)``),
``c_<category>.csv`` the per-category code, frequency and coverage, and
``category.csv`` each category's number range, label count and image count.

The dataset is written into a temporary folder beside ``root`` and renamed
to ``root`` only when :meth:`close` (or the ``with`` block) ends without
error, so a reader never sees half a dataset.  The writer also leaves a
marker file, ``.netdissect-writer.json``, in the dataset: ``overwrite``
replaces only a folder holding that marker (a dataset this writer made),
never any other folder.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from netdissect.errors import DatasetError

IMAGE_LEVEL_DEFAULT = ("scene", "texture")
MAX_LABEL = 256 * 256 - 1
MARKER = ".netdissect-writer.json"  # in every dataset this writer made; overwrite needs it


def _check_replaceable(root: Path) -> None:
    """Refuse to replace ``root`` unless it is a dataset this writer made."""
    if not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder; refusing to replace it")
    if not (root / MARKER).is_file():
        raise DatasetError(f"{root}: exists and was not written by netdissect (no {MARKER} in it); "
                           "overwrite only replaces a dataset netdissect wrote: remove the folder "
                           "yourself or choose another")


def encode_mask(plane: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 3) RGB image whose pixel label is R + 256 * G."""
    p = np.asarray(plane, dtype=np.int64)
    out = np.zeros(p.shape + (3,), np.uint8)
    out[..., 0] = p % 256
    out[..., 1] = p // 256
    return out


class BrodenWriter:
    """Accumulate images and labels; write a Broden-format dataset at ``root``.

    Parameters
    ----------
    root : folder to create (must not exist unless ``overwrite``).
    categories : category -> list of label names, in the order of category.csv.
    numbers : label name -> global label number (>= 1); a name in several
        categories has one number in all of them.
    image_level : the categories labelled per image (the rest are per pixel).
    image_format : ``"jpg"`` or ``"png"`` for the images (masks are always PNG).
    overwrite : replace an existing ``root`` (the old one is removed only after
        the new one is complete) -- only a dataset this writer made (holding
        :data:`MARKER`); any other folder or file is refused.
    """

    def __init__(self, root: str | os.PathLike, categories: dict[str, list[str]], numbers: dict[str, int],
                 image_level=IMAGE_LEVEL_DEFAULT, image_format: str = "jpg", overwrite: bool = False,
                 jpeg_quality: int = 95, meta: dict | None = None):
        self.meta = dict(meta or {})  # recorded in the marker (e.g. the synthetic world's version)
        if not str(root).strip() or Path(root).name in ("", ".", ".."):
            raise DatasetError(f"the dataset folder must be a named folder to create, got {str(root)!r}")
        self.root = Path(root)
        if image_format not in ("jpg", "png"):
            raise DatasetError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
        if self.root.exists() and not overwrite:
            raise DatasetError(f"{self.root}: already exists (pass overwrite=True / --overwrite to replace it)")
        if self.root.exists():
            _check_replaceable(self.root)
        self.categories = list(categories)
        self.names = {c: list(v) for c, v in categories.items()}
        self.numbers = dict(numbers)
        self.image_level = set(image_level)
        for c, names in self.names.items():
            for n in names:
                num = self.numbers.get(n)
                if num is None or not 1 <= int(num) <= MAX_LABEL:
                    raise DatasetError(f"label {n!r} of category {c!r} needs a global number in 1..{MAX_LABEL}, "
                                       f"got {num!r}")
        self.valid = {c: {self.numbers[n] for n in names} for c, names in self.names.items()}
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.overwrite = overwrite
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", suffix=".partial", dir=self.root.parent))
        (self.tmp / "images").mkdir()
        self.rows: list[dict[str, str]] = []
        # per (category, number): images holding it, summed pixel fraction
        self.freq: dict[tuple[str, int], int] = defaultdict(int)
        self.cover: dict[tuple[str, int], float] = defaultdict(float)
        self.cat_freq: dict[str, int] = defaultdict(int)
        self.closed = False

    # ------------------------------------------------------------------ rows
    def add(self, image: np.ndarray, masks: dict[str, list[np.ndarray]] | None = None,
            labels: dict[str, list[int]] | None = None, split: str = "train", name: str | None = None) -> str:
        """Add one image with its mask planes (pixel categories) and image-level labels.

        Returns the image's path relative to ``images/``.
        """
        if self.closed:
            raise DatasetError(f"{self.root}: writer already closed")
        masks, labels = masks or {}, labels or {}
        image = np.asarray(image)
        i = len(self.rows)
        stem = name or f"{i:06d}"
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DatasetError(f"image {stem}: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
        ih, iw = image.shape[:2]
        shapes = {np.asarray(p).shape for planes in masks.values() for p in planes}
        if len(shapes) > 1:
            raise DatasetError(f"image {stem}: mask planes of different sizes {sorted(shapes)}")
        sh, sw = shapes.pop() if shapes else ((ih + 1) // 2, (iw + 1) // 2)
        rel = f"{stem}.{self.image_format}"
        self._save_image(image, self.tmp / "images" / rel)
        row = {"image": rel, "split": split, "ih": str(ih), "iw": str(iw), "sh": str(sh), "sw": str(sw)}
        for c in list(masks) + list(labels):
            if c not in self.names:
                raise DatasetError(f"image {stem}: unknown category {c!r} (known: {', '.join(self.categories)})")
        for c, planes in masks.items():
            if c in self.image_level:
                raise DatasetError(f"image {stem}: {c!r} is an image-level category; give it in labels, not masks")
            paths, seen = [], defaultdict(float)
            for k, plane in enumerate(planes, start=1):
                plane = np.asarray(plane)
                present = np.unique(plane)
                present = present[present != 0]
                bad = [int(n) for n in present if int(n) not in self.valid[c]]
                if bad:
                    raise DatasetError(f"image {stem}: {c} plane {k} holds label(s) {bad[:5]} "
                                       f"that are not in category {c!r}")
                p = f"{stem}_{c}" + (f"_{k}" if len(planes) > 1 else "") + ".png"
                Image.fromarray(encode_mask(plane)).save(self.tmp / "images" / p, compress_level=1)
                paths.append(p)
                if present.size:
                    counts = np.bincount(plane.ravel().astype(np.int64))
                    for n in present:
                        seen[int(n)] += counts[n] / plane.size
            row[c] = ";".join(paths)
            self._count(c, seen)
        for c, nums in labels.items():
            if c not in self.image_level:
                raise DatasetError(f"image {stem}: {c!r} is a pixel category; give it in masks, not labels")
            nums = [int(n) for n in nums]
            bad = [n for n in nums if n not in self.valid[c]]
            if bad:
                raise DatasetError(f"image {stem}: label(s) {bad} are not in category {c!r}")
            row[c] = ";".join(str(n) for n in nums)
            self._count(c, {n: 1.0 for n in nums})
        self.rows.append(row)
        return rel

    def _count(self, c: str, seen: dict[int, float]) -> None:
        if seen:
            self.cat_freq[c] += 1
        for n, frac in seen.items():
            self.freq[(c, n)] += 1
            self.cover[(c, n)] += float(frac)

    def _save_image(self, image: np.ndarray, path: Path) -> None:
        im = Image.fromarray(image)
        if self.image_format == "jpg":
            im.save(path, quality=self.jpeg_quality)
        else:
            im.save(path, compress_level=1)

    # ------------------------------------------------------------------ finish
    def _write_csv(self, name: str, header: list[str], rows: list[list]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        (self.tmp / name).write_text(buf.getvalue(), encoding="utf-8")

    def close(self) -> Path:
        """Write the CSV files and move the finished dataset to ``root``."""
        if self.closed:
            return self.root
        if not self.rows:
            self.abort()
            raise DatasetError(f"{self.root}: no images were added; nothing written")
        cats = self.categories
        self._write_csv("index.csv", ["image", "split", "ih", "iw", "sh", "sw"] + cats,
                        [[r.get(k, "") for k in ["image", "split", "ih", "iw", "sh", "sw"] + cats] for r in self.rows])
        by_number: dict[int, list[str]] = defaultdict(list)
        name_of: dict[int, str] = {}
        for c in cats:
            for n in self.names[c]:
                by_number[self.numbers[n]].append(c)
                name_of[self.numbers[n]] = n
        label_rows = []
        for num in sorted(by_number):
            cs = by_number[num]
            label_rows.append([num, name_of[num], ";".join(f"{c}({self.freq[(c, num)]})" for c in cs),
                               max(self.freq[(c, num)] for c in cs),
                               f"{max(self.cover[(c, num)] for c in cs):.6g}", ""])
        self._write_csv("label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], label_rows)
        cat_rows = []
        for c in cats:
            nums = [self.numbers[n] for n in self.names[c]]
            cat_rows.append([c, min(nums) if nums else 0, max(nums) if nums else 0, len(nums), self.cat_freq[c]])
            self._write_csv(f"c_{c}.csv", ["code", "number", "name", "frequency", "coverage"],
                            [[code, self.numbers[n], n, self.freq[(c, self.numbers[n])],
                              f"{self.cover[(c, self.numbers[n])]:.6g}"]
                             for code, n in enumerate(self.names[c], start=1)])
        self._write_csv("category.csv", ["name", "first", "last", "count", "frequency"], cat_rows)
        (self.tmp / MARKER).write_text(json.dumps(
            {"written_by": "netdissect.data.writer.BrodenWriter", "format": "broden", "version": 1,
             "n_images": len(self.rows), "categories": cats, **({"meta": self.meta} if self.meta else {})},
            indent=1) + "\n", encoding="utf-8")
        old = None
        if self.root.exists():
            if not self.overwrite:
                self.abort()
                raise DatasetError(f"{self.root}: appeared while writing; not replaced")
            try:
                _check_replaceable(self.root)
            except DatasetError:
                self.abort()
                raise
            old = self.root.with_name(f".{self.root.name}.old-{os.getpid()}")
            os.replace(self.root, old)
        os.replace(self.tmp, self.root)
        os.chmod(self.root, 0o755)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.closed = True
        return self.root

    def abort(self) -> None:
        """Drop everything written so far (``root`` is left untouched)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.closed = True

    def __len__(self) -> int:
        return len(self.rows)

    def __enter__(self) -> "BrodenWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
