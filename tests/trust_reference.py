"""Plain, slow references for the label scorecard (netdissect.trust): full-resolution masks, the
whole pairwise overlap matrix O_xy = |M_k(x) & L_c(y)|, its exact permutation moments and a
brute-force Monte Carlo permutation test."""
from __future__ import annotations

import numpy as np

from reference import bilinear


def masks_and_labels(acts: np.ndarray, thresholds: np.ndarray, ds):
    """(unit masks (N, C, P) bool, label masks (N, K, P) bool, has (N, G) bool) at mask resolution
    (one mask size)."""
    N, C = acts.shape[:2]
    cons = ds.concepts
    K = len(cons)
    sh, sw = ds.rows[0].sh, ds.rows[0].sw
    M = np.zeros((N, C, sh * sw), bool)
    L = np.zeros((N, K, sh * sw), bool)
    has = np.zeros((N, len(cons.categories)), bool)
    for i in range(N):
        for k in range(C):
            M[i, k] = (bilinear(acts[i, k], sh, sw) > thresholds[k]).ravel()
        s = ds.load_labels(i)
        has[i] = s.has_category
        for c in range(K):
            if not s.has_category[cons.primary[c]]:
                continue
            num = cons.numbers[c]
            if num in s.image_labels:
                L[i, c] = True
            else:
                for plane in s.planes:
                    L[i, c] |= plane.ravel() == num
    return M, L, has


def overlap(M, L, has, primary, k, c):
    """O (n_S, n_S) over the images holding c's category, and the observed pooled intersection."""
    S = np.flatnonzero(has[:, primary[c]])
    O = M[S, k].astype(np.float64) @ L[S, c].astype(np.float64).T
    return O, float(np.trace(O))


def exact_moments(O):
    n = O.shape[0]
    r, s, t = O.sum(1), O.sum(0), O.sum()
    d2 = (O ** 2).sum() - (r ** 2).sum() / n - (s ** 2).sum() / n + t ** 2 / n ** 2
    return t / n, d2 / (n - 1)


def brute_force_p(O, observed, perms: int, rng):
    """(1 + #{pi: T_pi >= observed}) / (1 + perms) over ``perms`` uniform random permutations."""
    n = O.shape[0]
    P = np.argsort(rng.random((perms, n)), axis=1)
    T = O[np.arange(n)[None, :], P].sum(1)
    return (int((T >= observed - 1e-9).sum()) + 1) / (perms + 1)
