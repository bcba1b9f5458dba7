"""A tiny Broden-format dataset for tests, written by hand (independently of netdissect's writer).

Images are ``size`` x ``size`` RGB on a grey background; masks are half size.
Per image, maybe: a red square (object 'square', number 5), a green disc
(object 'disc', number 7), the square's top half as part 'lid' (number 300,
so it needs the G channel), the disc's left half as a second part plane
'rim' (number 8), a blue stripe of material 'wood' (number 9, listed in
material and object; material has the larger coverage so it is primary), a
scene label ('street' 11 when a square is present, else 'indoor' 12).
Every ``texture_every``-th image is texture-only ('striped', 13, image level).
Colour masks label grey background pixels 'grey' (number 2).  Label number
4 is a gap in label.csv.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = [  # number, name, categories with counts
    (1, "red", "color(0)"),
    (2, "grey", "color(10)"),
    (3, "blue", "color(0)"),
    (5, "square", "object(10)"),
    (7, "disc", "object(10)"),
    (8, "rim", "part(5)"),
    (9, "wood", "material(10);object(1)"),
    (11, "street", "scene(5)"),
    (12, "indoor", "scene(5)"),
    (13, "striped", "texture(3)"),
    (300, "lid", "part(5)"),
]
CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
RED, GREEN, BLUE, GREY = (230, 20, 20), (20, 200, 30), (30, 40, 220), (128, 128, 128)


def _encode(labels: np.ndarray) -> Image.Image:
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    return Image.fromarray(rgb)


def make_broden(root, n: int = 24, size: int = 32, seed: int = 0, texture_every: int = 6,
                bom: bool = False, crlf: bool = False) -> Path:
    """Write the dataset into ``root`` and return its path."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ms = size // 2
    rows = []
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8) + np.array(GREY, np.uint8)
        obj = np.zeros((ms, ms), np.int32)
        part1 = np.zeros((ms, ms), np.int32)
        part2 = np.zeros((ms, ms), np.int32)
        mat = np.zeros((ms, ms), np.int32)
        color = np.zeros((ms, ms), np.int32)
        name = f"img{i:03d}.jpg"
        row = {"image": name, "split": "train" if i % 4 else "val", "ih": size, "iw": size, "sh": ms, "sw": ms,
               "color": "", "object": "", "part": "", "material": "", "scene": "", "texture": ""}
        if texture_every and i % texture_every == texture_every - 1:
            img[::4] = (250, 250, 250)  # stripes
            row["texture"] = "13"
            Image.fromarray(img).save(root / "images" / name, quality=95)
            rows.append(row)
            continue
        has_square = rng.random() < 0.7
        if has_square:
            s = int(rng.integers(4, ms // 2))
            y, x = rng.integers(0, ms - s, size=2)
            img[2 * y:2 * (y + s), 2 * x:2 * (x + s)] = RED
            obj[y:y + s, x:x + s] = 5
            part1[y:y + s // 2, x:x + s] = 300
        if rng.random() < 0.6:
            r = int(rng.integers(2, ms // 4 + 2))
            cy, cx = rng.integers(r, ms - r, size=2)
            yy, xx = np.mgrid[0:ms, 0:ms]
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            disc &= obj == 0
            big = np.kron(disc, np.ones((2, 2), bool))
            img[big] = GREEN
            obj[disc] = 7
            part2[disc & (xx < cx)] = 8
        if rng.random() < 0.5:
            y = int(rng.integers(0, ms - 2))
            band = np.zeros((ms, ms), bool)
            band[y:y + 2] = True
            band &= obj == 0
            img[np.kron(band, np.ones((2, 2), bool))] = BLUE
            mat[band] = 9
        color[(obj == 0) & (mat == 0)] = 2
        stem = name[:-4]
        planes = {"object": [obj], "part": [part1, part2], "material": [mat], "color": [color]}
        for cat, arrs in planes.items():
            paths = []
            for j, a in enumerate(arrs):
                if not a.any():
                    continue
                p = f"{stem}_{cat}_{j + 1}.png"
                _encode(a).save(root / "images" / p)
                paths.append(p)
            row[cat] = ";".join(paths)
        row["scene"] = "11" if has_square else "12"
        Image.fromarray(img).save(root / "images" / name, quality=95)
        rows.append(row)

    nl = "\r\n" if crlf else "\n"
    enc = "utf-8-sig" if bom else "utf-8"

    def write(name, header, data):
        with open(root / name, "w", newline="", encoding=enc) as f:
            w = csv.writer(f, lineterminator=nl)
            w.writerow(header)
            w.writerows(data)

    # index.csv with a non-standard column order (readers must go by name)
    cols = ["image", "split", "ih", "iw", "sh", "sw", "scene", "object", "part", "material", "color", "texture"]
    write("index.csv", cols, [[r[c] for c in cols] for r in rows])
    write("label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
          [[n, nm, c, 1, 1.0, ""] for n, nm, c in LABELS])
    write("category.csv", ["name", "first", "last", "count", "frequency"], [[c, 0, 0, 0, 0] for c in CATEGORIES])
    per_cat: dict[str, list] = {c: [] for c in CATEGORIES}
    for n, nm, cats in LABELS:
        for part in cats.split(";"):
            c = part.split("(")[0]
            cov = 5.0 if (nm == "wood" and c == "material") else (0.5 if nm == "wood" else 1.0)
            per_cat[c].append([len(per_cat[c]) + 1, n, nm, 1, cov])
    for c, data in per_cat.items():
        write(f"c_{c}.csv", ["code", "number", "name", "frequency", "coverage"], data)
    return root
