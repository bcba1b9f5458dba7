"""Texture-only images in the manner of the Describable Textures Dataset.

    >>> import numpy as np
    >>> from netdissect.data.synth.textures import render_texture, TEXTURE_NAMES
    >>> render_texture(np.random.default_rng(0), "striped", 112).shape
    (112, 112, 3)

Each texture is a two- or three-colour pattern over the whole image with a
random period, orientation, phase and palette, plus a little noise; the
class (an image-level ``texture`` label, as in Broden) is the pattern.
"""
from __future__ import annotations

import numpy as np

from netdissect.data.synth.catalogue import TEXTURES

TEXTURE_NAMES = list(TEXTURES)

PALETTE = np.array([(20, 20, 20), (240, 240, 240), (200, 30, 30), (30, 60, 200), (40, 150, 50),
                    (250, 220, 40), (250, 140, 20), (130, 40, 150), (130, 80, 40), (128, 128, 128),
                    (250, 160, 190)], np.float32)


def _coords(rng, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    th = rng.uniform(0, np.pi)
    u = np.cos(th) * xx + np.sin(th) * yy
    v = -np.sin(th) * xx + np.cos(th) * yy
    return yy, xx, u, v


def _pattern(rng, name, size):
    """Index map (0, 1 or 2) of the pattern's colours."""
    yy, xx, u, v = _coords(rng, size)
    p = size * rng.uniform(0.06, 0.12)
    ph = rng.uniform(0, p)
    if name == "banded":
        return (np.floor((u + ph) / (size * rng.uniform(0.2, 0.35))) % 3).astype(np.int64)
    if name == "striped":
        return ((u + ph) % p < p * rng.uniform(0.3, 0.6)).astype(np.int64)
    if name == "chequered":
        return ((np.floor((u + ph) / p) + np.floor(v / p)) % 2).astype(np.int64)
    if name == "crosshatched":
        a, b = (u + v) / 1.414, (u - v) / 1.414
        w = p * 0.15
        return (((a % (p / 1.5)) < w) | ((b % (p / 1.5)) < w)).astype(np.int64)
    if name == "dotted":
        cu, cv = (u + ph) % p - p / 2, v % p - p / 2
        return (cu * cu + cv * cv < (p * rng.uniform(0.2, 0.3)) ** 2).astype(np.int64)
    if name == "grid":
        w = max(p * 0.12, 1.0)
        return (((u + ph) % p < w) | (v % p < w)).astype(np.int64)
    if name == "spiralled":
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = np.hypot(yy - cy, xx - cx)
        t = np.arctan2(yy - cy, xx - cx)
        return (np.sin(t * rng.choice([1, 2, 3]) + r / (p * 0.25)) > 0).astype(np.int64)
    if name == "sprinkled":
        out = np.zeros((size, size), np.int64)
        n = int(size * size / (p * p) * 2)
        ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
        ln = max(int(p * 0.3), 1)
        for k in range(ln):
            out[np.clip(ys + k, 0, size - 1), xs] = 1
        return out
    if name == "zigzagged":
        amp = p * rng.uniform(0.5, 1.0)
        tri = np.abs(((u / (p * 1.2)) % 2) - 1) * amp
        return ((v + tri + ph) % p < p * 0.45).astype(np.int64)
    raise KeyError(f"unknown texture {name!r}; the world has {', '.join(TEXTURE_NAMES)}")


def render_texture(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """float32 (size, size, 3) RGB image of texture class ``name``."""
    idx = _pattern(rng, name, size)
    cols = PALETTE[rng.choice(len(PALETTE), 3, replace=False)]
    cols = np.clip(cols + rng.uniform(-20, 20, (3, 3)), 0, 255).astype(np.float32)
    img = cols[idx]
    return img + rng.normal(0, 4, img.shape).astype(np.float32)
