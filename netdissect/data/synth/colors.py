"""Per-pixel colour names: the 11 basic colour terms from RGB by a fixed map.

    >>> import numpy as np
    >>> from netdissect.data.synth.colors import name_colors, COLOR_NAMES
    >>> COLOR_NAMES[int(name_colors(np.array([[[250, 10, 10]]], np.uint8))[0, 0])]
    'red-c'

The map is nearest-prototype in CIELAB (a few focal RGB values per basic
colour term, Berlin & Kay's eleven), tabulated once on a 64-level RGB grid so that
naming an image is a single table look-up.  It plays the role of the
colour-naming map (van de Weijer et al.) that labels Broden's ``color``
category.  The output is an index into :data:`COLOR_NAMES`.
"""
from __future__ import annotations

import numpy as np

from netdissect.data.synth.catalogue import COLORS

COLOR_NAMES = list(COLORS)

# Focal colours (sRGB): one or more per name, the name's index first.
PROTOTYPES = np.array([
    [0, 15, 15, 15], [0, 45, 40, 40],                        # black
    [1, 25, 60, 225], [1, 120, 185, 235], [1, 25, 35, 120],  # blue (plain, sky, navy)
    [2, 125, 75, 35], [2, 90, 55, 30],                       # brown
    [3, 128, 128, 128], [3, 185, 185, 185], [3, 90, 90, 90], # grey
    [4, 35, 155, 45], [4, 20, 90, 30], [4, 140, 200, 90],    # green
    [5, 250, 135, 10],                                       # orange
    [6, 250, 160, 195], [6, 240, 100, 170],                  # pink
    [7, 125, 35, 155], [7, 80, 20, 120],                     # purple
    [8, 215, 25, 30], [8, 150, 20, 25],                      # red
    [9, 245, 245, 245],                                      # white
    [10, 250, 230, 35], [10, 240, 230, 140],                 # yellow
], dtype=np.float64)

_LEVELS = 64
_STEP = 256 // _LEVELS


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in 0..255, any leading shape, last axis 3."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805],
                  [0.2126, 0.7152, 0.0722],
                  [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def _build_table() -> np.ndarray:
    centres = np.arange(_LEVELS) * _STEP + (_STEP - 1) / 2.0
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1)
    lab = rgb_to_lab(grid.reshape(-1, 3))
    proto = rgb_to_lab(PROTOTYPES[:, 1:])
    # The nearest prototype, one prototype at a time (the same squared distances as the dense
    # (cells, prototypes, 3) array, without its 145 MB; strict < keeps argmin's first-index ties).
    best = np.full(len(lab), np.inf)
    nearest = np.zeros(len(lab), np.intp)
    for k, p in enumerate(proto):
        d = ((lab - p) ** 2).sum(-1)
        closer = d < best
        best[closer], nearest[closer] = d[closer], k
    names = PROTOTYPES[:, 0].astype(np.uint8)
    return names[nearest].reshape(_LEVELS, _LEVELS, _LEVELS)


_TABLE_CACHE: list[np.ndarray] = []


def color_table() -> np.ndarray:
    """The (64, 64, 64) table of colour-name indices, built on first use (0.15 s; not at import)."""
    if not _TABLE_CACHE:
        _TABLE_CACHE.append(_build_table())
    return _TABLE_CACHE[0]


def name_colors(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOR_NAMES of every pixel of a uint8 (..., 3) RGB array."""
    q = np.asarray(rgb, dtype=np.uint8) // _STEP
    return color_table()[q[..., 0], q[..., 1], q[..., 2]]
