"""The scorecard's statistics: the image-permutation null, BH q-values, the bootstrap,
held-out correlations and the AUPRC.

**The null.**  Under "no alignment between the unit's region and the concept", which image's
concept mask meets which image's unit mask is arbitrary: pair the unit masks M_k(x) of the
images x holding c's category (the set S, n images) with the concept masks L_c(pi(x)) of a
uniformly random permutation pi of S.  The statistic is the pooled intersection
T = sum_x |M_k(x) & L_c(pi(x))|: the union's other terms (the unit's and the concept's areas
over S) do not change under pi, so the IoU is an increasing function of T and
P(IoU_pi >= IoU) = P(T_pi >= T).  With O_xy = |M_k(x) & L_c(y)|, T_pi = sum_x O_{x, pi(x)}, whose
mean and variance over permutations are exact functions of O (Hoeffding 1951):

    E T = O.. / n,   Var T = (sum d_xy^2) / (n - 1),   d_xy = O_xy - O_x. / n - O_.y / n + O.. / n^2,
    sum d^2 = sum O^2 - sum_x O_x.^2 / n - sum_y O_.y^2 / n + O..^2 / n^2.

O is never formed: with masks reduced to the fractions of each cell of a g x g grid they cover,
O_xy ~= sum_cells m_x l_y a_cell, so every term is a contraction of per-unit and per-concept
sums and Gram matrices gathered in one pass (:mod:`netdissect.trust.collect`): O.. on a 28 x 28
grid, the second-order terms on an 8 x 8 grid rescaled to that mean.  The p-value is the tail
of the gamma distribution with that mean and variance (:func:`permutation_p`); the tests check
it against a brute-force permutation test and its calibration under shuffled masks
(tests/test_trust.py).
"""
from __future__ import annotations

import math

import numpy as np


def normal_sf(z: np.ndarray) -> np.ndarray:
    """P(Z > z) for a standard normal, accurate far into the tail (erfc)."""
    from scipy.special import ndtr

    return ndtr(-np.asarray(z, np.float64))


def permutation_moments(ev, concepts_primary: np.ndarray):
    """(mean, var, n) of the pooled intersection under the image-permutation null, (K, C) each."""
    prim = np.asarray(concepts_primary, np.int64)
    G = ev.m1.shape[0]
    K, C = ev.units, ev.concepts
    mean = np.zeros((K, C))
    var = np.zeros((K, C))
    nS = np.zeros((K, C))
    a1, a2 = ev.a1, ev.a2
    AA = np.outer(a2, a2).ravel()
    for g in range(G):
        cols = np.flatnonzero(prim == g)
        if not len(cols):
            continue
        n = float(ev.images_holding[:, g].sum())
        nS[:, cols] = n
        if n < 2:
            continue
        tot = (ev.m1[g] * a1) @ ev.l1[cols].T                       # O.. (K, c) on the fine grid
        tot2 = (ev.m2[g] * a2) @ ev.l2[cols].T                      # O.. on the coarse grid
        v = ev.l2[cols] * a2                                        # (c, g2)
        gm = ev.gram_m[g]                                           # (K, g2, g2)
        rows2 = np.einsum("kgh,cg,ch->kc", gm, v, v, optimize=True)  # sum_x O_x.^2
        w = ev.m2[g] * a2                                           # (K, g2)
        cols2 = np.einsum("cgh,kg,kh->kc", ev.gram_l[cols], w, w, optimize=True)  # sum_y O_.y^2
        sq = gm.reshape(K, -1) @ (ev.gram_l[cols].reshape(len(cols), -1) * AA).T  # sum O^2
        scale = np.where(tot2 > 0, tot / np.where(tot2 > 0, tot2, 1), 1.0) ** 2
        d2 = scale * (sq - rows2 / n - cols2 / n) + tot ** 2 / n ** 2
        mean[:, cols] = tot / n
        var[:, cols] = np.maximum(d2, 0) / (n - 1)
    return mean, var, nS


def permutation_p(observed: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """One-sided p-values P(T_pi >= observed): the tail of the gamma distribution with the null's
    mean and variance (T is a sum of nonnegative overlaps, right-skewed when the concept or the
    unit's region is sparse; the gamma follows that skew and tends to the normal as it fades).
    1 where the null has no spread (every pairing gives the same T)."""
    from scipy.special import gammaincc

    observed, mean, var = (np.asarray(a, np.float64) for a in (observed, mean, var))
    ok = (mean > 0) & (var > 1e-12 * np.maximum(1.0, mean * mean))
    m = np.where(ok, mean, 1.0)
    v = np.where(ok, var, 1.0)
    shape, scale = m * m / v, v / m
    p = gammaincc(shape, np.maximum(observed, 0) / scale)
    return np.where(ok, p, np.where(observed > mean + 1e-9, 0.0, 1.0))


def bh(p: np.ndarray, tested: np.ndarray | None = None) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p`` (any shape) over the entries where ``tested`` (all by
    default); untested entries get q = 1."""
    p = np.asarray(p, np.float64)
    tested = np.ones(p.shape, bool) if tested is None else np.asarray(tested, bool)
    q = np.ones(p.shape)
    v = p[tested]
    m = v.size
    if not m:
        return q
    order = np.argsort(v, kind="stable")
    ranked = v[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[tested] = out
    return q


def pearson(sx, sy, sxx, syy, sxy, n):
    """Pearson correlation from pooled sums (arrays); NaN where either side is constant."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / n
        vx = sxx - sx * sx / n
        vy = syy - sy * sy / n
        r = cov / np.sqrt(vx * vy)
    return np.where((vx > 1e-12 * np.maximum(1, sxx)) & (vy > 1e-12 * np.maximum(1, syy)) & (n > 1), r, np.nan)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (ties share one step); NaN
    without positives."""
    labels = np.asarray(labels, bool)
    npos = int(labels.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    # the last position of each run of equal scores: precision and recall taken there
    last = np.append(s[1:] != s[:-1], True)
    tp_l = tp[last]
    k = np.flatnonzero(last) + 1
    prec = tp_l / k
    rec = tp_l / npos
    drec = np.diff(np.append(0.0, rec))
    return float((prec * drec).sum())


def bootstrap_iou(ev, primary: np.ndarray) -> np.ndarray:
    """(R, K, J) IoU of every unit with its J candidate concepts in each bootstrap resample, from the
    weighted sums the pass accumulated (image x counted w[r, x] times,
    :func:`netdissect.trust.collect.poisson_weights`)."""
    R = ev.boot_inter.shape[0]
    K, J = ev.cand.shape
    prim = np.asarray(primary, np.int64)
    num = ev.boot_inter
    lidx = np.searchsorted(ev.cand_concepts, ev.cand)                                    # (K, J)
    den = np.take_along_axis(ev.boot_area, np.broadcast_to(prim[ev.cand], (R, K, J)), 2) + ev.boot_label[:, lidx] - num
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def bootstrap(ev, primary: np.ndarray):
    """Poisson-weight bootstrap (each image counted Poisson(1) times, the weights accumulated in
    the pass) of each unit's IoU with its J candidate concepts (its J best on the whole probe; a
    concept beyond them is taken never to overtake the label in a resample).

    Returns (same_label (K,), iou_lo (K,), iou_hi (K,)): the share of resamples whose best
    candidate is the full probe's label (candidate 0), and the 2.5% / 97.5% percentiles of the
    label's IoU over the resamples."""
    iou = bootstrap_iou(ev, primary)
    best = iou.argmax(2)
    same = ((best == 0) & (iou[..., 0] > 0)).mean(0)
    lo, hi = np.percentile(iou[..., 0], [2.5, 97.5], axis=0)
    return same, lo, hi


def iou_from(inter, unit_area, label_area, primary):
    """IoU (K, C) from pooled counts, as :meth:`netdissect.stats.IoUCounts.iou`."""
    union = unit_area[:, primary] + label_area[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def fmt(v: float, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"
