"""The images a run's units responded to, for the report, or a note why there are none.

    >>> from netdissect.report.images import open_source
    >>> src = open_source(run.summary, run.root)          # doctest: +SKIP
    >>> src.available, src.problem, src.masks             # doctest: +SKIP
    >>> tile = src.thumbnail("dog/0001.jpg", 112)         # RGB PIL image or None  # doctest: +SKIP

:func:`open_source` picks the source by ``summary.json``'s ``dataset`` section:

- ``images_in_run`` (a folder inside the run, e.g. ``"images"``): the images the
  run itself wrote (a generator's outputs), :class:`RunImages`; read relative to
  the run folder, so a moved or copied run keeps its strips;
- ``kind: "images"``: an image folder (``dissect --images``), :class:`FolderImages`,
  each image resized and cropped by :class:`netdissect.probe.folder.ImageFolder`
  exactly as the run fed it to the model (``size``, ``resize``, ``crop``);
- otherwise a Broden-format dataset, :class:`BrodenImages`, with its ground-truth
  masks when the run's labels are the dataset's own (``labels.kind`` ``"broden"``;
  a segmenter's concept numbers are not the dataset's, so then there are none).

Images are looked up by their path in ``topk.npz``'s ``image_paths`` (relative to
the dataset's ``images/`` folder, to the image folder, or to the run's images
folder), so the report does not depend on the split or limit the run used.  When
the images are gone (moved, deleted, unreadable), ``available`` is False,
``problem`` says why, and the report renders activation maps without photos or
outlines.  Every source has the interface of :class:`ImageSource`.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path, PurePosixPath

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


def thumbnail(path: Path, tile: int) -> Image.Image:
    """RGB tile x tile image of the file at ``path`` (decoded at reduced scale where JPEG allows)."""
    with Image.open(path) as im:
        im.draft("RGB", (tile, tile))
        rgb = im.convert("RGB")
    if rgb.size != (tile, tile):
        rgb = rgb.resize((tile, tile), Image.LANCZOS)
    return rgb


class ImageSource:
    """What the report reads images (and ground-truth masks) through; this base has none.

    ``available``: images can be drawn (else ``problem`` says why); ``masks``: the source
    has ground-truth masks of the run's concepts (outlines); ``run_held``: the images are
    the run's own files (no dataset ``files_digest`` to check); ``image_dir``: the folder
    image paths are relative to (what ``files_digest`` was computed over).
    """

    kind = "none"
    masks = False
    run_held = False
    what = "images"

    def __init__(self, problem: str | None = None):
        self.image_dir: Path | None = None
        self.available = False
        self.problem = problem
        self.warnings: list[str] = []

    def identity(self) -> str:
        """Part of every sheet's cache key: a different (or vanished) source re-renders."""
        return f"{self.kind}|{self.image_dir}|{int(self.available)}"

    def warn(self, message: str) -> None:
        """Note a problem with one image (shown on the page; at most 20 are kept)."""
        if len(self.warnings) < 20 and message not in self.warnings:
            self.warnings.append(message)

    _warn = warn

    def add_warnings(self, messages) -> None:
        """Warnings gathered elsewhere (by the processes that drew strips)."""
        for m in messages:
            self.warn(m)

    def image_file(self, path: str) -> Path:
        """The file of image ``path``."""
        return self.image_dir / path

    def known(self, path: str) -> bool:
        """Whether ``path`` is one of the source's images (warned when not)."""
        return self.available

    def stamp(self, path: str, masks: bool = False) -> tuple | None:
        """``os.stat`` size and mtime of the image: part of cache keys (None: not an image here)."""
        if not self.known(path):
            return None
        return (_stat(self.image_file(path)),)

    def thumbnail(self, path: str, tile: int) -> Image.Image | None:
        """RGB tile x tile thumbnail of image ``path`` as the model saw it; None (warned) if unreadable."""
        if not self.known(path):
            return None
        file = self.image_file(path)
        try:
            return thumbnail(file, tile)
        except (OSError, SyntaxError, ValueError) as exc:
            self.warn(f"{file}: cannot read image ({exc})")
            return None

    def image(self, path: str) -> np.ndarray | None:
        """uint8 (H, W, 3) RGB of image ``path`` as the model saw it; None (warned) if unreadable."""
        if not self.known(path):
            return None
        file = self.image_file(path)
        try:
            with Image.open(file) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:
            self.warn(f"{file}: cannot read image ({exc})")
            return None

    def image_level(self, path: str, number: int) -> bool | None:
        """True: the image holds image-level concept ``number``; False: it may hold it in a mask
        (decode to know); None: it cannot hold it (always, without masks)."""
        return None

    def concept_mask(self, path: str, number: int) -> np.ndarray | None:
        """bool mask of concept ``number`` in the image; None without one."""
        return None


def _stat(file: Path):
    try:
        st = os.stat(file)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None


class BrodenImages(ImageSource):
    """The images of a Broden-format dataset, with its ground-truth masks when ``masks``."""

    kind = "broden"
    what = "the dataset's images"

    def __init__(self, root: str | Path | None, masks: bool = True, cache_size: int = 256):
        super().__init__()
        self.root = Path(root) if root else None
        self.masks = masks
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
        self.image_dir = self.dataset.image_dir
        self.available = True

    def identity(self) -> str:
        return f"{self.kind}|{self.root}|{int(self.masks)}|{int(self.available)}"

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
        if not self.masks:
            return None
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
        if not self.available or not self.masks or number <= 0:
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


class FolderImages(ImageSource):
    """The images of an image folder (``dissect --images``), resized and cropped as the run fed them.

    ``dataset`` is summary.json's ``dataset`` section: ``path`` (the folder), ``size`` ([H, W] the
    model saw), ``resize`` (False: the images were only brought to the first image's size) and
    ``crop``.  The images are loaded by :class:`netdissect.probe.folder.ImageFolder` itself.
    """

    kind = "images"
    what = "the image folder's images"

    def __init__(self, dataset: dict):
        super().__init__()
        from netdissect.probe.folder import ImageFolder

        path = dataset.get("path")
        self.root = Path(path) if path else None
        self._rows: dict[str, int] = {}
        size, resize, crop = dataset.get("size"), dataset.get("resize", True), bool(dataset.get("crop", False))
        shape = None
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            shape = (size[0], size[1])
        self.shape, self.crop = shape, crop
        if self.root is None:
            self.problem = "summary.json names no image folder (dataset.path)"
            return
        if shape is None and (resize or crop):
            self.problem = f"summary.json dataset.size is {size!r}, not [height, width]: the image size the run used is unknown"
            return
        try:
            probe = ImageFolder(self.root, size=shape[0] if resize and shape else None, crop=crop,
                                interpolation=dataset.get("resample"))  # as the run resized them
        except NetDissectError as exc:
            moved = "" if self.root.exists() else " (moved or deleted since the run read it there?)"
            self.problem = f"image folder not readable: {exc}{moved}"
            return
        if shape is not None:
            probe.shape = shape  # without resize: the size the run saw, whatever the folder's first image is now
        self.probe = probe
        self.image_dir = probe.image_dir
        self._rows = {f: i for i, f in enumerate(probe.files)}
        self.available = True

    def identity(self) -> str:
        return f"{self.kind}|{self.root}|{self.shape}|{int(self.crop)}|{int(self.available)}"

    def known(self, path: str) -> bool:
        if not self.available:
            return False
        if path not in self._rows:
            self.warn(f"{self.image_dir / path}: image file not found (no longer in the image folder {self.root})")
            return False
        return True

    def image(self, path: str) -> np.ndarray | None:
        if not self.known(path):
            return None
        try:
            return self.probe.load(self._rows[path])
        except NetDissectError as exc:
            self.warn(str(exc))
            return None

    def thumbnail(self, path: str, tile: int) -> Image.Image | None:
        rgb = self.image(path)
        if rgb is None:
            return None
        im = Image.fromarray(rgb)
        return im if im.size == (tile, tile) else im.resize((tile, tile), Image.LANCZOS)


class RunImages(ImageSource):
    """Images the run wrote into its own folder (a generator's outputs): ``RUN/<images_in_run>/<path>``.

    Only paths relative to the run folder are used, so the run stays relocatable.  These files are
    the run's own, so there is no dataset ``files_digest`` to check them against.
    """

    kind = "run"
    run_held = True
    what = "the run's images"

    def __init__(self, run_root: str | Path, folder):
        super().__init__()
        self.folder = folder
        if not isinstance(folder, str) or not _inside(folder):
            self.problem = (f"summary.json dataset.images_in_run is {folder!r}: not a folder inside the run "
                            "(a relative path such as \"images\")")
            return
        image_dir = Path(run_root) / folder
        if not image_dir.is_dir():
            self.problem = (f"{image_dir}: the run's images folder is missing (summary.json "
                            f"dataset.images_in_run = {folder!r}); copy the whole run folder")
            return
        self.image_dir = image_dir
        self.available = True

    def identity(self) -> str:
        return f"{self.kind}|{self.folder}|{int(self.available)}"  # no absolute path: a moved run reuses its sheets

    def known(self, path: str) -> bool:
        if not self.available:
            return False
        if not _inside(path):
            self.warn(f"topk.npz image path {path!r} is not a file inside the run's images folder")
            return False
        return True


def _inside(rel: str) -> bool:
    """``rel`` names something strictly inside the folder it is relative to (no '..', not absolute)."""
    p = PurePosixPath(rel)
    return bool(rel) and "\\" not in rel and not p.is_absolute() and ".." not in p.parts and p.parts != (".",)


def open_source(summary: dict, run_root: str | Path) -> ImageSource:
    """The image source of a run, picked by its summary.json (see the module docstring)."""
    dataset = summary.get("dataset") or {}
    if "images_in_run" in dataset:
        return RunImages(run_root, dataset["images_in_run"])
    kind = dataset.get("kind")
    if kind == "images":
        return FolderImages(dataset)
    if kind is not None and kind != "broden":
        return ImageSource(f"the run's probe ({kind!r}) is not a set of image files, and summary.json names "
                           "no images_in_run folder of the images the run generated")
    labels = summary.get("labels") or {}
    return BrodenImages(dataset.get("path"), masks=labels.get("kind", "broden") == "broden")
