"""Samples of the synthetic world: an image with Broden-style labels.

    >>> from netdissect.data.synth import generate
    >>> s = next(generate(1, seed=0, size=112))
    >>> s.image.shape, s.masks["object"][0].shape
    ((112, 112, 3), (56, 56))

Sample ``i`` of seed ``s`` is drawn from ``np.random.default_rng([s, i])``
alone, so it is the same whatever ``n`` is and wherever a run starts.  About
``TEXTURE_FRACTION`` of the samples are texture-only images (an image-level
``texture`` label and colour masks); the rest are scenes (an image-level
``scene`` label and object, part (two planes), material and colour masks).
Masks are half the image size, like Broden's 224 -> 112, and hold global
label numbers of :data:`CATALOGUE` (0 = none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from netdissect.data.synth.catalogue import CATALOGUE
from netdissect.data.synth.colors import name_colors
from netdissect.data.synth.draw import Canvas
from netdissect.data.synth.textures import render_texture
from netdissect.data.synth.worlds import get_world

TEXTURE_FRACTION = 0.1
DEFAULT_SIZE = 112
MIN_SIZE = 16

_COLOR_NUMBERS = np.array([CATALOGUE.number("color", c) for c in CATALOGUE.lists["color"]], np.int32)


@dataclass
class Sample:
    """One image of the world and its labels (global label numbers)."""

    index: int
    image: np.ndarray                                          # uint8 (H, W, 3)
    masks: dict[str, list[np.ndarray]] = field(default_factory=dict)  # category -> int32 (sh, sw) planes
    labels: dict[str, list[int]] = field(default_factory=dict)        # image-level category -> numbers
    scene: int = -1     # index into SCENES, -1 for texture images
    texture: int = -1   # index into TEXTURES, -1 for scene images


def mask_size(size: int) -> int:
    """Mask side for an image side (half, as Broden's 224 -> 112 and 227 -> 113)."""
    return (size + 1) // 2


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"image size must be an integer >= {MIN_SIZE}, got {size!r}")


def _down_labels(plane: np.ndarray, ms: int) -> np.ndarray:
    idx = np.minimum((np.arange(ms) * plane.shape[0]) // ms + (plane.shape[0] // ms) // 2, plane.shape[0] - 1)
    return plane[np.ix_(idx, idx)].astype(np.int32)


def _down_colors(image: np.ndarray, ms: int) -> np.ndarray:
    size = image.shape[0]
    edges = (np.arange(ms + 1) * size) // ms
    # mean over each cell (cells are 2x2, or 1x2/2x1 at odd sizes)
    csum = np.pad(image.astype(np.float32).cumsum(0).cumsum(1), ((1, 0), (1, 0), (0, 0)))
    a, b = edges[:-1], edges[1:]
    tot = csum[b][:, b] - csum[a][:, b] - csum[b][:, a] + csum[a][:, a]
    area = (b - a)[:, None] * (b - a)[None, :]
    mean = tot / area[..., None]
    return _COLOR_NUMBERS[name_colors(np.clip(mean + 0.5, 0, 255).astype(np.uint8))]


def _finish(rng, rgb: np.ndarray) -> np.ndarray:
    gain = rng.uniform(0.85, 1.15)
    bias = rng.uniform(-12, 12)
    noise = rng.normal(0, 3.0, rgb.shape[:2]).astype(np.float32)[..., None]
    return np.clip(rgb * gain + bias + noise + 0.5, 0, 255).astype(np.uint8)


def make_sample(seed: int, index: int, size: int = DEFAULT_SIZE, kind: str | None = None,
                labels: bool = True, world: int = 1) -> Sample:
    """Sample ``index`` of world ``seed`` (of world version ``world``, 1 or 2).

    ``kind``: None (drawn: texture with probability TEXTURE_FRACTION), or
    ``"scene"`` / ``"texture"`` to force one; ``labels=False`` skips the masks
    (for training, which needs only the image and its scene).
    """
    _check_size(size)
    return _make_sample_v(seed, index, size, kind, labels, get_world(world))


def _make_sample_v(seed, index, size, kind, labels, w) -> Sample:
    """:func:`make_sample` in world ``w`` (its catalogue, scenes and renderer)."""
    rng = np.random.default_rng([int(seed), int(index)])
    is_texture = rng.random() < TEXTURE_FRACTION
    scene_pick = int(rng.integers(len(w.scenes)))
    texture_pick = int(rng.integers(len(w.textures)))
    if kind is not None:
        if kind not in ("scene", "texture"):
            raise ValueError(f"kind must be 'scene', 'texture' or None, got {kind!r}")
        is_texture = kind == "texture"
    ms = mask_size(size)
    cat = w.catalogue
    if is_texture:
        name = w.textures[texture_pick]
        image = _finish(rng, render_texture(rng, name, size))
        sample = Sample(index, image, texture=texture_pick)
        sample.labels["texture"] = [cat.number("texture", name)]
        if labels:
            sample.masks["color"] = [_down_colors(image, ms)]
        return sample
    name = w.scenes[scene_pick]
    cv = Canvas(size, rng)
    w.render(cv, name)
    image = _finish(rng, cv.rgb)
    sample = Sample(index, image, scene=scene_pick)
    sample.labels["scene"] = [cat.number("scene", name)]
    if labels:
        sample.masks["color"] = [_down_colors(image, ms)]
        sample.masks["object"] = [_down_labels(cv.obj, ms)]
        parts = [_down_labels(cv.part, ms)]
        part2 = _down_labels(cv.part2, ms)
        if part2.any():
            parts.append(part2)
        sample.masks["part"] = parts
        mat = _down_labels(cv.mat, ms)
        if mat.any():
            sample.masks["material"] = [mat]
    return sample


def generate(n: int, seed: int = 0, size: int = DEFAULT_SIZE, start: int = 0, world: int = 1) -> Iterator[Sample]:
    """Samples ``start .. start + n - 1`` of world ``seed`` (each independent of ``n``) of version ``world``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_size(size)
    get_world(world)
    for i in range(start, start + n):
        yield make_sample(seed, i, size, world=world)
