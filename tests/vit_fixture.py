"""A planted-oracle transformer and a Broden-format dataset of its patch cells, for the token-layer tests.

:class:`Oracle` embeds an H x W image in p x p patches; unit k of its token layer ``block`` is
``mean(patch) + 0.1`` on the one patch token at grid cell ``cells[k]`` and 0 on every other patch
token; its prefix tokens hold 100 in every unit (a prefix token left in the map would light up).
Its token sequence is batch-first (N, T, C) or sequence-first (T, N, C).  It says its prefix
count with ``num_prefix_tokens`` (as timm does) and its patch size with ``patch_size``.

:func:`make_cells` writes a Broden-format dataset whose object masks (half the image size)
label every pixel with the patch cell it lies in, ``cell<r>_<c>`` (so a unit's best concept
is the cell where its mask lies), and whose images have a uniform grey level each (250 * 0.75^i, shuffled: the top values lie well
apart, so a unit's threshold is well below its top activation).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class Oracle(nn.Module):
    def __init__(self, grid, patch: int, prefix: int, seq_first: bool, cells, declare_prefix: int | None = -1,
                 head_classes: int = 0):
        super().__init__()
        h, w = grid
        self.grid, self.patch, self.prefix, self.seq_first = (h, w), patch, prefix, seq_first
        if declare_prefix is not None:
            self.num_prefix_tokens = prefix if declare_prefix == -1 else declare_prefix
        self.patch_size = patch
        self.embed = nn.Conv2d(3, 1, patch, patch)
        with torch.no_grad():
            self.embed.weight.fill_(1.0 / (3 * patch * patch))
            self.embed.bias.fill_(0.1)
        pos = torch.zeros(h * w, len(cells))
        for k, (r, c) in enumerate(cells):
            pos[r * w + c, k] = 1.0
        self.register_buffer("pos", pos)
        self.block = nn.Identity()
        self.head = nn.Linear(len(cells), head_classes) if head_classes else None

    def forward(self, x):
        e = self.embed(x).flatten(2).transpose(1, 2)         # (N, h*w, 1), row-major patches
        tok = e * self.pos                                    # (N, h*w, K)
        pre = torch.full((x.shape[0], self.prefix, tok.shape[2]), 100.0, dtype=tok.dtype, device=tok.device)
        t = torch.cat([pre, tok], 1)                          # (N, T, K)
        if self.seq_first:
            t = t.transpose(0, 1)                             # (T, N, K)
        t = self.block(t)
        if isinstance(t, tuple):  # a block returning (tokens,), as older Hugging Face layers do
            t = t[0]
        if self.seq_first:
            t = t.transpose(0, 1)
        pooled = t[:, self.prefix:].mean(1)
        return self.head(pooled) if self.head is not None else pooled


def cell_masks(h: int, w: int, sh: int, sw: int) -> np.ndarray:
    """(sh, sw) label numbers: 1 + r * w + c for the pixel's patch cell (r, c)."""
    rr = (np.arange(sh) * h) // sh
    cc = (np.arange(sw) * w) // sw
    return 1 + rr[:, None] * w + cc[None, :]


def _encode(labels: np.ndarray) -> Image.Image:
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    return Image.fromarray(rgb)


def make_cells(root, grid, patch: int, n: int = 12, seed: int = 0) -> Path:
    """Write the dataset (images grid * patch px, masks half that) into ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    h, w = grid
    H, W = h * patch, w * patch
    sh, sw = H // 2, W // 2
    rng = np.random.default_rng(seed)
    labels = cell_masks(h, w, sh, sw)
    _encode(labels).save(root / "images" / "cells.png")
    rows = []
    levels = rng.permutation([max(10, int(250 * 0.75 ** i)) for i in range(n)])  # top values well apart
    for i in range(n):
        v = int(levels[i])
        Image.fromarray(np.full((H, W, 3), v, np.uint8)).save(root / "images" / f"img{i:03d}.png")
        rows.append([f"img{i:03d}.png", "train", H, W, sh, sw, "cells.png"])

    def write(name, header, data):
        with open(root / name, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(header)
            wr.writerows(data)

    write("index.csv", ["image", "split", "ih", "iw", "sh", "sw", "object"], rows)
    names = [(1 + r * w + c, f"cell{r}_{c}") for r in range(h) for c in range(w)]
    write("label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
          [[num, nm, f"object({n})", n, 1.0, ""] for num, nm in names])
    write("category.csv", ["name", "first", "last", "count", "frequency"], [["object", 1, len(names), len(names), n]])
    write("c_object.csv", ["code", "number", "name", "frequency", "coverage"],
          [[i + 1, num, nm, n, 1.0] for i, (num, nm) in enumerate(names)])
    return root
