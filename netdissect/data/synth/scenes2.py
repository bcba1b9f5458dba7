"""Scene compositions of world v2: 32 classes in 8 confusable groups.

    >>> import numpy as np
    >>> from netdissect.data.synth.draw import Canvas
    >>> from netdissect.data.synth.scenes2 import render_scene2, COMPOSERS2
    >>> cv = Canvas(112, np.random.default_rng(0))
    >>> render_scene2(cv, "quay-s")
    >>> len(COMPOSERS2)
    32

The four classes of a group (``GROUPS2``) share their background and layout
(sky over water, road, grass or snow; a wall over a floor) and differ by which
objects are present, how many, or the time of day, so that telling them apart
takes recognising objects — the property of Places365 that makes a class
depend on a few object detectors.  Objects shared within a group appear in
several of its classes with different frequencies, so some images are
genuinely ambiguous.  Backgrounds, placement and occlusion follow world v1
(:mod:`.scenes`); the new objects are drawn by :mod:`.objects2`.
"""
from __future__ import annotations

from netdissect.data.synth.catalogue2 import O2, P2, SCENES2
from netdissect.data.synth.draw import Canvas, ellipse, rect
from netdissect.data.synth.objects import draw_fence, jitter, pick
from netdissect.data.synth.objects2 import DRAWERS2, draw_painting, fill2
from netdissect.data.synth.scenes import Layout, clouds, ground, mountains, sky, sun, wall


class Layout2(Layout):
    """:class:`.scenes.Layout` drawing with the v2 drawers."""

    def draw(self) -> None:
        for base, name, cx, height in sorted(self.items, key=lambda t: t[0]):
            if name == "fence":
                draw_fence(self.cv, cx, cx + height * 6, base, height, night=self.night)
            else:
                DRAWERS2[name](self.cv, cx, base, height, night=self.night)

    def band(self, y: float) -> float:
        """The depth fraction (0 at the horizon, 1 at the bottom) of image row ``y``."""
        return (y - self.horizon) / (self.cv.size * 1.02 - self.horizon)


def _n(rng, lo, hi):
    return int(rng.integers(lo, hi + 1))


def _p(rng, p):
    return rng.random() < p


# ---------------------------------------------------------------- backgrounds
def snow_ground(cv: Canvas, y0: float, y1: float | None = None, night: bool = False) -> None:
    y1 = cv.size if y1 is None else y1
    fill2(cv, rect(cv, y0, 0, y1, cv.size), jitter(cv.rng, (238, 240, 248), 8) * (0.5 if night else 1.0), "snow",
          obj=O2["snow"])


def moon(cv: Canvas, horizon: float) -> None:
    rng, s = cv.rng, cv.size
    r = rng.uniform(0.03, 0.06) * s
    fill2(cv, ellipse(cv, rng.uniform(0.15, 0.6) * horizon, rng.uniform(0.1, 0.9) * s, r, r),
          jitter(rng, (235, 235, 210), 8), obj=O2["moon"])


def pier(cv: Canvas, y_top: float, x0: float, x1: float) -> None:
    """A wooden pier from the bottom of the image up to ``y_top`` (planks on posts)."""
    rng, s = cv.rng, cv.size
    col = jitter(rng, pick(rng, [(140, 100, 60), (120, 85, 50), (160, 120, 80)]), 12)
    y = float(s)
    k = 0
    while y > y_top:  # planks, thinner with distance
        t = (y - y_top) / max(s - y_top, 1)
        h = 1.0 + 2.5 * t
        shrink = (1 - t) * 0.35 * (x1 - x0)
        fill2(cv, rect(cv, y - h, x0 + shrink, y, x1 - shrink), col * (0.9 + 0.1 * (k % 2)), "wood",
              obj=O2["pier"], part=P2["plank"])
        y -= h + 0.4
        k += 1
    for x in (x0 + 1, x1 - 2):
        fill2(cv, rect(cv, y_top + 0.4 * (s - y_top), x, s, x + 1.5), col * 0.6, "wood", obj=O2["pier"], part=P2["post"])


def bridge(cv: Canvas, deck_y: float, night: bool = False) -> None:
    rng, s = cv.rng, cv.size
    col = jitter(rng, pick(rng, [(150, 145, 135), (170, 90, 60), (120, 120, 125)]), 12) * (0.5 if night else 1.0)
    mat = "brick" if col[0] > col[2] + 30 else "stone"
    th = rng.uniform(0.04, 0.07) * s
    fill2(cv, rect(cv, deck_y - th, 0, deck_y, s), col, mat, obj=O2["bridge"], part=P2["deck"])
    n = _n(rng, 2, 4)
    pw = rng.uniform(0.04, 0.08) * s
    depth = rng.uniform(0.08, 0.16) * s
    for k in range(n):
        x = (k + rng.uniform(0.3, 0.7)) * s / n
        fill2(cv, rect(cv, deck_y, x - pw / 2, deck_y + depth, x + pw / 2), col * 0.85, mat, obj=O2["bridge"], part=P2["post"])
    fill2(cv, rect(cv, deck_y - th - 0.04 * s, 0, deck_y - th, s), col * 0.7, "metal", obj=O2["bridge"], part=P2["rail"])


# ---------------------------------------------------------------- coast (sky over water and sand)
def _coast(cv, kind):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 3))
    if _p(rng, 0.4):
        sun(cv, hz)
    lay = Layout2(cv, hz)
    if kind in ("beach", "beach_boats"):
        shore = hz + rng.uniform(0.12, 0.3) * s
        ground(cv, "water", hz, shore)
        ground(cv, "sand", shore)
        lo = lay.band(shore)
        if kind == "beach":
            lay.add_many("person", _n(rng, 1, 3), (0.25, 0.4), lo + 0.05, 1.0)
            lay.add_many("umbrella", _n(rng, 1, 3), (0.3, 0.45), lo + 0.05, 1.0)
            lay.add_many("boat", 1 if _p(rng, 0.2) else 0, (0.2, 0.35), 0.0, lo * 0.8)
        else:
            lay.add_many("boat", _n(rng, 1, 3), (0.2, 0.35), 0.0, lo * 0.8)
            lay.add_many("boat", _n(rng, 1, 2), (0.25, 0.4), lo + 0.1, 1.0)   # pulled up on the sand
            lay.add_many("person", _n(rng, 0, 2), (0.25, 0.4), lo + 0.05, 1.0)
            lay.add_many("umbrella", 1 if _p(rng, 0.15) else 0, (0.3, 0.45), lo + 0.05, 1.0)
    elif kind == "harbour":
        ground(cv, "water", hz)
        for _ in range(_n(rng, 1, 3)):  # far shore
            lay.add("house", hz + 0.01 * s, rng.uniform(0.12, 0.22) * s)
        lay.add_many("boat", _n(rng, 3, 5), (0.25, 0.45), 0.1, 1.0)
    else:  # quay: a paved edge in front, lamps and people on it, a boat or two moored
        quay = rng.uniform(0.68, 0.8) * s
        ground(cv, "water", hz, quay)
        ground(cv, "road", quay)
        lay.add_many("boat", _n(rng, 0, 2), (0.25, 0.4), 0.1, lay.band(quay))
        for _ in range(_n(rng, 1, 3)):
            lay.add("lamp", rng.uniform(quay + 2 * s / 112, s), rng.uniform(0.35, 0.5) * s)
        for _ in range(_n(rng, 1, 3)):
            lay.add("person", rng.uniform(quay + 4 * s / 112, s), rng.uniform(0.25, 0.35) * s)
        if _p(rng, 0.3):
            lay.add("bench", rng.uniform(quay + 4 * s / 112, s), rng.uniform(0.12, 0.16) * s)
    lay.draw()


# ---------------------------------------------------------------- street (sky over road, houses behind)
def _street(cv, kind):
    rng, s = cv.rng, cv.size
    night = kind == "night_street"
    hz = rng.uniform(0.4, 0.55) * s
    sky(cv, hz, night)
    if night:
        if _p(rng, 0.5):
            moon(cv, hz)
    else:
        clouds(cv, hz, _n(rng, 0, 2))
    ground(cv, "road", hz, night=night)
    lay = Layout2(cv, hz, night)
    n_house = {"street": (2, 4), "residential": (2, 4), "parking_lot": (0, 1), "night_street": (2, 4)}[kind]
    for _ in range(_n(rng, *n_house)):
        lay.add("house", hz + rng.uniform(0, 0.05) * s, rng.uniform(0.22, 0.38) * s)
    if kind == "street":
        lay.add_many("car", _n(rng, 1, 3), (0.14, 0.2), 0.15, 1.0)
        lay.add_many("person", _n(rng, 0, 2), (0.25, 0.35), 0.2, 1.0)
        lay.add_many("lamp", _n(rng, 0, 1), (0.35, 0.5), 0.1, 0.9)
        lay.add_many("tree", 1 if _p(rng, 0.2) else 0, (0.25, 0.35), 0.0, 0.1)
    elif kind == "residential":
        lay.add_many("tree", _n(rng, 1, 3), (0.3, 0.45), 0.0, 0.3)
        lay.add_many("bush", _n(rng, 1, 3), (0.12, 0.2), 0.0, 0.5)
        if _p(rng, 0.6):
            base, scale = lay.depth(0.2, 0.6)
            lay.add("fence", base, rng.uniform(0.08, 0.12) * s * scale, cx=rng.uniform(-0.3, 0.4) * s)
        lay.add_many("car", 1 if _p(rng, 0.3) else 0, (0.14, 0.2), 0.15, 1.0)
        lay.add_many("person", _n(rng, 0, 1), (0.25, 0.35), 0.2, 1.0)
    elif kind == "parking_lot":
        for row in range(_n(rng, 2, 3)):  # rows of parked cars
            lo = 0.1 + 0.3 * row
            base, scale = lay.depth(lo, lo + 0.1)
            x = rng.uniform(-0.1, 0.1) * s
            while x < 1.05 * s:
                h = rng.uniform(0.14, 0.18) * s * scale
                if _p(rng, 0.8):
                    lay.add("car", base + rng.uniform(-1, 1), h, cx=x)
                x += h * rng.uniform(2.4, 3.0)
        lay.add_many("lamp", _n(rng, 1, 2), (0.4, 0.55), 0.0, 0.8)
        lay.add_many("person", 1 if _p(rng, 0.3) else 0, (0.25, 0.35), 0.2, 1.0)
    else:  # night street: the street's objects under a dark sky, lamps lit, windows lit
        lay.add_many("lamp", _n(rng, 1, 3), (0.35, 0.5), 0.1, 0.9)
        lay.add_many("car", _n(rng, 0, 2), (0.14, 0.2), 0.15, 1.0)
        lay.add_many("person", _n(rng, 0, 1), (0.25, 0.35), 0.2, 1.0)
    lay.draw()


# ---------------------------------------------------------------- green (sky over grass)
def _green(cv, kind):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.3, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 2))
    if _p(rng, 0.3):
        mountains(cv, hz, 1)
    ground(cv, "grass", hz)
    lay = Layout2(cv, hz)
    if kind == "forest":
        lay.add_many("tree", _n(rng, 6, 11), (0.35, 0.7))
        lay.add_many("bush", _n(rng, 0, 2), (0.12, 0.2), 0.3, 1.0)
        lay.add_many("person", 1 if _p(rng, 0.2) else 0, (0.25, 0.35), 0.3, 1.0)
    elif kind == "orchard":  # fruit trees in regular rows
        for row in range(_n(rng, 2, 3)):
            lo = 0.05 + 0.35 * row
            base, scale = lay.depth(lo, lo + 0.05)
            step = rng.uniform(0.22, 0.32) * s * scale
            x = rng.uniform(0, step)
            while x < s + step / 2:
                lay.add("fruit_tree", base, rng.uniform(0.28, 0.36) * s * scale, cx=x)
                x += step
        lay.add_many("person", 1 if _p(rng, 0.2) else 0, (0.25, 0.35), 0.3, 1.0)
    elif kind == "park":
        lay.add_many("tree", _n(rng, 1, 3), (0.35, 0.6), 0.0, 0.6)
        lay.add_many("bench", _n(rng, 1, 2), (0.13, 0.18), 0.3, 1.0)
        lay.add_many("person", _n(rng, 1, 3), (0.25, 0.35), 0.3, 1.0)
        lay.add_many("lamp", _n(rng, 0, 2), (0.35, 0.5), 0.2, 1.0)
        lay.add_many("bush", _n(rng, 0, 2), (0.12, 0.2), 0.2, 1.0)
    else:  # farm: a farmhouse, a fence, a few animals
        lay.add_many("house", 1, (0.45, 0.6), 0.0, 0.3)
        lay.add_many("tree", _n(rng, 0, 2), (0.3, 0.5), 0.0, 0.5)
        base, scale = lay.depth(0.3, 0.8)
        lay.add("fence", base, rng.uniform(0.1, 0.16) * s * scale, cx=rng.uniform(-0.3, 0.3) * s)
        lay.add_many("cow", _n(rng, 1, 2), (0.14, 0.2), 0.3, 1.0)
        lay.add_many("person", 1 if _p(rng, 0.3) else 0, (0.25, 0.35), 0.3, 1.0)
    lay.draw()


# ---------------------------------------------------------------- field (sky over grass: farmland)
def _field(cv, kind):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 2))
    if _p(rng, 0.5):
        sun(cv, hz)
    ground(cv, "grass", hz)
    lay = Layout2(cv, hz)
    if kind == "pasture":  # many animals, no house
        lay.add_many("cow", _n(rng, 3, 6), (0.14, 0.22), 0.1, 1.0)
        if _p(rng, 0.5):
            base, scale = lay.depth(0.0, 0.3)
            lay.add("fence", base, rng.uniform(0.1, 0.14) * s * scale, cx=rng.uniform(-0.3, 0.3) * s)
        lay.add_many("tree", _n(rng, 0, 2), (0.3, 0.5), 0.0, 0.3)
    elif kind == "crop_field":  # rows of crops
        for row in range(_n(rng, 4, 7)):
            lo = row / 7.0
            base, scale = lay.depth(lo, lo + 0.02)
            step = rng.uniform(0.07, 0.1) * s * scale
            x = rng.uniform(0, step)
            while x < s + step:
                lay.add("crop", base, rng.uniform(0.08, 0.12) * s * scale, cx=x)
                x += step
        lay.add_many("tree", 1 if _p(rng, 0.3) else 0, (0.3, 0.5), 0.0, 0.1)
        lay.add_many("house", 1 if _p(rng, 0.2) else 0, (0.25, 0.35), 0.0, 0.1)
    elif kind == "campsite":
        lay.add_many("tent", _n(rng, 1, 3), (0.14, 0.22), 0.2, 1.0)
        lay.add_many("tree", _n(rng, 1, 4), (0.35, 0.6), 0.0, 0.5)
        lay.add_many("person", _n(rng, 0, 2), (0.25, 0.35), 0.3, 1.0)
        lay.add_many("car", 1 if _p(rng, 0.2) else 0, (0.14, 0.2), 0.2, 0.6)
    else:  # country road: a road across the grass, a car or two, trees along it
        y0 = hz + rng.uniform(0.25, 0.5) * (s - hz)
        ground(cv, "road", y0, y0 + rng.uniform(0.12, 0.22) * s)
        lay.add_many("car", _n(rng, 1, 2), (0.14, 0.2), lay.band(y0) + 0.05, lay.band(y0) + 0.2)
        lay.add_many("tree", _n(rng, 1, 4), (0.3, 0.5), 0.0, lay.band(y0))
        lay.add_many("cow", 1 if _p(rng, 0.2) else 0, (0.14, 0.2), 0.0, lay.band(y0))
    lay.draw()


# ---------------------------------------------------------------- snow (sky over snow)
def _snow(cv, kind):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.3, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 3))
    if _p(rng, 0.8 if kind in ("snowfield", "ski_resort") else 0.4):
        mountains(cv, hz, _n(rng, 1, 3))
    snow_ground(cv, hz)
    lay = Layout2(cv, hz)
    if kind == "snowfield":
        lay.add_many("tree", 1 if _p(rng, 0.2) else 0, (0.3, 0.5), 0.0, 0.3)
        lay.add_many("person", 1 if _p(rng, 0.2) else 0, (0.25, 0.35), 0.2, 1.0)
    elif kind == "ski_resort":
        lay.add_many("person", _n(rng, 2, 5), (0.22, 0.35), 0.05, 1.0)
        lay.add_many("lamp", _n(rng, 0, 2), (0.4, 0.55), 0.0, 0.8)
        lay.add_many("house", 1 if _p(rng, 0.3) else 0, (0.25, 0.35), 0.0, 0.2)
    elif kind == "snowy_forest":
        lay.add_many("tree", _n(rng, 5, 10), (0.35, 0.7))
        lay.add_many("person", 1 if _p(rng, 0.15) else 0, (0.25, 0.35), 0.3, 1.0)
    else:  # winter village
        for _ in range(_n(rng, 2, 4)):
            base, scale = lay.depth(0.0, 0.4)
            lay.add("house", base, rng.uniform(0.25, 0.4) * s * scale)
        lay.add_many("tree", _n(rng, 0, 2), (0.3, 0.5), 0.0, 0.5)
        lay.add_many("person", 1 if _p(rng, 0.3) else 0, (0.25, 0.35), 0.3, 1.0)
    lay.draw()


# ---------------------------------------------------------------- lake (sky over water, land in front)
def _lake(cv, kind):
    rng, s = cv.rng, cv.size
    night = kind == "night_harbour"
    hz = rng.uniform(0.3, 0.45) * s
    sky(cv, hz, night)
    if night:
        if _p(rng, 0.6):
            moon(cv, hz)
    else:
        clouds(cv, hz, _n(rng, 0, 2))
        if _p(rng, 0.5):
            mountains(cv, hz, _n(rng, 1, 2))
    lay = Layout2(cv, hz, night)
    if kind == "lake":  # calm water, a wooded far shore, grass in front
        shore = hz + rng.uniform(0.3, 0.5) * (s - hz)
        ground(cv, "water", hz, shore)
        ground(cv, "grass", shore)
        for _ in range(_n(rng, 2, 5)):
            lay.add("tree", hz + 0.01 * s, rng.uniform(0.15, 0.25) * s)
        lay.add_many("boat", 1 if _p(rng, 0.3) else 0, (0.15, 0.25), 0.05, lay.band(shore) * 0.8)
        lay.add_many("bush", _n(rng, 0, 2), (0.12, 0.2), lay.band(shore) + 0.05, 1.0)
    elif kind == "river_bridge":
        shore = hz + rng.uniform(0.55, 0.75) * (s - hz)
        ground(cv, "water", hz, shore)
        ground(cv, "grass", shore)
        for _ in range(_n(rng, 0, 3)):
            lay.add("tree", hz + 0.01 * s, rng.uniform(0.15, 0.25) * s)
        lay.add_many("boat", 1 if _p(rng, 0.2) else 0, (0.15, 0.25), 0.05, lay.band(shore) * 0.8)
        lay.draw()
        bridge(cv, hz + rng.uniform(0.15, 0.35) * (shore - hz))
        return
    elif kind == "pier":
        ground(cv, "water", hz)
        for _ in range(_n(rng, 0, 2)):
            lay.add("tree", hz + 0.01 * s, rng.uniform(0.12, 0.2) * s)
        lay.add_many("boat", 1 if _p(rng, 0.4) else 0, (0.2, 0.35), 0.1, 0.7)
        lay.draw()
        y_top = hz + rng.uniform(0.15, 0.4) * (s - hz)
        x0 = rng.uniform(0.1, 0.55) * s
        pier(cv, y_top, x0, x0 + rng.uniform(0.25, 0.4) * s)
        people = Layout2(cv, hz)
        for _ in range(_n(rng, 0, 2)):
            people.add("person", rng.uniform(y_top + 0.2 * (s - y_top), s), rng.uniform(0.22, 0.32) * s,
                       cx=rng.uniform(x0 + 0.05 * s, x0 + 0.25 * s))
        people.draw()
        return
    else:  # harbour at night: dark water, boats, lit lamps on the quay, lit windows on the far shore
        quay = rng.uniform(0.82, 0.92) * s if _p(rng, 0.6) else None
        ground(cv, "water", hz, quay, night=True)
        if quay is not None:
            ground(cv, "road", quay, night=True)
        for _ in range(_n(rng, 1, 3)):
            lay.add("house", hz + 0.01 * s, rng.uniform(0.12, 0.22) * s)
        lay.add_many("boat", _n(rng, 2, 4), (0.25, 0.45), 0.1, lay.band(quay or s))
        for _ in range(_n(rng, 1, 2)):
            lay.add("lamp", s * 0.98, rng.uniform(0.35, 0.5) * s)
    lay.draw()


# ---------------------------------------------------------------- indoor (a wall over a floor)
def _room(cv, kind):
    rng, s = cv.rng, cv.size
    fl = rng.uniform(0.55, 0.72) * s
    wall(cv, fl)
    ground(cv, "floor", fl)
    lay = Layout2(cv, fl)

    def paintings(n, board=False):
        for _ in range(n):
            h = rng.uniform(0.14, 0.22) * s
            draw_painting(cv, rng.uniform(0.15, 0.85) * s, rng.uniform(0.06, max(fl - h - 0.12 * s, 0.07 * s)), h,
                          board=board)

    def on_floor(name, n, size, lo=0.0, hi=1.0):
        lay.add_many(name, n, size, lo, hi)

    if kind == "kitchen":
        for _ in range(_n(rng, 2, 4)):
            lay.add("cabinet", fl + rng.uniform(0, 0.03) * s, rng.uniform(0.25, 0.4) * s)
        if _p(rng, 0.5):
            for _ in range(_n(rng, 1, 2)):
                lay.add("cabinet", rng.uniform(0.25, 0.35) * s, rng.uniform(0.15, 0.22) * s)
        on_floor("table", 1 if _p(rng, 0.3) else 0, (0.18, 0.25), 0.3, 0.9)
        on_floor("person", 1 if _p(rng, 0.3) else 0, (0.45, 0.6), 0.2, 1.0)
    elif kind == "dining_room":
        paintings(1 if _p(rng, 0.5) else 0)
        base, scale = lay.depth(0.3, 0.7)
        cx = rng.uniform(0.3, 0.7) * s
        h = rng.uniform(0.3, 0.38) * s * scale
        lay.add("table", base, h, cx=cx)
        for k in range(_n(rng, 2, 4)):
            lay.add("chair", base + rng.uniform(-2, 4), h * rng.uniform(1.3, 1.6), cx=cx + rng.uniform(-1.3, 1.3) * h * 1.2)
        on_floor("lamp", 1 if _p(rng, 0.3) else 0, (0.4, 0.55), 0.0, 0.6)
    elif kind == "living_room":
        paintings(_n(rng, 1, 2))
        on_floor("sofa", 1, (0.3, 0.4), 0.2, 0.7)
        on_floor("lamp", 1 if _p(rng, 0.5) else 0, (0.4, 0.55), 0.0, 0.6)
        on_floor("table", 1 if _p(rng, 0.4) else 0, (0.1, 0.14), 0.5, 1.0)
    elif kind == "bedroom":
        paintings(1 if _p(rng, 0.5) else 0)
        on_floor("bed", 1, (0.3, 0.4), 0.2, 0.7)
        on_floor("lamp", 1 if _p(rng, 0.4) else 0, (0.4, 0.55), 0.0, 0.6)
        if _p(rng, 0.4):
            lay.add("cabinet", fl + rng.uniform(0, 0.03) * s, rng.uniform(0.15, 0.22) * s)
    elif kind == "office":  # desks with monitors, a chair, people
        for _ in range(_n(rng, 1, 2)):
            base, scale = lay.depth(0.1, 0.9)
            h = rng.uniform(0.18, 0.25) * s * scale * 1.3
            cx = rng.uniform(0.1, 0.9) * s
            lay.add("table", base, h, cx=cx)
            lay.add("monitor", base - h * 1.12 - 0.01, h * rng.uniform(0.7, 0.9), cx=cx + rng.uniform(-0.3, 0.3) * h)
            if _p(rng, 0.6):
                lay.add("chair", base + 1, h * 1.3, cx=cx + rng.uniform(-0.8, 0.8) * h)
        on_floor("person", _n(rng, 0, 2), (0.45, 0.6), 0.1, 1.0)
        on_floor("shelf", 1 if _p(rng, 0.15) else 0, (0.35, 0.5), 0.0, 0.1)
    elif kind == "classroom":  # a board, rows of tables, many people
        paintings(1, board=True)
        for row in range(_n(rng, 2, 3)):
            lo = 0.15 + 0.3 * row
            for _ in range(_n(rng, 2, 3)):
                lay.add_many("table", 1, (0.16, 0.22), lo, lo + 0.1)
        on_floor("person", _n(rng, 2, 5), (0.35, 0.5), 0.1, 1.0)
    elif kind == "library":  # shelves of books
        for _ in range(_n(rng, 2, 4)):
            lay.add("shelf", fl + rng.uniform(0, 0.03) * s, rng.uniform(0.4, 0.6) * s)
        on_floor("table", 1 if _p(rng, 0.5) else 0, (0.16, 0.22), 0.3, 1.0)
        on_floor("person", 1 if _p(rng, 0.4) else 0, (0.45, 0.6), 0.2, 1.0)
    else:  # conference room: one long table, chairs, a screen on the wall
        if _p(rng, 0.85):
            h = rng.uniform(0.22, 0.32) * s
            lay.add("monitor", rng.uniform(0.3, 0.5) * fl + h, h * 1.3, cx=rng.uniform(0.3, 0.7) * s)
        base, scale = lay.depth(0.35, 0.7)
        cx = rng.uniform(0.4, 0.6) * s
        h = rng.uniform(0.26, 0.32) * s * scale
        lay.add("table", base, h * 1.0, cx=cx - h * 1.2)
        lay.add("table", base, h * 1.0, cx=cx + h * 1.2)   # a long table: two tables end to end
        for _ in range(_n(rng, 3, 6)):
            lay.add("chair", base + rng.uniform(-2, 6), h * rng.uniform(1.3, 1.6), cx=cx + rng.uniform(-2.4, 2.4) * h)
        on_floor("person", 1 if _p(rng, 0.3) else 0, (0.45, 0.6), 0.2, 1.0)
    lay.draw()


def _composer(fn, kind):
    return lambda cv: fn(cv, kind)


COMPOSERS2 = {}
for _fn, _kinds in ((_coast, ["beach", "beach_boats", "harbour", "quay"]),
                    (_street, ["street", "residential", "parking_lot", "night_street"]),
                    (_green, ["forest", "orchard", "park", "farm"]),
                    (_room, ["kitchen", "dining_room", "living_room", "bedroom",
                             "office", "classroom", "library", "conference_room"]),
                    (_snow, ["snowfield", "ski_resort", "snowy_forest", "winter_village"]),
                    (_field, ["pasture", "crop_field", "campsite", "country_road"]),
                    (_lake, ["lake", "river_bridge", "pier", "night_harbour"])):
    for _k in _kinds:
        COMPOSERS2[f"{_k}-s"] = _composer(_fn, _k)
assert sorted(COMPOSERS2) == sorted(SCENES2)


def render_scene2(cv: Canvas, scene: str) -> None:
    """Compose v2 scene ``scene`` (a name of SCENES2) on an empty canvas."""
    try:
        composer = COMPOSERS2[scene]
    except KeyError:
        raise KeyError(f"unknown scene {scene!r}; world v2 has {', '.join(SCENES2)}") from None
    composer(cv)
