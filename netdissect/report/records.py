"""Per-unit and per-layer records: what the page shows, as plain JSON-ready dicts.

    >>> from netdissect.report.records import unit_records, layer_stats
    >>> recs = unit_records(layer, runners_up=4)                # doctest: +SKIP
    >>> recs[0]                                                 # doctest: +SKIP
    {'unit': 0, 'label': 'sky', 'cat': 'scene', 'iou': 0.1234, 'det': True, ...}

``layer`` is a :class:`netdissect.dissection.result.LayerResult` (from
:func:`netdissect.load`): label, category, IoU and the detector flag are its
``units`` (the same verdict as ``units.csv``); the runner-up concepts come
from its IoU matrix.
"""
from __future__ import annotations

import numpy as np

from netdissect.errors import NetDissectError


def label_concept(layer, unit: int) -> int:
    """Column of the unit's label concept in ``iou.npz`` (-1 for a dead/unlabelled unit).

    ``netdissect.load`` labels a unit with its best concept, so this is the row's argmax.
    """
    if not layer.units["label"][unit]:
        return -1
    return int(np.argmax(layer.iou[unit]))


def _is_dead(layer, unit: int) -> bool:
    """Dead: the engine says so (iou.npz ``dead``), else no overlap with any concept at all."""
    if layer.dead is not None and len(layer.dead) == len(layer.units):
        return bool(layer.dead[unit])
    return not layer.units["label"][unit] and not (layer.iou[unit] > 0).any()


def unit_records(layer, runners_up: int = 4) -> list[dict]:
    """One dict per unit: unit, label, cat, iou, det, thr, concept column, runner-ups."""
    out = []
    names, cats = [str(s) for s in layer.concept_names], [str(s) for s in layer.concept_categories]
    try:
        formulas = getattr(layer, "formulas", None)  # `netdissect explain`'s LAYER/formulas.csv, when there
    except NetDissectError:  # made before the run was dissected again: not shown (load() says why)
        formulas = None
    if formulas is not None and len(formulas) != len(layer.units):
        formulas = None
    image_level = getattr(layer, "method", None) == "image-level"  # scored by AUROC (dissection.imagelevel)
    for u, row in enumerate(layer.units):
        k = label_concept(layer, u)
        score = float(np.nan_to_num(row["auroc"])) if image_level else float(row["iou"])
        order = np.argsort(-layer.iou[u], kind="stable")
        floor = 0.5 if image_level else 0  # (an AUROC at or below chance is no runner-up)
        alts = [int(j) for j in order[: runners_up + 1] if j != k and layer.iou[u, j] > floor][:runners_up]
        thr = float(layer.thresholds[u])
        out.append({
            "unit": u,
            "label": str(row["label"]),
            "cat": str(row["category"]),
            "iou": round(score, 4),
            "det": bool(row["detector"]),
            "dead": _is_dead(layer, u),
            "thr": None if not np.isfinite(thr) else float(f"{thr:.4g}"),
            "concept": k,
            "alt": [[names[j], cats[j], round(float(layer.iou[u, j]), 4)] for j in alts],
            **({"trust": trust_record(layer.scorecard, u)} if getattr(layer, "scorecard", None) else {}),
            **({"sc": "AUROC", "q": None if not np.isfinite(row["q"]) else float(f"{row['q']:.2g}")}
               if image_level else {}),
        })
        if formulas is not None and formulas["formula"][u]:
            q = float(formulas["q"][u]) if "q" in (formulas.dtype.names or ()) else float("nan")
            out[-1]["formula"] = [str(formulas["formula"][u]), round(float(formulas["iou"][u]), 4),
                                  None if not np.isfinite(q) else float(f"{q:.2g}")]  # q: the formula's scorecard
    return out


def trust_record(card: dict, u: int) -> dict | None:
    """The unit's label scorecard (docs/label-trust.md) as the card shows it: q-value, bootstrap
    stability, the IoU's 95% interval, held-out correlations; None for a unit without a label."""
    def num(key, digits=3):
        if key not in card:
            return None
        v = float(card[key][u])
        return None if not np.isfinite(v) else float(f"{v:.{digits}g}")

    if num("q") is None:
        return None
    return {"q": num("q", 2), "stab": num("stability"), "ci": [num("iou_lo", 2), num("iou_hi", 2)],
            "r_img": num("r_image", 2), "r_pix": num("r_pixel", 2), "auprc": num("auprc", 2)}


def layer_stats(layer, categories: list[str], records: list[dict]) -> dict:
    """Counts for a layer: from summary.json where present, else computed from units.csv."""
    s = getattr(layer, "summary_info", None) or {}
    det = [r for r in records if r["det"]]
    unique = {c: len({r["label"] for r in det if r["cat"] == c}) for c in categories}
    units = {c: sum(1 for r in det if r["cat"] == c) for c in categories}
    return {
        "n_units": len(records),
        "n_detectors": int(s.get("n_detectors", len(det))),
        "unique_detectors": {c: int((s.get("unique_detectors") or unique).get(c, 0)) for c in categories},
        "detector_units": {c: int((s.get("detector_units") or units).get(c, 0)) for c in categories},
        "dead_units": int(s.get("dead_units", sum(1 for r in records if not r["label"]))),
        "shape": s.get("shape"),
        "mask_size": s.get("mask_size"),
    }
