"""Procedural material textures (wood grain, brick courses, glass glints, ...).

    >>> import numpy as np
    >>> from netdissect.data.synth.materials import TEXTURES
    >>> yy, xx = np.arange(8.)[:, None], np.arange(8.)[None, :]
    >>> TEXTURES["brick"](np.random.default_rng(0), yy, xx, np.array([170., 60, 40]), 112).shape
    (8, 8, 3)

Each texture is ``f(rng, yy, xx, color, size) -> float32 (h, w, 3)``: the
colour modulated by a pattern in canvas coordinates (``yy``, ``xx`` are
column/row grids), scaled with the image ``size`` so that a pattern looks the
same at every resolution.  The patterns are strong enough for a small CNN to
tell materials apart at 112 px.
"""
from __future__ import annotations

import numpy as np


def _noise(rng, h, w, cell=1):
    """Uniform noise in [-1, 1], blocky with cells of ``cell`` pixels."""
    if cell <= 1:
        return rng.random((h, w), dtype=np.float32) * 2 - 1
    small = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32) * 2 - 1
    return np.repeat(np.repeat(small, cell, 0), cell, 1)[:h, :w]


def _shade(color, v):
    return np.clip(color[None, None, :] * v[..., None], 0, 255).astype(np.float32)


def wood(rng, yy, xx, color, size):
    u = size / 112.0
    h, w = yy.shape[0], xx.shape[1]
    phase = rng.random() * 6.28
    grain = np.sin(yy / (1.3 * u) + 0.8 * np.sin(xx / (9 * u) + phase) + phase)
    return _shade(color, 0.82 + 0.18 * grain + 0.04 * _noise(rng, h, w))


def brick(rng, yy, xx, color, size):
    u = size / 112.0
    bh, bw = 3.5 * u, 7.0 * u
    row = np.floor(yy / bh)
    off = (row % 2) * bw / 2
    mortar = ((yy % bh) < 0.9 * u) | (((xx + off) % bw) < 0.9 * u)
    h, w = yy.shape[0], xx.shape[1]
    out = _shade(color, 0.9 + 0.1 * _noise(rng, h, w))
    out[np.broadcast_to(mortar, (h, w))] = (215, 210, 200)
    return out


def glass(rng, yy, xx, color, size):
    u = size / 112.0
    glint = (np.sin((yy + xx) / (1.6 * u)) > 0.75).astype(np.float32)
    return np.clip(color[None, None, :] * 0.9 + 70 * glint[..., None], 0, 255).astype(np.float32)


def metal(rng, yy, xx, color, size):
    h, w = yy.shape[0], xx.shape[1]
    streak = rng.random((h, 1), dtype=np.float32) * 2 - 1
    sheen = 0.25 * np.cos((yy - yy.min()) / max(h, 1) * 3.14)
    return _shade(color, 0.9 + 0.12 * streak + sheen + 0.03 * _noise(rng, h, w))


def foliage(rng, yy, xx, color, size):
    u = size / 112.0
    h, w = yy.shape[0], xx.shape[1]
    blot = _noise(rng, h, w, cell=max(int(2 * u), 1))
    return _shade(color, 0.78 + 0.3 * (blot > 0.2) - 0.15 * (blot < -0.6))


def water(rng, yy, xx, color, size):
    u = size / 112.0
    phase = rng.random() * 6.28
    wave = np.sin(yy / (0.9 * u) + 1.5 * np.sin(xx / (4 * u) + phase))
    out = _shade(color, 0.88 + 0.1 * wave)
    return np.clip(out + 35 * (wave > 0.9)[..., None], 0, 255).astype(np.float32)


def fabric(rng, yy, xx, color, size):
    u = size / 112.0
    weave = np.sin(yy / (0.5 * u)) * np.sin(xx / (0.5 * u))
    return _shade(color, 0.9 + 0.12 * weave)


def asphalt(rng, yy, xx, color, size):
    h, w = yy.shape[0], xx.shape[1]
    return _shade(color, 0.85 + 0.35 * _noise(rng, h, w) ** 3)


def stone(rng, yy, xx, color, size):
    u = size / 112.0
    h, w = yy.shape[0], xx.shape[1]
    coarse = _noise(rng, h, w, cell=max(int(4 * u), 1))
    return _shade(color, 0.85 + 0.15 * coarse + 0.08 * _noise(rng, h, w))


def plain(rng, yy, xx, color, size):
    """Flat colour with faint noise (painted surfaces, skin, sky)."""
    h, w = yy.shape[0], xx.shape[1]
    return np.clip(color[None, None, :] + 5 * _noise(rng, h, w)[..., None], 0, 255).astype(np.float32)


def sand(rng, yy, xx, color, size):
    h, w = yy.shape[0], xx.shape[1]
    return _shade(color, 0.93 + 0.07 * _noise(rng, h, w) + 0.04 * _noise(rng, h, w, 3))


TEXTURES = {"wood": wood, "brick": brick, "glass": glass, "metal": metal, "foliage": foliage,
            "water": water, "fabric": fabric, "asphalt": asphalt, "stone": stone,
            "plain": plain, "sand": sand}
