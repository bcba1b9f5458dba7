"""The paint app's palette: concepts of a dissection run that enough units of one layer detect.

A concept enters the palette of layer ``L`` when at least ``min_units`` units of ``L`` have an
IoU with it above the run's IoU threshold (``summary.json`` ``config.iou_threshold``); its units
are those units, best IoU first.  A unit can serve two concepts (its IoU is read per concept, from
the layer's ``iou.npz`` table, not only from its best label).

    >>> import numpy as np
    >>> from netdissect.dissection.result import LayerResult
    >>> lr = LayerResult(name="layer1", iou=np.array([[.3, 0], [.2, .01], [0, .5]], np.float32),
    ...                  thresholds=np.zeros(3, np.float32), concept_names=np.array(["red-c", "green-c"]),
    ...                  concept_categories=np.array(["color", "color"]), concept_numbers=np.array([1, 2]),
    ...                  categories=["color"], iou_threshold=0.04)
    >>> [(c.name, c.units) for c in palette_from_layer(lr, min_units=1)]
    [('red-c', [0, 1]), ('green-c', [2])]
    >>> [c.name for c in palette_from_layer(lr, min_units=2)]
    ['red-c']
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netdissect.errors import NetDissectError

__all__ = ["Concept", "palette_from_layer", "load_palette", "PaletteError"]


class PaletteError(NetDissectError, ValueError):
    """A run or layer that gives no palette (no such layer, no concept with enough units)."""


@dataclass
class Concept:
    """One palette entry: a concept and the units (best IoU first) that paint it."""

    name: str
    category: str
    units: list[int]
    ious: list[float]
    color: str = "#8a929c"
    values: list[float] = field(default_factory=list)  # insertion value per unit, filled by the painter

    def as_json(self) -> dict:
        return {"name": self.name, "category": self.category, "color": self.color,
                "units": [{"unit": int(u), "iou": round(float(i), 4),
                           **({"value": round(float(v), 4)} if self.values else {})}
                          for u, i, v in zip(self.units, self.ious, self.values or [None] * len(self.units))]}


def palette_from_layer(layer, min_units: int = 2) -> list[Concept]:
    """The palette of one :class:`~netdissect.dissection.result.LayerResult`, most units first."""
    from netdissect.report.palette import category_colors

    if isinstance(min_units, bool) or not isinstance(min_units, int) or min_units < 1:
        raise PaletteError(f"min_units must be a whole number >= 1, got {min_units!r}")
    iou = np.asarray(layer.iou, dtype=np.float64)
    thr = float(layer.iou_threshold)
    colors = category_colors(list(layer.concept_categories))
    out = []
    for k, (name, cat) in enumerate(zip(layer.concept_names, layer.concept_categories)):
        col = iou[:, k] if iou.size else np.zeros(0)
        units = np.flatnonzero(col > thr)
        if len(units) < min_units:
            continue
        units = units[np.argsort(-col[units], kind="stable")]
        out.append(Concept(str(name), str(cat), [int(u) for u in units], [float(col[u]) for u in units],
                           colors.get(str(cat), "#8a929c")))
    out.sort(key=lambda c: (-len(c.units), -c.ious[0], c.name))
    return out


def load_palette(run_dir, layer: str | None = None, min_units: int = 2):
    """``(layer name, palette, result)`` of a finished run; ``layer`` defaults to the run's only layer."""
    from netdissect.dissection.result import load

    result = load(run_dir)
    names = list(result)
    if layer is None:
        if len(names) != 1:
            raise PaletteError(f"{run_dir}: the run dissected layers {', '.join(names)}; choose one with --layer")
        layer = names[0]
    if layer not in result:
        raise PaletteError(f"{run_dir}: no layer {layer!r} in this run (it has {', '.join(names) or 'none'})")
    palette = palette_from_layer(result[layer], min_units)
    if not palette:
        lr = result[layer]
        counts = (np.asarray(lr.iou) > lr.iou_threshold).sum(0) if np.asarray(lr.iou).size else np.zeros(0)
        best = sorted(zip(counts.tolist(), lr.concept_names.tolist()), reverse=True)[:5]
        hint = ", ".join(f"{n}: {c}" for c, n in best if c) or "no unit is above the threshold"
        raise PaletteError(f"{run_dir} layer {layer}: no concept has {min_units} or more units with IoU > "
                           f"{lr.iou_threshold} ({hint}); lower --min-units or dissect more samples")
    return layer, palette, result
