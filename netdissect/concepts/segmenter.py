"""Concept labels from a segmentation model run on the probe images (PNAS 2020).

    >>> from netdissect.concepts.segmenter import SegmenterLabels
    >>> source = SegmenterLabels(load_segmenter("color"), probe, seg_size=(28, 28))   # doctest: +SKIP

The segmenter runs in the main process, batched on the run's device, on the
very batches pass 1 feeds the model (:meth:`SegmenterLabels.observe`, called
by the activation pass before normalisation), and only on images whose
labels the :class:`~netdissect.concepts.cache.LabelCache` does not hold yet;
they are kept in memory and written as one pack of the cache at each
checkpoint and at the end of pass 1 (:meth:`SegmenterLabels.flush`).  Pass 2
reads them back from the memory-mapped packs in the main process
(:meth:`SegmenterLabels.load`).  A row "holds" a category when any of its
pixels is labelled with a concept of that category (what ``--iou broden``
restricts its sums to; ``--iou pnas`` pools every image).
"""
from __future__ import annotations

import numpy as np

from netdissect.concepts import ConceptSource
from netdissect.concepts.cache import LabelCache, default_cache_dir, label_dtype
from netdissect.data import LabelSample
from netdissect.errors import DatasetError, NetDissectError
from netdissect.segment import catalogue, checked_segment


def row_stamp(probe, i: int) -> str:
    """What identifies row ``i``'s image file: resolved path, size and modification time."""
    from netdissect.probe.folder import file_stamp

    if hasattr(probe, "file_stamp"):
        return probe.file_stamp(i)
    if hasattr(probe, "ds"):
        return file_stamp(probe.ds.image_path(i))
    raise NetDissectError(f"{probe.describe()}: its rows are not image files, so their labels cannot be cached")


MIN_SEG_SIZE = 2  # label pixels a side: one pixel labels the whole image, a unit's top region always "covers" it


def segmenter_identity(segmenter) -> dict:
    """``segmenter.identity()``, checked: a user segmenter whose ``identity()`` raises or returns
    something that is not a JSON object is refused in one line (the label cache and summary.json key on it)."""
    import json

    name = getattr(segmenter, "spec", None) or type(segmenter).__name__
    try:
        ident = segmenter.identity()
    except Exception as exc:  # noqa: BLE001 - the user's own code, explained
        raise NetDissectError(f"segmenter {name}: its identity() failed ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:160]}); it must return a JSON object naming what decides "
                              "its labels (e.g. {'kind': 'mine', 'weights_sha256': ...})") from None
    try:
        text = json.dumps(ident, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NetDissectError(f"segmenter {name}: its identity() returned something that is not JSON ({exc}); "
                              "return a dict of strings, numbers and lists") from None
    if not isinstance(ident, dict):
        raise NetDissectError(f"segmenter {name}: its identity() returned a {type(ident).__name__} ({text[:40]}), "
                              "not a JSON object (a dict)")
    return json.loads(text)


def default_seg_size(shape) -> tuple[int, int]:
    """The label size for images of ``shape`` (H, W): a quarter, as the paper's 224 -> 56."""
    return max(1, shape[0] // 4), max(1, shape[1] // 4)


class SegmenterLabels(ConceptSource):
    """The label planes a segmenter gives the probe's images, through the label cache."""

    kind = "segmenter"
    loads_from_memory = True  # labels come from the cache's memory-mapped packs

    def __init__(self, segmenter, probe, seg_size=None, cache_dir=None):
        shape = getattr(probe, "shape", None)
        if seg_size is None:
            if shape is None:
                raise NetDissectError("seg_size (--seg-size) is needed: the probe has no single image size")
            seg_size = default_seg_size(shape)
        probe_id = probe.identity()
        self._open(segmenter, probe, seg_size, cache_dir,
                   {"image_size": probe_id.get("size"), "crop": probe_id.get("crop", False)})

    def _open(self, segmenter, probe, seg_size, cache_dir, identity: dict) -> None:
        """Check ``seg_size``, read the segmenter's catalogue and open the label cache keyed by the
        segmenter, the label size and ``identity`` (what else decides the labels)."""
        self.segmenter, self.probe = segmenter, probe
        if isinstance(seg_size, int):
            seg_size = (seg_size, seg_size)
        seg_size = tuple(int(v) for v in seg_size)
        if len(seg_size) != 2 or min(seg_size) < 1:
            raise NetDissectError(f"seg_size must be a positive size (N or H,W), got {seg_size!r}")
        if min(seg_size) < MIN_SEG_SIZE:
            raise NetDissectError(f"label size (--seg-size) {seg_size[0]}x{seg_size[1]} is too small to carry a "
                                  f"concept: with under {MIN_SEG_SIZE} label pixels a side a unit's top region covers "
                                  "most of the image and nearly every unit scores as a detector; give --seg-size "
                                  f"{MIN_SEG_SIZE} or more (or larger images)")
        self.seg_size = seg_size
        self.concepts = catalogue(segmenter)
        self.dtype = label_dtype(len(self.concepts))
        self._identity = {"kind": self.kind, "spec": getattr(segmenter, "spec", None),
                          "segmenter": segmenter_identity(segmenter), "seg_size": list(seg_size), **identity}
        self.cache = LabelCache(cache_dir or default_cache_dir(), self._identity, plane_size=seg_size)
        self._identity["cache"] = self.cache.key
        self._stamps: dict[int, str] = {}
        self.segmented = 0
        self.on_device = None

    def identity(self) -> dict:
        return dict(self._identity)

    def stamp(self, i: int) -> str:
        s = self._stamps.get(i)
        if s is None:
            s = self._stamps[i] = row_stamp(self.probe, i)
        return s

    def observe(self, rows, images) -> None:
        """Segment the images of ``rows`` (a batch as pass 1 feeds it, RGB in [0, 1] on the
        device) whose labels are not cached yet, and cache them."""
        rows = [int(i) for i in rows]
        missing = [j for j, i in enumerate(rows) if not self._has(i)]
        if not missing:
            return
        if self.on_device != images.device:
            self.segmenter = self.segmenter.to(images.device) or self.segmenter
            self.on_device = images.device
        sub = images if len(missing) == len(rows) else images[missing]
        planes = checked_segment(self.segmenter, sub, self.seg_size).cpu().numpy().astype(self.dtype)
        for j, p in zip(missing, planes):
            self._put(rows[j], p)
        self.segmented += len(missing)

    def _has(self, i: int) -> bool:
        return self.cache.has(self.stamp(i))

    def _put(self, i: int, planes) -> None:
        self.cache.put(self.stamp(i), planes)

    def _get(self, i: int):
        return self.cache.get(self.stamp(i))

    def flush(self) -> None:
        """Write every label made since the last flush to the cache, as one pack (pass 1 calls it
        at each checkpoint, so a resumed run finds the labels of the rows its checkpoint counts
        as done, and at its end)."""
        try:
            self.cache.flush()
        except OSError as exc:
            raise NetDissectError(f"could not write labels to the label cache {self.cache.dir}: {exc}") from exc

    def export(self, rows, root) -> None:
        """Copy the cached labels of ``rows`` into a label cache under ``root`` (same key and
        entries): a chunk's labels, which its merge reads there without running the segmenter."""
        dest = LabelCache(root, {k: v for k, v in self._identity.items() if k != "cache"}, plane_size=self.seg_size)
        for i in rows:
            planes = self._get(i)
            if planes is None:
                raise DatasetError(f"{self.probe.where(i)}: no labels in the label cache {self.cache.dir} "
                                   "(the image changed during the run, or the cache was removed): run again")
            dest.put(self.stamp(i), planes)
        dest.flush()

    def load(self, i: int) -> LabelSample:
        planes = self._get(i)
        if planes is None:
            raise DatasetError(f"{self.probe.where(i)}: no labels in the label cache {self.cache.dir} "
                               "(the image changed during the run, or the cache was removed): run again")
        G = len(self.concepts.categories)
        present = np.flatnonzero(np.bincount(planes.ravel())[1:]) + 1  # the labels present, as np.unique's > 0
        has = np.zeros(G, bool)
        has[self.concepts.primary[present - 1]] = True
        return LabelSample(i, planes.astype(np.uint16), np.zeros(0, np.int32), has)

    def check(self, i: int) -> None:
        """Labels are made from the row's image in pass 1: nothing else to read."""

    def mask_sizes(self, rows=None) -> list[tuple[int, int]]:
        return [self.seg_size]


class PooledLabels(ConceptSource):
    """Another source's labels with every image holding every category: the PNAS pooled IoU
    (one count over all pixels of all images, no category restriction)."""

    def __init__(self, inner):
        self.inner = inner
        self.concepts = inner.concepts

    @property
    def needs_output(self) -> bool:
        return self.inner.needs_output

    @property
    def loads_from_memory(self) -> bool:
        return self.inner.loads_from_memory

    def identity(self) -> dict:
        return {**self.inner.identity(), "iou": "pnas"}

    def observe(self, rows, images) -> None:
        self.inner.observe(rows, images)

    def flush(self) -> None:
        self.inner.flush()

    def load(self, i: int) -> LabelSample:
        s = self.inner.load(i)
        if s.error is None and s.has_category is not None:
            s.has_category = np.ones(len(self.concepts.categories), bool)
        return s

    def check(self, i: int) -> None:
        self.inner.check(i)

    def files_digest(self, rows=None, mtime: bool = True):
        return self.inner.files_digest(rows, mtime=mtime)

    def mask_sizes(self, rows=None):
        return self.inner.mask_sizes(rows)
