"""Scene compositions: which objects appear, where, and on which backgrounds.

    >>> import numpy as np
    >>> from netdissect.data.synth.draw import Canvas
    >>> from netdissect.data.synth.scenes import render_scene, SCENE_NAMES
    >>> cv = Canvas(112, np.random.default_rng(0))
    >>> render_scene(cv, "harbour-s")
    >>> SCENE_NAMES[:3]
    ['street-s', 'forest-s', 'harbour-s']

The scenes come in pairs that share their background, so that telling them
apart takes recognising objects: street / night city (road; houses, cars,
lamps, lit windows at night), forest / farm (grass; many trees vs. a fence, a
house and few trees), harbour / beach (water; boats and a quay vs. sand, sun
and people), office / kitchen (wall and floor; tables and people vs.
cabinets).  Objects are placed at a depth below the horizon, sized by
perspective and drawn far-to-near, so near objects occlude far ones.
"""
from __future__ import annotations

import numpy as np

from netdissect.data.synth.catalogue import O, P, SCENES
from netdissect.data.synth.draw import Canvas, ellipse, polygon, rect, union
from netdissect.data.synth.objects import DRAWERS, PAINT, WOOD, draw_fence, fill, jitter, pick

SCENE_NAMES = list(SCENES)


# ---------------------------------------------------------------- backgrounds
def sky(cv: Canvas, horizon: float, night: bool = False) -> None:
    rng = cv.rng
    top, low = ((10, 15, 45), (45, 45, 80)) if night else ((70, 125, 215), (175, 205, 240))
    top, low = jitter(rng, top, 12), jitter(rng, low, 12)
    h = int(np.ceil(horizon))
    if h <= 0:
        return
    t = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None, None]
    region = rect(cv, 0, 0, horizon, cv.size)
    grad = np.broadcast_to(top * (1 - t) + low * t, (h, cv.size, 3))
    cv.paint(region, (0, 0, 0), texture=lambda rng, yy, xx, c, s: grad[: yy.shape[0], : xx.shape[1]], obj=O["sky"])
    if night:
        for _ in range(int(rng.integers(5, 20))):  # stars are sky
            y, x = rng.uniform(0, horizon), rng.uniform(0, cv.size)
            fill(cv, rect(cv, y, x, y + 1, x + 1), (230, 230, 200), obj=O["sky"])


def clouds(cv: Canvas, horizon: float, n: int) -> None:
    rng, s = cv.rng, cv.size
    for _ in range(n):
        cy, cx = rng.uniform(0.05, 0.7) * horizon, rng.uniform(0, s)
        w = rng.uniform(0.08, 0.2) * s
        blobs = [ellipse(cv, cy + rng.uniform(-0.2, 0.2) * w * 0.5, cx + rng.uniform(-1, 1) * w * 0.7,
                         w * rng.uniform(0.25, 0.4), w * rng.uniform(0.4, 0.7)) for _ in range(int(rng.integers(2, 5)))]
        fill(cv, union(cv, blobs), jitter(rng, (240, 240, 245), 12), obj=O["cloud"])


def sun(cv: Canvas, horizon: float) -> None:
    rng, s = cv.rng, cv.size
    r = rng.uniform(0.04, 0.08) * s
    fill(cv, ellipse(cv, rng.uniform(0.1, 0.6) * horizon, rng.uniform(0.1, 0.9) * s, r, r),
         jitter(rng, pick(rng, [(255, 230, 60), (255, 200, 40), (255, 240, 150)]), 8), obj=O["sun"])


def mountains(cv: Canvas, horizon: float, n: int) -> None:
    rng, s = cv.rng, cv.size
    for _ in range(n):
        cx, w, h = rng.uniform(0, s), rng.uniform(0.3, 0.6) * s, rng.uniform(0.15, 0.35) * s
        col = jitter(rng, pick(rng, [(120, 115, 110), (110, 120, 140), (130, 110, 90)]), 12)
        fill(cv, polygon(cv, [(horizon + 1, cx - w / 2), (horizon + 1, cx + w / 2), (horizon - h, cx)]),
             col, "stone", obj=O["mountain"])


def ground(cv: Canvas, kind: str, y0: float, y1: float | None = None, night: bool = False) -> None:
    rng, s = cv.rng, cv.size
    y1 = s if y1 is None else y1
    region = rect(cv, y0, 0, y1, s)
    dim = 0.45 if night else 1.0
    if kind == "grass":
        fill(cv, region, jitter(rng, (80, 150, 55), 20) * dim, "foliage", obj=O["grass"])
    elif kind == "road":
        fill(cv, region, jitter(rng, (95, 95, 100), 12) * dim, "asphalt", obj=O["road"])
        if rng.random() < 0.7:  # lane dashes, still road
            y = (y0 + y1) / 2
            for x in np.arange(rng.uniform(0, 0.15) * s, s, 0.2 * s):
                fill(cv, rect(cv, y - 0.008 * s, x, y + 0.008 * s, x + 0.09 * s), (230, 230, 220), obj=O["road"],
                     keep_obj=False)
    elif kind == "water":
        fill(cv, region, jitter(rng, (45, 95, 165), 20) * dim, "water", obj=O["water"])
    elif kind == "sand":
        fill(cv, region, jitter(rng, (220, 200, 150), 15), texture="sand", obj=O["sand"])
    elif kind == "floor":
        if rng.random() < 0.5:
            fill(cv, region, jitter(rng, pick(rng, WOOD), 20) * 1.1, "wood", obj=O["floor"])
        else:
            fill(cv, region, jitter(rng, pick(rng, [(200, 200, 195), (150, 150, 150), (190, 170, 140)]), 15),
                 obj=O["floor"])
    else:
        raise ValueError(f"unknown ground kind {kind!r}")


def wall(cv: Canvas, y1: float) -> None:
    rng, s = cv.rng, cv.size
    region = rect(cv, 0, 0, y1, s)
    if rng.random() < 0.2:
        fill(cv, region, jitter(rng, (170, 70, 50), 15), "brick", obj=O["wall"])
    else:
        fill(cv, region, jitter(rng, pick(rng, PAINT), 20), obj=O["wall"])
    for _ in range(int(rng.integers(0, 3))):
        w, h = rng.uniform(0.12, 0.25) * s, rng.uniform(0.15, 0.3) * s
        x, y = rng.uniform(0, s - w), rng.uniform(0.05, 0.3) * s
        fill(cv, rect(cv, y, x, y + h, x + w), jitter(rng, (160, 205, 235), 15), "glass",
             obj=O["wall"], part=P["window"])


# ---------------------------------------------------------------- placement
class Layout:
    """Objects to draw, sorted far (small base y) to near before drawing."""

    def __init__(self, cv: Canvas, horizon: float, night: bool = False):
        self.cv, self.horizon, self.night, self.items = cv, horizon, night, []

    def depth(self, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
        """A base y between horizon and bottom (fractions lo..hi of that band) and its scale."""
        s, h = self.cv.size, self.horizon
        f = self.cv.rng.uniform(lo, hi)
        return h + f * (s * 1.02 - h), 0.35 + 0.75 * f

    def add(self, name: str, base: float, height: float, cx: float | None = None) -> None:
        if cx is None:
            cx = self.cv.rng.uniform(-0.05, 1.05) * self.cv.size
        self.items.append((base, name, cx, height))

    def add_many(self, name: str, n: int, size: tuple[float, float], lo=0.0, hi=1.0) -> None:
        s = self.cv.size
        for _ in range(n):
            base, scale = self.depth(lo, hi)
            self.add(name, base, self.cv.rng.uniform(*size) * s * scale)

    def draw(self) -> None:
        for base, name, cx, height in sorted(self.items, key=lambda t: t[0]):
            if name == "fence":
                draw_fence(self.cv, cx, cx + height * 6, base, height, night=self.night)
            else:
                DRAWERS[name](self.cv, cx, base, height, night=self.night)


def _n(rng, lo, hi):
    return int(rng.integers(lo, hi + 1))


def _street(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.4, 0.55) * s
    sky(cv, hz, night)
    if not night:
        clouds(cv, hz, _n(rng, 0, 2))
    ground(cv, "road", hz, night=night)
    lay = Layout(cv, hz, night)
    for k in range(_n(rng, 2, 4)):
        lay.add("house", hz + rng.uniform(0, 0.05) * s, rng.uniform(0.22, 0.38) * s)
    lay.add_many("tree", _n(rng, 0, 1), (0.25, 0.35), 0.0, 0.1)
    lay.add_many("lamp", _n(rng, 1, 3) if night else _n(rng, 0, 2), (0.35, 0.5), 0.1, 0.9)
    lay.add_many("car", _n(rng, 0, 2) if night else _n(rng, 1, 3), (0.14, 0.2), 0.15, 1.0)
    lay.add_many("person", _n(rng, 0, 1) if night else _n(rng, 0, 2), (0.25, 0.35), 0.2, 1.0)
    lay.draw()


def _forest(cv):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.3, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 2))
    if rng.random() < 0.5:
        mountains(cv, hz, _n(rng, 1, 2))
    ground(cv, "grass", hz)
    lay = Layout(cv, hz)
    lay.add_many("tree", _n(rng, 5, 10), (0.35, 0.7))
    lay.add_many("person", _n(rng, 0, 1), (0.25, 0.35), 0.3, 1.0)
    if rng.random() < 0.1:
        lay.add_many("house", 1, (0.2, 0.3), 0.0, 0.2)
    lay.draw()


def _farm(cv):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.55) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 2))
    if rng.random() < 0.6:
        sun(cv, hz)
    if rng.random() < 0.3:
        mountains(cv, hz, 1)
    ground(cv, "grass", hz)
    lay = Layout(cv, hz)
    if rng.random() < 0.85:
        lay.add_many("house", 1, (0.3, 0.45), 0.0, 0.3)
    lay.add_many("tree", _n(rng, 0, 3), (0.3, 0.5), 0.0, 0.5)
    if rng.random() < 0.85:
        base, scale = lay.depth(0.3, 0.9)
        lay.add("fence", base, rng.uniform(0.1, 0.16) * s * scale, cx=rng.uniform(-0.3, 0.3) * s)
    lay.add_many("person", _n(rng, 0, 1), (0.25, 0.35), 0.3, 1.0)
    if rng.random() < 0.2:
        lay.add_many("car", 1, (0.14, 0.2), 0.3, 1.0)
    lay.draw()


def _harbour(cv):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 3))
    quay = rng.uniform(0.8, 0.9) * s if rng.random() < 0.7 else None
    ground(cv, "water", hz, quay)
    if quay is not None:
        ground(cv, "road", quay)
    lay = Layout(cv, hz)
    for _ in range(_n(rng, 1, 3)):  # far shore
        lay.add("house", hz + 0.01 * s, rng.uniform(0.12, 0.22) * s)
    hi = ((quay or s) - hz) / (s * 1.02 - hz)
    lay.add_many("boat", _n(rng, 2, 4), (0.25, 0.45), 0.1, hi)
    if quay is not None:
        for _ in range(_n(rng, 0, 2)):
            lay.add("lamp", s * 0.98, rng.uniform(0.35, 0.5) * s)
    lay.draw()


def _beach(cv):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 3))
    if rng.random() < 0.7:
        sun(cv, hz)
    shore = hz + rng.uniform(0.12, 0.3) * s
    ground(cv, "water", hz, shore)
    ground(cv, "sand", shore)
    lay = Layout(cv, hz)
    lo = (shore - hz) / (s * 1.02 - hz)
    lay.add_many("boat", _n(rng, 0, 1), (0.2, 0.35), 0.0, lo * 0.8)
    lay.add_many("person", _n(rng, 1, 3), (0.25, 0.4), lo + 0.05, 1.0)
    lay.draw()


def _indoor(cv, kitchen):
    rng, s = cv.rng, cv.size
    fl = rng.uniform(0.55, 0.72) * s
    wall(cv, fl)
    ground(cv, "floor", fl)
    lay = Layout(cv, fl)
    if kitchen:
        for _ in range(_n(rng, 2, 4)):
            lay.add("cabinet", fl + rng.uniform(0, 0.03) * s, rng.uniform(0.25, 0.4) * s)
        if rng.random() < 0.5:  # wall cabinets
            for _ in range(_n(rng, 1, 2)):
                lay.add("cabinet", rng.uniform(0.25, 0.35) * s, rng.uniform(0.15, 0.22) * s)
        lay.add_many("table", _n(rng, 0, 1), (0.18, 0.25), 0.3, 0.9)
        lay.add_many("lamp", 1 if rng.random() < 0.3 else 0, (0.4, 0.55), 0.1, 0.6)
        lay.add_many("person", 1 if rng.random() < 0.4 else 0, (0.45, 0.6), 0.2, 1.0)
    else:
        lay.add_many("table", _n(rng, 1, 3), (0.18, 0.25), 0.1, 1.0)
        lay.add_many("person", _n(rng, 1, 2), (0.45, 0.6), 0.1, 1.0)
        lay.add_many("lamp", _n(rng, 0, 2), (0.4, 0.55), 0.0, 0.8)
        if rng.random() < 0.2:
            lay.add("cabinet", fl + rng.uniform(0, 0.03) * s, rng.uniform(0.25, 0.4) * s)
    lay.draw()


COMPOSERS = {
    "street-s": lambda cv: _street(cv, night=False),
    "forest-s": _forest,
    "harbour-s": _harbour,
    "farm-s": _farm,
    "beach-s": _beach,
    "night_city-s": lambda cv: _street(cv, night=True),
    "office-s": lambda cv: _indoor(cv, kitchen=False),
    "kitchen-s": lambda cv: _indoor(cv, kitchen=True),
}


def render_scene(cv: Canvas, scene: str) -> None:
    """Compose scene ``scene`` (a name of SCENE_NAMES) on an empty canvas."""
    try:
        composer = COMPOSERS[scene]
    except KeyError:
        raise KeyError(f"unknown scene {scene!r}; the world has {', '.join(SCENE_NAMES)}") from None
    composer(cv)
