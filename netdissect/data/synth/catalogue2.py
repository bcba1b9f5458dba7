"""The concepts of world version 2: the v1 concepts plus the objects, parts and
materials its 32 confusable scene classes need, with their Broden numbers.

    >>> from netdissect.data.synth.catalogue2 import CATALOGUE2, SCENES2
    >>> from netdissect.data.synth.catalogue import CATALOGUE
    >>> CATALOGUE2.number("object", "house") == CATALOGUE.number("object", "house")
    True
    >>> len(SCENES2)
    32

Every colour, object, part and material of world 1 keeps its number (so the
v1 drawers paint valid v2 labels); the new pixel concepts are numbered next,
then the v2 scenes, then the textures.  Numbers are contiguous from 1.  As in
world 1, a name in two categories (``water``, ``snow``: object and material)
has one number.  Change the lists only by appending.
"""
from __future__ import annotations

from netdissect.data.synth.catalogue import (CATALOGUE, CATEGORIES, COLORS, MATERIALS, OBJECTS, PARTS,
                                             PIXEL_CATEGORIES, TEXTURES, Catalogue)

NEW_OBJECTS = ["umbrella", "bench", "chair", "sofa", "bed", "monitor", "shelf", "painting", "cow",
               "crop", "tent", "snow", "pier", "bush", "bridge", "moon"]
NEW_PARTS = ["canopy", "seat", "backrest", "cushion", "pillow", "blanket", "screen", "book", "frame",
             "fruit", "plank", "deck"]
NEW_MATERIALS = ["snow"]

OBJECTS2 = OBJECTS + NEW_OBJECTS
PARTS2 = PARTS + NEW_PARTS
MATERIALS2 = MATERIALS + NEW_MATERIALS

# Eight groups of four classes; the classes of a group share their background and layout and differ by
# which objects are present, how many, or the time of day (docs/world.md, "World v2").
GROUPS2 = {
    "coast": ["beach-s", "beach_boats-s", "harbour-s", "quay-s"],
    "street": ["street-s", "residential-s", "parking_lot-s", "night_street-s"],
    "green": ["forest-s", "orchard-s", "park-s", "farm-s"],
    "home": ["kitchen-s", "dining_room-s", "living_room-s", "bedroom-s"],
    "work": ["office-s", "classroom-s", "library-s", "conference_room-s"],
    "snow": ["snowfield-s", "ski_resort-s", "snowy_forest-s", "winter_village-s"],
    "field": ["pasture-s", "crop_field-s", "campsite-s", "country_road-s"],
    "lake": ["lake-s", "river_bridge-s", "pier-s", "night_harbour-s"],
}
SCENES2 = [s for group in GROUPS2.values() for s in group]

_PRESET = {name: CATALOGUE.numbers[name] for cat in PIXEL_CATEGORIES for name in CATALOGUE.lists[cat]}
CATALOGUE2 = Catalogue({"color": COLORS, "object": OBJECTS2, "part": PARTS2, "material": MATERIALS2,
                        "scene": SCENES2, "texture": TEXTURES}, numbers=dict(_PRESET))

O2 = {name: CATALOGUE2.number("object", name) for name in OBJECTS2}
P2 = {name: CATALOGUE2.number("part", name) for name in PARTS2}
M2 = {name: CATALOGUE2.number("material", name) for name in MATERIALS2}

assert sorted(CATALOGUE2.numbers.values()) == list(range(1, len(CATALOGUE2) + 1))
assert CATEGORIES == list(CATALOGUE2.lists)
