"""Drawers of the objects world v2 adds (umbrella, bench, chair, sofa, bed, ...).

    >>> import numpy as np
    >>> from netdissect.data.synth.draw import Canvas
    >>> from netdissect.data.synth.objects2 import DRAWERS2
    >>> from netdissect.data.synth.catalogue2 import O2, P2
    >>> cv = Canvas(112, np.random.default_rng(1))
    >>> DRAWERS2["bench"](cv, cx=56, base=90, height=20)
    >>> bool((cv.obj == O2["bench"]).any() and (cv.part == P2["seat"]).any())
    True

Same conventions as :mod:`.objects`: ``draw_x(cv, cx, base, height, night=False)``,
pose, colours and proportions drawn from ``cv.rng``; part pixels keep their
object's label.  :data:`DRAWERS2` holds the v1 drawers too, so a v2 scene can
place any object of the world by name.
"""
from __future__ import annotations

import numpy as np

from netdissect.data.synth.catalogue import O, P
from netdissect.data.synth.catalogue2 import M2, O2, P2
from netdissect.data.synth.draw import Canvas, ellipse, polygon, rect, union
from netdissect.data.synth.materials import TEXTURES, _noise, _shade
from netdissect.data.synth.objects import CLOTH, DRAWERS, WOOD, draw_tree, jitter, pick


def snow(rng, yy, xx, color, size):
    """Bright snow with faint blue-grey drifts."""
    u = size / 112.0
    h, w = yy.shape[0], xx.shape[1]
    drift = np.sin(yy / (3.0 * u) + 0.7 * np.sin(xx / (11 * u) + rng.random() * 6.28))
    return _shade(color, 0.95 + 0.04 * drift + 0.03 * _noise(rng, h, w))


TEXTURES2 = {**TEXTURES, "snow": snow}


def fill2(cv, region, color, material=None, texture=None, **labels):
    """:func:`.objects.fill` for world v2 (its materials include ``snow``)."""
    tex = TEXTURES2[material or texture or "plain"]
    cv.paint(region, color, texture=tex, mat=M2[material] if material else None, **labels)


def _dim(night, k=0.5):
    return k if night else 1.0


def draw_umbrella(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    top = base - height
    r = height * rng.uniform(0.45, 0.6)
    tilt = rng.uniform(-0.12, 0.12) * height
    fill2(cv, rect(cv, top + 0.1 * height, cx - max(height * 0.025, 0.6), base, cx + max(height * 0.025, 0.6)),
          jitter(rng, (200, 200, 200), 20), "metal", obj=O2["umbrella"], part=P["pole"])
    col = jitter(rng, pick(rng, [(230, 50, 50), (240, 200, 40), (40, 120, 220), (240, 130, 30), (240, 240, 240)]), 15)
    canopy = polygon(cv, [(top + 0.25 * height - tilt, cx - r), (top + 0.25 * height + tilt, cx + r),
                          (top + tilt * 0.5, cx + r * 0.35), (top - tilt * 0.5, cx - r * 0.35)])
    fill2(cv, canopy, col * _dim(night), "fabric", obj=O2["umbrella"], part=P2["canopy"])


def draw_bench(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(2.0, 2.8)
    col = jitter(rng, pick(rng, WOOD + [(60, 90, 60)]), 15) * _dim(night)
    lw = max(height * 0.1, 1.0)
    seat_y = base - height * 0.5
    for lx in (cx - w / 2 + lw, cx + w / 2 - lw):
        fill2(cv, rect(cv, seat_y, lx - lw / 2, base, lx + lw / 2), (50, 50, 55), "metal", obj=O2["bench"], part=P["leg"])
    fill2(cv, rect(cv, base - height, cx - w / 2, base - height * 0.7, cx + w / 2), col, "wood",
          obj=O2["bench"], part=P2["backrest"])
    fill2(cv, rect(cv, seat_y - height * 0.14, cx - w / 2, seat_y + height * 0.02, cx + w / 2), col * 1.05, "wood",
          obj=O2["bench"], part=P2["seat"])


def draw_chair(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(0.45, 0.6)
    face = pick(rng, [-1, 1])
    col = jitter(rng, pick(rng, WOOD + [(40, 40, 45), (200, 60, 50)]), 15) * _dim(night)
    lw = max(height * 0.06, 1.0)
    seat_y = base - height * 0.5
    x_back = cx - face * w / 2
    fill2(cv, rect(cv, base - height, min(x_back, x_back + face * lw * 1.5), seat_y, max(x_back, x_back + face * lw * 1.5)),
          col, "wood", obj=O2["chair"], part=P2["backrest"])
    for lx in (cx - w / 2 + lw / 2, cx + w / 2 - lw / 2):
        fill2(cv, rect(cv, seat_y, lx - lw / 2, base, lx + lw / 2), col * 0.8, "wood", obj=O2["chair"], part=P["leg"])
    fill2(cv, rect(cv, seat_y - height * 0.08, cx - w / 2, seat_y + height * 0.02, cx + w / 2), col, "wood",
          obj=O2["chair"], part=P2["seat"])


def draw_sofa(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(2.2, 3.0)
    col = jitter(rng, pick(rng, CLOTH + [(120, 90, 70), (90, 110, 130)]), 15) * _dim(night)
    x0, x1 = cx - w / 2, cx + w / 2
    arm = w * 0.09
    fill2(cv, rect(cv, base - height, x0 + arm * 0.5, base - height * 0.45, x1 - arm * 0.5), col * 0.85, "fabric",
          obj=O2["sofa"], part=P2["backrest"])
    fill2(cv, rect(cv, base - height * 0.5, x0, base - height * 0.08, x1), col * 0.8, "fabric", obj=O2["sofa"])
    n = int(rng.integers(2, 4))
    cw = (w - 2 * arm) / n
    for k in range(n):
        a = x0 + arm + k * cw
        fill2(cv, rect(cv, base - height * 0.55, a + 0.5, base - height * 0.38, a + cw - 0.5), col, "fabric",
              obj=O2["sofa"], part=P2["cushion"])
    for a in (x0, x1 - arm):  # armrests are sofa
        fill2(cv, rect(cv, base - height * 0.65, a, base - height * 0.08, a + arm), col * 0.75, "fabric", obj=O2["sofa"])
    for lx in (x0 + arm * 0.5, x1 - arm * 0.5):
        fill2(cv, rect(cv, base - height * 0.08, lx - 1, base, lx + 1), (50, 40, 30), "wood", obj=O2["sofa"], part=P["leg"])


def draw_bed(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(2.4, 3.2)
    face = pick(rng, [-1, 1])
    wood_col = jitter(rng, pick(rng, WOOD), 15) * _dim(night)
    x0, x1 = cx - w / 2, cx + w / 2
    head_x = x0 if face > 0 else x1 - w * 0.08
    fill2(cv, rect(cv, base - height, head_x, base, head_x + w * 0.08), wood_col, "wood", obj=O2["bed"])
    fill2(cv, rect(cv, base - height * 0.45, x0, base - height * 0.1, x1), wood_col * 0.9, "wood", obj=O2["bed"])
    blanket = jitter(rng, pick(rng, CLOTH), 15) * _dim(night)
    fill2(cv, rect(cv, base - height * 0.62, x0 + w * 0.08, base - height * 0.3, x1 - w * 0.02 * face), blanket,
          "fabric", obj=O2["bed"], part=P2["blanket"])
    px = head_x + (w * 0.1 if face > 0 else -w * 0.2)
    fill2(cv, ellipse(cv, base - height * 0.68, px + w * 0.1, height * 0.12, w * 0.1),
          jitter(rng, (240, 240, 235), 8) * _dim(night), "fabric", obj=O2["bed"], part=P2["pillow"])
    for lx in (x0 + 1, x1 - 1):
        fill2(cv, rect(cv, base - height * 0.1, lx - 1, base, lx + 1), wood_col * 0.7, "wood", obj=O2["bed"], part=P["leg"])


def draw_monitor(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(1.2, 1.6)
    frame = jitter(rng, pick(rng, [(30, 30, 35), (200, 200, 205)]), 10)
    top = base - height
    fill2(cv, rect(cv, base - height * 0.22, cx - max(height * 0.05, 0.6), base, cx + max(height * 0.05, 0.6)),
          frame, "metal", obj=O2["monitor"], part=P["pole"])
    fill2(cv, rect(cv, top, cx - w / 2, base - height * 0.2, cx + w / 2), frame, "metal", obj=O2["monitor"])
    inset = max(height * 0.06, 0.8)
    fill2(cv, rect(cv, top + inset, cx - w / 2 + inset, base - height * 0.2 - inset, cx + w / 2 - inset),
          jitter(rng, pick(rng, [(60, 110, 200), (40, 160, 190), (220, 230, 240), (30, 50, 90)]), 20), "glass",
          obj=O2["monitor"], part=P2["screen"])


def draw_shelf(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(0.6, 1.0)
    col = jitter(rng, pick(rng, WOOD), 15)
    x0, x1, top = cx - w / 2, cx + w / 2, base - height
    fill2(cv, rect(cv, top, x0, base, x1), col * 0.7, "wood", obj=O2["shelf"])
    rows = int(rng.integers(3, 6))
    gap = max(height * 0.03, 0.8)
    for k in range(rows):
        y0, y1 = top + k * height / rows + gap, top + (k + 1) * height / rows - gap
        x = x0 + gap
        while x < x1 - gap - 1:
            bw = max(rng.uniform(0.04, 0.09) * w, 1.0)
            bh = (y1 - y0) * rng.uniform(0.7, 1.0)
            fill2(cv, rect(cv, y1 - bh, x, y1, min(x + bw, x1 - gap)),
                  jitter(rng, pick(rng, CLOTH + [(120, 30, 30), (30, 80, 50)]), 25), obj=O2["shelf"], part=P2["book"])
            x += bw + 0.3


def draw_painting(cv: Canvas, cx, top, height, board=False, night=False):
    """A framed picture hanging with its top at ``top`` (a wall object; ``board``: a dark school board)."""
    rng = cv.rng
    w = height * (rng.uniform(2.2, 3.0) if board else rng.uniform(0.8, 1.5))
    x0, x1 = cx - w / 2, cx + w / 2
    fw = max(height * 0.07, 1.0)
    fill2(cv, rect(cv, top, x0, top + height, x1), jitter(rng, pick(rng, [(150, 110, 50), (200, 170, 60), (60, 45, 35)]), 10),
          "wood", obj=O2["painting"], part=P2["frame"])
    inner = rect(cv, top + fw, x0 + fw, top + height - fw, x1 - fw)
    if board:
        fill2(cv, inner, jitter(rng, (40, 75, 55), 10), obj=O2["painting"])
        return
    fill2(cv, inner, jitter(rng, pick(rng, [(120, 170, 220), (230, 210, 160), (90, 140, 90)]), 25), obj=O2["painting"])
    for _ in range(int(rng.integers(1, 4))):  # a few blobs of colour: the picture
        r = height * rng.uniform(0.08, 0.2)
        fill2(cv, ellipse(cv, rng.uniform(top + fw + r, max(top + height - fw - r + 1e-3, top + fw + r)),
                          rng.uniform(x0 + fw + r, max(x1 - fw - r, x0 + fw + r + 1e-3)), r, r * 1.3),
              jitter(rng, pick(rng, CLOTH), 30), obj=O2["painting"])


def draw_cow(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    face = pick(rng, [-1, 1])
    length = height * rng.uniform(1.5, 1.8)
    dim = _dim(night)
    base_col = jitter(rng, pick(rng, [(240, 240, 235), (120, 80, 50), (60, 45, 35)]), 12) * dim
    leg_top = base - height * 0.45
    lw = max(height * 0.09, 1.0)
    for lx in (-0.38, -0.25, 0.25, 0.38):
        x = cx + lx * length
        fill2(cv, rect(cv, leg_top, x - lw / 2, base, x + lw / 2), base_col * 0.85, obj=O2["cow"], part=P["leg"])
    body = ellipse(cv, base - height * 0.62, cx, height * 0.24, length * 0.48)
    fill2(cv, body, base_col, obj=O2["cow"], part=P["torso"])
    for _ in range(int(rng.integers(1, 4))):  # patches, still torso
        fill2(cv, ellipse(cv, base - height * rng.uniform(0.5, 0.75), cx + rng.uniform(-0.3, 0.3) * length,
                          height * 0.09, length * 0.1), np.array((35, 30, 30), np.float32) * dim, obj=O2["cow"], part=P["torso"])
    hx = cx + face * length * 0.52
    fill2(cv, ellipse(cv, base - height * 0.78, hx, height * 0.15, height * 0.13), base_col * 0.95,
          obj=O2["cow"], part=P["head"])


def draw_crop(cv: Canvas, cx, base, height, night=False):
    """One clump of a crop row (placed in rows by the scene)."""
    rng = cv.rng
    col = jitter(rng, pick(rng, [(200, 180, 60), (110, 160, 50), (170, 190, 70)]), 15) * _dim(night)
    w = height * rng.uniform(0.6, 0.9)
    blobs = [ellipse(cv, base - height * rng.uniform(0.3, 0.7), cx + rng.uniform(-0.3, 0.3) * w, height * 0.35, w * 0.3)
             for _ in range(3)]
    fill2(cv, union(cv, blobs), col, "foliage", obj=O2["crop"])


def draw_tent(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(1.3, 1.9)
    col = jitter(rng, pick(rng, [(230, 120, 30), (40, 120, 60), (40, 80, 180), (210, 50, 50), (240, 210, 60)]), 15)
    fill2(cv, polygon(cv, [(base, cx - w / 2), (base, cx + w / 2), (base - height, cx)]), col * _dim(night),
          "fabric", obj=O2["tent"], part=P2["canopy"])
    dw = w * rng.uniform(0.18, 0.28)
    fill2(cv, polygon(cv, [(base, cx - dw / 2), (base, cx + dw / 2), (base - height * 0.5, cx)]), (35, 30, 30),
          obj=O2["tent"], part=P["door"])


def draw_bush(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(1.0, 1.6)
    green = jitter(rng, pick(rng, [(60, 120, 45), (40, 95, 40), (90, 140, 60)]), 20) * _dim(night, 0.45)
    blobs = [ellipse(cv, base - height * rng.uniform(0.35, 0.6), cx + rng.uniform(-0.3, 0.3) * w,
                     height * rng.uniform(0.35, 0.5), w * 0.3) for _ in range(int(rng.integers(2, 5)))]
    fill2(cv, union(cv, blobs), green, "foliage", obj=O2["bush"])


def draw_fruit_tree(cv: Canvas, cx, base, height, night=False):
    """A tree (labelled tree, crown) with fruit (part ``fruit`` of the tree)."""
    rng = cv.rng
    draw_tree(cv, cx, base, height, night=night)
    col = jitter(rng, pick(rng, [(220, 40, 30), (240, 150, 30), (240, 220, 50)]), 15) * _dim(night)
    r = max(height * 0.035, 0.8)
    for _ in range(int(rng.integers(6, 12))):
        y, x = base - height * rng.uniform(0.5, 0.9), cx + rng.uniform(-0.25, 0.25) * height
        if 0 <= int(y) < cv.size and 0 <= int(x) < cv.size and cv.obj[int(y), int(x)] == O["tree"]:
            fill2(cv, ellipse(cv, y, x, r, r), col, obj=O["tree"], part=P2["fruit"])



DRAWERS2 = {**DRAWERS, "umbrella": draw_umbrella, "bench": draw_bench, "chair": draw_chair, "sofa": draw_sofa,
            "bed": draw_bed, "monitor": draw_monitor, "shelf": draw_shelf, "cow": draw_cow, "crop": draw_crop,
            "tent": draw_tent, "bush": draw_bush, "fruit_tree": draw_fruit_tree}
