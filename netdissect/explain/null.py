"""The significance scorecard of formulas: the single-label image-permutation null, for a formula's mask.

A formula's per-image mask is a deterministic function of the label planes, so the null of
:mod:`netdissect.trust.stats` applies unchanged: pair the unit masks M_k(x) of the images x the
formula's IoU sums over (the images holding a category of one of its concepts, S_k, n images) with the
formula masks F_k(pi(x)) of a uniformly random permutation pi of S_k; the statistic is the pooled
intersection T = sum_x |M_k(x) & F_k(pi(x))| (the union's other terms, m(G) and A(G), do not change
under pi).  Its permutation mean and variance are the exact Hoeffding functions of
O_xy = |M_k(x) & F_k(y)|, taken as in the scorecard from the fractions of each grid cell the two masks
cover (O.. on the 28 x 28 grid, the second-order terms on the 8 x 8 grid rescaled to that mean):
:func:`netdissect.trust.stats.permutation_moments` computes them from the same sums, and
:func:`netdissect.trust.stats.permutation_p` / :func:`~netdissect.trust.stats.bh` give p and q.

The sums are gathered per *image class* (the set of categories an image holds): S_k is a union of
classes, so one sweep serves every unit's formula whatever its categories.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from netdissect.trust.collect import GRID_MEAN, GRID_VAR, cell_areas, cell_index
from netdissect.trust.stats import bh, permutation_moments, permutation_p


class NullSums:
    """Per image class: the scorecard's null sums for every unit (its mask) and its formula's mask."""

    def __init__(self, units: int, g1: int = GRID_MEAN, g2: int = GRID_VAR):
        self.K, self.g1, self.g2 = units, g1, g2
        self.classes: dict[int, int] = {}     # category pattern (int bit mask) -> class
        self.count: list[float] = []
        self.parts: list[dict] = []
        self.inter = np.zeros(units)          # observed T: sum_x |M_k(x) & F_k(x)| (pixels)
        self.a1 = self.a2 = None

    def _cls(self, pattern: int) -> dict:
        c = self.classes.get(pattern)
        if c is None:
            c = self.classes[pattern] = len(self.parts)
            K, q1, q2 = self.K, self.g1 * self.g1, self.g2 * self.g2
            self.count.append(0.0)
            self.parts.append({"m1": np.zeros((K, q1)), "l1": np.zeros((K, q1)), "m2": np.zeros((K, q2)),
                               "l2": np.zeros((K, q2)), "gm": np.zeros((K, q2, q2)), "gl": np.zeros((K, q2, q2))})
        return self.parts[c]

    def add(self, patterns, m1, m2, l1, l2, sh: int, sw: int):
        """One batch of B images of one mask size: ``patterns`` their category bit masks; m1 (B, K, g1^2) and
        m2 (B, K, g2^2) the unit masks' pixels per cell, l1, l2 the formula masks' (float)."""
        a1, a2 = cell_areas(sh, sw, self.g1), cell_areas(sh, sw, self.g2)
        if self.a1 is None:
            self.a1, self.a2 = a1, a2
        m1, l1, m2, l2 = m1 / a1, l1 / a1, m2 / a2, l2 / a2
        patterns = list(patterns)
        for pat in set(patterns):
            sel = np.array([p == pat for p in patterns])
            d = self._cls(pat)
            self.count[self.classes[pat]] += float(sel.sum())
            d["m1"] += m1[sel].sum(0)
            d["l1"] += l1[sel].sum(0)
            d["m2"] += m2[sel].sum(0)
            d["l2"] += l2[sel].sum(0)
            x = m2[sel].transpose(1, 0, 2)                       # (K, b, g2)
            d["gm"] += np.matmul(x.transpose(0, 2, 1), x)
            y = l2[sel].transpose(1, 0, 2)
            d["gl"] += np.matmul(y.transpose(0, 2, 1), y)

    KEYS = ("m1", "l1", "m2", "l2", "gm", "gl")

    def state(self) -> dict:
        """The sums as arrays (a checkpoint: :meth:`from_state` gives them back)."""
        n = len(self.parts)
        out = {"g": np.array([self.K, self.g1, self.g2]), "inter": self.inter, "count": np.asarray(self.count, float),
               "patterns": np.array([str(p) for p, _ in sorted(self.classes.items(), key=lambda t: t[1])], dtype=str)
               if n else np.zeros(0, str),
               "a1": self.a1 if self.a1 is not None else np.zeros(0), "a2": self.a2 if self.a2 is not None else np.zeros(0)}
        for key in self.KEYS:
            out[key] = np.stack([d[key] for d in self.parts]) if n else np.zeros(0)
        return out

    @classmethod
    def from_state(cls, z) -> "NullSums":
        K, g1, g2 = (int(v) for v in z["g"])
        s = cls(K, g1, g2)
        s.inter = np.array(z["inter"], np.float64)
        s.count = [float(v) for v in z["count"]]
        s.classes = {int(p): i for i, p in enumerate(z["patterns"].tolist())}
        s.parts = [{key: np.array(z[key][i]) for key in cls.KEYS} for i in range(len(s.count))]
        s.a1 = np.array(z["a1"]) if len(z["a1"]) else None
        s.a2 = np.array(z["a2"]) if len(z["a2"]) else None
        return s

    def moments(self, k: int, cat_bits: int):
        """(mean, var, n) of unit k's formula's T under the null, over the images whose categories meet
        ``cat_bits`` (its concepts' categories)."""
        cls = [c for pat, c in self.classes.items() if pat & cat_bits]
        n = float(sum(self.count[c] for c in cls))
        if not cls or n < 2:
            return 0.0, 0.0, n
        s = {key: sum(self.parts[c][key][k] for c in cls) for key in ("m1", "l1", "m2", "l2", "gm", "gl")}
        ev = SimpleNamespace(units=1, concepts=1, a1=self.a1, a2=self.a2, images_holding=np.full((int(n), 1), 1.0),
                             m1=s["m1"][None, None], l1=s["l1"][None], m2=s["m2"][None, None], l2=s["l2"][None],
                             gram_m=s["gm"][None, None], gram_l=s["gl"][None])
        mean, var, _ = permutation_moments(ev, np.zeros(1, np.int64))
        return float(mean[0, 0]), float(var[0, 0]), n


def grid_counts(mask: np.ndarray, cells: np.ndarray, g: int) -> np.ndarray:
    """(..., g*g) pixels of bool masks (..., P) in each cell (``cells`` (P,) from cell_index)."""
    lead = mask.shape[:-1]
    flat = mask.reshape(-1, mask.shape[-1])
    rows, cols = np.nonzero(flat)
    idx = rows * (g * g) + cells[cols]
    return np.bincount(idx, minlength=flat.shape[0] * g * g).reshape(lead + (g * g,)).astype(np.float64)


def scorecard(sums: NullSums, cat_bits: list, tested: np.ndarray):
    """(p, q) per unit: the permutation-null p of each unit's formula (observed T = ``sums.inter``) and BH
    q-values over the layer's tested formulas (``tested``: units with a formula); untested: p = q = 1."""
    K = sums.K
    p = np.ones(K)
    for k in np.flatnonzero(tested):
        mean, var, _ = sums.moments(int(k), int(cat_bits[k]))
        p[k] = float(permutation_p(np.array([sums.inter[k]]), np.array([mean]), np.array([var]))[0])
    return p, bh(p, tested)


def sums_from_pixels(units: np.ndarray, formulas: np.ndarray, patterns, g1: int = GRID_MEAN, g2: int = GRID_VAR):
    """NullSums from plain arrays (tests, small data): ``units``, ``formulas`` bool (K, n, sh, sw) each unit's
    mask and its formula's mask on n images; ``patterns`` (n,) the images' category bit masks."""
    K, n, sh, sw = units.shape
    g1, g2 = min(g1, sh, sw), min(g2, sh, sw)
    c1, c2 = cell_index(sh, sw, g1), cell_index(sh, sw, g2)
    u = units.reshape(K, n, -1).transpose(1, 0, 2)
    f = formulas.reshape(K, n, -1).transpose(1, 0, 2)
    s = NullSums(K, g1, g2)
    s.add(patterns, grid_counts(u, c1, g1), grid_counts(u, c2, g2), grid_counts(f, c1, g1), grid_counts(f, c2, g2),
          sh, sw)
    s.inter += (u & f).sum((0, 2))
    return s
