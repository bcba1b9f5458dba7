"""What a run reads: the probe (images) and the concept source (labels), from dissect()'s arguments.

``dataset`` alone: a Broden folder's images and masks (``iou="broden"`` by default, or
``"pnas"``: pooled counts over upsampled thresholds).  ``segmenter`` (with ``images``, or
with ``dataset`` whose masks are then ignored): labels from a segmentation model, ``iou="pnas"``
by default.  ``samples`` (a generator): latent vectors as the rows, the generator's *output*
labelled by ``segmenter`` (:class:`netdissect.concepts.generated.GeneratedLabels`), ``iou="pnas"``
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
    interpolation: str | None = None  # how --size resamples: the model's recorded interpolation (None: bilinear)
    crop: bool = False
    samples: object = None  # a generator's probe: how many latent samples (or a LatentSamples)
    latent_seed: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def generator(self) -> bool:
        return self.samples is not None

    def check(self) -> None:
        if self.samples is not None:
            self._check_generator()
            return
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
                           ("--quad-parts", self.quad_parts or None)):
                if v is not None:
                    raise NetDissectError(f"{opt} applies to segmenter labels: add --segmenter SPEC")
        if self.crop and (self.images is None):
            raise NetDissectError("--crop cuts the images, and a Broden dataset's masks would no longer line up "
                                  "with them: use --size alone (the whole image resized; masks keep their size)")
        if self.iou is not None and self.iou not in IOU_MODES:
            raise NetDissectError(f"iou must be one of {', '.join(IOU_MODES)}, got {self.iou!r}")

    def _check_generator(self) -> None:
        if self.dataset is not None or self.images is not None:
            raise NetDissectError("give latent samples (--samples N, for a generator) or a dataset/image folder "
                                  "(--dataset/--images, for a classifier), not both")
        if self.segmenter is None:
            raise NetDissectError("--samples needs --segmenter SPEC to label the generated images (e.g. "
                                  "--segmenter zoo:world-seg, or color; `netdissect segmenters` lists them)")
        for opt, v in (("--size", self.size), ("--crop", self.crop or None)):
            if v is not None:
                raise NetDissectError(f"{opt} resizes an image folder; a generator's images are its outputs "
                                      "(--seg-size sets the label size)")
        from netdissect.probe.latent import LatentSamples

        if not isinstance(self.samples, LatentSamples) and (
                isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1):
            raise NetDissectError(f"samples must be a positive number of latent samples, got {self.samples!r}")
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
        probe, source = BrodenImages(ds, size=inp.size, interpolation=inp.interpolation), BrodenMasks(ds)
    else:
        if isinstance(inp.dataset, Broden) or (inp.images is None and split is not None):
            ds = inp.dataset if isinstance(inp.dataset, Broden) else Broden(inp.dataset, split=split, limit=limit)
            probe = BrodenImages(ds, size=inp.size, interpolation=inp.interpolation)
        else:
            if split is not None:
                raise NetDissectError("--split selects rows of a Broden dataset, not of an image folder")
            probe = ImageFolder(inp.images if inp.images is not None else inp.dataset, size=inp.size,
                                crop=inp.crop, limit=limit, interpolation=inp.interpolation)
        if ds is not None and len(ds):  # Broden: one image size per dataset (or --size)
            probe.shape = (inp.size, inp.size) if inp.size is not None else tuple(ds.load_image(0).shape[:2])
        seg = load_segmenter(inp.segmenter, quad_parts=inp.quad_parts)
        source = SegmenterLabels(seg, probe, seg_size=inp.seg_size, cache_dir=inp.label_cache)
    if inp.mode == "pnas":
        source = PooledLabels(source)
    return probe, source, ds


def default_generated_seg_size(shape) -> tuple[int, int]:
    """The label size of a generator's (H, W) outputs: a quarter as in the paper (256 -> 64), but at
    least 32 (a 64 px generator is read at 32 x 32) and at most the output itself."""
    return tuple(min(int(n), max(32, int(n) // 4)) for n in shape)


def resolve_generator_inputs(inp: Inputs, dim: int, out_shape, generator_identity: dict, seed: int):
    """``(probe, source, None)`` of a generator run: latent samples of size ``dim`` (seed
    ``inp.latent_seed``, else ``seed``), labelled by segmenting outputs of size ``out_shape`` (H, W)."""
    from netdissect.concepts.generated import GeneratedLabels
    from netdissect.concepts.segmenter import PooledLabels
    from netdissect.probe.latent import LatentSamples
    from netdissect.segment import load_segmenter

    if isinstance(inp.samples, LatentSamples):
        probe = inp.samples
        if probe.dim != dim:
            raise NetDissectError(f"the latent samples have size {probe.dim} but the generator takes z of size {dim}")
    else:
        probe = LatentSamples(inp.samples, seed if inp.latent_seed is None else inp.latent_seed, dim)
    probe.shape = tuple(out_shape)
    seg = load_segmenter(inp.segmenter, quad_parts=inp.quad_parts)
    seg_size = inp.seg_size if inp.seg_size is not None else default_generated_seg_size(out_shape)
    source = GeneratedLabels(seg, probe, generator_identity, seg_size=seg_size, cache_dir=inp.label_cache)
    if inp.mode == "pnas":
        source = PooledLabels(source)
    return probe, source, None
