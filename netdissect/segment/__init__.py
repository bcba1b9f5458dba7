"""Segmenters: label planes of probe images from a model, in place of dataset masks (PNAS 2020).

    >>> from netdissect.segment import load_segmenter
    >>> seg = load_segmenter("color")
    >>> seg.concepts[:2], seg.categories[:2]
    (['black-c', 'blue-c'], ['color', 'color'])

The protocol (what ``file.py:factory`` or ``package.module:factory`` must
return; :class:`Segmenter` may be subclassed, or any object with these):

``concepts``
    list of concept names; label number ``j + 1`` is ``concepts[j]``, 0 is "no label".
``categories``
    list, the category of each concept (``object``, ``part``, ``material``, ``color``, ...).
``segment(images, size)``
    ``images``: float32 (B, 3, H, W) RGB in [0, 1] on the run's device; ``size``: (sh, sw).
    Returns integer label planes (B, P, sh, sw) (or (B, sh, sw) for one plane): the label
    numbers of each pixel, one concept per plane and pixel.
``identity()`` (optional)
    a JSON-able dict that changes whenever the labels would (weights hash, options); the
    label cache is keyed by it.  Without it a user segmenter is keyed by its source file.
``to(device)`` (optional)
    move to the run's device (called once, before the first batch).

Specs (:func:`load_segmenter`): ``color``, ``zoo:world-seg``, ``hf:PATH_OR_ID``,
``file.py:factory``, ``package.module:factory``, and ``A+B`` for several merged
(label numbers offset, categories kept).  ``quad_parts=True`` adds the four
bounding-box halves of every object component (:class:`QuadParts`).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

from netdissect.errors import NetDissectError


class SegmenterError(NetDissectError, ValueError):
    """A segmenter that cannot be loaded or that returns labels outside its protocol."""


class Segmenter:
    """Base class of segmenters (see the module's docstring for the protocol)."""

    name = "segmenter"
    concepts: list[str] = []
    categories: list[str] = []

    def identity(self) -> dict:
        return {"kind": self.name}

    def to(self, device):
        return self

    def segment(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checked_segment(seg, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``seg.segment(images, size)`` as int64 (B, P, sh, sw), checked against the protocol."""
    name = describe(seg)
    try:
        out = seg.segment(images, tuple(size))
    except NetDissectError:
        raise
    except Exception as exc:  # noqa: BLE001 - the segmenter's own failure, named
        raise SegmenterError(f"segmenter {name} failed on a batch of shape {tuple(images.shape)}: "
                             f"{type(exc).__name__}: {exc}") from None
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(out)
    if not isinstance(out, torch.Tensor):
        raise SegmenterError(f"segmenter {name} returned {type(out).__name__}; it must return an integer tensor "
                             f"(B, P, sh, sw) of label numbers")
    if out.ndim == 3:
        out = out.unsqueeze(1)
    B = images.shape[0]
    if out.ndim != 4 or out.shape[0] != B or tuple(out.shape[2:]) != tuple(size):
        raise SegmenterError(f"segmenter {name} returned labels of shape {tuple(out.shape)} for {B} images; "
                             f"expected ({B}, planes, {size[0]}, {size[1]})")
    if out.is_floating_point() or out.dtype == torch.bool or out.is_complex():
        raise SegmenterError(f"segmenter {name} returned {out.dtype} labels; label numbers must be integers")
    out = out.long()
    K = len(seg.concepts)
    if out.numel() and (int(out.min()) < 0 or int(out.max()) > K):
        raise SegmenterError(f"segmenter {name} returned label numbers in {int(out.min())}..{int(out.max())}, "
                             f"outside 0..{K} (0 = none, 1..{K} its concepts)")
    return out


def describe(seg) -> str:
    return repr(getattr(seg, "spec", None) or getattr(seg, "name", type(seg).__name__))


def check_protocol(seg, spec: str):
    for attr in ("concepts", "categories"):
        v = getattr(seg, attr, None)
        if not isinstance(v, (list, tuple)) or not all(isinstance(c, str) for c in v):
            raise SegmenterError(f"segmenter {spec!r}: `{attr}` must be a list of strings "
                                 "(see netdissect.segment's protocol)")
    if len(seg.concepts) != len(seg.categories):
        raise SegmenterError(f"segmenter {spec!r}: {len(seg.concepts)} concepts but {len(seg.categories)} "
                             "categories (one category per concept)")
    if not seg.concepts:
        raise SegmenterError(f"segmenter {spec!r} lists no concepts")
    if len(set(zip(seg.concepts, seg.categories))) != len(seg.concepts):
        raise SegmenterError(f"segmenter {spec!r}: a concept is listed twice in one category")
    if not callable(getattr(seg, "segment", None)):
        raise SegmenterError(f"segmenter {spec!r} has no segment(images, size) method")
    return seg


# ----------------------------------------------------------------------------- color
class ColorSegmenter(Segmenter):
    """Colour names per pixel: the 11 basic colour terms, the synthetic world's ``color`` map.

    Each label pixel takes the mean RGB of its cell of the image (area averaging to the
    label size), rounded to 8 bits, named by :func:`netdissect.data.synth.colors.name_colors`.
    """

    name = "color"

    def __init__(self):
        from netdissect.data.synth.colors import _STEP, COLOR_NAMES, color_table

        self.concepts = list(COLOR_NAMES)
        self.categories = ["color"] * len(self.concepts)
        self.table = torch.from_numpy(color_table().astype(np.int64)) + 1
        self.step = _STEP

    def identity(self) -> dict:
        from netdissect.data.synth import colors

        return {"kind": "color", "sha256": file_sha256(colors.__file__)[:16]}

    def to(self, device):
        self.table = self.table.to(device)
        return self

    def segment(self, images, size):
        x = torch.nn.functional.interpolate(images.float() * 255, size=tuple(size), mode="area")
        q = (x + 0.5).clamp_(0, 255).to(torch.uint8).long() // self.step
        table = self.table.to(images.device)
        return table[q[:, 0], q[:, 1], q[:, 2]].unsqueeze(1)


# ----------------------------------------------------------------------------- merged
class Merged(Segmenter):
    """Several segmenters as one: planes stacked, label numbers offset, categories kept."""

    name = "merged"

    def __init__(self, parts: list):
        self.parts = parts
        self.spec = "+".join(str(getattr(p, "spec", p.name)) for p in parts)
        self.concepts = [c for p in parts for c in p.concepts]
        self.categories = [g for p in parts for g in p.categories]
        self.offsets = np.cumsum([0] + [len(p.concepts) for p in parts])[:-1].tolist()

    def identity(self) -> dict:
        return {"kind": "merged", "parts": [p.identity() if hasattr(p, "identity") else {} for p in self.parts]}

    def to(self, device):
        self.parts = [(p.to(device) or p) if hasattr(p, "to") else p for p in self.parts]
        return self

    def segment(self, images, size):
        out = []
        for p, off in zip(self.parts, self.offsets):
            planes = checked_segment(p, images, size)
            out.append(torch.where(planes > 0, planes + off, planes))
        return torch.cat(out, 1)


# ----------------------------------------------------------------------------- quad parts
class QuadParts(Segmenter):
    """``<object>-top/-bottom/-left/-right`` (category ``part``) for every connected component of
    every ``object`` label: the component's pixels in the top / bottom / left / right half of its
    bounding box, split at ``(top + bottom + 1) // 2`` and ``(left + right + 1) // 2`` (rows and
    columns before the split are top / left).  Components are 4-connected, found per plane and
    object; every component counts (the reference implementation skips the last of each image).
    Two planes are added per plane of the base segmenter: top/bottom and left/right.
    """

    name = "quad-parts"
    SIDES = ("top", "bottom", "left", "right")

    def __init__(self, base):
        self.base = base
        self.spec = f"{getattr(base, 'spec', base.name)} (quad parts)"
        K = len(base.concepts)
        self.objects = [j for j, g in enumerate(base.categories) if g == "object"]
        self.concepts = list(base.concepts) + [f"{base.concepts[j]}-{s}" for j in self.objects for s in self.SIDES]
        self.categories = list(base.categories) + ["part"] * (4 * len(self.objects))
        # base label number -> number of its "-top" concept (0 for non-objects)
        self.first = np.zeros(K + 1, np.int64)
        for r, j in enumerate(self.objects):
            self.first[j + 1] = K + 1 + 4 * r

    def identity(self) -> dict:
        return {"kind": "quad-parts", "base": self.base.identity() if hasattr(self.base, "identity") else {}}

    def to(self, device):
        if hasattr(self.base, "to"):
            self.base = self.base.to(device) or self.base
        return self

    def segment(self, images, size):
        planes = checked_segment(self.base, images, size)
        quads = quad_planes(planes.cpu().numpy(), self.first)
        return torch.cat([planes, torch.from_numpy(quads).to(planes.device)], 1)


def quad_planes(planes: np.ndarray, first: np.ndarray) -> np.ndarray:
    """int64 (B, 2 P, sh, sw): for base planes (B, P, sh, sw), plane 2p holds the top/bottom labels
    and plane 2p + 1 the left/right labels of plane p's object components (``first[n]``: the
    number of object n's ``-top`` concept; -bottom, -left, -right follow; 0: not an object)."""
    from scipy import ndimage

    B, P, sh, sw = planes.shape
    out = np.zeros((B, 2 * P, sh, sw), np.int64)
    for b in range(B):
        for p in range(P):
            plane = planes[b, p]
            tb, lr = out[b, 2 * p], out[b, 2 * p + 1]
            for n in np.unique(plane):
                if n <= 0 or first[n] == 0:
                    continue
                comp, count = ndimage.label(plane == n)
                for k, box in enumerate(ndimage.find_objects(comp)):  # every component, the last one too
                    ys, xs = box
                    top, bottom = ys.start, ys.stop - 1
                    left, right = xs.start, xs.stop - 1
                    vmid, hmid = (top + bottom + 1) // 2, (left + right + 1) // 2
                    m = comp[box] == k + 1
                    rows = np.arange(top, bottom + 1)[:, None] < vmid
                    cols = np.arange(left, right + 1)[None, :] < hmid
                    tb[box][m] = np.where(rows, first[n], first[n] + 1).repeat(m.shape[1], 1)[m]
                    lr[box][m] = np.where(cols, first[n] + 2, first[n] + 3).repeat(m.shape[0], 0)[m]
    return out


# ----------------------------------------------------------------------------- user segmenters
def _load_user(spec: str):
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise SegmenterError(f"segmenter {spec!r}: expected color, zoo:world-seg, hf:PATH, file.py:factory or "
                             "package.module:factory (see `netdissect segmenters`)")
    source = None
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SegmenterError(f"segmenter {spec!r}: file {path} not found")
        name = f"netdissect_user_segmenter_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        try:
            mspec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            mspec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's module failing to import
            raise SegmenterError(f"segmenter {spec!r}: {path} failed to import ({type(exc).__name__}: {exc})") from None
        source = path
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001
            raise SegmenterError(f"segmenter {spec!r}: cannot import module {target!r} ({type(exc).__name__}: {exc})") from None
        source = getattr(module, "__file__", None)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SegmenterError(f"segmenter {spec!r}: {target} has no callable {attr!r}")
    try:
        seg = factory()
    except Exception as exc:  # noqa: BLE001
        raise SegmenterError(f"segmenter {spec!r}: {attr}() failed ({type(exc).__name__}: {exc})") from None
    return UserSegmenter(check_protocol(seg, spec), spec, source)


class UserSegmenter(Segmenter):
    """A user's segmenter (``file.py:factory``), checked on every batch by :func:`checked_segment`."""

    name = "user"

    def __init__(self, inner, spec: str, source=None):
        self.inner, self.spec = inner, spec
        self.concepts, self.categories = list(inner.concepts), list(inner.categories)
        self.source_sha = file_sha256(source)[:16] if source and Path(source).is_file() else None

    def identity(self) -> dict:
        own = self.inner.identity() if callable(getattr(self.inner, "identity", None)) else None
        return {"kind": "user", "spec": self.spec, "source_sha256": self.source_sha, "identity": own,
                "concepts": hashlib.sha256(json.dumps([self.concepts, self.categories]).encode()).hexdigest()[:16]}

    def to(self, device):
        if callable(getattr(self.inner, "to", None)):
            moved = self.inner.to(device)
            self.inner = moved if moved is not None and callable(getattr(moved, "segment", None)) else self.inner
        return self

    def segment(self, images, size):
        return self.inner.segment(images, size)


# ----------------------------------------------------------------------------- registry
BUNDLED = {
    "color": "colour names per pixel (11 basic colour terms, the synthetic world's colour map)",
    "zoo:world-seg": "small CNN trained on the synthetic world's objects, parts and materials",
    "hf:PATH_OR_ID": "a Hugging Face transformers semantic-segmentation model (pip install netdissect[segment])",
    "file.py:factory": "your own segmenter (see the protocol in `netdissect segmenters --protocol`)",
}


def _load_one(spec: str):
    spec = spec.strip()
    if spec == "color":
        seg = ColorSegmenter()
    elif spec.startswith("zoo:"):
        from netdissect.segment.zoo import load_zoo_segmenter

        seg = load_zoo_segmenter(spec[4:])
    elif spec.startswith("hf:"):
        from netdissect.segment.hf import HFSegmenter

        seg = HFSegmenter(spec[3:])
    else:
        return _load_user(spec)
    seg.spec = spec
    return seg


def load_segmenter(spec, quad_parts: bool = False):
    """A segmenter from a spec (``color``, ``zoo:world-seg``, ``hf:PATH``, ``file.py:factory``,
    ``A+B``) or an object following the protocol; ``quad_parts`` adds :class:`QuadParts`."""
    if isinstance(spec, str):
        if not spec.strip():
            raise SegmenterError("empty segmenter spec: name one, e.g. --segmenter color (see `netdissect segmenters`)")
        parts = [_load_one(s) for s in spec.split("+")]
        seg = parts[0] if len(parts) == 1 else Merged(parts)
    else:
        name = getattr(spec, "spec", None) or type(spec).__name__
        seg = check_protocol(spec, name)
        if not isinstance(spec, Segmenter):
            seg = UserSegmenter(spec, name)
    if quad_parts:
        if "object" not in seg.categories:
            raise SegmenterError(f"--quad-parts: segmenter {describe(seg)} labels no `object` concepts to split")
        seg = QuadParts(seg)
    return seg


def catalogue(seg):
    """The :class:`netdissect.data.concepts.ConceptSet` of a segmenter: numbers 1..K, its names,
    categories in order of first appearance."""
    from netdissect.data.concepts import ConceptSet

    cats = list(dict.fromkeys(seg.categories))
    return ConceptSet(numbers=np.arange(1, len(seg.concepts) + 1, dtype=np.int32), names=list(seg.concepts),
                      categories=cats, primary=np.asarray([cats.index(g) for g in seg.categories], np.int32))
