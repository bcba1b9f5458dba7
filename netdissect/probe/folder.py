"""A folder of images as a probe: dissect any model on any photos.

    >>> import shutil
    >>> from netdissect.probe.folder import ImageFolder
    >>> for cls in ("beach", "forest"):                 # photos/beach/0.jpg ... photos/forest/1.jpg
    ...     Path("photos", cls).mkdir(parents=True)
    ...     for i in range(2):
    ...         _ = shutil.copy(next(Path(world, "images").glob("*.jpg")), Path("photos", cls, f"{i}.jpg"))
    >>> probe = ImageFolder("photos/", size=32, crop=True)      # e.g. size=224
    >>> len(probe), probe.row_names()[:2], probe.classes[:2]
    (4, ['beach/0.jpg', 'beach/1.jpg'], ['beach', 'forest'])

The folder is searched recursively for ``.jpg``/``.jpeg``/``.png``/``.webp``
files (any case; hidden files and folders are left out), in sorted order of
their relative paths.  When every image lies in a first-level sub-folder (as
torchvision's ``ImageFolder`` has them) that sub-folder is the row's class
(:attr:`ImageFolder.classes`, :meth:`ImageFolder.row_class`).  A Broden
folder (``index.csv`` with ``images/``) gives its rows' images, and its
masks are ignored.

Sizes: with ``size`` an image is resized to ``size`` x ``size`` (with
``interpolation``, the model's recorded one, bilinear by default; with ``crop``, its shorter side to ``size`` first, then the centre square is
cut out).  Without ``size`` every image is resized to the size of the first
image (none is resized when they all share it), so images of different sizes
never break a batch.  Pixels are RGB in [0, 1] as every probe gives them.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from netdissect.data.pixels import to_rgb
from netdissect.errors import DatasetError
from netdissect.probe import Probe

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def _scan(root: Path) -> list[str]:
    """Image files under ``root`` (symbolic links followed), each real file once: a folder reached twice
    (a link loop, or two links to one folder) is walked once, and of several paths to one file the
    first in sorted order is kept."""
    found = []
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen_dirs)
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(EXTENSIONS):
                found.append(Path(dirpath, f).relative_to(root).as_posix())
    out, seen = [], set()
    for rel in sorted(found):
        real = os.path.realpath(root / rel)
        if real not in seen:
            seen.add(real)
            out.append(rel)
    return out


class ImageFolder(Probe):
    """The images under ``root`` (see the module's docstring); ``size``/``crop`` resize them."""

    def __init__(self, root, size: int | None = None, crop: bool = False, limit: int | None = None,
                 interpolation: str | None = None):
        from netdissect.probe import pil_resample, resample_name

        self.root = Path(root)
        self._resample = pil_resample(interpolation)  # the model's recorded interpolation (None: bilinear)
        self.interpolation = resample_name(interpolation)
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8):
            raise DatasetError(f"image size must be an integer >= 8, got {size!r}")
        if crop and size is None:
            raise DatasetError("crop needs a size (--size N --crop): the centre square is cut at N x N")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such folder of images" if not self.root.exists()
                               else f"{self.root}: not a folder (--images takes a folder of images)")
        if (self.root / "index.csv").is_file() and (self.root / "images").is_dir():
            from netdissect.data import Broden

            ds = Broden(self.root, limit=limit)
            self.image_dir = ds.image_dir
            self.files = [r.image for r in ds.rows]
            self.broden = True
        else:
            self.image_dir = self.root
            self.files = _scan(self.root)
            self.broden = False
            if limit is not None:
                self.files = self.files[:limit]
        if not self.files:
            raise DatasetError(f"{self.root}: no images in this folder or below it "
                               f"(looked for {', '.join(EXTENSIONS)} files)")
        self.size, self.crop = size, crop
        parts = [f.split("/") for f in self.files]
        if not self.broden and all(len(p) >= 2 for p in parts):
            self.classes = sorted({p[0] for p in parts})
            index = {c: k for k, c in enumerate(self.classes)}
            self._class = [index[p[0]] for p in parts]
        else:
            self.classes, self._class = [], [-1] * len(self.files)
        self.shape = (size, size) if size is not None else self._first_size()

    def _first_size(self) -> tuple[int, int]:
        errors = []
        for i in range(len(self.files)):
            try:
                with self._open(i) as im:
                    return im.size[1], im.size[0]
            except DatasetError as exc:
                errors.append(str(exc))
        raise DatasetError(f"{self.root}: none of its {len(self.files)} images can be read ({errors[0]})")

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.image_dir / self.files[i]

    def row_class(self, i: int) -> str | None:
        """Row ``i``'s class (its first-level sub-folder), or None."""
        return self.classes[self._class[i]] if self._class[i] >= 0 else None

    def identity(self) -> dict:
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.encode("utf-8", "surrogateescape") + b"\0")
        return {"kind": "images", "name": self.root.resolve().name, "path": str(self.root.resolve()),
                "n_images": len(self.files),
                "rows_sha256": h.hexdigest()[:16], "size": list(self.shape), "resize": self.size is not None,
                "crop": self.crop, "classes": self.classes,
                **({"resample": self.interpolation} if self.interpolation else {})}

    def where(self, i: int) -> str:
        return str(self.path(i))

    def describe(self) -> str:
        return f"the image folder {self.root}"

    def _open(self, i: int):
        path = self.path(i)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(path)
        except FileNotFoundError:
            raise DatasetError(f"{path}: image file not found") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise DatasetError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None

    def load(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB of row ``i`` at the probe's size."""
        path = self.path(i)
        with self._open(i) as im:
            try:
                im.load()
                im = to_rgb(im)
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
                raise DatasetError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
        H, W = self.shape
        if self.crop:
            s = self.size / min(im.size)
            w, h = max(self.size, round(im.size[0] * s)), max(self.size, round(im.size[1] * s))
            if (w, h) != im.size:
                im = im.resize((w, h), self._resample)
            left, top = (w - self.size) // 2, (h - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
        elif im.size != (W, H):
            im = im.resize((W, H), self._resample)
        return np.asarray(im)

    def batch(self, payloads: list[np.ndarray], device) -> torch.Tensor:
        x = torch.from_numpy(np.stack(payloads)).to(device)
        return x.permute(0, 3, 1, 2).float().div_(255)

    def row_names(self) -> list[str]:
        return list(self.files)

    def file_stamp(self, i: int) -> str:
        """Path, size and modification time of row ``i``'s file (what keys its cached labels)."""
        return file_stamp(self.path(i))

    def files_digest(self, rows=None, mtime: bool = True) -> str | None:
        h = hashlib.sha256(b"netdissect-images-v1\n")
        for i in (range(len(self.files)) if rows is None else rows):
            try:
                st = self.path(i).stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns if mtime else 0}"
            except OSError:
                stamp = "missing"
            h.update(f"{self.files[i]}\0{stamp}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def file_stamp(path: Path) -> str:
    """What identifies an image file's content for the label cache: its folder's resolved path
    and its name (resolving each folder once), its size, modification time and inode (a file
    that is a link is told apart from another target by the inode)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\0missing"
    folder, name = os.path.split(os.path.abspath(path))
    return f"{_real_folder(folder)}{os.sep}{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)
