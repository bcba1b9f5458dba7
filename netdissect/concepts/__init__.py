"""Concept sources: the label planes of each probe row, with concept names and categories.

A concept source gives, for row ``i`` of the probe, a
:class:`netdissect.data.LabelSample` (pixel label planes at the mask
resolution, image-level labels and the categories the row holds), and a
catalogue (``concepts``: names, numbers, categories, each concept's primary
category).  Today's source is the masks of a Broden-format dataset; a
segmentation model run on the input (or generated) image is a further source
on the same seam.

    >>> from netdissect.concepts import BrodenMasks
    >>> from netdissect.data import Broden
    >>> source = BrodenMasks(Broden(world))
    >>> source.load(0).planes.shape                   # (planes, sh, sw)
    (5, 16, 16)
"""
from __future__ import annotations

import numpy as np


class ConceptSource:
    """The interface every concept source implements (subclass it).

    ``load(i)`` runs in loader workers and returns a LabelSample (``error`` set instead of
    raising when the row's files are bad); ``concepts`` is the catalogue.
    """

    concepts = None
    # True: pass 1 runs the model's whole forward and calls ``observe`` with its *output* as an
    # RGB image (a generator's: :class:`netdissect.concepts.generated.GeneratedLabels`)
    needs_output = False
    #: ``load`` only slices labels already in memory (memory-mapped): pass 2 then reads them in
    #: the main process, as loader workers would cost more to start and feed than they save
    loads_from_memory = False

    def identity(self) -> dict:
        raise NotImplementedError

    def load(self, i: int):
        raise NotImplementedError

    def check(self, i: int) -> None:
        """Raise DatasetError if row ``i``'s labels cannot be read (used by ``skip_bad`` in pass 1)."""
        self.load(i)

    def observe(self, rows, images) -> None:
        """Called by pass 1, in the main process, with each batch's row indices and images (RGB
        in [0, 1] on the run's device, before normalisation): a source that labels the images
        themselves (:class:`netdissect.concepts.segmenter.SegmenterLabels`) does it here.  With
        ``needs_output`` the images are the model's outputs instead (a generator's, after its
        output transform), from the same forward pass that records the activations."""

    def flush(self) -> None:
        """Write what ``observe`` made and still holds in memory (pass 1 calls it at each checkpoint
        and at its end, so that the rows done are labelled on disk)."""

    def files_digest(self, rows=None, mtime: bool = True) -> str | None:
        """A digest of the files the labels of ``rows`` are read from (None when not files)."""
        return None

    def mask_sizes(self, rows=None) -> list[tuple[int, int]]:
        """The distinct label-plane sizes (sh, sw) of the given rows (all rows when None)."""
        raise NotImplementedError


class BrodenMasks(ConceptSource):
    """The label masks of a Broden-format dataset (``label = R + 256 G`` per plane)."""

    def __init__(self, ds):
        self.ds = ds
        self.concepts = ds.concepts

    def identity(self) -> dict:
        return {"kind": "broden", "path": str(self.ds.root)}

    def load(self, i: int):
        sample = self.ds.load_labels(i)
        if sample.planes is not None:
            sample.planes = sample.planes.astype(np.uint16)  # R + 256 G < 65536: half the bytes to send
        return sample

    def check(self, i: int) -> None:
        self.ds.load_labels(i)

    def files_digest(self, rows=None, mtime: bool = True) -> str | None:
        return self.ds.files_digest(rows, mtime=mtime, parts="masks")

    def mask_sizes(self, rows=None) -> list[tuple[int, int]]:
        return sorted(self.ds.mask_sizes(rows))
