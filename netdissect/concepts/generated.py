"""Concept labels of a generator's own outputs (PNAS 2020, "Role of units in a GAN").

    >>> from netdissect.concepts.generated import GeneratedLabels
    >>> source = GeneratedLabels(load_segmenter("color"), LatentSamples(100, 1, 128),   # doctest: +SKIP
    ...                          {"sha256": model_identity(g), "output": "..."}, seg_size=32)

A generated image exists only inside pass 1: the activation pass runs the
generator's *whole* forward (the chosen layers' activations are recorded by
hooks in that same pass) and hands the output, as RGB in [0, 1]
(:meth:`netdissect.models.loading.GeneratorIO.to_image`), to :meth:`observe`,
which segments it batched on the run's device.  No image file is written.

Labels go to the label cache (:class:`~netdissect.concepts.cache.LabelCache`)
as an image folder's do, in packs written at each checkpoint and at the end of
pass 1: the cache folder is keyed by the segmenter, the label size and the
*generator* (its weights digest, its output transform, the forward's
precision), and a row's stamp is its draw (``seed`` and ``dim``) and row
number (row ``i`` of a seed does not depend on the number of samples), so a
second run of the same generator and seed (other layers, more samples)
segments nothing it has segmented before, and a run of N samples writes a
pack per flush, not N files.
"""
from __future__ import annotations

from netdissect.concepts.segmenter import SegmenterLabels
from netdissect.errors import NetDissectError


class GeneratedLabels(SegmenterLabels):
    """The labels ``segmenter`` gives the outputs of the generator that ``probe`` (latent samples) feeds.

    ``generator`` is the generator's identity (a JSON-able dict: weights digest, output transform,
    precision): it keys the label cache.  ``needs_output``: pass 1 calls :meth:`observe` with the
    model's output as an image, not with its input.
    """

    needs_output = True

    kind = "generated"

    def __init__(self, segmenter, probe, generator: dict, seg_size, cache_dir=None):
        self._open(segmenter, probe, seg_size, cache_dir,
                   {"generator": dict(generator), "image_size": list(getattr(probe, "shape", ()) or ())})

    def draw(self) -> str:
        """The latent draw the rows come from (seed, dim; independent of the number of samples)."""
        p = self.probe
        return f"latent:RandomState.standard_normal:seed={p.seed}:dim={p.dim}"

    def stamp(self, i: int) -> str:
        """Row ``i``'s z: the draw (seed, dim) and the row (independent of the number of samples)."""
        return f"{self.draw()}:row={int(i)}"

    def observe(self, rows, images) -> None:
        """Segment the generated ``images`` (RGB in [0, 1], (B, 3, H, W) on the device) of ``rows``
        whose labels are not cached yet."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise NetDissectError(f"the generator's output has shape {tuple(images.shape)}; a generator to "
                                  "dissect must output RGB images (N, 3, H, W)")
        super().observe(rows, images)
