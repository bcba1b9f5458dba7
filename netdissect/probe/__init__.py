"""Probes: what is fed to the model, row by row.

A dissection runs the model over the rows of a probe.  Each row has a stable
index (for resume, sharding and merges) and a payload loaded in the data
loader's worker processes; the main process stacks a batch of payloads into
the model's input.  Today's probe is the images of a Broden-format dataset;
an image folder or the latent vectors of a generator are further probes on
the same seam.

    >>> from netdissect.probe import BrodenImages
    >>> from netdissect.data import Broden
    >>> probe = BrodenImages(Broden(world))
    >>> x = probe.batch([probe.load(0), probe.load(1)], "cpu")   # (2, 3, H, W) in [0, 1]
    >>> tuple(x.shape), 0 <= float(x.min()) <= float(x.max()) <= 1
    ((2, 3, 32, 32), True)
"""
from __future__ import annotations

import numpy as np
import torch

from netdissect.errors import DatasetError


class Probe:
    """The interface every probe implements (subclass it).

    ``load(i)`` runs in loader workers and returns a picklable payload (or raises
    :class:`DatasetError`, naming the row); ``batch(payloads, device)`` runs in the
    main process and returns the model's input before normalisation.
    """

    #: ``load`` only indexes rows already in memory (latent samples): pass 1 then runs without
    #: loader workers, which would cost more to start and feed than they save
    loads_from_memory = False

    def __len__(self) -> int:
        raise NotImplementedError

    def identity(self) -> dict:
        """A JSON-able identity: equal identities mean the same rows in the same order."""
        raise NotImplementedError

    def where(self, i: int) -> str:
        """Row ``i`` named for an error message (e.g. ``index.csv row 12 (images/a.jpg)``)."""
        return f"row {i}"

    def describe(self) -> str:
        """The probe named for a message (e.g. ``the dataset data/world``)."""
        return type(self).__name__

    def load(self, i: int):
        raise NotImplementedError

    def batch(self, payloads: list, device) -> torch.Tensor:
        raise NotImplementedError

    def row_names(self) -> list[str]:
        """What each row is called in results (image paths for image probes)."""
        return [str(i) for i in range(len(self))]

    def files_digest(self, rows=None, mtime: bool = True) -> str | None:
        """A digest of the files ``rows`` (default all) are read from (None when rows are not
        files); with ``mtime=False`` of names and sizes only (the same on a copy of the files)."""
        return None


RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def pil_resample(name: str | None):
    """The PIL filter of an interpolation name a model records (timm, Hugging Face, open_clip,
    torchvision ``InterpolationMode.value``); None means bilinear.  torchvision's ``Resize`` on a
    PIL image, which those libraries' own eval transforms use, resizes with this very filter."""
    from PIL import Image

    return getattr(Image.Resampling, (resample_name(name) or "bilinear").upper())


def resample_name(name: str | None) -> str | None:
    """``name`` as one of :data:`RESAMPLE` (``InterpolationMode.BICUBIC`` -> ``bicubic``); None for
    bilinear, the default (runs resized bilinear record nothing, as before interpolations were read)."""
    name = "bilinear" if name is None else str(name).lower().rsplit(".", 1)[-1]
    if name not in RESAMPLE:
        raise DatasetError(f"interpolation {name!r} is not one of {', '.join(RESAMPLE)}")
    return None if name == "bilinear" else name


def resized(img: np.ndarray, size: tuple[int, int], interpolation: str | None = None) -> np.ndarray:
    """uint8 (H, W, 3) ``img`` resized to ``size`` (H, W) with the model's ``interpolation`` (PIL)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), pil_resample(interpolation)))


class BrodenImages(Probe):
    """The images of a Broden-format dataset: RGB uint8, one size per dataset.

    ``size``: every image resized (the whole image: no crop) to ``size`` x ``size`` before
    the model sees it, with ``interpolation`` (the model's recorded one; None: bilinear), for
    models that need a fixed input size (a ViT at 224 px on broden1_227);
    the masks keep their size, and a unit's map is upsampled onto them as always: resizing keeps
    the field of view, so cell (r, c) of an h x w map still covers the fraction [r/h, (r+1)/h) x
    [c/w, (c+1)/w) of the image (docs/transformers.md, "alignment")."""

    def __init__(self, ds, size: int | None = None, interpolation: str | None = None):
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8):
            raise DatasetError(f"image size must be an integer >= 8, got {size!r}")
        self.ds = ds
        self.size = None if size is None else int(size)
        self.interpolation = resample_name(interpolation)  # checked now; None: bilinear

    def __len__(self) -> int:
        return len(self.ds)

    def identity(self) -> dict:
        ident = self.ds.identity()
        if self.size is None:
            return ident
        return {**ident, "resize": self.size, **({"resample": self.interpolation} if self.interpolation else {})}

    def where(self, i: int) -> str:
        return self.ds.where(i)

    def describe(self) -> str:
        return f"the dataset {self.ds.root}"

    def load(self, i: int) -> np.ndarray:
        img = self.ds.load_image(i)
        if self.size is not None and img.shape[:2] != (self.size, self.size):
            img = resized(img, (self.size, self.size), self.interpolation)
        return img

    def batch(self, payloads: list[np.ndarray], device) -> torch.Tensor:
        shapes = [img.shape for img in payloads]
        if len(set(shapes)) > 1:
            raise DatasetError(f"images in one batch differ in size ({sorted(set(shapes))}); "
                               "netdissect expects one image size per dataset, as Broden releases have")
        x = torch.from_numpy(np.stack(payloads)).to(device)
        return x.permute(0, 3, 1, 2).float().div_(255)

    def row_names(self) -> list[str]:
        return [r.image for r in self.ds.rows]

    def files_digest(self, rows=None, mtime: bool = True) -> str | None:
        return self.ds.files_digest(rows, mtime=mtime, parts="images")
