"""Category colours shared by the charts and the HTML page.

    >>> from netdissect.report.palette import category_colors
    >>> category_colors(["object", "scene", "wobble"])["object"]
    '#4e79a7'

The six Broden categories keep fixed colours (in the paper's legend order);
other categories get the next free colours of a qualitative palette.
"""
from __future__ import annotations

# Legend order of the CVPR 2017 figures.
CATEGORY_ORDER = ("object", "scene", "part", "material", "texture", "color")
FIXED = {
    "object": "#4e79a7",
    "scene": "#59a14f",
    "part": "#f28e2b",
    "material": "#9c755f",
    "texture": "#b07aa1",
    "color": "#e15759",
}
EXTRA = ("#76b7b2", "#edc948", "#ff9da7", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8", "#8cd17d")
NONE_COLOR = "#c7cbd1"


def ordered_categories(categories) -> list[str]:
    """Categories in the paper's legend order, unknown ones after, in their given order."""
    cats = list(dict.fromkeys(c for c in categories if c))
    known = [c for c in CATEGORY_ORDER if c in cats]
    return known + [c for c in cats if c not in CATEGORY_ORDER]


def category_colors(categories) -> dict[str, str]:
    """A hex colour for every category (stable for the six Broden categories)."""
    out, extra = {}, iter(EXTRA * 4)
    for c in ordered_categories(categories):
        out[c] = FIXED.get(c) or next(extra)
    return out
