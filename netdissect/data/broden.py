"""Read a dataset in the Broden format (``index.csv``, ``label.csv``, ``c_<category>.csv``).

    >>> from netdissect.data import Broden
    >>> ds = Broden("path/to/broden1_224")                 # doctest: +SKIP
    >>> ds.concepts.names[:3], len(ds)                      # doctest: +SKIP
    >>> sample = ds.load_labels(0)                          # planes, image labels, categories held

The layout is described in ``../shared/reference/broden-format.md``.  The
reader survives BOM and CRLF in the CSVs, column orders, number gaps in
``label.csv``, labels in several categories (the primary one is the
category whose ``c_<category>.csv`` gives the largest coverage), several
mask planes per category, labels >= 256 (``R + 256 * G``, decoded as int32),
and image-level categories (scene, texture).  Every problem in a file names
the file and the row.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from netdissect.data.concepts import ConceptSet
from netdissect.errors import DatasetError

FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
_CAT_RE = re.compile(r"^\s*([^()]+?)\s*(?:\((\d+)\))?\s*$")


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts, tolerant of a UTF-8 BOM and CRLF line ends."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [
                {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
            ]
            if reader.fieldnames is None:
                raise DatasetError(f"{path}: empty CSV file (no header row)")
            return rows
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV ({exc})") from None


def _int(value: str, path: Path, row: int, column: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DatasetError(f"{path} row {row}: column {column!r} is not a number: {value!r}") from None


@dataclass
class Row:
    """One image of the dataset (a row of index.csv)."""

    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    masks: dict[str, list[str]] = field(default_factory=dict)   # pixel category -> png paths
    labels: dict[str, list[int]] = field(default_factory=dict)  # image-level category -> numbers


@dataclass
class LabelSample:
    """What one image contributes to IoU counts."""

    index: int
    planes: np.ndarray        # int32 (P, sh, sw) global label numbers, 0 = none
    image_labels: np.ndarray  # int32 (L,) image-level global label numbers
    has_category: np.ndarray  # bool (G,) the image holds a label of that category
    error: str | None = None  # set (and the rest empty) when skip_bad skipped this image


class Broden:
    """A Broden-format concept dataset on disk.

    Parameters
    ----------
    root : path to the dataset folder (holding ``index.csv`` and ``images/``).
    split : keep only rows of this split (``"train"``/``"val"``), or None for all.
    limit : keep only the first ``limit`` rows (after the split filter).
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, limit: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        self.index_path = self.root / "index.csv"
        self.image_dir = self.root / "images"
        self._read_catalogue()
        self._read_index(split, limit)

    # ------------------------------------------------------------------ catalogue
    def _read_catalogue(self) -> None:
        label_path = self.root / "label.csv"
        label_rows = read_csv(label_path)
        cat_path = self.root / "category.csv"
        if cat_path.exists():
            categories = [r["name"] for r in read_csv(cat_path) if r.get("name")]
        else:
            categories = []
        numbers, names, cat_lists = [], [], []
        seen = set()
        for i, r in enumerate(label_rows, start=2):
            if "number" not in r or "name" not in r:
                raise DatasetError(f"{label_path}: needs columns 'number' and 'name'")
            n = _int(r["number"], label_path, i, "number")
            if n == 0:
                continue  # "no label"
            if n < 0 or n in seen:
                raise DatasetError(f"{label_path} row {i}: bad or repeated label number {n}")
            seen.add(n)
            cats = {}
            for part in (r.get("category") or "").split(";"):
                if not part.strip():
                    continue
                m = _CAT_RE.match(part)
                if not m:
                    raise DatasetError(f"{label_path} row {i}: cannot parse category {part!r}")
                cats[m.group(1)] = int(m.group(2) or 0)
            numbers.append(n)
            names.append(r["name"])
            cat_lists.append(cats)
        for cats in cat_lists:
            for c in cats:
                if c not in categories:
                    categories.append(c)
        # Coverage per (category, number) from c_<category>.csv decides the primary category.
        coverage: dict[tuple[str, int], float] = {}
        for c in categories:
            p = self.root / f"c_{c}.csv"
            if not p.exists():
                continue
            for i, r in enumerate(read_csv(p), start=2):
                if not r.get("number"):
                    continue
                num = _int(r["number"], p, i, "number")
                try:
                    coverage[(c, num)] = float(r.get("coverage") or 0.0)
                except ValueError:
                    raise DatasetError(f"{p} row {i}: coverage is not a number") from None
        primary = []
        for n, name, cats in zip(numbers, names, cat_lists):
            if not cats:
                raise DatasetError(f"{label_path}: label {n} ({name!r}) has no category")
            # largest coverage; ties and missing c_ files fall back to the count in label.csv,
            # then to the category order of category.csv.
            best = max(
                cats,
                key=lambda c: (coverage.get((c, n), -1.0), cats[c], -categories.index(c)),
            )
            primary.append(categories.index(best))
        self.concepts = ConceptSet(
            numbers=np.asarray(numbers, dtype=np.int32),
            names=names,
            categories=categories,
            primary=np.asarray(primary, dtype=np.int32),
        )

    # ------------------------------------------------------------------ index
    def _read_index(self, split: str | None, limit: int | None) -> None:
        rows = read_csv(self.index_path)
        if not rows:
            raise DatasetError(f"{self.index_path}: no rows")
        missing = [c for c in FIXED_COLUMNS if c not in rows[0]]
        if missing:
            raise DatasetError(f"{self.index_path}: missing column(s) {', '.join(missing)}")
        cat_columns = [c for c in rows[0] if c not in FIXED_COLUMNS]
        for c in cat_columns:
            if c not in self.concepts.categories:
                raise DatasetError(
                    f"{self.index_path}: column {c!r} is not a category of label.csv/category.csv"
                )
        self.rows: list[Row] = []
        for i, r in enumerate(rows, start=2):
            if split is not None and r["split"] != split:
                continue
            row = Row(
                image=r["image"], split=r["split"],
                ih=_int(r["ih"], self.index_path, i, "ih"), iw=_int(r["iw"], self.index_path, i, "iw"),
                sh=_int(r["sh"], self.index_path, i, "sh"), sw=_int(r["sw"], self.index_path, i, "sw"),
            )
            if not row.image:
                raise DatasetError(f"{self.index_path} row {i}: empty image path")
            for c in cat_columns:
                cell = r.get(c, "")
                if not cell:
                    continue
                for tok in cell.split(";"):
                    tok = tok.strip()
                    if not tok:
                        continue
                    if tok.isdigit():
                        row.labels.setdefault(c, []).append(int(tok))
                    else:
                        row.masks.setdefault(c, []).append(tok)
            row.csv_row = i  # type: ignore[attr-defined]
            self.rows.append(row)
            if limit is not None and len(self.rows) >= limit:
                break
        if not self.rows:
            raise DatasetError(f"{self.index_path}: no rows" + (f" in split {split!r}" if split else ""))

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def name(self) -> str:
        return self.root.name

    def identity(self) -> dict:
        """A small fingerprint of the dataset (for summary.json and resume checks)."""
        h = hashlib.sha256()
        for r in self.rows:
            h.update(r.image.encode())
            h.update(b"\0")
        return {"path": str(self.root.resolve()), "name": self.name, "n_images": len(self.rows),
                "rows_sha256": h.hexdigest()[:16]}

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.rows[i].image

    def where(self, i: int) -> str:
        row = self.rows[i]
        return f"{self.index_path} row {getattr(row, 'csv_row', '?')} ({row.image})"

    def load_image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB image of row i."""
        path = self.image_path(i)
        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise DatasetError(f"{self.where(i)}: image file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DatasetError(f"{self.where(i)}: corrupt image {path}: {exc}") from None
        return arr

    def load_mask(self, i: int, rel: str) -> np.ndarray:
        """int32 (sh, sw) global label numbers of one mask plane (R + 256 * G)."""
        path = self.image_dir / rel
        row = self.rows[i]
        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("RGB")).astype(np.int32)
        except FileNotFoundError:
            raise DatasetError(f"{self.where(i)}: mask file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DatasetError(f"{self.where(i)}: corrupt mask {path}: {exc}") from None
        if arr.shape[:2] != (row.sh, row.sw):
            raise DatasetError(
                f"{self.where(i)}: mask {path} is {arr.shape[0]}x{arr.shape[1]}, "
                f"index.csv says sh x sw = {row.sh}x{row.sw}"
            )
        return arr[..., 0] + 256 * arr[..., 1]

    def load_labels(self, i: int) -> LabelSample:
        """All labels of row i: mask planes, image-level labels, categories held."""
        row = self.rows[i]
        cats = self.concepts.categories
        planes, has = [], np.zeros(len(cats), dtype=bool)
        for c, paths in row.masks.items():
            for rel in paths:
                plane = self.load_mask(i, rel)
                planes.append(plane)
                if plane.any():
                    has[cats.index(c)] = True
        image_labels = []
        for c, nums in row.labels.items():
            nums = [n for n in nums if n != 0]
            image_labels.extend(nums)
            if nums:
                has[cats.index(c)] = True
        planes_arr = np.stack(planes) if planes else np.zeros((0, row.sh, row.sw), np.int32)
        return LabelSample(i, planes_arr, np.asarray(image_labels, dtype=np.int32), has)
