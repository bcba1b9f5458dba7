"""The formula scorecard (netdissect.explain.null): the single-label permutation null applied to a
formula's mask, checked against a brute-force permutation test on small data; planted and noise units."""
import numpy as np

from netdissect.explain.formula import Formula
from netdissect.explain.null import scorecard, sums_from_pixels


def _world(rng, n=60, s=16):
    """Three concepts on n images of s x s: blobs at random places (concept masks bool (3, n, s, s))."""
    c = np.zeros((3, n, s, s), bool)
    for k in range(3):
        for x in range(n):
            if rng.random() < 0.6:
                y0, x0 = rng.integers(0, s - 6, 2)
                h, w = rng.integers(3, 7, 2)
                c[k, x, y0:y0 + h, x0:x0 + w] = True
    return c


def _brute_p(u, f, perms, rng):
    n = u.shape[0]
    O = np.einsum("xp,yp->xy", u.reshape(n, -1).astype(float), f.reshape(n, -1).astype(float))
    T = np.trace(O)
    hits = sum(O[np.arange(n), rng.permutation(n)].sum() >= T - 1e-9 for _ in range(perms))
    return (hits + 1) / (perms + 1), T


def test_formula_p_agrees_with_brute_force_permutation():
    rng = np.random.default_rng(0)
    c = _world(rng)
    f = Formula(0).extend("OR", 1).extend("AND NOT", 2)
    fm = f.evaluate(list(c))                                   # (n, s, s)
    units, fms = [], []
    for j in range(12):                                        # units from formula-aligned to random
        noise = rng.random(fm.shape) < 0.15
        keep = rng.random(fm.shape) < (j / 12) * 0.12
        units.append((fm & keep) | noise)
        fms.append(fm)
    U, F = np.stack(units), np.stack(fms)
    brute = [_brute_p(U[k], F[k], 2000, rng) for k in range(len(U))]
    # grid at pixel resolution: the null's moments are exact, only the gamma tail approximates;
    # the default 8 x 8 variance grid (as the single-label scorecard) loses within-cell structure
    for g2, med, worst in ((16, 1.35, 2.0), (8, 3.0, 6.0)):
        s = sums_from_pixels(U, F, [1] * U.shape[1], g2=g2)
        p, q = scorecard(s, [1] * len(U), np.ones(len(U), bool))
        ratios = []
        for k, (pb, T) in enumerate(brute):
            assert s.inter[k] == T
            if pb <= 1 / 2001 + 1e-12:
                assert p[k] < 0.005, (k, p[k])
            if 0.005 < pb < 0.5:
                ratios.append(p[k] / pb)
        assert len(ratios) >= 2, "too few units in the brute force's resolvable range"
        r = np.abs(np.log(ratios))
        assert np.median(r) < np.log(med) and r.max() < np.log(worst), (g2, ratios)


def test_planted_formula_unit_significant_noise_unit_not():
    rng = np.random.default_rng(1)
    c = _world(rng, n=80)
    f = Formula(0).extend("OR", 1)
    fm = f.evaluate(list(c))
    planted = fm & (rng.random(fm.shape) < 0.8)
    noise = rng.random(fm.shape) < float(fm.mean())
    U, F = np.stack([planted, noise]), np.stack([fm, fm])
    p, q = scorecard(sums_from_pixels(U, F, [1] * U.shape[1]), [1, 1], np.ones(2, bool))
    assert q[0] < 0.01
    assert q[1] > 0.05
