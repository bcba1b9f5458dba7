"""The class token of a token layer as image-level units (``--layer NAME:cls``).

A transformer's class token has no position, so its units cannot be scored by IoU against masks.
Each unit k is instead one number per image, ``a_k(x)`` = feature k of the class token (prefix
token 0) of layer NAME, and is labelled image-level: for each concept c, the AUROC of ``a_k``
as a score of "the image holds c" (any pixel of c in any mask plane, or c among its image-level
labels), over the images that hold a label of c's primary category (as IoU counts only those);
the unit's label is the concept of highest AUROC (none when no AUROC exceeds 0.5, chance).  AUROC is the Mann-Whitney statistic with ties
counted half: ``(sum of the ranks of the positives - P (P + 1) / 2) / (P * Q)``.

    >>> from netdissect.dissection.cls_units import class_token_units    # doctest: +SKIP
    >>> res = class_token_units(model, "blocks.9", "data/broden1_224")    # doctest: +SKIP
    >>> res.units[:3]                                                     # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from netdissect.errors import LayerError

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
    image-level AUROC (see the module's docstring)."""
    from netdissect.concepts import BrodenMasks
    from netdissect.data import Broden
    from netdissect.hooks import TraceDict, run_to_layers
    from netdissect.hooks.tokens import find_layout, model_tokens
    from netdissect.models import load_model
    from netdissect.probe import BrodenImages

    model, prep = load_model(model, weights=weights, normalize=normalize, seed=seed)
    model = model.eval().to(device)
    ds = dataset if isinstance(dataset, Broden) else Broden(dataset, split=split, limit=limit)
    probe, source = BrodenImages(ds, size=size), BrodenMasks(ds)
    cons = source.concepts
    N, K = len(probe), len(cons)
    present = np.zeros((N, K), bool)
    eligible = np.zeros((N, K), bool)
    scores, layout = [], None
    with TraceDict(model, [layer], stop=True) as tr, torch.inference_mode():
        for s in tqdm(range(0, N, batch_size), desc=f"{layer}{SUFFIX}", disable=not progress):
            rows = list(range(s, min(N, s + batch_size)))
            x = prep(probe.batch([probe.load(i) for i in rows], device))
            raw = run_to_layers(model, tr, x)[layer]
            if layout is None:
                layout = find_layout(layer, raw, x.shape[0], tuple(x.shape[-2:]), model_tokens(model), prefix_tokens)
                if not layout.is_tokens or layout.prefix < 1:
                    raise LayerError(f"layer {layer!r} has no class token ({layout.describe()}): {layer}{SUFFIX} "
                                     "needs a token layer with a prefix token; dissect it as a map (--layer "
                                     f"{layer})")
            scores.append(layout.prefix_view(raw)[:, 0].float().cpu().numpy())
            for i in rows:
                lab = source.load(i)
                nums = np.unique(np.concatenate([lab.planes.ravel(), lab.image_labels.ravel()]))
                idx = cons.index_of(nums)
                present[i, idx[idx >= 0]] = True
                eligible[i] = lab.has_category[cons.primary]
    a = auroc(np.concatenate(scores), present, eligible)
    units = []
    for u in range(a.shape[0]):
        row = np.nan_to_num(a[u], nan=-1.0)
        k = int(row.argmax()) if K else -1
        if k < 0 or row[k] <= 0.5:  # no concept scored better than chance: no label
            units.append((u, "", "", None))
        else:
            units.append((u, cons.names[k], cons.primary_names[k], float(a[u, k])))
    return ClassTokenResult(layer, a, list(cons.names), cons.primary_names, units)


__all__ = ["class_token_units", "ClassTokenResult", "auroc", "split_cls", "SUFFIX"]
