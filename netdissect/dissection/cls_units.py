"""The class token of a token layer as image-level units (``--layer NAME:cls``).

A transformer's class token has no position, so its units cannot be scored by IoU against masks.
Each unit k is one number per image, ``a_k(x)`` = feature k of the class token (prefix token 0) of
layer NAME.  ``NAME:cls`` is an image-level layer of an ordinary dissection
(:mod:`netdissect.dissection.imagelevel`: same forward pass as the run's other layers, same run
layout, ``method: "image-level"``); :func:`class_token_units` is the short form for one layer
without a run folder.  AUROC is the Mann-Whitney statistic with ties counted half:
``(sum of the ranks of the positives - P (P + 1) / 2) / (P * Q)``.

    >>> from netdissect.dissection.cls_units import class_token_units    # doctest: +SKIP
    >>> res = class_token_units(model, "blocks.9", "data/broden1_224")    # doctest: +SKIP
    >>> res.units[:3]                                                     # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

SUFFIX = ":cls"


def split_cls(layers) -> tuple[list[str], list[str]]:
    """``(map layers, class-token layers without the suffix)``."""
    maps, cls = [], []
    for name in layers:
        (cls if isinstance(name, str) and name.endswith(SUFFIX) else maps).append(
            name[:-len(SUFFIX)] if isinstance(name, str) and name.endswith(SUFFIX) else name)
    return maps, cls


def auroc(scores: np.ndarray, present: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """``(C, K)`` AUROC of each unit's scores (N, C) for each concept's presence (N, K) among the
    eligible images (N, K); NaN where a concept has no positive or no negative eligible image."""
    N, C = scores.shape
    K = present.shape[1]
    out = np.full((C, K), np.nan)
    groups: dict[bytes, list[int]] = {}
    for k in range(K):
        groups.setdefault(eligible[:, k].tobytes(), []).append(k)
    for key, ks in groups.items():
        rows = eligible[:, ks[0]]
        if rows.sum() < 2:
            continue
        ranks = rankdata(scores[rows], axis=0)  # (n, C), ties get their average rank
        pos = present[rows][:, ks].astype(np.float64)  # (n, k)
        P = pos.sum(0)
        Q = rows.sum() - P
        with np.errstate(invalid="ignore", divide="ignore"):
            a = (ranks.T @ pos - P * (P + 1) / 2) / (P * Q)  # (C, k)
        a[:, (P == 0) | (Q == 0)] = np.nan
        out[:, ks] = a
    return out


@dataclass
class ClassTokenResult:
    """``units``: one row per unit (unit, label, category, auroc); ``auroc`` (C, K); ``concepts``."""

    layer: str
    auroc: np.ndarray
    concept_names: list
    concept_categories: list
    units: list

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["unit", "label", "category", "auroc"])
        for row in self.units:
            w.writerow([row[0], row[1], row[2], "" if row[3] is None else f"{row[3]:.6f}"])
        return buf.getvalue()


def class_token_units(model, layer: str, dataset, *, weights=None, normalize=None, seed: int = 0,
                      batch_size: int = 64, device: str = "cpu", prefix_tokens: int | None = None,
                      limit: int | None = None, split: str | None = None, size: int | None = None,
                      progress: bool = False) -> ClassTokenResult:
    """Label the class-token units of token layer ``layer`` on a Broden-format ``dataset`` by
    image-level AUROC: ``dissect(model, [layer + ":cls"], dataset)`` without a run folder."""
    from netdissect.dissection.engine import dissect

    name = layer + SUFFIX
    res = dissect(model, [name], dataset, weights=weights, normalize=normalize, seed=seed, batch_size=batch_size,
                  device=device, prefix_tokens=prefix_tokens, limit=limit, split=split, size=size,
                  progress=progress, num_workers=0, scorecard=False)[name]
    units = [(int(u["unit"]), str(u["label"]), str(u["category"]), float(u["auroc"]) if u["label"] else None)
             for u in res.units]
    return ClassTokenResult(layer, res.auroc.astype(np.float64), list(res.concept_names),
                            list(res.concept_categories), units)


__all__ = ["class_token_units", "ClassTokenResult", "auroc", "split_cls", "SUFFIX"]
