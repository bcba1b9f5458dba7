"""``netdissect synth``: write the synthetic world as a Broden-format dataset.

    netdissect synth --out runs/world --n 2000 --seed 2017 --size 112

Then any command that takes a dataset reads it like a real Broden copy
(``--dataset runs/world``).  Seeds 0-999 are the zoo models' training range;
probe with another seed (the demo uses 2017).

    netdissect synth --split train --out data/world-train --n 2000
    netdissect synth --split val --out data/world-val --n 1000

``--split`` writes one whole split of its own seed (train 3001, val 3002
unless ``--seed`` is given): splits drawn independently, as `netdissect
ablate` needs (--val-every is then unused).

    netdissect synth --world 2 --out data/world2 --n 2000

``--world`` picks the world version (1, the default, 8 scenes; 2: 32 scene
classes in 8 confusable groups, docs/world.md); the dataset records it, and
a zoo model trained on the other version refuses it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from netdissect.errors import NetDissectError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("synth", help="generate the synthetic world as a Broden-format dataset",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--seed", type=int, default=None,
                   help="world seed (default 2017, the demo's probe seed; with --split: train 3001, val 3002)")
    p.add_argument("--split", choices=["train", "val"], default=None,
                   help="write every image to this split, from the split's own seed (disjoint splits)")
    p.add_argument("--size", type=int, default=112, help="image side in px; masks are half (default 112)")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg", help="image file format")
    p.add_argument("--val-every", type=int, default=None,
                   help="every k-th image goes to split 'val' (default 10; 0: none; not with --split)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out dataset written by netdissect (any other folder is refused)")
    p.add_argument("--world", type=int, choices=[1, 2], default=1,
                   help="world version: 1 (default; 8 scenes) or 2 (32 confusable scene classes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


MAX_SIZE = 2048  # px a side: a 2048 px image takes 48 MiB of float32 while it is drawn


def run(args) -> int:
    from netdissect.data.synth.export import SPLIT_SEEDS, write_world

    if not str(args.out).strip():
        raise NetDissectError(f"--out must name the dataset folder to create, got {args.out!r}")
    if args.n < 1:
        raise NetDissectError(f"--n must be >= 1, got {args.n}")
    if not 16 <= args.size <= MAX_SIZE:
        raise NetDissectError(f"--size must be from 16 to {MAX_SIZE} px, got {args.size} (the world is drawn in "
                              "float32 at this size: 100000 px would take 112 GiB per image)")
    if args.seed is not None and not 0 <= args.seed <= 2 ** 32 - 1:
        raise NetDissectError(f"--seed must be a whole number from 0 to 2**32-1, got {args.seed}")
    split = getattr(args, "split", None)
    if split is not None and args.val_every is not None:
        raise NetDissectError("--val-every splits one seed into train and val; --split writes one whole split: "
                              "give one of them")
    seed = args.seed if args.seed is not None else (SPLIT_SEEDS[split] if split else 2017)
    args.seed = seed
    val_every = 10 if args.val_every is None else args.val_every
    if val_every < 0:
        raise NetDissectError(f"--val-every must be >= 0, got {val_every}")
    t0 = time.perf_counter()
    root = write_world(Path(args.out), args.n, seed, args.size, val_every=val_every,
                       overwrite=args.overwrite, image_format=args.format, progress=not args.quiet,
                       split=split, world=getattr(args, "world", 1))
    dt = time.perf_counter() - t0
    what = f"split {split!r}, " if split else ""
    print(f"wrote {args.n} images of world v{getattr(args, 'world', 1)} ({what}{args.size} px, seed {args.seed}) to {root} "
          f"in {dt:.1f} s ({args.n / dt:.0f} images/s)")
    return 0
