"""Dataset images and ground-truth masks for the report, or a note why there are none.

    >>> from netdissect.report.images import ImageSource
    >>> src = ImageSource("/data/broden1_224")            # doctest: +SKIP
    >>> src.available, src.problem                        # doctest: +SKIP
    >>> rgb = src.image("dog/0001.jpg")                   # uint8 (H, W, 3) or None

Images are looked up by their path relative to the dataset's ``images/``
folder (``topk.npz``'s ``image_paths``), so the report does not depend on
the split or limit the run opened the dataset with.  When the dataset is
gone (moved, deleted, unreadable), ``available`` is False, ``problem`` says
why, and the report renders activation maps without photos or outlines.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

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

    def _warn(self, message: str) -> None:
        if len(self.warnings) < 20:
            self.warnings.append(message)

    def add_warnings(self, messages) -> None:
        """Warnings gathered elsewhere (by the processes that drew strips)."""
        for m in messages:
            if m not in self.warnings:
                self._warn(m)

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

    def concept_mask(self, path: str, number: int) -> np.ndarray | None:
        """bool (sh, sw) where the image holds label ``number``; None if it holds none of it."""
        if not self.available or number <= 0:
            return None

        sample = self._labels.get_or(path, lambda: self._read(path, self.dataset.load_labels))
        if sample is None:
            return None
        if number in sample.image_labels:
            return np.ones(sample.planes.shape[1:], dtype=bool)
        mask = (sample.planes == number).any(axis=0) if len(sample.planes) else None
        return mask if mask is not None and mask.any() else None
