"""Uniformly random rotations of SO(C) and their fractional powers (CVPR 2017, Sec. 3.2).

    >>> import numpy as np
    >>> Q = random_rotation(6, seed=1)
    >>> bool(np.allclose(Q @ Q.T, np.eye(6))), round(float(np.linalg.det(Q)), 6)
    (True, 1.0)
    >>> bool(np.allclose(rotation_power(Q, 0.5) @ rotation_power(Q, 0.5), Q))
    True

``Q^alpha`` follows the minimal geodesic from ``I`` (alpha = 0) to ``Q`` (alpha = 1): with the
real Schur form ``Q = Z T Z^T`` (``T`` block diagonal: 2 x 2 rotations by angles theta in
(-pi, pi], and 1 x 1 blocks +1 or -1), ``Q^alpha = Z T^alpha Z^T`` where each block turns by
alpha * theta.  Pairs of -1 blocks turn by pi.  So ``Q^a Q^b = Q^(a+b)``, every power is a
rotation, and ``Q^0 = I``, ``Q^1 = Q`` exactly.
"""
from __future__ import annotations

import numpy as np

from netdissect.errors import NetDissectError

__all__ = ["random_rotation", "rotation_power", "check_alphas"]


def random_rotation(channels: int, seed: int = 0) -> np.ndarray:
    """A (C, C) float64 rotation drawn uniformly (Haar) from SO(C): QR of a Gaussian matrix, signs
    fixed so R's diagonal is positive (that makes Q Haar on O(C)); a reflection is turned into a
    rotation by negating its first column (det +1)."""
    if int(channels) != channels or channels < 1:
        raise NetDissectError(f"a rotation needs a positive number of channels, got {channels!r}")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((channels, channels)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _check_rotation(Q: np.ndarray) -> np.ndarray:
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise NetDissectError(f"a rotation is a square matrix, got shape {Q.shape}")
    if not np.allclose(Q @ Q.T, np.eye(len(Q)), atol=1e-8):
        raise NetDissectError("the matrix is not orthogonal (Q Q^T != I): not a rotation")
    if np.linalg.det(Q) < 0:
        raise NetDissectError("the matrix has determinant -1 (a reflection): no real geodesic from I reaches it")
    return Q


def rotation_power(Q: np.ndarray, alpha: float) -> np.ndarray:
    """``Q^alpha`` for a rotation ``Q`` (any real alpha; 0 <= alpha <= 1 walks the geodesic I -> Q)."""
    from scipy.linalg import schur

    Q = _check_rotation(Q)
    alpha = float(alpha)
    if alpha == 0:
        return np.eye(len(Q))
    if alpha == 1:
        return Q.copy()
    T, Z = schur(Q, output="real")
    n = len(Q)
    P = np.zeros_like(T)
    minus = []  # 1 x 1 blocks at -1: paired into turns by pi
    i = 0
    while i < n:
        if i + 1 < n and abs(T[i + 1, i]) > 1e-12:
            theta = np.arctan2(T[i + 1, i], T[i, i])
            c, s = np.cos(alpha * theta), np.sin(alpha * theta)
            P[i:i + 2, i:i + 2] = [[c, -s], [s, c]]
            i += 2
            continue
        if T[i, i] > 0:
            P[i, i] = 1.0
        else:
            minus.append(i)
        i += 1
    if len(minus) % 2:  # cannot happen for det +1; kept as a guard against a degenerate Schur form
        raise NetDissectError("the rotation has an odd number of eigenvalues -1: it is not in SO(C)")
    c, s = np.cos(alpha * np.pi), np.sin(alpha * np.pi)
    for a, b in zip(minus[0::2], minus[1::2]):
        P[a, a], P[a, b], P[b, a], P[b, b] = c, -s, s, c
    R = Z @ P @ Z.T
    return R


def check_alphas(alphas) -> list[float]:
    """``"0,0.2,1"`` or a list of numbers -> sorted distinct floats in [0, 1]."""
    if isinstance(alphas, str):
        parts = [p for p in alphas.replace(" ", "").split(",") if p]
        try:
            alphas = [float(p) for p in parts]
        except ValueError:
            raise NetDissectError(f"--alphas must be numbers separated by commas (e.g. 0,0.5,1), got {alphas!r}") from None
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise NetDissectError("no alphas given: name at least one, e.g. --alphas 0,0.5,1")
    bad = [a for a in alphas if not (0.0 <= a <= 1.0)]
    if bad:
        raise NetDissectError(f"alphas must lie in [0, 1] (0: the unit basis, 1: the full random rotation), got {bad[0]}")
    return sorted(set(alphas))
