"""Write the synthetic world to disk as a Broden-format dataset.

    >>> from netdissect.data.synth.export import write_world
    >>> root = write_world("runs/world", n=5, seed=2017, size=32, progress=False)   # the demo: n=1000, size=112
    >>> from netdissect.data import Broden; len(Broden(root))
    5

The same reader (:class:`netdissect.data.Broden`) then serves real and
synthetic data.  Every ``val_every``-th image (by index) goes to split
``val``, the rest to ``train``, so a row's split does not depend on ``n``.
With ``split=`` every row is of that split; :data:`SPLIT_SEEDS` are the
default seeds of ``netdissect synth --split`` (disjoint from each other, from
the zoo's training seeds 0-999 and from the demo's probe seed 2017).
"""
from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from netdissect.data.synth.catalogue import IMAGE_CATEGORIES
from netdissect.data.synth.generate import DEFAULT_SIZE, generate
from netdissect.data.synth.worlds import get_world
from netdissect.data.writer import BrodenWriter

SPLIT_SEEDS = {"train": 3001, "val": 3002}


def write_world(root: str | os.PathLike, n: int, seed: int = 2017, size: int = DEFAULT_SIZE,
                val_every: int = 10, overwrite: bool = False, image_format: str = "jpg",
                progress: bool = True, split: str | None = None, world: int = 1) -> Path:
    """Generate ``n`` samples of world ``seed`` at ``size`` px into ``root`` (atomically).

    ``split`` (``"train"`` or ``"val"``): every row gets that split and
    ``val_every`` is not used (a whole split of its own seed, for experiments
    that need splits drawn independently, such as unit importance).
    ``world``: the world version (1 or 2), recorded in the dataset's writer
    marker (``meta.world``, read back by :func:`.worlds.dataset_world`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if split is not None and split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    cat = get_world(world).catalogue
    with BrodenWriter(root, cat.lists, cat.numbers, image_level=IMAGE_CATEGORIES,
                      image_format=image_format, overwrite=overwrite,
                      meta={"world": int(world), "revision": get_world(world).revision, "seed": int(seed),
                            "size": int(size)}) as w:
        for s in tqdm(generate(n, seed, size, world=world), total=n, desc=f"synth seed {seed}", unit="img",
                      disable=not progress):
            if split is not None:
                row_split = split
            else:
                row_split = "val" if val_every and s.index % val_every == val_every - 1 else "train"
            w.add(s.image, s.masks, s.labels, split=row_split, name=f"synth_{seed}_{s.index:06d}")
    return Path(root)
