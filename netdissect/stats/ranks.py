"""Image-level statistics of a unit against a concept's presence: AUROC and the Mann-Whitney U test.

For unit k (one number per image, ``a_k(x)``) and concept c with P images holding c (positives)
and Q images not holding it (negatives), among the n = P + Q images counted for c:

- ranks r(x): mid-ranks of ``a_k`` over those n images (ties share the average of their ranks);
- U = sum of the positives' ranks - P (P + 1) / 2, the number of (positive, negative) pairs in
  which the positive scores higher, ties counting one half;
- AUROC = U / (P Q) (0.5: chance; 1: every positive above every negative);
- one-sided p-value for "positives score higher" (``scipy.stats.mannwhitneyu(..., alternative=
  "greater", method="asymptotic")``): z = (U - P Q / 2 - 1/2) / s with the tie-corrected
  s^2 = P Q / 12 * ((n + 1) - sum_t (t^3 - t) / (n (n - 1))) (t: sizes of the groups of tied
  values), p = 1 - Phi(z); p = 1 when s = 0 (every value tied: a constant unit).

    >>> import numpy as np
    >>> a = np.array([[0.1], [0.4], [0.4], [0.9]])            # 4 images, 1 unit
    >>> present = np.array([[False], [False], [True], [True]])
    >>> auroc, p = mann_whitney(a, present)
    >>> float(auroc[0, 0])                                     # (1 tie * 0.5 + 3 wins) / 4
    0.875

Exact in float64 on the ranks; :func:`mann_whitney` works on a block of units at once (the caller
reads the activations from its on-disk cache in blocks of units: :func:`unit_blocks`).
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata


def tie_term(sorted_values: np.ndarray) -> np.ndarray:
    """sum_t (t^3 - t) over the groups of tied values of each column of ``sorted_values`` (n, B),
    sorted along axis 0."""
    n, B = sorted_values.shape
    out = np.zeros(B)
    if n < 2:
        return out
    change = np.ones((n + 1, B), bool)
    change[1:n] = sorted_values[1:] != sorted_values[:-1]
    for b in range(B):
        edges = np.flatnonzero(change[:, b])
        t = np.diff(edges).astype(np.float64)
        t = t[t > 1]
        out[b] = float((t ** 3 - t).sum())
    return out


def mann_whitney(acts: np.ndarray, present: np.ndarray, concept_block: int | None = None):
    """``(auroc, p)``, each float64 (B, K): AUROC and one-sided Mann-Whitney p-value of each unit's
    activations ``acts`` (n, B) for each concept's presence ``present`` (n, K) bool, over all n rows
    (the caller passes only the rows counted for these concepts).  NaN where a concept has no
    positive or no negative row (untestable).  Concepts are taken ``concept_block`` at a time (by
    default as many as keep their float64 presence matrix within 32 MB)."""
    acts = np.asarray(acts)
    n, B = acts.shape
    K = present.shape[1]
    auroc = np.full((B, K), np.nan)
    p = np.full((B, K), np.nan)
    if n < 2 or not K or not B:
        return auroc, p
    if concept_block is None:
        concept_block = int(max(1, min(256, (32 << 20) // (8 * n))))
    ranks = rankdata(acts, axis=0, method="average")  # (n, B) float64 mid-ranks
    ties = tie_term(np.sort(acts, axis=0))
    P_all = present.sum(0).astype(np.float64)
    for k0 in range(0, K, concept_block):
        k1 = min(K, k0 + concept_block)
        pos = present[:, k0:k1]
        P = P_all[k0:k1]
        Q = n - P
        ok = (P > 0) & (Q > 0)
        if not ok.any():
            continue
        R = ranks.T @ pos.astype(np.float64)  # (B, k) rank sums of the positives, exact in float64
        U = R - P * (P + 1) / 2
        PQ = P * Q
        with np.errstate(invalid="ignore", divide="ignore"):
            a = U / PQ
            var = PQ[None, :] / 12.0 * ((n + 1) - ties[:, None] / (n * (n - 1.0)))
            s = np.sqrt(np.maximum(var, 0.0))
            z = (U - PQ / 2 - 0.5) / s
            pv = np.where(s > 0, ndtr(-z), 1.0)
        a[:, ~ok] = np.nan
        pv[:, ~ok] = np.nan
        auroc[:, k0:k1] = a
        p[:, k0:k1] = pv
    return auroc, p


def unit_blocks(n_rows: int, n_units: int, budget: int = 64 << 20) -> list[tuple[int, int]]:
    """Blocks of units whose values and ranks fit ``budget`` (per row and unit: the float32 values, a
    float32 copy per category, the sorted copy, the float64 ranks and a tie mask: 24 bytes)."""
    step = max(1, min(n_units, budget // max(1, n_rows * 24)))
    return [(u, min(n_units, u + step)) for u in range(0, n_units, step)]


__all__ = ["mann_whitney", "tie_term", "unit_blocks"]
