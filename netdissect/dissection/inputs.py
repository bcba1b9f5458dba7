"""What a run reads: the probe (images) and the concept source (labels), from dissect()'s arguments.

``dataset`` alone: a Broden folder's images and masks (``iou="broden"`` by default, or
``"pnas"``: pooled counts over upsampled thresholds).  ``segmenter`` (with ``images``, or
with ``dataset`` whose masks are then ignored): labels from a segmentation model, ``iou="pnas"``
by default.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netdissect.errors import NetDissectError

IOU_MODES = ("broden", "pnas")


@dataclass
class Inputs:
    """Where the rows and labels come from (see :func:`resolve_inputs`)."""

    dataset: object = None
    images: object = None
    segmenter: object = None
    iou: str | None = None
    seg_size: object = None
    label_cache: object = None
    quad_parts: bool = False
    size: int | None = None
    crop: bool = False
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.dataset is None and self.images is None:
            raise NetDissectError("nothing to probe: give a dataset (--dataset DIR) or a folder of images "
                                  "(--images DIR with --segmenter SPEC)")
        if self.dataset is not None and self.images is not None:
            raise NetDissectError("give either a dataset (--dataset) or a folder of images (--images), not both")
        if self.images is not None and self.segmenter is None:
            raise NetDissectError("--images needs --segmenter SPEC to label them (e.g. --segmenter color; "
                                  "`netdissect segmenters` lists them), or use --dataset for a Broden folder")
        if self.segmenter is None:
            for opt, v in (("--seg-size", self.seg_size), ("--label-cache", self.label_cache),
                           ("--quad-parts", self.quad_parts or None), ("--size", self.size), ("--crop", self.crop or None)):
                if v is not None:
                    raise NetDissectError(f"{opt} applies to segmenter labels: add --segmenter SPEC")
        if self.iou is not None and self.iou not in IOU_MODES:
            raise NetDissectError(f"iou must be one of {', '.join(IOU_MODES)}, got {self.iou!r}")

    @property
    def mode(self) -> str:
        return self.iou or ("pnas" if self.segmenter is not None else "broden")


def resolve_inputs(inp: Inputs, split, limit):
    """``(probe, source, broden_or_None)`` for the run."""
    from netdissect.concepts import BrodenMasks
    from netdissect.concepts.segmenter import PooledLabels, SegmenterLabels
    from netdissect.data import Broden
    from netdissect.probe import BrodenImages
    from netdissect.probe.folder import ImageFolder
    from netdissect.segment import load_segmenter

    ds = None
    if inp.segmenter is None:
        ds = inp.dataset if isinstance(inp.dataset, Broden) else Broden(inp.dataset, split=split, limit=limit)
        probe, source = BrodenImages(ds), BrodenMasks(ds)
    else:
        if isinstance(inp.dataset, Broden) or (inp.images is None and split is not None):
            ds = inp.dataset if isinstance(inp.dataset, Broden) else Broden(inp.dataset, split=split, limit=limit)
            probe = BrodenImages(ds)
            if inp.size is not None or inp.crop:
                raise NetDissectError("--size/--crop resize an image folder (--images); a Broden dataset's "
                                      "images are used as they are")
        else:
            if split is not None:
                raise NetDissectError("--split selects rows of a Broden dataset, not of an image folder")
            probe = ImageFolder(inp.images if inp.images is not None else inp.dataset, size=inp.size,
                                crop=inp.crop, limit=limit)
        if ds is not None and len(ds):
            probe.shape = tuple(ds.load_image(0).shape[:2])  # Broden: one image size per dataset
        seg = load_segmenter(inp.segmenter, quad_parts=inp.quad_parts)
        source = SegmenterLabels(seg, probe, seg_size=inp.seg_size, cache_dir=inp.label_cache)
    if inp.mode == "pnas":
        source = PooledLabels(source)
    return probe, source, ds
