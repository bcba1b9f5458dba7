"""The concepts of the synthetic world, with their Broden label numbers.

    >>> from netdissect.data.synth.catalogue import CATALOGUE
    >>> CATALOGUE.number("object", "house") > 0
    True
    >>> CATALOGUE.categories
    ['color', 'object', 'part', 'material', 'scene', 'texture']

Names follow Broden: scenes end in ``-s`` and colours in ``-c``.  A name
listed in two categories (``water`` is an object and a material) gets one
global number in both, exactly as Broden's ``label.csv`` allows
(``category`` reads ``object(..);material(..)``).  Global numbers start at 1
(0 means "no label") and follow the order below, so they are fixed for the
life of the world: change the lists only by appending.
"""
from __future__ import annotations

from dataclasses import dataclass, field

COLORS = ["black-c", "blue-c", "brown-c", "grey-c", "green-c", "orange-c",
          "pink-c", "purple-c", "red-c", "white-c", "yellow-c"]
OBJECTS = ["sky", "cloud", "sun", "mountain", "grass", "road", "water", "sand",
           "wall", "floor", "house", "tree", "car", "boat", "person", "fence",
           "lamp", "table", "cabinet"]
# Plane 1 parts; plane 2 holds parts of parts (hubcap in a wheel, knob on a door).
PARTS = ["roof", "door", "window", "chimney", "wheel", "headlight", "hull",
         "sail", "mast", "trunk", "crown", "head", "torso", "arm", "leg",
         "pole", "bulb", "tabletop", "drawer", "handle", "post", "rail",
         "hubcap", "knob"]
MATERIALS = ["wood", "brick", "glass", "metal", "foliage", "water", "fabric",
             "asphalt", "stone"]
SCENES = ["street-s", "forest-s", "harbour-s", "farm-s", "beach-s",
          "night_city-s", "office-s", "kitchen-s"]
TEXTURES = ["banded", "chequered", "crosshatched", "dotted", "grid",
            "spiralled", "sprinkled", "striped", "zigzagged"]

CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
PIXEL_CATEGORIES = ["color", "object", "part", "material"]
IMAGE_CATEGORIES = ["scene", "texture"]


@dataclass
class Catalogue:
    """Global label numbers of every (category, name) of the world."""

    lists: dict[str, list[str]]
    numbers: dict[str, int] = field(default_factory=dict)         # name -> global number
    members: dict[int, list[str]] = field(default_factory=dict)   # number -> categories

    def __post_init__(self):
        for cat in CATEGORIES:
            for name in self.lists[cat]:
                if name not in self.numbers:
                    self.numbers[name] = len(self.numbers) + 1
                self.members.setdefault(self.numbers[name], []).append(cat)

    @property
    def categories(self) -> list[str]:
        return list(CATEGORIES)

    def number(self, category: str, name: str) -> int:
        """Global label number of ``name`` in ``category`` (KeyError names both if unknown)."""
        if name not in self.lists.get(category, ()):
            raise KeyError(f"no concept {name!r} in category {category!r} of the synthetic world")
        return self.numbers[name]

    def names_by_number(self) -> dict[int, str]:
        return {n: name for name, n in self.numbers.items()}

    def __len__(self) -> int:
        return len(self.numbers)


CATALOGUE = Catalogue({"color": COLORS, "object": OBJECTS, "part": PARTS,
                       "material": MATERIALS, "scene": SCENES, "texture": TEXTURES})

# Short integer handles used by the drawing code (global numbers).
O = {name: CATALOGUE.number("object", name) for name in OBJECTS}
P = {name: CATALOGUE.number("part", name) for name in PARTS}
M = {name: CATALOGUE.number("material", name) for name in MATERIALS}
