"""A small synthetic world with dense Broden-style ground truth.

    >>> from netdissect.data.synth import generate, SceneDataset, CATALOGUE
    >>> sample = next(generate(1, seed=2017, size=112))     # image, masks, scene/texture label
    >>> train = SceneDataset(256, seed=1)                   # in-memory scenes for training

Scenes (8, image-level) are distributions over objects (19, pixel masks)
with parts (24, two planes), materials (9) and colours (11, named per pixel);
texture-only images (9 DTD-like classes) make up ~10%.  See docs/world.md.
Write a dataset on disk with :class:`netdissect.data.writer.BrodenWriter`
(``netdissect synth --out DIR``) and read it back with
:class:`netdissect.data.Broden`.
"""
from netdissect.data.synth.catalogue import CATALOGUE, CATEGORIES, SCENES, TEXTURES
from netdissect.data.synth.dataset import NORMALIZE, SceneDataset, to_tensor
from netdissect.data.synth.generate import DEFAULT_SIZE, Sample, generate, make_sample, mask_size

__all__ = ["CATALOGUE", "CATEGORIES", "SCENES", "TEXTURES", "NORMALIZE", "SceneDataset", "to_tensor",
           "DEFAULT_SIZE", "Sample", "generate", "make_sample", "mask_size"]
