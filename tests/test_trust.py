"""The label scorecard's statistics against plain slow references (netdissect.trust).

A random two-layer conv net on the small Broden fixture; its activations are computed once
(tests/reference.py) and the scorecard pass reads them from memory, as it reads the run's cache.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from broden_fixture import make_broden
from reference import bilinear, layer_activations, reference_dissect
from trust_reference import brute_force_p, exact_moments, masks_and_labels, overlap

from netdissect.concepts import BrodenMasks
from netdissect.data import Broden
from netdissect.trust import stats
from netdissect.trust.collect import collect, upsample_matrix
from netdissect.trust.scorecard import candidates, holdout_split, ScorecardError

Q = 0.05


class Shuffled(BrodenMasks):
    """The dataset's labels, image i getting the labels of image perm[i] (the null made real)."""

    def __init__(self, ds, perm):
        super().__init__(ds)
        self.perm = perm

    def load(self, i):
        s = super().load(int(self.perm[i]))
        s.index = i
        return s


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 24, 3, stride=2, padding=1))
    ds = Broden(make_broden(tmp_path_factory.mktemp("trust") / "ds", n=160, size=32, seed=5, texture_every=7))
    acts = layer_activations(net, ds, "2")
    thr, iou = reference_dissect(acts, ds, Q)
    part = holdout_split(len(ds), np.ones(len(ds), bool), 0.25, seed=3)
    src = BrodenMasks(ds)
    ev = run(acts, thr, src, part, iou)
    M, L, has = masks_and_labels(acts, thr, ds)
    yield dict(ds=ds, acts=acts, thr=thr, iou=iou, part=part, src=src, ev=ev, M=M, L=L, has=has,
               primary=np.asarray(ds.concepts.primary))
    for e in OPENED:
        e.close()


OPENED = []  # evidence whose held-out records' files the module removes at the end


def run(acts, thr, src, part, iou, J=4):
    ev = collect({"l": acts.shape[1:]}, lambda name, a, b: acts[a:b], {"l": thr}, src, (0, len(acts)), set(),
                 part, {"l": candidates(iou, J)}, batch_size=48)["l"]
    OPENED.append(ev)
    return ev


def test_counts_reproduce_the_reference_iou_in_both_parts(world):
    ev, prim = world["ev"], world["primary"]
    iou = stats.iou_from(ev.inter.sum(0), ev.unit_area.sum(0), ev.label_area.sum(0), prim)
    np.testing.assert_allclose(iou, world["iou"], atol=1e-12)
    # each part alone: the reference on that part's images
    M, L, has = world["M"], world["L"], world["has"]
    for p in (0, 1):
        rows = np.flatnonzero(world["part"] == p)
        inter = np.einsum("xkp,xcp->kc", M[rows].astype(float), L[rows].astype(float))
        np.testing.assert_allclose(ev.inter[p], inter)
        area = M[rows].sum(2).astype(float)  # (x, k)
        np.testing.assert_allclose(ev.unit_area[p], area.T @ has[rows].astype(float))


def test_null_moments_match_the_exact_permutation_moments(world):
    ev, prim, M, L, has = world["ev"], world["primary"], world["M"], world["L"], world["has"]
    mean, var, _ = stats.permutation_moments(ev, prim)
    errs_m, errs_s = [], []
    for k in range(M.shape[1]):
        for c in range(L.shape[1]):
            O, obs = overlap(M, L, has, prim, k, c)
            if O.shape[0] < 2 or O.sum() == 0:
                continue
            assert obs == pytest.approx(ev.inter.sum(0)[k, c])
            m, v = exact_moments(O)
            errs_m.append(abs(mean[k, c] - m) / m)
            if v > 0:
                errs_s.append(abs(np.sqrt(var[k, c]) - np.sqrt(v)) / np.sqrt(v))
    errs_m, errs_s = np.array(errs_m), np.array(errs_s)
    assert len(errs_s) > 100
    # the mean from the fine grid (here at mask resolution: exact), the sd from the 8 x 8 grid
    assert np.median(errs_m) < 1e-9
    assert np.median(errs_s) < 0.1 and np.quantile(errs_s, 0.9) < 0.3


def test_p_values_agree_with_a_brute_force_permutation_test(world):
    ev, prim, M, L, has = world["ev"], world["primary"], world["M"], world["L"], world["has"]
    mean, var, _ = stats.permutation_moments(ev, prim)
    p = stats.permutation_p(ev.inter.sum(0), mean, var)
    rng = np.random.default_rng(0)
    perms = 2000
    moderate, tail, high = [], [], []
    for k in range(M.shape[1]):
        for c in range(L.shape[1]):
            O, obs = overlap(M, L, has, prim, k, c)
            if O.shape[0] < 2 or O.sum() == 0:
                continue
            pb = brute_force_p(O, obs, perms, rng)
            if 0.005 < pb < 0.5:
                moderate.append(abs(np.log(p[k, c] / pb)))
            elif pb <= 1 / (perms + 1):
                tail.append(p[k, c])
            else:
                high.append((pb, p[k, c]))
    moderate = np.array(moderate)
    assert len(moderate) >= 8 and len(tail) >= 5
    assert np.median(moderate) < 0.3 and moderate.max() < 1.2  # within a factor 1.35 (median), 3.3 (worst)
    assert max(tail) < 5e-3  # what no permutation of 2000 reached is far in our tail too
    assert all(po > 0.1 for pb, po in high if pb > 0.5)


def test_calibrated_against_masks_shuffled_across_images(world):
    """Concept masks shuffled across images: every test is null, and about 5% get p < 0.05."""
    ds, acts, thr = world["ds"], world["acts"], world["thr"]
    K, C = len(ds.concepts), acts.shape[1]
    hits, tests = 0, 0
    for rep in range(3):
        src = Shuffled(ds, np.random.default_rng(100 + rep).permutation(len(ds)))
        ev = run(acts, thr, src, world["part"], world["iou"])
        mean, var, nS = stats.permutation_moments(ev, world["primary"])
        p = stats.permutation_p(ev.inter.sum(0), mean, var)
        tested = (ev.label_area.sum(0) > 0)[None, :] & (nS >= 2) & (var > 0)
        hits += int(((p < 0.05) & tested).sum())
        tests += int(tested.sum())
    assert tests > 400
    share = hits / tests
    err = np.sqrt(0.05 * 0.95 / tests)
    assert abs(share - 0.05) < 3 * err, (share, tests)


def test_bh_matches_the_step_up_rule():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 1e-3, 20)])
    q = stats.bh(p)
    m = len(p)
    order = np.argsort(p)
    for alpha in (0.01, 0.05, 0.2):
        ok = np.flatnonzero(p[order] <= alpha * np.arange(1, m + 1) / m)
        expected = set(order[:ok.max() + 1]) if len(ok) else set()
        assert set(np.flatnonzero(q <= alpha)) == expected
    # untested entries stay at 1 and do not count in m
    tested = np.zeros(m, bool)
    tested[:10] = True
    q2 = stats.bh(p, tested)
    assert (q2[10:] == 1).all() and np.allclose(q2[:10], stats.bh(p[:10]))


def test_bootstrap_iou_is_the_weighted_reference(world):
    """The resampled IoU accumulated in the pass (each row x counted w[r, x] ~ Poisson(1) times, a
    function of the seed and the row) against the weighted reference over full-resolution masks."""
    from netdissect.trust.collect import poisson_weights

    ev, prim, M, L, has = world["ev"], world["primary"], world["M"], world["L"], world["has"]
    got = stats.bootstrap_iou(ev, prim)  # (R, K, J)
    w = poisson_weights(ev.seed, np.arange(len(M)), ev.resamples).T  # (R, N)
    assert got.shape[0] == ev.resamples == 100
    for r in (0, 1, 57):
        for k in range(0, M.shape[1], 5):
            for j, c in enumerate(ev.cand[k]):
                S = has[:, prim[c]]
                i = (M[:, k] & L[:, c]).sum(1) * S
                u = (M[:, k] | L[:, c]).sum(1) * S
                ref = (w[r] * i).sum() / (w[r] * u).sum() if (w[r] * u).sum() else 0.0
                assert got[r, k, j] == pytest.approx(ref, abs=1e-6)
    # the weights depend on the row alone (not on which rows come together), and vary
    rows = np.array([5, 1023, 1024, 3000])
    np.testing.assert_array_equal(poisson_weights(0, rows, 100)[1:3], poisson_weights(0, rows[1:3], 100))
    assert w.std() > 0.5 and abs(w.mean() - 1) < 0.1
    same, lo, hi = stats.bootstrap(ev, prim)
    assert ((lo <= world["iou"].max(1) + 1e-9) & (world["iou"].max(1) <= hi + 1e-9)).mean() > 0.9
    assert ((same >= 0) & (same <= 1)).all()


def test_held_out_records_and_pixel_scores_round_trip(world, tmp_path):
    """The spill files give back what was written (the held-out metrics read them once)."""
    from netdissect.trust.collect import HeldOutStore
    from netdissect.trust.scorecard import PixelScores

    store = HeldOutStore(tmp_path)
    rng = np.random.default_rng(0)
    written = []
    for row in (3, 9):
        rec = (row, 64.0, (8, 8), rng.random(6) > 0.5, np.array([2, 7]), np.array([5.0, 9.0]),
               rng.random((2, 4, 4)).astype(np.float32), np.arange(5), rng.integers(0, 9, (2, 5)), np.array([7]))
        store.add(rec[0], 64, 8, 8, *rec[3:])
        written.append(rec)
    for a, b in zip(store.records(), written):
        assert a[:3] == b[:3]
        for x, y in zip(a[3:], b[3:]):
            np.testing.assert_array_equal(x, y)
    store.close()
    assert not list(tmp_path.iterdir())
    ps = PixelScores(3, 4, tmp_path, block_bytes=100)  # blocks of 1 or 2 images
    counted = [np.array([1, 0, 1], bool), np.array([1, 1, 0], bool), np.array([0, 1, 1], bool)]
    vals = [rng.random((3, 4)).astype(np.float32) for _ in counted]
    truth = [rng.random((3, 4)) > 0.5 for _ in counted]
    for c, v, t in zip(counted, vals, truth):
        ps.add(c, v, t)
    for k in range(3):
        sc, tr = ps.unit(k)
        np.testing.assert_array_equal(sc, np.concatenate([v[k] for c, v in zip(counted, vals) if c[k]]))
        np.testing.assert_array_equal(tr, np.concatenate([t[k] for c, t in zip(counted, truth) if c[k]]))
    ps.close()
    assert not list(tmp_path.iterdir())


def test_heldout_metrics_match_slow_references(world):
    from netdissect.trust.scorecard import _heldout

    ev, prim, acts, ds = world["ev"], world["primary"], world["acts"], world["ds"]
    iou_train = stats.iou_from(ev.inter[0], ev.unit_area[0], ev.label_area[0], prim)
    label = iou_train.argmax(1)
    ok = iou_train.max(1) > 0
    r_img, r_pix, ap = _heldout(ev, None, label, ok, prim, lambda name, a, b: acts[a:b], (0, len(acts)))
    sampled = {rec[0]: rec[7] for rec in ev.heldout.records()}
    L, has = world["L"], world["has"]
    held = np.flatnonzero(world["part"] == 1)
    sh = ds.rows[0].sh
    for k in np.flatnonzero(ok)[:12]:
        c = label[k]
        rows = [x for x in held if has[x, prim[c]]]
        S = np.stack([bilinear(acts[x, k], sh, sh).ravel() for x in rows])
        Lc = L[rows, c].astype(float)
        if Lc.std() == 0 or S.std() == 0:
            continue
        assert r_pix[k] == pytest.approx(np.corrcoef(S.ravel(), Lc.ravel())[0, 1], abs=1e-6)
        peak = acts[rows, k].max((1, 2))
        share = Lc.mean(1)
        if share.std() > 0 and peak.std() > 0:
            assert r_img[k] == pytest.approx(np.corrcoef(peak, share)[0, 1], abs=1e-6)
        # AUPRC on the sampled pixels: average precision by a plain loop
        sc, tr = [], []
        for x in rows:
            pix = sampled[x]
            sc.append(S[rows.index(x)][pix])
            tr.append(Lc[rows.index(x)][pix] > 0)
        sc, tr = np.concatenate(sc), np.concatenate(tr)
        if tr.any():
            order = np.argsort(-sc, kind="stable")
            # ties-aware reference: precision at the end of each tie run, times the recall gained
            vals = sc[order]
            ap_ref, prev_rec = 0.0, 0.0
            ends = np.flatnonzero(np.append(vals[1:] != vals[:-1], True))
            cum = np.cumsum(tr[order])
            for e in ends:
                rec = cum[e] / tr.sum()
                ap_ref += (cum[e] / (e + 1)) * (rec - prev_rec)
                prev_rec = rec
            assert ap[k] == pytest.approx(ap_ref, abs=1e-6)  # (scores kept in float32)


def test_upsample_matrix_is_torch_bilinear():
    a = torch.rand(1, 1, 5, 7, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(a, size=(13, 16), mode="bilinear", align_corners=False)[0, 0].numpy()
    Uy, Ux = upsample_matrix(5, 13), upsample_matrix(7, 16)
    np.testing.assert_allclose(Uy @ a[0, 0].numpy() @ Ux.T, ref, atol=1e-12)


def test_too_few_images_for_the_holdout_is_a_clear_error():
    with pytest.raises(ScorecardError, match="too few images for the scorecard: 30 probe images"):
        holdout_split(30, np.ones(30, bool), 0.2, 0)
    part = holdout_split(100, np.ones(100, bool), 0.2, 7)
    assert part.sum() == 20 and (part == holdout_split(100, np.ones(100, bool), 0.2, 7)).all()


def test_torch_path_gives_the_kernel_counts(world, monkeypatch):
    from netdissect.dissection import masks

    rows = slice(0, 40)
    acts = world["acts"][rows]
    part = world["part"][:40]
    src = world["src"]
    ev_k = run(acts, world["thr"], src, part, world["iou"])
    monkeypatch.setattr(masks.kernel, "available", lambda: False)
    ev_t = run(acts, world["thr"], src, part, world["iou"])
    for f in ("inter", "unit_area", "boot_inter", "boot_area", "boot_label", "m1", "m2", "gram_m", "gram_l"):
        np.testing.assert_allclose(getattr(ev_t, f), getattr(ev_k, f), rtol=1e-6, atol=1e-6, err_msg=f)


def test_a_label_absent_from_the_held_out_images_gets_empty_held_out_columns(world):
    """A concept that only images of the choosing part hold: units labelled with it on that part get
    no held-out scores, and the layer summary counts them."""
    from netdissect.dissection.result import LayerResult
    from netdissect.trust.scorecard import _score_layer, scorecard_config

    ds, acts, thr, iou, L = world["ds"], world["acts"], world["thr"], world["iou"], world["L"]
    # the concept most units are labelled with; hold out only images without it
    iou_full = iou.copy()
    c = np.bincount(iou_full.argmax(1), minlength=iou.shape[1]).argmax()
    without = np.flatnonzero(~L[:, c].any(1))
    part = np.zeros(len(ds), np.int8)
    part[without[:40]] = 1
    ev = run(acts, thr, world["src"], part, iou)
    cons = ds.concepts
    lr = LayerResult(name="l", iou=iou.astype(np.float32), thresholds=thr.astype(np.float32),
                     concept_names=np.asarray(cons.names), concept_categories=np.asarray(cons.primary_names),
                     concept_numbers=cons.numbers, categories=list(cons.categories), iou_threshold=0.04,
                     shape=acts.shape[1:])
    card = _score_layer(lr, ev, world["primary"], lambda name, a, b: acts[a:b], (0, len(acts)), scorecard_config())
    u = card["units"]
    hit = u["holdout_label"] == cons.names[c]
    assert hit.any()
    assert np.isnan(u["holdout_iou"][hit]).all() and np.isnan(u["r_image"][hit]).all()
    assert np.isnan(u["r_pixel"][hit]).all() and np.isnan(u["auprc"][hit]).all()
    names = list(cons.names)
    absent = [bool(lab) and ev.label_area[1][names.index(lab)] == 0 for lab in u["holdout_label"]]
    assert card["summary"]["holdout"]["labels_absent_from_held_out"] == sum(absent) >= int(hit.sum())
    assert (np.isnan(u["holdout_iou"]) == (np.asarray(absent) | (u["holdout_label"] == ""))).all()
    assert np.isfinite(u["q"][hit]).all()  # significance and stability do not depend on the split
