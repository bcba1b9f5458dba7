"""The formula scorecard (netdissect.explain.null): the single-label permutation null applied to a
formula's mask, checked against a brute-force permutation test on small data; planted and noise units."""
import numpy as np
import pytest

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


def test_explain_writes_p_q_and_the_pass_counts_the_searched_formulas(broden, tmp_path):
    """On a run: formulas.csv and load() carry p, q, significant; the planted colour detectors' formulas
    (the three live units) are significant; the significance pass's observed overlap of each formula equals the search's own
    count of it (the pass evaluates the same formula masks the search scored)."""
    from pathlib import Path

    from netdissect import dissect, load
    from netdissect.explain import run as xr
    from netdissect.explain.search import Problem

    tests = Path(__file__).parent
    out = tmp_path / "run"
    dissect(f"{tests}/nets.py:color_units", ["features"], broden, out=out, progress=False, keep_cache=True)
    seen = {}
    import netdissect.explain.null as null

    orig = null.scorecard

    def spy(sums, cat_bits, tested):
        seen["sums"], seen["tested"] = sums, tested
        return orig(sums, cat_bits, tested)

    null.scorecard = spy
    try:
        xr.explain(out, length=2, progress=False)
    finally:
        null.scorecard = orig
    lr = load(out)["features"]
    f = lr.formulas
    assert {"p", "q", "significant"} <= set(f.dtype.names)
    has = f["formula"] != ""
    assert np.isnan(f["p"][~has]).all() and not f["significant"][~has].any()
    assert ((f["p"][has] >= 0) & (f["p"][has] <= 1)).all() and (f["q"][has] >= f["p"][has] - 1e-12).all()
    names = [str(n) for n in lr.concept_names]
    for k in range(3):  # the three live units of tests/nets.py ColorUnits (red, green, blue channel detectors)
        assert f["q"][k] < 0.01 and f["significant"][k], (k, f["formula"][k], f["q"][k])
    # the pass's observed T equals I(G) = sum_s h_s over the formula's signatures
    with np.load(out / ".explain" / "features.counts.npz") as z:
        prim = {g: i for i, g in enumerate(lr.categories)}
        problem = Problem(z["member"], z["n"], z["pattern"], [prim[str(c)] for c in lr.concept_categories])
        H = z["H"]
    for k in np.flatnonzero(has):
        g = Formula.parse(f["formula"][k], names)
        assert seen["sums"].inter[k] == H[k] @ problem.truth(g), k
    # the torch hit-list path (GPU, or no numba) gathers the same sums as the compiled kernel's
    from netdissect.dissection import kernel
    from netdissect.explain.data import null_run

    st, thr = xr._activations(out, __import__("json").loads((out / "summary.json").read_text()), "features", False)
    _, source = xr._source(__import__("json").loads((out / "summary.json").read_text()), out)
    cols = [Formula.parse(t, names) if t else None for t in f["formula"]]
    try:
        a = null_run(source, st.caches["features"], st.shapes["features"], thr, cols, progress=False)
        real_avail = kernel.available
        kernel.available = lambda: False
        try:
            b = null_run(source, st.caches["features"], st.shapes["features"], thr, cols, progress=False)
        finally:
            kernel.available = real_avail
    finally:
        st.close()
    assert np.array_equal(a.inter, b.inter) and np.array_equal(a.inter, seen["sums"].inter)
    for pa, pb in zip(a.parts, b.parts):
        for key in pa:
            np.testing.assert_allclose(pa[key], pb[key], rtol=1e-12, atol=1e-12, err_msg=key)
    # a killed significance sweep resumes from its checkpoint (not from row 0) and gives the same p
    for old in (out / ".explain").glob("features.null-*.npz"):
        old.unlink()
    import netdissect.dissection.rows as rows_mod

    xr._NULL_STOP_AFTER = 1
    try:
        with pytest.raises(KeyboardInterrupt):
            xr.explain(out, length=2, progress=False, batch_size=8)
    finally:
        xr._NULL_STOP_AFTER = None
    assert list((out / ".explain").glob("features.null-*.part.npz"))
    starts = []
    real_rows = rows_mod.LabelRows

    class Spy(real_rows):
        def __init__(self, source, start, stop):
            starts.append(start)
            super().__init__(source, start, stop)

    rows_mod.LabelRows = Spy
    try:
        xr.explain(out, length=2, progress=False, batch_size=8)
    finally:
        rows_mod.LabelRows = real_rows
    assert starts == [8]  # resumed after the one finished batch
    assert not list((out / ".explain").glob("features.null-*.part.npz"))
    again = load(out)["features"].formulas
    np.testing.assert_allclose(again["p"][has], f["p"][has], rtol=1e-9)
    meta = __import__("json").loads((out / "features" / "formulas.json").read_text())["formulas.csv"]
    assert meta["significance"]["tests"] == int(has.sum())
    assert meta["significance"]["significant"] == int(f["significant"].sum())
