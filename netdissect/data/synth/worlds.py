"""Versions of the synthetic world, and the version a dataset on disk was written with.

    >>> from netdissect.data.synth.worlds import get_world, DEFAULT_WORLD
    >>> DEFAULT_WORLD, len(get_world(1).scenes), len(get_world(2).scenes)
    (1, 8, 32)

World 1 (8 scenes in 4 pairs) is the default until the zoo is retrained on
world 2 (32 scenes in 8 confusable groups; docs/world.md, "World v2").  A
dataset written by ``netdissect synth`` records its world version in its
writer marker (``.netdissect-writer.json``, key ``meta.world``); a synthetic
dataset written before versions existed (images named ``synth_*``, no
record) is world 1.  :func:`check_world` refuses a dataset of one version for
a model trained on the other, naming both.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from netdissect.data.writer import MARKER
from netdissect.errors import DatasetError

DEFAULT_WORLD = 1
VERSIONS = (1, 2)
# The revision of each version's scene distributions.  World 1 never changes (the bundled zoo is trained
# on it).  World 2 revision 2 (2026-12-07, docs/world.md "Pilot 2"): the classes of a group share one
# background and differ only by key objects present in 90% of their images.  Recorded in a dataset's
# writer marker (``meta.revision``) and in a world-2 training record (``world_revision``).
REVISIONS = {1: 1, 2: 2}


@dataclass(frozen=True)
class World:
    version: int
    catalogue: object            # a catalogue.Catalogue
    scenes: list
    textures: list
    render: Callable             # render(canvas, scene name)
    groups: dict                 # group name -> scene names (v1: the four pairs)
    revision: int = 1            # REVISIONS[version]


def get_world(version: int = DEFAULT_WORLD) -> World:
    """The world of ``version`` (1 or 2); ValueError naming the known versions otherwise."""
    if version == 1 or version is None:
        from netdissect.data.synth.catalogue import CATALOGUE, SCENES, TEXTURES
        from netdissect.data.synth.scenes import render_scene
        groups = {"street": ["street-s", "night_city-s"], "green": ["forest-s", "farm-s"],
                  "coast": ["harbour-s", "beach-s"], "indoor": ["office-s", "kitchen-s"]}
        return World(1, CATALOGUE, list(SCENES), list(TEXTURES), render_scene, groups)
    if version == 2:
        from netdissect.data.synth.catalogue import TEXTURES
        from netdissect.data.synth.catalogue2 import CATALOGUE2, GROUPS2, SCENES2
        from netdissect.data.synth.scenes2 import render_scene2
        return World(2, CATALOGUE2, list(SCENES2), list(TEXTURES), render_scene2, dict(GROUPS2), REVISIONS[2])
    raise ValueError(f"unknown world version {version!r}; the synthetic world has versions "
                     f"{', '.join(map(str, VERSIONS))}")



def dataset_world(root: str | os.PathLike) -> int | None:
    """The world version a dataset folder was generated from, or None (not a synthetic-world dataset).

    Read from the writer marker's ``meta.world``; a dataset without that record
    whose images are named ``synth_*`` was written by ``netdissect synth``
    before world versions existed, so it is world 1.
    """
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text(encoding="utf-8")).get("meta") or {}
        except (OSError, ValueError, AttributeError):
            meta = {}
        if "world" in meta:
            return int(meta["world"])
    index = root / "index.csv"
    if index.is_file():
        try:
            with open(index, newline="", encoding="utf-8") as f:
                row = next(csv.DictReader(f), None)
        except (OSError, csv.Error, UnicodeDecodeError):
            return None
        if row and Path(str(row.get("image", ""))).name.startswith("synth_"):
            return 1
    return None


def check_world(root: str | os.PathLike, model_world: int | None, model: str = "the model") -> None:
    """DatasetError if ``root`` is a synthetic dataset of another world version than ``model_world``."""
    if model_world is None:
        return
    have = dataset_world(root)
    if have is None or have == int(model_world):
        return
    raise DatasetError(f"{root}: a dataset of synthetic world v{have}, but {model} was trained on world "
                       f"v{model_world}; their scene classes differ, so its labels would be wrong: write the "
                       f"dataset with `netdissect synth --world {model_world}`")
