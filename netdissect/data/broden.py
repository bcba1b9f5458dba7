"""Read a dataset in the Broden format (``index.csv``, ``label.csv``, ``c_<category>.csv``).

    >>> from netdissect.data import Broden
    >>> ds = Broden(world)                                  # e.g. "path/to/broden1_224"
    >>> ds.concepts.names[:3], len(ds)
    (['black-c', 'blue-c', 'brown-c'], 6)
    >>> sample = ds.load_labels(0)   # planes, image labels, categories held
    >>> sample.planes.shape, dict(zip(ds.concepts.categories, sample.has_category.tolist()))
    ((5, 16, 16), {'color': True, 'object': True, 'part': True, 'material': True, 'scene': True, 'texture': False})

The layout is described in ``../shared/reference/broden-format.md``.  The
reader survives BOM and CRLF in the CSVs, column orders, number gaps in
``label.csv``, labels in several categories (the primary one is the
category whose ``c_<category>.csv`` gives the largest coverage), several
mask planes per category, labels >= 256 (``R + 256 * G``, decoded as int32),
and image-level categories (scene, texture).  Every problem in a file names
the file and the row.

What it refuses (a :class:`~netdissect.errors.DatasetError` naming the file,
row and column): sizes and label numbers that are not whole numbers
(``"3.7"``), paths with ``..`` or absolute paths in ``index.csv``, a
``label.csv`` without labels, mask files that are not 8-bit RGB(A) or palette
PNGs (greyscale ``L``/``I;16``, 16 bits per channel, JPEG: decoding them as
``R + 256 * G`` would give other numbers), a mask whose size differs from
``sh x sw``, and images or masks that do not decode (decompression bombs
included), so that ``skip_bad`` can skip and count the row.  Label numbers
absent from ``label.csv`` are kept in the planes and counted as unknown, but
they do not make an image hold a category (see :meth:`Broden.load_labels`).

For run records: :meth:`Broden.mask_sizes` (the mask sizes of the rows
used) and :meth:`Broden.files_digest` (a stat-only fingerprint of the files
read, to notice images replaced or shuffled after a run).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import os
from numbers import Integral
import re
import warnings
from collections.abc import Iterable
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


_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_NUMBER_LIKE_RE = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


def _int(value: str, path: Path, row: int, column: str, minimum: int | None = None) -> int:
    """A decimal integer cell (``"3.7"``, ``"3.0"``, ``"1e3"`` and ``""`` are refused, not rounded)."""
    if not _INT_RE.match(value or ""):
        raise DatasetError(f"{path} row {row}: column {column!r} must be a whole number, got {value!r}")
    n = int(value)
    if minimum is not None and n < minimum:
        raise DatasetError(f"{path} row {row}: column {column!r} must be >= {minimum}, got {n}")
    return n


def _check_relative(rel: str, path: Path, row: int, column: str) -> str:
    """A path of index.csv relative to ``images/``: absolute paths and ``..`` parts are refused,
    so that every file read lies inside the dataset folder."""
    norm = rel.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in norm.split("/"):
        raise DatasetError(f"{path} row {row}: column {column!r} names {rel!r}, outside the dataset's "
                           f"images/ folder; paths must be relative to images/ without '..'")
    return rel


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
    has_category: np.ndarray  # bool (G,) the image holds a known label of that category (see load_labels)
    error: str | None = None  # set (and the rest empty) when skip_bad skipped this image


# Mask PNG modes and what they are, for the error that refuses them.
_MASK_MODES_OK = ("RGB", "RGBA", "P")
_MODE_NAMES = {"1": "1-bit black-and-white", "L": "8-bit greyscale", "LA": "8-bit greyscale + alpha",
               "I": "32-bit integer greyscale", "I;16": "16-bit greyscale", "I;16B": "16-bit greyscale",
               "I;16L": "16-bit greyscale", "F": "32-bit float greyscale", "PA": "palette + alpha",
               "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}
_MASK_FIX = ("Broden masks are 8-bit RGB PNGs whose label number is R + 256 * G: "
             "re-save it as RGB with R = number % 256, G = number // 256")


def _open_image(path: Path):
    """``Image.open`` with a decompression bomb (the warning too) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"too many pixels for a safe decode (a decompression bomb?): {exc}; "
                f"raise PIL.Image.MAX_IMAGE_PIXELS if the file is genuine")
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (OSError, UnidentifiedImageError)) else f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _decoding(where: str, path, kind: str):
    """Reading one image or mask file of a row: every failure becomes one DatasetError naming it."""
    try:
        yield
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{where}: {kind} file not found: {path}") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise DatasetError(f"{where}: cannot read {kind} file {path}: {exc.strerror}") from None
    except MemoryError:
        raise DatasetError(f"{where}: {kind} {path} is too large to decode (out of memory)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file of this row
        raise DatasetError(f"{where}: corrupt {kind} {path}: {_describe_error(exc)}") from None


class Broden:
    """A Broden-format concept dataset on disk.

    Parameters
    ----------
    root : path to the dataset folder (holding ``index.csv`` and ``images/``).
    split : keep only rows of this split (``"train"``/``"val"``), or None for all.  A split
        that no row has is an error naming the splits present.
    limit : keep only the first ``limit`` rows (after the split filter); an integer >= 1.

    Every path in ``index.csv`` is relative to ``images/``; absolute paths and ``..`` are
    refused.  A category listed in ``category.csv`` without any label in ``label.csv`` is
    kept (it has no concepts, so no unit can be its detector); ``label.csv`` without any
    label (number >= 1) is an error.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, limit: int | None = None):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, Integral)):
            raise DatasetError(f"limit must be a whole number of rows >= 1 (or None for all), got {limit!r}")
        if limit is not None and limit < 1:
            raise DatasetError(f"limit must be >= 1 row (or None for all rows), got {limit}")
        if split is not None and not isinstance(split, str):
            raise DatasetError(f"split must be a split name such as 'train' or 'val' (or None), got {split!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        self.index_path = self.root / "index.csv"
        self.image_dir = self.root / "images"
        self._read_catalogue()
        self._read_index(split, None if limit is None else int(limit))

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
        if not numbers:
            raise DatasetError(f"{label_path}: no labels (only a header, or only number 0): "
                               "a dataset needs at least one concept to dissect")
        primary = []
        for n, name, cats in zip(numbers, names, cat_lists):
            if not cats:
                raise DatasetError(f"{label_path}: label {n} ({name!r}) has no category in its 'category' column")
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
        splits: dict[str, int] = {}
        for i, r in enumerate(rows, start=2):
            splits[r["split"]] = splits.get(r["split"], 0) + 1
            if split is not None and r["split"] != split:
                continue
            p = self.index_path
            row = Row(
                image=r["image"], split=r["split"],
                ih=_int(r["ih"], p, i, "ih", 1), iw=_int(r["iw"], p, i, "iw", 1),
                sh=_int(r["sh"], p, i, "sh", 1), sw=_int(r["sw"], p, i, "sw", 1),
            )
            if not row.image:
                raise DatasetError(f"{p} row {i}: empty image path")
            _check_relative(row.image, p, i, "image")
            for c in cat_columns:
                cell = r.get(c, "")
                if not cell:
                    continue
                for tok in cell.split(";"):
                    tok = tok.strip()
                    if not tok:
                        continue
                    if _INT_RE.match(tok):
                        n = int(tok)
                        if n < 0:
                            raise DatasetError(f"{p} row {i}: column {c!r} holds label number {n} (< 0)")
                        row.labels.setdefault(c, []).append(n)
                    elif _NUMBER_LIKE_RE.match(tok):
                        raise DatasetError(f"{p} row {i}: column {c!r} holds {tok!r}: a label number must "
                                           "be a whole number (and a mask a path ending in .png)")
                    else:
                        row.masks.setdefault(c, []).append(_check_relative(tok, p, i, c))
            row.csv_row = i  # type: ignore[attr-defined]
            self.rows.append(row)
            if limit is not None and len(self.rows) >= limit:
                break
        if not self.rows:
            present = ", ".join(f"{s!r} ({n} rows)" for s, n in sorted(splits.items()))
            raise DatasetError(f"{self.index_path}: no rows in split {split!r}; splits present: {present}")

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

    def mask_sizes(self, rows: Iterable[int] | None = None) -> dict[tuple[int, int], int]:
        """Mask sizes ``(sh, sw)`` of ``rows`` (indices into this dataset; default all), with the
        number of rows of each, most frequent first (ties: larger size first).

            >>> Broden(world).mask_sizes()      # Broden 1 at 224 px: {(112, 112): 63305, (113, 113): 2}
            {(16, 16): 6}

        Read from index.csv (no file is opened).
        """
        counts: dict[tuple[int, int], int] = {}
        for i in (range(len(self.rows)) if rows is None else rows):
            r = self.rows[i]
            counts[(r.sh, r.sw)] = counts.get((r.sh, r.sw), 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0][0], -kv[0][1])))

    def files(self, i: int) -> list[str]:
        """Paths (relative to ``images/``) of the files row ``i`` reads: its image, then its masks."""
        row = self.rows[i]
        return [row.image] + [rel for paths in row.masks.values() for rel in paths]

    def files_digest(self, rows: Iterable[int] | None = None, mtime: bool = True, parts: str = "all") -> str:
        """Hex SHA-256 identifying the files a run reads, from ``stat`` alone (no file is read).

        It covers the catalogue files (``label.csv``, ``category.csv``, ``c_<category>.csv``,
        ``index.csv``) and, for each of ``rows`` (default all) in order, the relative path,
        size and (with ``mtime``) ``st_mtime_ns`` of its image and of each mask; a missing file
        enters as missing.  So it changes when an image or mask is replaced, touched, removed,
        or when rows are reordered or renamed, and stays the same while nothing changed.  A copy
        of the dataset that does not keep modification times (``cp -r`` without ``-p``) has
        another digest unless ``mtime=False``, which compares names and sizes only (two files
        of one size swapped are then not noticed).  ``parts``: ``"all"`` files of each row, or only
        its ``"images"`` or its ``"masks"``.  Cost: one ``stat`` per file.
        """
        h = hashlib.sha256(b"netdissect-broden-files-v1\n")

        def add(kind: str, rel: str, path: Path) -> None:
            try:
                st = path.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns if mtime else 0}"
            except OSError:
                stamp = "missing"
            h.update(f"{kind}\0{rel}\0{stamp}\n".encode("utf-8", "surrogateescape"))

        names = ["index.csv", "label.csv", "category.csv"] + [f"c_{c}.csv" for c in self.concepts.categories]
        for name in names:
            add("csv", name, self.root / name)
        for i in (range(len(self.rows)) if rows is None else rows):
            add("row", str(i), self.root)  # a row boundary (the folder's own stat is not used)
            files = self.files(i)
            for rel in files[:1] if parts == "images" else files[1:] if parts == "masks" else files:
                add("file", rel, self.image_dir / rel)
        return h.hexdigest()

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.rows[i].image

    def where(self, i: int) -> str:
        row = self.rows[i]
        return f"{self.index_path} row {getattr(row, 'csv_row', '?')} ({row.image})"

    def load_image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB image of row i."""
        path = self.image_path(i)
        with _decoding(self.where(i), path, "image"), _open_image(path) as im:
            im.load()
            from netdissect.data.pixels import to_rgb

            arr = np.asarray(to_rgb(im))
        return arr

    def load_mask(self, i: int, rel: str) -> np.ndarray:
        """int32 (sh, sw) global label numbers of one mask plane (R + 256 * G).

        A mask must be a PNG of mode RGB or RGBA (alpha ignored), 8 bits per channel, or a
        palette PNG (mode P, decoded through its palette: PNG optimisers write RGB masks with
        few colours this way, losslessly).  Greyscale (L, I;16, I), 16-bit-per-channel and
        non-PNG (e.g. lossy JPEG) masks are refused: decoding them as R + 256 * G would give
        other label numbers.
        """
        path = self.image_dir / rel
        row = self.rows[i]
        with _decoding(self.where(i), path, "mask"), _open_image(path) as im:
            self._check_mask_format(i, path, im)
            im.load()
            arr = np.asarray(im.convert("RGB") if im.mode == "P" else im)
        if arr.shape[:2] != (row.sh, row.sw):
            raise DatasetError(
                f"{self.where(i)}: mask {path} is {arr.shape[0]}x{arr.shape[1]}, "
                f"index.csv says sh x sw = {row.sh}x{row.sw}"
            )
        return arr[..., 0].astype(np.int32) + 256 * arr[..., 1].astype(np.int32)

    def _check_mask_format(self, i: int, path: Path, im) -> None:
        if im.format != "PNG":
            raise DatasetError(f"{self.where(i)}: mask {path} is a {im.format or 'non-PNG'} file, not a PNG "
                               f"(lossy or other formats change label numbers); {_MASK_FIX}")
        rawmodes = [str(t[3]) for t in (im.tile or []) if len(t) > 3 and isinstance(t[3], str)]
        if im.mode not in _MASK_MODES_OK:
            what = _MODE_NAMES.get(im.mode, "non-RGB")
            raise DatasetError(f"{self.where(i)}: mask {path} is a {what} PNG (mode {im.mode}); {_MASK_FIX}")
        if any(";16" in m for m in rawmodes):
            raise DatasetError(f"{self.where(i)}: mask {path} is a 16-bit-per-channel PNG "
                               f"(mode {im.mode}, stored as {rawmodes[0]}); {_MASK_FIX}")

    def load_labels(self, i: int) -> LabelSample:
        """All labels of row i: mask planes, image-level labels, categories held.

        The image *holds* category g (``has_category[g]``, so it enters the IoU sums of every
        concept whose primary category is g) when a cell of column g holds a label number that
        label.csv knows, or when any of its cells holds a known label whose primary category is
        g (a label in several categories, found in a non-primary column, counts for its concept
        and brings its primary category's denominator with it).  Label numbers that label.csv
        does not know mark nothing; they stay in ``planes``/``image_labels`` to be counted as
        unknown (:attr:`netdissect.stats.LabelBatch.unknown`).
        """
        row = self.rows[i]
        cats = self.concepts.categories
        G = len(cats)
        table = self._primary_table
        planes, has = [], np.zeros(G, dtype=bool)
        for c, paths in row.masks.items():
            g = cats.index(c)
            for rel in paths:
                plane = self.load_mask(i, rel)
                planes.append(plane)
                held = np.bincount(table[plane].ravel(), minlength=G + 1)[:G] > 0  # G: none/unknown
                if held.any():
                    has[g] = True
                    has |= held
        image_labels = []
        for c, nums in row.labels.items():
            nums = [n for n in nums if n != 0]
            image_labels.extend(nums)
            cols = self.concepts.index_of(np.asarray(nums, np.int64))
            cols = cols[cols >= 0]
            if len(cols):
                has[cats.index(c)] = True
                has[self.concepts.primary[cols]] = True
        planes_arr = np.stack(planes) if planes else np.zeros((0, row.sh, row.sw), np.int32)
        return LabelSample(i, planes_arr, np.asarray(image_labels, dtype=np.int32), has)

    @property
    def _primary_table(self) -> np.ndarray:
        """int16 table: mask label number (0..65535) -> primary category index; G for 0 and unknown."""
        table = self.__dict__.get("_primary_table_cache")
        if table is None:
            G = len(self.concepts.categories)
            table = np.full(65536, G, np.int16)
            nums = self.concepts.numbers
            ok = nums < 65536
            table[nums[ok]] = self.concepts.primary[ok]
            self.__dict__["_primary_table_cache"] = table
        return table
