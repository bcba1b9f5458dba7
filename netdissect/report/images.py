"""Dataset images and ground-truth masks for the report, or a note why there are none.

    >>> from netdissect.report.images import ImageSource
    >>> src = ImageSource("/data/broden1_224")            # doctest: +SKIP
    >>> src.available, src.problem                        # doctest: +SKIP
    >>> rgb = src.image("dog/0001.jpg")  # uint8 (H, W, 3) or None  # doctest: +SKIP

Images are looked up by their path relative to the dataset's ``images/``
folder (``topk.npz``'s ``image_paths``), so the report does not depend on
the split or limit the run opened the dataset with.  When the dataset is
gone (moved, deleted, unreadable), ``available`` is False, ``problem`` says
why, and the report renders activation maps without photos or outlines.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from netdissect.errors import NetDissectError


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class ImageSource:
    """Read images and concept masks by image path; degrade gracefully without a dataset."""

    def __init__(self, root: str | Path | None, cache_size: int = 256):
        self.root = Path(root) if root else None
        self.available = False
        self.problem: str | None = None
        self.warnings: list[str] = []
        self._rows: dict[str, int] = {}
        self._images = _LRU(cache_size)
        self._labels = _LRU(cache_size)
        self._image_level_numbers: set | None = None
        self._num_cats: dict | None = None
        if self.root is None:
            self.problem = "summary.json names no dataset path"
            return
        try:
            from netdissect.data import Broden

            self.dataset = Broden(self.root)
        except NetDissectError as exc:
            self.problem = f"dataset not readable: {exc}"
            return
        self._rows = {row.image: i for i, row in enumerate(self.dataset.rows)}
        self.available = True

    def identity(self) -> str:
        """Part of every image's cache key: a different (or vanished) dataset re-renders."""
        return f"{self.root}|{int(self.available)}"

    def warn(self, message: str) -> None:
        """Note a problem with one image (shown on the page; at most 20 are kept)."""
        if len(self.warnings) < 20 and message not in self.warnings:
            self.warnings.append(message)

    _warn = warn

    def image_file(self, path: str) -> Path:
        """The file of image ``path`` (relative to the dataset's ``images/`` folder)."""
        return self.dataset.image_dir / path

    def stamp(self, path: str, masks: bool = False) -> tuple | None:
        """``os.stat`` size and mtime of the image (and its mask files): part of cache keys.

        None when index.csv has no row for the image (warned).
        """
        i = self.row(path)
        if i is None:
            return None
        files = [self.image_file(path)]
        if masks:
            files += [self.dataset.image_dir / rel for rels in self.dataset.rows[i].masks.values() for rel in rels]
        out = []
        for f in files:
            try:
                st = os.stat(f)
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def image_level(self, path: str, number: int) -> bool | None:
        """True: the image holds image-level concept ``number`` (scene, texture); False: it may hold
        it in a mask plane (decode to know); None: it cannot hold it."""
        i = self.row(path)
        if i is None:
            return None
        row = self.dataset.rows[i]
        if any(number in nums for nums in row.labels.values()):
            return True
        if self._image_level_numbers is None:
            self._image_level_numbers = {n for r in self.dataset.rows for nums in r.labels.values() for n in nums}
        if number in self._image_level_numbers or not row.masks:
            return None
        return False

    def add_warnings(self, messages) -> None:
        """Warnings gathered elsewhere (by the processes that drew strips)."""
        for m in messages:
            self.warn(m)

    def row(self, path: str) -> int | None:
        i = self._rows.get(path)
        if i is None and self.available:
            self._warn(f"{self.root / 'index.csv'}: no row for image {path!r}")
        return i

    def _read(self, path: str, loader):
        """``loader(row)`` for the row of image ``path``; None (and a warning) when it fails."""
        i = self.row(path)
        if i is None:
            return None
        try:
            return loader(i)
        except NetDissectError as exc:
            self._warn(str(exc))
            return None

    def image(self, path: str) -> np.ndarray | None:
        """uint8 (H, W, 3) RGB of an image, or None when it cannot be read (noted in warnings)."""
        if not self.available:
            return None
        return self._images.get_or(path, lambda: self._read(path, self.dataset.load_image))

    def _number_categories(self) -> dict[int, set[str]]:
        """Label number -> every category label.csv lists it in (not only the primary one)."""
        if self._num_cats is None:
            from netdissect.data.broden import _CAT_RE, read_csv

            self._num_cats = {}
            for r in read_csv(self.root / "label.csv"):
                try:
                    n = int(r.get("number") or 0)
                except ValueError:
                    continue
                cats = set()
                for part in (r.get("category") or "").split(";"):
                    m = _CAT_RE.match(part) if part.strip() else None
                    if m:
                        cats.add(m.group(1))
                self._num_cats[n] = cats
        return self._num_cats

    def concept_mask(self, path: str, number: int) -> np.ndarray | None:
        """bool (sh, sw) where the image holds label ``number``; None if it holds none of it.

        Only the mask planes of the concept's categories are decoded (each at most once per image).
        """
        if not self.available or number <= 0:
            return None
        i = self.row(path)
        if i is None:
            return None
        row = self.dataset.rows[i]
        if any(number in nums for nums in row.labels.values()):
            return np.ones((row.sh, row.sw), dtype=bool)
        cats = self._number_categories().get(number)
        rels = [rel for c, rs in row.masks.items() if cats is None or c in cats for rel in rs]
        mask = None
        lo, hi = number % 256, number // 256
        for rel in rels:
            plane = self._labels.get_or((path, rel), lambda: self._read_plane(i, rel))
            if plane is None:
                continue
            hit = (plane[..., 0] == lo) & (plane[..., 1] == hi)  # Broden: number = R + 256 * G
            mask = hit if mask is None else (mask | hit)
        return mask if mask is not None and mask.any() else None

    def _read_plane(self, i: int, rel: str):
        """uint8 (sh, sw, 3) RGB of a mask file, undecoded (cheaper than label numbers); None: warned."""
        path = self.dataset.image_dir / rel
        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        except FileNotFoundError:
            self.warn(f"{self.dataset.where(i)}: mask file not found: {path}")
            return None
        except (OSError, SyntaxError, ValueError) as exc:
            self.warn(f"{self.dataset.where(i)}: corrupt mask {path}: {exc}")
            return None
        return arr
