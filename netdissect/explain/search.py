"""The best formula for one unit: exact branch and bound, and the published beam search.

The data are *signatures* (:class:`Problem`): every mask pixel of the dataset is described by
the set of concepts labelling it and the set of categories its image holds, and any formula is
true or false on a whole signature at once.  A unit is then a vector ``h`` (its mask pixels per
signature), every concept a 0/1 row over signatures, and any count a formula needs (its pixels
``A``, its overlap with the unit ``I``) is a dot product.  Expanding a formula ``g`` by every
concept and operation at once costs one product ``(g * h) @ T.T``: the AND child's overlap;
the AND NOT and OR children follow by inclusion-exclusion (docs/compositional.md).

IoU(G) = I / (m + A - I), where m is the unit's mask area over the images that hold a category
of some concept of G (the union rule of algorithms.md, section 1, extended to formulas).

:func:`search_exact` proves its answer: a partial formula ``g`` with ``r`` terms to go is
dropped only when no extension can beat the best IoU found, ``lam``:

    W_lam(g) + (sum of the r largest W_lam(c) over concepts c)  <=  lam * m(g)

with ``W_lam(X) = sum over signatures s in X of max(0, h_s - lam * (n_s - h_s))`` (proof in
docs/compositional.md).  :func:`search_beam` is Mu & Andreas's beam search, for comparison.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np

from netdissect.explain.formula import OPS, Formula

_AND, _OR, _NOT = 0, 1, 2  # children index: OPS order


@dataclass
class Found:
    """The result of one unit's search."""

    formula: Formula
    iou: float
    single: Formula          # the best single concept (length 1)
    iou_single: float
    nodes: int               # formulas whose IoU was computed
    certified: bool          # True: no formula of the length searched has a higher IoU
    method: str


class Problem:
    """What every unit's search shares: concepts as 0/1 rows over signatures, their pixel counts.

    ``member`` bool (K, S): concept k labels signature s; ``n`` (S,) pixels of each signature;
    ``pattern`` (S,) int: bit g set when the signature's images hold category g; ``primary``
    (K,) the category of each concept.  Concept k's pixels are only where its image holds its
    primary category (as dissection counts them), so ``member[k, s]`` implies bit primary[k].
    """

    def __init__(self, member: np.ndarray, n: np.ndarray, pattern: np.ndarray, primary: np.ndarray):
        self.T = np.ascontiguousarray(member, np.float64)
        self.K, self.S = self.T.shape
        self.n = np.asarray(n, np.float64)
        pattern = np.asarray(pattern, np.int64)
        self.patterns, self.pattern_of = np.unique(pattern, return_inverse=True)
        self.cat_bits = np.left_shift(np.int64(1), np.asarray(primary, np.int64))
        self.A1 = self.T @ self.n                      # pixels of each concept
        self._Tn = self.T * self.n
        self._nrows: dict = {}                           # formula -> N(g AND c) for every c (shared by units)
        self.max_memo = 1 << 16

    def truth(self, f: Formula) -> np.ndarray:
        """0/1 (S,) the signatures where ``f`` holds."""
        g = self.T[f.first].copy()
        for op, c in f.rest:
            if op == "AND":
                g *= self.T[c]
            elif op == "OR":
                np.maximum(g, self.T[c], out=g)
            else:
                g *= 1.0 - self.T[c]
        return g

    def and_counts(self, formulas, G: np.ndarray) -> np.ndarray:
        """(B, K) pixels of (g AND c) for every formula g (rows of ``G``) and concept c: the same for
        every unit, so kept between units."""
        out = np.empty((len(formulas), self.K))
        miss = []
        for i, f in enumerate(formulas):
            row = self._nrows.get(f)
            if row is None:
                miss.append(i)
            else:
                out[i] = row
        if miss:
            rows = (G[miss] * self.n) @ self.T.T
            out[miss] = rows
            if len(self._nrows) < self.max_memo:
                for i, r in zip(miss, rows):
                    self._nrows[formulas[i]] = r
        return out

    def unit(self, h: np.ndarray) -> "Unit":
        return Unit(self, h)


class Unit:
    """One unit's counts: ``h`` (S,) its mask pixels per signature."""

    def __init__(self, problem: Problem, h: np.ndarray):
        self.p = problem
        self.h = np.asarray(h, np.float64)
        self.hp = np.bincount(problem.pattern_of, weights=self.h, minlength=len(problem.patterns))
        self._m: dict = {}
        self.I1 = problem.T @ self.h

    def m(self, masks) -> np.ndarray:
        """Mask area over the images holding any category in each bit mask of ``masks``."""
        masks = np.asarray(masks, np.int64)
        uniq, inv = np.unique(masks, return_inverse=True)
        vals = np.empty(len(uniq))
        for i, u in enumerate(uniq):
            v = self._m.get(int(u))
            if v is None:
                v = self._m[int(u)] = float(self.hp[(self.p.patterns & u) != 0].sum())
            vals[i] = v
        return vals[inv].reshape(masks.shape)

    def iou(self, I, A, m) -> np.ndarray:
        den = m + A - I
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, I / np.where(den > 0, den, 1), 0.0)

    def singles(self):
        """(IoU of every concept, their category masks)."""
        cm = self.p.cat_bits
        return self.iou(self.I1, self.p.A1, self.m(cm)), cm

    def expand(self, formulas, cms, Ig, Ag, w=None):
        """Children of each formula by every op and concept: I, A (and W with weights ``w``), each
        (B, 3, K) in OPS order, and their category masks (B, K)."""
        p = self.p
        G = np.stack([p.truth(f) for f in formulas])
        X = (G * self.h) @ p.T.T
        N = p.and_counts(formulas, G)
        I = np.stack([X, Ig[:, None] + self.I1[None] - X, Ig[:, None] - X], 1)
        A = np.stack([N, Ag[:, None] + p.A1[None] - N, Ag[:, None] - N], 1)
        W = None
        if w is not None:
            Y = (G * w) @ p.T.T
            Wg = G @ w
            W1 = p.T @ w
            W = np.stack([Y, Wg[:, None] + W1[None] - Y, Wg[:, None] - Y], 1)
        cm = np.asarray(cms, np.int64)[:, None] | p.cat_bits[None]
        return I, A, W, cm


def _top_sums(W1: np.ndarray, r_max: int) -> np.ndarray:
    """top[r] = sum of the r largest entries of W1 (top[0] = 0)."""
    s = np.sort(W1)[::-1][:max(r_max, 0)]
    return np.concatenate([[0.0], np.cumsum(s)])


def search_exact(problem: Problem, h: np.ndarray, length: int = 3, batch: int = 32,
                 max_nodes: int | None = None) -> Found:
    """The formula of at most ``length`` concepts with the highest IoU, and the proof.

    ``max_nodes``: stop after this many formula evaluations; the answer is then the best found
    and ``certified`` is False unless the bound closed every open branch anyway.
    """
    u = problem.unit(h)
    K = problem.K
    iou1, cm1 = u.singles()
    b = int(np.argmax(iou1))  # the first of ties
    single, single_iou = Formula(b), float(iou1[b])
    best, lam = single, single_iou
    nodes = K
    if length <= 1 or K == 0:
        return Found(best, lam, single, single_iou, nodes, True, "exact")

    state = {}

    def weights():
        w = np.maximum(0.0, u.h - lam * (problem.n - u.h))
        W1 = problem.T @ w
        state.update(lam=lam, w=w, W1=W1, top=_top_sums(W1, length - 1))

    def keep(W, m, r):
        """The bound's test: some extension by r more terms may beat lam (with a margin for rounding)."""
        lhs = W + state["top"][r]
        rhs = lam * m
        return lhs > rhs - 1e-9 * (np.abs(lhs) + np.abs(rhs) + 1.0)

    weights()
    heap: list = []
    tick = itertools.count()
    W0 = state["W1"]
    m1 = u.m(cm1)
    for c in np.flatnonzero((problem.A1 > 0) & keep(W0, m1, length - 1)):
        prio = -(W0[c] + state["top"][length - 1]) / max(m1[c], 1.0)
        heapq.heappush(heap, (prio, next(tick), Formula(int(c)), u.I1[c], problem.A1[c], W0[c], int(cm1[c])))
    pruned_open = False
    while heap:
        if max_nodes is not None and nodes >= max_nodes:
            pruned_open = True
            break
        if state["lam"] < lam:
            weights()
        popped = []
        while heap and len(popped) < batch:
            item = heapq.heappop(heap)
            f, W, cm = item[2], item[5], item[6]
            if keep(np.float64(W), u.m(cm), length - len(f)):
                popped.append(item)
        if not popped:
            continue
        fs = [it[2] for it in popped]
        Ig = np.array([it[3] for it in popped])
        Ag = np.array([it[4] for it in popped])
        I, A, W, cm = u.expand(fs, [it[6] for it in popped], Ig, Ag, state["w"])
        m = u.m(cm)[:, None, :].repeat(3, 1)
        valid = (A > 0) & (A != Ag[:, None, None])  # an empty set, or the parent's own set: dominated
        for i, f in enumerate(fs):
            if len(f) == 1:  # (a AND b) is (b AND a), (a OR b) is (b OR a): keep one of each
                valid[i, _AND, :f.first] = False
                valid[i, _OR, :f.first] = False
        nodes += int(valid.sum())
        iou = np.where(valid, u.iou(I, A, m), -1.0)
        j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[j] > lam:
            lam = float(iou[j])
            best = fs[j[0]].extend(OPS[j[1]], j[2])
        for i, f in enumerate(fs):
            r = length - len(f) - 1
            if r <= 0:
                continue
            ok = valid[i] & keep(W[i], m[i], r)
            for o, c in zip(*np.nonzero(ok)):
                prio = -(W[i, o, c] + state["top"][r]) / max(m[i, o, c], 1.0)
                heapq.heappush(heap, (prio, next(tick), f.extend(OPS[o], int(c)), I[i, o, c], A[i, o, c],
                                      W[i, o, c], int(cm[i, c])))
    certified = not pruned_open
    return Found(best, lam, single, single_iou, nodes, certified, "exact")


def search_beam(problem: Problem, h: np.ndarray, length: int = 3, width: int = 10) -> Found:
    """Mu & Andreas (2020)'s beam search: keep the ``width`` best formulas; at each step extend each
    by every op and concept, then keep the ``width`` best of the beam and its extensions."""
    u = problem.unit(h)
    K = problem.K
    iou1, cm1 = u.singles()
    b = int(np.argmax(iou1))
    single, single_iou = Formula(b), float(iou1[b])
    order = np.argsort(-iou1, kind="stable")[:width]
    beam = [(float(iou1[c]), Formula(int(c)), u.I1[c], problem.A1[c], int(cm1[c])) for c in order]
    nodes = K
    for _ in range(length - 1):
        fs = [it[1] for it in beam]
        Ig = np.array([it[2] for it in beam])
        Ag = np.array([it[3] for it in beam])
        I, A, _, cm = u.expand(fs, [it[4] for it in beam], Ig, Ag)
        m = u.m(cm)[:, None, :].repeat(3, 1)
        iou = u.iou(I, A, m)
        nodes += iou.size
        cands = list(beam)
        seen = set(fs)
        for i, f in enumerate(fs):
            for o in range(3):
                for c in range(K):
                    g = f.extend(OPS[o], c)
                    if g not in seen:
                        cands.append((float(iou[i, o, c]), g, I[i, o, c], A[i, o, c], int(cm[i, c])))
        cands.sort(key=lambda t: -t[0])  # stable: ties keep the beam first, then expansion order
        beam = cands[:width]
    top = beam[0]
    return Found(top[1], top[0], single, single_iou, nodes, False, f"beam{width}")
