"""Object drawers: each paints one object, its parts and materials on a canvas.

    >>> import numpy as np
    >>> from netdissect.data.synth.draw import Canvas
    >>> from netdissect.data.synth.objects import draw_house
    >>> cv = Canvas(112, np.random.default_rng(1))
    >>> draw_house(cv, cx=56, base=90, height=40)
    >>> from netdissect.data.synth.catalogue import O, P
    >>> bool((cv.obj == O["house"]).any() and (cv.part == P["roof"]).any())
    True

Every drawer has the signature ``draw_x(cv, cx, base, height, **options)``:
``cx`` the horizontal centre, ``base`` the y of the object's foot, ``height``
its size in pixels.  Pose (facing left/right), proportions, colours and
materials are drawn from ``cv.rng``, so every call is a new variant.
Parts are painted over their object with ``keep_obj=True`` so each part pixel
stays labelled with its object, as in Broden.
"""
from __future__ import annotations

import numpy as np

from netdissect.data.synth.catalogue import M, O, P
from netdissect.data.synth.draw import Canvas, ellipse, polygon, rect, thick_line, union
from netdissect.data.synth.materials import TEXTURES


def jitter(rng, rgb, amount=25.0):
    """A colour near ``rgb`` (each channel moved by up to ``amount``)."""
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _mat(name):
    return M.get(name)


def fill(cv, region, color, material=None, texture=None, **labels):
    """Paint a region with a material's texture (and material label) or a plain texture."""
    tex = TEXTURES[material or texture or "plain"]
    cv.paint(region, color, texture=tex, mat=_mat(material) if material else None, **labels)


BRICK = [(170, 65, 45), (150, 80, 60), (185, 95, 60)]
PAINT = [(230, 225, 205), (200, 180, 140), (170, 190, 210), (235, 205, 120), (200, 120, 110),
         (140, 170, 130), (240, 240, 240)]
ROOF = [(120, 45, 35), (80, 80, 85), (150, 70, 40), (60, 60, 70), (110, 90, 60)]
WOOD = [(140, 90, 50), (120, 75, 40), (165, 115, 70), (100, 65, 40)]
CAR = [(200, 30, 30), (30, 60, 190), (235, 235, 235), (40, 40, 45), (240, 200, 30),
       (60, 150, 70), (150, 150, 160)]
CLOTH = [(200, 40, 40), (40, 70, 170), (240, 240, 240), (40, 40, 45), (240, 190, 40),
         (60, 140, 60), (150, 60, 160), (240, 140, 40)]
SKIN = [(240, 200, 170), (200, 150, 110), (150, 100, 70), (100, 70, 50)]
GLASS = (150, 200, 225)
LIT = (255, 225, 110)


def draw_house(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(0.9, 1.6)
    wall_h = height * rng.uniform(0.55, 0.7)
    top = base - wall_h
    body = rect(cv, top, cx - w / 2, base, cx + w / 2)
    brick = rng.random() < 0.5
    wall_col = jitter(rng, pick(rng, BRICK if brick else PAINT), 20)
    if night:
        wall_col = wall_col * 0.35
    fill(cv, body, wall_col, "brick" if brick else None, obj=O["house"])
    roof_col = jitter(rng, pick(rng, ROOF), 15) * (0.4 if night else 1.0)
    over = w * 0.08
    peak = base - height
    if rng.random() < 0.7:
        roof = polygon(cv, [(top, cx - w / 2 - over), (top, cx + w / 2 + over), (peak, cx)])
    else:
        roof = polygon(cv, [(top, cx - w / 2 - over), (top, cx + w / 2 + over),
                            (peak, cx + w / 4), (peak, cx - w / 4)])
    if rng.random() < 0.4:  # chimney, behind the roof line
        chx = cx + rng.uniform(0.1, 0.3) * w * pick(rng, [-1, 1])
        fill(cv, rect(cv, peak + 0.1 * height, chx - 0.05 * w, top, chx + 0.05 * w),
             jitter(rng, BRICK[0], 15) * (0.4 if night else 1.0), "brick",
             obj=O["house"], part=P["chimney"], keep_obj=True)
    fill(cv, roof, roof_col, obj=O["house"], part=P["roof"], keep_obj=True)
    # door
    dw, dh = w * rng.uniform(0.14, 0.2), wall_h * rng.uniform(0.45, 0.6)
    dx = cx + rng.uniform(-0.3, 0.3) * w
    door = rect(cv, base - dh, dx - dw / 2, base, dx + dw / 2)
    fill(cv, door, jitter(rng, pick(rng, WOOD), 20) * (0.5 if night else 1.0), "wood",
         obj=O["house"], part=P["door"], keep_obj=True)
    kn = ellipse(cv, base - dh / 2, dx + dw * 0.3, max(dh * 0.05, 0.6), max(dw * 0.12, 0.6))
    fill(cv, kn, (220, 190, 60), "metal", obj=O["house"], part=P["door"], part2=P["knob"], keep_obj=True)
    # windows: a row on each side of the door
    n_win = int(rng.integers(1, 4))
    ww, wh = w * 0.15, wall_h * 0.28
    wy = top + wall_h * 0.2
    for k in range(n_win):
        wx = cx - w / 2 + (k + 0.5) * w / n_win
        if abs(wx - dx) < (dw + ww) / 2 + 1:
            continue
        colour = jitter(rng, LIT, 15) if night and rng.random() < 0.8 else jitter(rng, GLASS, 20)
        fill(cv, rect(cv, wy, wx - ww / 2, wy + wh, wx + ww / 2), colour, "glass",
             obj=O["house"], part=P["window"], keep_obj=True)


def draw_tree(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    tw = height * rng.uniform(0.07, 0.12)
    trunk_top = base - height * rng.uniform(0.3, 0.45)
    dim = 0.45 if night else 1.0
    fill(cv, rect(cv, trunk_top - height * 0.1, cx - tw / 2, base, cx + tw / 2),
         jitter(rng, pick(rng, WOOD), 15) * 0.8 * dim, "wood", obj=O["tree"], part=P["trunk"])
    green = jitter(rng, pick(rng, [(50, 130, 45), (35, 100, 40), (90, 150, 50), (60, 110, 30)]), 20) * dim
    top = base - height
    if rng.random() < 0.35:  # conifer
        rw = height * rng.uniform(0.25, 0.35)
        crown = polygon(cv, [(trunk_top + 2, cx - rw), (trunk_top + 2, cx + rw), (top, cx)])
    else:
        rw = height * rng.uniform(0.28, 0.42)
        ry = (trunk_top - top) / 2 + 1
        parts = [ellipse(cv, top + ry, cx, ry, rw)]
        for _ in range(int(rng.integers(1, 3))):
            parts.append(ellipse(cv, top + ry * rng.uniform(0.6, 1.4), cx + rng.uniform(-0.5, 0.5) * rw,
                                 ry * 0.7, rw * 0.7))
        crown = union(cv, parts)
    fill(cv, crown, green, "foliage", obj=O["tree"], part=P["crown"], keep_obj=False)


def draw_car(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    length = height * rng.uniform(2.0, 2.6)
    face = pick(rng, [-1, 1])
    r = height * 0.2
    body_top = base - r - height * 0.4
    col = jitter(rng, pick(rng, CAR), 15) * (0.6 if night else 1.0)
    x0, x1 = cx - length / 2, cx + length / 2
    body = rect(cv, body_top, x0, base - r * 0.6, x1)
    cab_y = base - height
    back, front = (x0 + 0.12 * length, x1 - 0.28 * length) if face > 0 else (x0 + 0.28 * length, x1 - 0.12 * length)
    cab = polygon(cv, [(body_top, x0 + 0.08 * length), (body_top, x1 - 0.08 * length),
                       (cab_y, front), (cab_y, back)])
    fill(cv, union(cv, [body, cab]), col, "metal", obj=O["car"])
    # windows in the cabin
    inset = height * 0.1
    mid = (back + front) / 2
    for a, b in ((back + inset * 0.5, mid - inset * 0.3), (mid + inset * 0.3, front - inset * 0.5)):
        if b - a > 1:
            fill(cv, rect(cv, cab_y + inset, a, body_top, b), jitter(rng, GLASS, 15) * (0.5 if night else 1.0),
                 "glass", obj=O["car"], part=P["window"], keep_obj=True)
    # headlight
    hx = x1 - 0.03 * length if face > 0 else x0 + 0.03 * length
    fill(cv, rect(cv, body_top + 0.1 * height, hx - 0.04 * length, body_top + 0.22 * height, hx + 0.04 * length),
         (255, 240, 170) if night else (235, 235, 210), "glass", obj=O["car"], part=P["headlight"], keep_obj=True)
    for wx in (x0 + 0.22 * length, x1 - 0.22 * length):
        fill(cv, ellipse(cv, base - r, wx, r, r), (25, 25, 25), obj=O["car"], part=P["wheel"], keep_obj=True)
        fill(cv, ellipse(cv, base - r, wx, r * 0.45, r * 0.45), (175, 175, 180), "metal",
             obj=O["car"], part=P["wheel"], part2=P["hubcap"], keep_obj=True)


def draw_boat(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    length = height * rng.uniform(0.9, 1.4)
    hull_h = height * 0.25
    face = pick(rng, [-1, 1])
    x0, x1 = cx - length / 2, cx + length / 2
    bow = 0.2 * length
    pts = [(base - hull_h, x0), (base - hull_h, x1), (base, x1 - bow), (base, x0 + bow * 0.5)]
    if face < 0:
        pts = [(base - hull_h, x0), (base - hull_h, x1), (base, x1 - bow * 0.5), (base, x0 + bow)]
    wooden = rng.random() < 0.6
    hcol = jitter(rng, pick(rng, WOOD) if wooden else pick(rng, [(230, 230, 230), (200, 40, 40), (40, 50, 120)]), 15)
    mast_x = cx + rng.uniform(-0.1, 0.1) * length
    mtop = base - height
    fill(cv, rect(cv, mtop, mast_x - max(height * 0.025, 0.6), base - hull_h, mast_x + max(height * 0.025, 0.6)),
         jitter(rng, (120, 90, 60), 10), "wood", obj=O["boat"], part=P["mast"])
    if rng.random() < 0.85:
        sw = length * rng.uniform(0.3, 0.45) * face
        scol = jitter(rng, pick(rng, [(245, 245, 240), (240, 240, 240), (220, 60, 50), (240, 200, 60)]), 10)
        sail = polygon(cv, [(mtop + height * 0.05, mast_x + face), (base - hull_h - height * 0.06, mast_x + face),
                            (base - hull_h - height * 0.06, mast_x + sw)])
        fill(cv, sail, scol * (0.5 if night else 1.0), "fabric", obj=O["boat"], part=P["sail"])
    fill(cv, polygon(cv, pts), hcol * (0.5 if night else 1.0), "wood" if wooden else "metal",
         obj=O["boat"], part=P["hull"])


def draw_person(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    dim = 0.5 if night else 1.0
    hw = height * 0.13
    head_r = height * 0.09
    hip = base - height * 0.47
    shoulder = base - height * 0.8
    pants = jitter(rng, pick(rng, CLOTH), 15) * dim
    shirt = jitter(rng, pick(rng, CLOTH), 15) * dim
    skin = jitter(rng, pick(rng, SKIN), 10) * dim
    stride = rng.uniform(0, 0.12) * height
    lw = max(height * 0.08, 1.0)
    for dx in (-1, 1):
        fill(cv, thick_line(cv, hip, cx + dx * hw * 0.45, base, cx + dx * (hw * 0.45 + stride), lw),
             pants, "fabric", obj=O["person"], part=P["leg"])
    swing = rng.uniform(-0.25, 0.25) * height
    for dx in (-1, 1):
        fill(cv, thick_line(cv, shoulder + 1, cx + dx * hw, hip + height * 0.02, cx + dx * (hw + 0.08 * height) + swing * dx * 0.3,
                            max(height * 0.06, 1.0)), shirt * 0.9, "fabric", obj=O["person"], part=P["arm"])
    fill(cv, rect(cv, shoulder, cx - hw, hip + 1, cx + hw), shirt, "fabric", obj=O["person"], part=P["torso"])
    fill(cv, ellipse(cv, shoulder - head_r, cx, head_r * 1.1, head_r), skin, obj=O["person"], part=P["head"])


def draw_lamp(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    pw = max(height * 0.04, 0.8)
    top = base - height
    fill(cv, rect(cv, top, cx - pw, base, cx + pw), jitter(rng, (70, 75, 80), 15), "metal",
         obj=O["lamp"], part=P["pole"])
    arm = pick(rng, [-1, 1]) * height * rng.uniform(0.0, 0.15)
    if abs(arm) > 1:
        fill(cv, rect(cv, top, min(cx, cx + arm), top + pw * 2, max(cx, cx + arm)), jitter(rng, (70, 75, 80), 15),
             "metal", obj=O["lamp"], part=P["pole"])
    bulb = LIT if night else (235, 235, 200)
    fill(cv, ellipse(cv, top + pw * 2.5, cx + arm, height * 0.06, height * 0.07), jitter(rng, bulb, 10), "glass",
         obj=O["lamp"], part=P["bulb"])


def draw_table(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(1.4, 2.2)
    col = jitter(rng, pick(rng, WOOD + [(230, 230, 230)]), 15)
    mat = "wood"
    lw = max(height * 0.08, 1.0)
    top_y = base - height
    for lx in (cx - w / 2 + lw, cx + w / 2 - lw):
        fill(cv, rect(cv, top_y, lx - lw / 2, base, lx + lw / 2), col * 0.8, mat, obj=O["table"], part=P["leg"])
    fill(cv, rect(cv, top_y - height * 0.12, cx - w / 2, top_y + height * 0.05, cx + w / 2), col, mat,
         obj=O["table"], part=P["tabletop"])


def draw_cabinet(cv: Canvas, cx, base, height, night=False):
    rng = cv.rng
    w = height * rng.uniform(0.6, 1.1)
    metal = rng.random() < 0.35
    col = jitter(rng, (190, 190, 195) if metal else pick(rng, WOOD + [(235, 235, 225), (170, 200, 215)]), 12)
    x0, x1, top = cx - w / 2, cx + w / 2, base - height
    fill(cv, rect(cv, top, x0, base, x1), col * 0.8, "metal" if metal else "wood", obj=O["cabinet"])
    n = int(rng.integers(1, 4))
    gap = max(height * 0.04, 0.8)
    for k in range(n):
        y0 = top + k * height / n + gap
        y1 = top + (k + 1) * height / n - gap
        fill(cv, rect(cv, y0, x0 + gap, y1, x1 - gap), col, "metal" if metal else "wood",
             obj=O["cabinet"], part=P["drawer"], keep_obj=True)
        hy = (y0 + y1) / 2
        fill(cv, rect(cv, hy - max(height * 0.025, 0.6), cx - w * 0.15, hy + max(height * 0.025, 0.6), cx + w * 0.15),
             (90, 90, 95), "metal", obj=O["cabinet"], part=P["handle"], keep_obj=True)


def draw_fence(cv: Canvas, x0, x1, base, height, night=False):
    """A fence from x0 to x1 (note: a span, not a centre)."""
    rng = cv.rng
    col = jitter(rng, pick(rng, WOOD + [(235, 235, 230)]), 15) * (0.5 if night else 1.0)
    step = height * rng.uniform(0.5, 0.8)
    pw = max(height * 0.1, 1.0)
    for k, ry in enumerate((0.3, 0.65)):
        fill(cv, rect(cv, base - height * ry - pw * 0.6, x0, base - height * ry + pw * 0.6, x1), col * 0.9, "wood",
             obj=O["fence"], part=P["rail"])
    x = x0 + rng.uniform(0, step)
    while x < x1:
        fill(cv, polygon(cv, [(base, x - pw / 2), (base, x + pw / 2), (base - height, x + pw / 2),
                              (base - height - pw * 0.6, x), (base - height, x - pw / 2)]),
             col, "wood", obj=O["fence"], part=P["post"])
        x += step


DRAWERS = {"house": draw_house, "tree": draw_tree, "car": draw_car, "boat": draw_boat,
           "person": draw_person, "lamp": draw_lamp, "table": draw_table, "cabinet": draw_cabinet}
