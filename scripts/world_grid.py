#!/usr/bin/env python
"""Render a grid of every scene class of a world version (docs/world.md's figure).

    python scripts/world_grid.py --world 2 --out docs/img/world2-grid.jpg --per-class 4

One row per class group pair (classes of a confusable group side by side),
``per-class`` examples of each class, drawn from seed 2017 in index order
(the first samples of each class), labelled with the class name.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from netdissect.atomic import write_with
from netdissect.data.synth.generate import make_sample
from netdissect.data.synth.worlds import get_world


def grid(world: int, per_class: int = 4, size: int = 112, seed: int = 2017, scale: int = 1) -> Image.Image:
    w = get_world(world)
    want = {k: [] for k in range(len(w.scenes))}
    i = 0
    while any(len(v) < per_class for v in want.values()):
        s = make_sample(seed, i, size, kind="scene", labels=False, world=world)
        if len(want[s.scene]) < per_class:
            want[s.scene].append(s.image)
        i += 1
    order = [w.scenes.index(c) for g in w.groups.values() for c in g]
    cols = 2  # two classes side by side per row, each with per_class images
    rows = (len(order) + cols - 1) // cols
    pad, label = 4, 14
    cw = per_class * size + (per_class - 1) * 2
    canvas = Image.new("RGB", (cols * cw + (cols + 1) * pad * 3, rows * (size + label + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for j, k in enumerate(order):
        r, c = divmod(j, cols)
        x0 = pad * 3 + c * (cw + pad * 3)
        y0 = pad + r * (size + label + pad)
        draw.text((x0, y0), w.scenes[k], fill=(0, 0, 0))
        for m, img in enumerate(want[k]):
            canvas.paste(Image.fromarray(img), (x0 + m * (size + 2), y0 + label))
    if scale != 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    return canvas


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--seed", type=int, default=2017)
    args = p.parse_args(argv)
    img = grid(args.world, args.per_class, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() in (".jpg", ".jpeg"):
        write_with(args.out, lambda tmp: img.save(tmp, format="JPEG", quality=85))
    else:
        write_with(args.out, lambda tmp: img.save(tmp, format="PNG", optimize=True))
    print(f"wrote {args.out} ({img.width}x{img.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
