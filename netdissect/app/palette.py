"""The paint app's palette: concepts of a dissection run that enough units of one layer detect.

A concept enters the palette of layer ``L`` when at least ``min_units`` units of ``L`` have an
IoU with it above the run's IoU threshold (``summary.json`` ``config.iou_threshold``): its
*detectors*.  Its units, the ones a stroke can switch, are its ``max_units`` (default 20, as the PNAS
paint app) units of highest IoU with it (IoU > 0), best first: the detectors, then the next best
units when it has fewer detectors than that.  A unit can serve two concepts (its IoU is read per
concept, from the layer's ``iou.npz`` table, not only from its best label).

    >>> import numpy as np
    >>> from netdissect.dissection.result import LayerResult
    >>> lr = LayerResult(name="layer1", iou=np.array([[.3, 0], [.2, .01], [0, .5]], np.float32),
    ...                  thresholds=np.zeros(3, np.float32), concept_names=np.array(["red-c", "green-c"]),
    ...                  concept_categories=np.array(["color", "color"]), concept_numbers=np.array([1, 2]),
    ...                  categories=["color"], iou_threshold=0.04)
    >>> [(c.name, c.units, c.detectors) for c in palette_from_layer(lr, min_units=1)]
    [('red-c', [0, 1], 2), ('green-c', [2, 1], 1)]
    >>> [c.name for c in palette_from_layer(lr, min_units=2)]
    ['red-c']
    >>> sorted((c.name, c.units) for c in palette_from_layer(lr, min_units=1, max_units=1))
    [('green-c', [2]), ('red-c', [0])]
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
    detectors: int | None = None   # how many of ``units`` (the first ones) are above the IoU threshold
    values: list[float] = field(default_factory=list)  # insertion value per unit, filled by the painter
    drawing: dict | None = None    # whether its units draw it (netdissect.app.drawing), when measured

    def as_json(self) -> dict:
        det = len(self.units) if self.detectors is None else self.detectors
        return {"name": self.name, "category": self.category, "color": self.color, "detectors": det,
                "units": [{"unit": int(u), "iou": round(float(i), 4), "detector": k < det,
                           **({"value": round(float(v), 4)} if self.values else {})}
                          for k, (u, i, v) in enumerate(zip(self.units, self.ious,
                                                            self.values or [None] * len(self.units)))],
                **({"drawing": self.drawing} if self.drawing is not None else {})}


def palette_from_layer(layer, min_units: int = 2, max_units: int = 20) -> list[Concept]:
    """The palette of one :class:`~netdissect.dissection.result.LayerResult`, most detectors first."""
    from netdissect.report.palette import category_colors

    if isinstance(min_units, bool) or not isinstance(min_units, int) or min_units < 1:
        raise PaletteError(f"min_units must be a whole number >= 1, got {min_units!r}")
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
        raise PaletteError(f"max_units must be a whole number >= 1, got {max_units!r}")
    iou = np.asarray(layer.iou, dtype=np.float64)
    thr = float(layer.iou_threshold)
    colors = category_colors(list(layer.concept_categories))
    out = []
    for k, (name, cat) in enumerate(zip(layer.concept_names, layer.concept_categories)):
        col = iou[:, k] if iou.size else np.zeros(0)
        detectors = int((col > thr).sum())
        if detectors < min_units:
            continue
        units = np.flatnonzero(col > 0)
        units = units[np.argsort(-col[units], kind="stable")][:max(max_units, 1)]
        out.append(Concept(str(name), str(cat), [int(u) for u in units], [float(col[u]) for u in units],
                           colors.get(str(cat), "#8a929c"), min(detectors, len(units))))
    out.sort(key=lambda c: (-c.detectors, -c.ious[0], c.name))
    return out


def load_palette(run_dir, layer: str | None = None, min_units: int = 2, max_units: int = 20):
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
    palette = palette_from_layer(result[layer], min_units, max_units)
    if not palette:
        lr = result[layer]
        counts = (np.asarray(lr.iou) > lr.iou_threshold).sum(0) if np.asarray(lr.iou).size else np.zeros(0)
        best = sorted(zip(counts.tolist(), lr.concept_names.tolist()), reverse=True)[:5]
        hint = ", ".join(f"{n}: {c}" for c, n in best if c) or "no unit is above the threshold"
        raise PaletteError(f"{run_dir} layer {layer}: no concept has {min_units} or more units with IoU > "
                           f"{lr.iou_threshold} ({hint}); lower --min-units or dissect more samples")
    return layer, palette, result
