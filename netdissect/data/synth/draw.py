"""Drawing primitives: a canvas that paints colour and label planes together.

    >>> import numpy as np
    >>> from netdissect.data.synth.draw import Canvas, ellipse
    >>> cv = Canvas(112, np.random.default_rng(0))
    >>> cv.paint(ellipse(cv, 56, 56, 20, 10), (200, 30, 30), obj=3)
    >>> int((cv.obj == 3).sum()) > 500
    True

Every shape is a boolean mask over its bounding box (``Region``), so drawing
costs only the pixels a shape covers.  :meth:`Canvas.paint` writes the colour
(optionally through a material texture from :mod:`.materials`) and the label
numbers (object, part, part of part, material) under the mask; later paint
occludes earlier paint in every plane, which is how occlusion is labelled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Region:
    """A boolean mask ``m`` whose top-left pixel is (y0, x0) in the canvas."""

    y0: int
    x0: int
    m: np.ndarray

    @property
    def empty(self) -> bool:
        return self.m.size == 0 or not self.m.any()


class Canvas:
    """An RGB float image plus label planes (object, part, part2, material) of one size."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.obj = np.zeros((size, size), np.int16)
        self.part = np.zeros((size, size), np.int16)
        self.part2 = np.zeros((size, size), np.int16)
        self.mat = np.zeros((size, size), np.int16)

    def clip(self, y0: float, x0: float, y1: float, x1: float):
        """Integer bounding box clipped to the canvas, and its coordinate grids."""
        s = self.size
        iy0, ix0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
        iy1, ix1 = min(int(np.ceil(y1)), s), min(int(np.ceil(x1)), s)
        iy1, ix1 = max(iy1, iy0), max(ix1, ix0)
        yy = np.arange(iy0, iy1, dtype=np.float32)[:, None] + 0.5
        xx = np.arange(ix0, ix1, dtype=np.float32)[None, :] + 0.5
        return iy0, ix0, yy, xx

    def paint(self, region: Region, color, *, texture=None, obj: int | None = None,
              part: int | None = None, part2: int | None = None, mat: int | None = None,
              keep_obj: bool = False) -> None:
        """Paint ``region`` with ``color`` (through ``texture`` if given) and labels.

        ``obj``: object number (None keeps the object below when ``keep_obj``,
        else 0).  ``part``/``part2``/``mat``: numbers, or None for "none" (0).
        A part painted with ``keep_obj=True`` stays part of the object below.
        """
        if region.empty:
            return
        m = region.m
        h, w = m.shape
        sl = (slice(region.y0, region.y0 + h), slice(region.x0, region.x0 + w))
        if texture is None:
            patch = np.asarray(color, np.float32)
            self.rgb[sl][m] = patch
        else:
            yy = np.arange(region.y0, region.y0 + h, dtype=np.float32)[:, None]
            xx = np.arange(region.x0, region.x0 + w, dtype=np.float32)[None, :]
            patch = texture(self.rng, yy, xx, np.asarray(color, np.float32), self.size)
            self.rgb[sl][m] = patch[m]
        if not keep_obj:
            self.obj[sl][m] = obj or 0
        elif obj is not None:
            self.obj[sl][m] = obj
        self.part[sl][m] = part or 0
        self.part2[sl][m] = part2 or 0
        self.mat[sl][m] = mat or 0


# ---------------------------------------------------------------- shapes
def rect(cv: Canvas, y0: float, x0: float, y1: float, x1: float) -> Region:
    """Axis-aligned rectangle [y0, y1) x [x0, x1) (pixel centres inside)."""
    iy0, ix0, yy, xx = cv.clip(y0, x0, y1, x1)
    m = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    return Region(iy0, ix0, m)


def ellipse(cv: Canvas, cy: float, cx: float, ry: float, rx: float) -> Region:
    """Filled ellipse centred at (cy, cx) with radii (ry, rx)."""
    iy0, ix0, yy, xx = cv.clip(cy - ry, cx - rx, cy + ry + 1, cx + rx + 1)
    m = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
    return Region(iy0, ix0, m)


def polygon(cv: Canvas, pts) -> Region:
    """Filled convex polygon; ``pts`` is a sequence of (y, x) in either winding."""
    pts = np.asarray(pts, np.float32)
    iy0, ix0, yy, xx = cv.clip(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1)
    m = np.ones((yy.shape[0], xx.shape[1]), bool)
    n = len(pts)
    area = 0.0
    for i in range(n):
        (ya, xa), (yb, xb) = pts[i], pts[(i + 1) % n]
        area += xa * yb - xb * ya
    sign = 1.0 if area >= 0 else -1.0
    for i in range(n):
        (ya, xa), (yb, xb) = pts[i], pts[(i + 1) % n]
        m &= sign * ((xb - xa) * (yy - ya) - (yb - ya) * (xx - xa)) >= 0
    return Region(iy0, ix0, m)


def thick_line(cv: Canvas, y0: float, x0: float, y1: float, x1: float, width: float) -> Region:
    """A segment of the given width (a rotated rectangle)."""
    d = np.array([y1 - y0, x1 - x0], np.float32)
    norm = float(np.hypot(*d)) or 1.0
    ny, nx = -d[1] / norm * width / 2, d[0] / norm * width / 2
    return polygon(cv, [(y0 + ny, x0 + nx), (y1 + ny, x1 + nx), (y1 - ny, x1 - nx), (y0 - ny, x0 - nx)])


def union(cv: Canvas, regions: list[Region]) -> Region:
    """One region covering all of ``regions``."""
    regions = [r for r in regions if r.m.size]
    if not regions:
        return Region(0, 0, np.zeros((0, 0), bool))
    y0 = min(r.y0 for r in regions)
    x0 = min(r.x0 for r in regions)
    y1 = max(r.y0 + r.m.shape[0] for r in regions)
    x1 = max(r.x0 + r.m.shape[1] for r in regions)
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for r in regions:
        m[r.y0 - y0:r.y0 - y0 + r.m.shape[0], r.x0 - x0:r.x0 - x0 + r.m.shape[1]] |= r.m
    return Region(y0, x0, m)
