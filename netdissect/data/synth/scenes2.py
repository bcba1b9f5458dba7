"""Scene compositions of world v2: 32 classes in 8 confusable groups.

    >>> import numpy as np
    >>> from netdissect.data.synth.draw import Canvas
    >>> from netdissect.data.synth.scenes2 import render_scene2, COMPOSERS2
    >>> cv = Canvas(112, np.random.default_rng(0))
    >>> render_scene2(cv, "quay-s")
    >>> len(COMPOSERS2)
    32

The four classes of a group (``GROUPS2``) are drawn from ONE background and
filler distribution (``GROUP_SPECS2``: a background function per group, called
the same way for its four classes; the two night classes are darker) and
differ only by their key objects: a class's key objects appear in ``P_KEY``
(90%) of its images and each sibling class's key in ``P_SIBLING`` (8%), so
layout cannot separate a group's classes and even a perfect object detector
is wrong on some images (about 0.83 held-out for a logistic regression on the
ground-truth objects: ``scripts/world_probe.py``) — the property of Places365
that makes a class depend on a few object detectors.  This is world v2
revision 2 (``worlds.REVISIONS``; docs/world.md, "Pilot 2").  Placement and
occlusion follow world v1 (:mod:`.scenes`); the new objects are drawn by
:mod:`.objects2`.
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


# ---------------------------------------------------------------- the composition rule
# Revision 2 (docs/world.md, "Pilot 2"): every class of a group is drawn from the SAME background and
# filler distribution (one function per group, called the same way for its four classes), and the classes
# differ only by their key objects.  A class's key objects appear in P_KEY of its images; each sibling
# class's key objects appear in P_SIBLING of them, so an image can hold no key object or the key of another
# class, and a perfect object detector is right for well under all images (as in Places365).
P_KEY = 0.9
P_SIBLING = 0.08
NIGHT2 = ("night_street", "night_harbour")   # night is the one non-object cue: always, and only, these two


class _Ctx:
    """One image being composed: its canvas, layout, zones (depth bands), and drawers to run after the layout."""

    def __init__(self, cv: Canvas, hz: float, night: bool = False):
        self.cv, self.rng, self.s, self.hz, self.night = cv, cv.rng, cv.size, hz, night
        self.lay = Layout2(cv, hz, night)
        self.zones: dict = {}
        self.post: list = []


def _many(name, lo_hi, size, zone):
    """A key: ``name`` drawn ``lo..hi`` times at random depths of ``zone`` with height fraction ``size``."""
    def place(c: _Ctx):
        c.lay.add_many(name, _n(c.rng, *lo_hi), size, *c.zones[zone])
    return place


def _far(name, lo_hi, size):
    """A key on the horizon (the far shore, behind everything)."""
    def place(c: _Ctx):
        for _ in range(_n(c.rng, *lo_hi)):
            c.lay.add(name, c.hz + 0.01 * c.s, c.rng.uniform(*size) * c.s)
    return place


# ---------------------------------------------------------------- backgrounds (one per group)
def _bg_coast(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 3))
    if _p(rng, 0.4):
        sun(cv, hz)
    c = _Ctx(cv, hz)
    shore = hz + rng.uniform(0.15, 0.3) * s
    ground(cv, "water", hz, shore)
    ground(cv, "sand", shore)
    lo = c.lay.band(shore)
    c.zones = {"water": (0.0, lo * 0.8), "sand": (lo + 0.05, 1.0)}
    c.lay.add_many("person", _n(rng, 0, 2), (0.25, 0.35), *c.zones["sand"])
    return c


def _bg_street(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.4, 0.55) * s
    sky(cv, hz, night)
    if night:
        if _p(rng, 0.5):
            moon(cv, hz)
    else:
        clouds(cv, hz, _n(rng, 0, 2))
    ground(cv, "road", hz, night=night)
    c = _Ctx(cv, hz, night)
    for _ in range(_n(rng, 2, 3)):
        c.lay.add("house", hz + rng.uniform(0, 0.05) * s, rng.uniform(0.22, 0.38) * s)
    c.zones = {"near": (0.15, 1.0), "far": (0.0, 0.3)}
    return c


def _bg_green(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.3, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 2))
    if _p(rng, 0.3):
        mountains(cv, hz, 1)
    ground(cv, "grass", hz)
    c = _Ctx(cv, hz)
    c.zones = {"any": (0.0, 1.0), "near": (0.3, 1.0), "far": (0.0, 0.5)}
    c.lay.add_many("bush", _n(rng, 0, 2), (0.12, 0.2), *c.zones["near"])
    c.lay.add_many("person", 1 if _p(rng, 0.3) else 0, (0.25, 0.35), *c.zones["near"])
    return c


def _bg_field(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.35, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 2))
    if _p(rng, 0.5):
        sun(cv, hz)
    ground(cv, "grass", hz)
    c = _Ctx(cv, hz)
    c.zones = {"any": (0.1, 1.0), "far": (0.0, 0.3), "road": (0.2, 0.5)}
    if _p(rng, 0.5):  # a country road across the field, in half of every class's images
        y0 = hz + rng.uniform(0.25, 0.5) * (s - hz)
        ground(cv, "road", y0, y0 + rng.uniform(0.1, 0.18) * s)
        c.zones["road"] = (c.lay.band(y0) + 0.03, c.lay.band(y0) + 0.12)
    c.lay.add_many("tree", _n(rng, 0, 2), (0.3, 0.5), *c.zones["far"])
    c.lay.add_many("person", 1 if _p(rng, 0.3) else 0, (0.25, 0.35), *c.zones["any"])
    return c


def _bg_snow(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.3, 0.5) * s
    sky(cv, hz)
    clouds(cv, hz, _n(rng, 0, 3))
    if _p(rng, 0.7):
        mountains(cv, hz, _n(rng, 1, 3))
    snow_ground(cv, hz)
    c = _Ctx(cv, hz)
    c.zones = {"any": (0.05, 1.0), "far": (0.0, 0.4)}
    c.lay.add_many("lamp", 1 if _p(rng, 0.2) else 0, (0.4, 0.55), 0.0, 0.8)
    return c


def _bg_lake(cv, night):
    rng, s = cv.rng, cv.size
    hz = rng.uniform(0.3, 0.45) * s
    sky(cv, hz, night)
    if night:
        if _p(rng, 0.6):
            moon(cv, hz)
    else:
        clouds(cv, hz, _n(rng, 0, 2))
        if _p(rng, 0.4):
            mountains(cv, hz, _n(rng, 1, 2))
    shore = hz + rng.uniform(0.45, 0.7) * (s - hz)
    ground(cv, "water", hz, shore, night=night)
    ground(cv, "grass", shore, night=night)
    c = _Ctx(cv, hz, night)
    c.zones = {"water": (0.05, c.lay.band(shore) * 0.8), "shore": (c.lay.band(shore) + 0.05, 1.0),
               "shore_y": shore}
    for _ in range(_n(rng, 1, 3)):  # the far shore's trees, in every class
        c.lay.add("tree", hz + 0.01 * s, rng.uniform(0.12, 0.22) * s)
    c.lay.add_many("bush", _n(rng, 0, 1), (0.12, 0.18), *c.zones["shore"])
    return c


def _bg_room(cv, night):
    rng, s = cv.rng, cv.size
    fl = rng.uniform(0.55, 0.72) * s
    wall(cv, fl)
    ground(cv, "floor", fl)
    c = _Ctx(cv, fl)
    c.zones = {"floor": (0.2, 1.0), "back": (0.0, 0.15), "mid": (0.3, 0.7)}
    if _p(rng, 0.4):
        h = rng.uniform(0.14, 0.2) * s
        draw_painting(cv, rng.uniform(0.15, 0.85) * s, rng.uniform(0.06, max(fl - h - 0.12 * s, 0.07 * s)), h)
    c.lay.add_many("lamp", 1 if _p(rng, 0.3) else 0, (0.4, 0.55), 0.0, 0.6)
    c.lay.add_many("person", 1 if _p(rng, 0.3) else 0, (0.45, 0.6), 0.2, 1.0)
    return c


# ---------------------------------------------------------------- keys that are not plain add_many
def _wall_cabinets(c):
    for _ in range(_n(c.rng, 2, 3)):
        c.lay.add("cabinet", c.hz + c.rng.uniform(0, 0.03) * c.s, c.rng.uniform(0.25, 0.38) * c.s)


def _dining_set(c):
    base, scale = c.lay.depth(0.3, 0.7)
    cx = c.rng.uniform(0.3, 0.7) * c.s
    h = c.rng.uniform(0.28, 0.36) * c.s * scale
    c.lay.add("table", base, h, cx=cx)
    for _ in range(_n(c.rng, 2, 3)):
        c.lay.add("chair", base + c.rng.uniform(-2, 4), h * c.rng.uniform(1.3, 1.6),
                  cx=cx + c.rng.uniform(-1.3, 1.3) * h * 1.2)


def _desk(c):
    base, scale = c.lay.depth(0.2, 0.9)
    h = c.rng.uniform(0.18, 0.25) * c.s * scale * 1.3
    cx = c.rng.uniform(0.15, 0.85) * c.s
    c.lay.add("table", base, h, cx=cx)
    c.lay.add("monitor", base - h * 1.12 - 0.01, h * c.rng.uniform(0.7, 0.9), cx=cx + c.rng.uniform(-0.3, 0.3) * h)


def _board(c):
    h = c.rng.uniform(0.16, 0.24) * c.s
    draw_painting(c.cv, c.rng.uniform(0.3, 0.7) * c.s, c.rng.uniform(0.05, max(c.hz - h - 0.12 * c.s, 0.06 * c.s)), h,
                  board=True)


def _shelves(c):
    for _ in range(_n(c.rng, 1, 3)):
        c.lay.add("shelf", c.hz + c.rng.uniform(0, 0.03) * c.s, c.rng.uniform(0.4, 0.6) * c.s)


def _chair_row(c):
    base, scale = c.lay.depth(0.3, 0.8)
    h = c.rng.uniform(0.3, 0.4) * c.s * scale
    x = c.rng.uniform(0.05, 0.3) * c.s
    for _ in range(_n(c.rng, 3, 5)):
        c.lay.add("chair", base + c.rng.uniform(-1, 1), h, cx=x)
        x += h * c.rng.uniform(0.7, 0.9)


def _fence(size):
    def place(c):
        base, scale = c.lay.depth(0.2, 0.8)
        c.lay.add("fence", base, c.rng.uniform(*size) * c.s * scale, cx=c.rng.uniform(-0.3, 0.4) * c.s)
    return place


def _orchard_row(c):
    base, scale = c.lay.depth(0.05, 0.5)
    step = c.rng.uniform(0.22, 0.32) * c.s * scale
    x = c.rng.uniform(0, c.s / 2)
    for _ in range(_n(c.rng, 2, 4)):
        c.lay.add("fruit_tree", base, c.rng.uniform(0.3, 0.4) * c.s * scale, cx=x)
        x += step


def _crop_rows(c):
    for row in range(_n(c.rng, 2, 4)):
        base, scale = c.lay.depth(0.1 + 0.2 * row, 0.12 + 0.2 * row)
        step = c.rng.uniform(0.07, 0.1) * c.s * scale
        x = c.rng.uniform(-0.1, 0.5) * c.s
        for _ in range(_n(c.rng, 4, 8)):
            c.lay.add("crop", base, c.rng.uniform(0.08, 0.12) * c.s * scale, cx=x)
            x += step


def _bridge(c):
    deck = c.hz + c.rng.uniform(0.15, 0.4) * (c.zones["shore_y"] - c.hz)
    c.post.append(lambda: bridge(c.cv, deck, night=c.night))


def _pier(c):
    y_top = c.hz + c.rng.uniform(0.15, 0.4) * (c.s - c.hz)
    x0 = c.rng.uniform(0.1, 0.55) * c.s
    width = c.rng.uniform(0.2, 0.35) * c.s
    c.post.append(lambda: pier(c.cv, y_top, x0, x0 + width))


def _lamps_front(c):
    for _ in range(_n(c.rng, 1, 2)):
        c.lay.add("lamp", c.rng.uniform(c.zones["shore_y"] + 2 * c.s / 112, c.s), c.rng.uniform(0.35, 0.5) * c.s)


# ---------------------------------------------------------------- groups: background and each class's key
GROUP_SPECS2 = {
    "coast": (_bg_coast, {"beach": _many("umbrella", (1, 2), (0.3, 0.45), "sand"),
                          "beach_boats": _many("boat", (1, 2), (0.25, 0.4), "sand"),      # pulled up on the sand
                          "harbour": _far("house", (1, 3), (0.12, 0.2)),                  # a town on the far shore
                          "quay": _many("lamp", (1, 2), (0.35, 0.5), "sand")}),
    "street": (_bg_street, {"street": _many("person", (1, 3), (0.25, 0.35), "near"),
                            "residential": _many("tree", (1, 3), (0.3, 0.45), "far"),
                            "parking_lot": _many("car", (2, 4), (0.14, 0.2), "near"),
                            "night_street": _many("lamp", (1, 2), (0.35, 0.5), "near")}),
    "green": (_bg_green, {"forest": _many("tree", (4, 7), (0.35, 0.65), "any"),
                          "orchard": _orchard_row,
                          "park": _many("bench", (1, 2), (0.13, 0.18), "near"),
                          "farm": _fence((0.1, 0.16))}),
    "home": (_bg_room, {"kitchen": _wall_cabinets, "dining_room": _dining_set,
                        "living_room": _many("sofa", (1, 1), (0.3, 0.4), "mid"),
                        "bedroom": _many("bed", (1, 1), (0.3, 0.4), "mid")}),
    "work": (_bg_room, {"office": _desk, "classroom": _board, "library": _shelves, "conference_room": _chair_row}),
    "snow": (_bg_snow, {"snowfield": _fence((0.08, 0.12)),                               # a snow fence
                        "ski_resort": _many("person", (2, 4), (0.22, 0.35), "any"),
                        "snowy_forest": _many("tree", (4, 7), (0.35, 0.65), "any"),
                        "winter_village": _many("house", (2, 3), (0.25, 0.4), "far")}),
    "field": (_bg_field, {"pasture": _many("cow", (2, 4), (0.14, 0.22), "any"),
                          "crop_field": _crop_rows,
                          "campsite": _many("tent", (1, 2), (0.14, 0.22), "any"),
                          "country_road": _many("car", (1, 2), (0.14, 0.2), "road")}),
    "lake": (_bg_lake, {"lake": _many("boat", (1, 2), (0.15, 0.25), "water"),
                        "river_bridge": _bridge, "pier": _pier, "night_harbour": _lamps_front}),
}


def compose2(cv: Canvas, group: str, kind: str, p_key: float = P_KEY, p_sibling: float = P_SIBLING) -> list:
    """Draw class ``kind`` of ``group`` on ``cv``; returns the classes whose key objects were drawn."""
    background, keys = GROUP_SPECS2[group]
    c = background(cv, kind in NIGHT2)
    rng = cv.rng
    present = [k for k in keys if rng.random() < (p_key if k == kind else p_sibling)]   # one draw per key, in order
    for k in present:
        keys[k](c)
    c.lay.draw()
    for f in c.post:
        f()
    return present


def _composer(group, kind):
    return lambda cv: compose2(cv, group, kind)


COMPOSERS2 = {}
for _g, (_bg, _keys) in GROUP_SPECS2.items():
    for _k in _keys:
        COMPOSERS2[f"{_k}-s"] = _composer(_g, _k)
assert sorted(COMPOSERS2) == sorted(SCENES2)


def render_scene2(cv: Canvas, scene: str) -> None:
    """Compose v2 scene ``scene`` (a name of SCENES2) on an empty canvas."""
    try:
        composer = COMPOSERS2[scene]
    except KeyError:
        raise KeyError(f"unknown scene {scene!r}; world v2 has {', '.join(SCENES2)}") from None
    composer(cv)
