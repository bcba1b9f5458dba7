"""The scorecard of every unit's label: significance, stability, held-out prediction.

    >>> from netdissect.trust import scorecard_config
    >>> scorecard_config(holdout=0.2, seed=0)["holdout"]
    0.2

:func:`score_layers` runs after pass 2 on the run's activation cache (``dissect`` calls it
before the cache is removed; ``netdissect score RUN`` calls it on a run whose cache was kept
with ``--keep-cache``).  It returns, per layer, the unit columns that
:class:`netdissect.dissection.result.LayerResult` writes into ``units.csv`` and
``scorecard.npz``, and a layer summary for ``summary.json`` (docs/label-trust.md).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from netdissect.errors import NetDissectError
from netdissect.trust import stats
from netdissect.dissection.masks import _axis
from netdissect.trust.collect import SpillFile, collect, upsample_matrix

CANDIDATES = 5       # concepts per unit whose per-image counts the bootstrap resamples
RESAMPLES = 100
MIN_IMAGES = 10      # images each part of the holdout split, and the bootstrap, need at least
READ_BYTES = 16 << 20  # cached activations read at a time for the held-out metrics

UNIT_COLUMNS = ["p", "q", "detector_iou", "stability", "iou_lo", "iou_hi", "holdout_label", "holdout_iou",
                "r_image", "r_pixel", "auprc"]


class ScorecardError(NetDissectError):
    """The scorecard cannot be computed as asked (too few images, no cache)."""


class TooFewImages(ScorecardError):
    """The probe is too small for the holdout split or the bootstrap."""


def scorecard_config(holdout: float = 0.2, seed: int = 0, fdr: float = 0.05, resamples: int = RESAMPLES,
                     candidates: int = CANDIDATES) -> dict:
    if not 0 < holdout < 1:
        raise ScorecardError(f"--holdout must be a share of the probe images between 0 and 1 (exclusive), got {holdout}")
    if not 0 < fdr <= 1:
        raise ScorecardError(f"--fdr must be in (0, 1] (1 keeps the IoU rule alone), got {fdr}")
    if resamples < 10:
        raise ScorecardError(f"the bootstrap needs at least 10 resamples, got {resamples}")
    return {"holdout": float(holdout), "seed": int(seed), "fdr": float(fdr), "resamples": int(resamples),
            "candidates": int(candidates)}


def holdout_split(n_rows: int, used: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """int8 (n_rows,): 1 for the held-out rows: round(holdout * used) of the used rows, drawn with
    ``numpy.random.default_rng(seed)`` (recorded in summary.json)."""
    rows = np.flatnonzero(used)
    n_held = int(round(holdout * len(rows)))
    if len(rows) < 2 * MIN_IMAGES or n_held < MIN_IMAGES or len(rows) - n_held < MIN_IMAGES:
        raise TooFewImages(
            f"too few images for the scorecard: {len(rows)} probe images with --holdout {holdout} leave "
            f"{n_held} held out and {len(rows) - n_held} to choose labels on; each part and the bootstrap need "
            f"at least {MIN_IMAGES}: give more images, another --holdout, or --no-scorecard")
    part = np.zeros(n_rows, np.int8)
    part[np.random.default_rng(seed).permutation(rows)[:n_held]] = 1
    return part


def candidates(iou: np.ndarray, J: int) -> np.ndarray:
    """(K, J) each unit's J best concepts by IoU (column 0 = its label)."""
    J = min(J, iou.shape[1])
    return np.argsort(-iou, axis=1, kind="stable")[:, :J]


def score_layers(layer_results: dict, read_acts, source, rows, skipped, n_rows: int, cfg: dict, *,
                 batch_size=64, num_workers=0, progress=False, skip_bad=False, spill_dir=None) -> dict:
    """Per layer ``{"units": {column: array}, "summary": {...}, "matrices": {...}}``.

    The held-out images' records and sampled pixel scores go to temporary files in ``spill_dir``
    (default: the system's temporary folder), removed before this returns."""
    t0 = time.monotonic()
    used = np.ones(n_rows, bool)
    used[list(skipped)] = False
    part = holdout_split(n_rows, used, cfg["holdout"], cfg["seed"])
    shapes = {name: tuple(lr.shape) for name, lr in layer_results.items()}
    cands = {name: candidates(lr.iou.astype(np.float64), cfg["candidates"]) for name, lr in layer_results.items()}
    thresholds = {name: lr.thresholds.astype(np.float64) for name, lr in layer_results.items()}
    ev = collect(shapes, read_acts, thresholds, source, rows, skipped, part, cands, batch_size=batch_size,
                 num_workers=num_workers, progress=progress, seed=cfg["seed"], skip_bad=skip_bad,
                 resamples=cfg["resamples"], spill_dir=spill_dir)
    t1 = time.monotonic()
    primary = np.asarray(source.concepts.primary, np.int64)
    out = {}
    try:
        for name, lr in layer_results.items():
            t_l = time.monotonic()
            out[name] = _score_layer(lr, ev[name], primary, read_acts, rows, cfg, spill_dir)
            out[name]["summary"]["timing_s"]["statistics"] = round(time.monotonic() - t_l, 3)
            out[name]["summary"]["timing_s"]["pass"] = round((t1 - t0) / len(layer_results), 3)
            ev[name].close()
    finally:
        for e in ev.values():
            e.close()
    return out


def _score_layer(lr, e, primary, read_acts, rows, cfg, spill_dir=None) -> dict:
    K, C = e.units, e.concepts
    t = {}
    t0 = time.monotonic()
    # ---- significance: every unit x concept pair whose concept appears
    inter = e.inter.sum(0)
    mean, var, nS = stats.permutation_moments(e, primary)
    p = stats.permutation_p(inter, mean, var)
    appears = e.label_area.sum(0) > 0
    tested = np.broadcast_to(appears[None, :], p.shape) & (nS >= 2)
    p = np.where(tested, p, 1.0)
    q = stats.bh(p, tested)
    best = lr.iou.argmax(1) if C else np.zeros(K, int)
    has_label = lr.units["label"] != ""
    p_label = np.where(has_label, p[np.arange(K), best], np.nan)
    q_label = np.where(has_label, q[np.arange(K), best], np.nan)
    t["significance"] = time.monotonic() - t0
    # ---- stability
    t0 = time.monotonic()
    same, lo, hi = stats.bootstrap(e, primary)
    same = np.where(has_label, same, np.nan)
    lo, hi = np.where(has_label, lo, np.nan), np.where(has_label, hi, np.nan)
    t["stability"] = time.monotonic() - t0
    # ---- held out: labels chosen on part 0, scored on part 1
    t0 = time.monotonic()
    iou_train = stats.iou_from(e.inter[0], e.unit_area[0], e.label_area[0], primary)
    iou_held = stats.iou_from(e.inter[1], e.unit_area[1], e.label_area[1], primary)
    hbest = iou_train.argmax(1)
    h_has = iou_train[np.arange(K), hbest] > 0
    h_label = np.where(h_has, np.asarray(lr.concept_names)[hbest], "")
    h_iou = np.where(h_has, iou_held[np.arange(K), hbest], np.nan)
    absent = h_has & (e.label_area[1][hbest] == 0)
    h_iou = np.where(absent, np.nan, h_iou)  # no held-out image holds the concept: nothing to score
    r_img, r_pix, ap = _heldout(e, lr, hbest, h_has & ~absent, primary, read_acts, rows, spill_dir)
    t["holdout"] = time.monotonic() - t0
    # the pass's own counts give back pass 2's IoU (the same cache, thresholds and masks)
    iou_all = stats.iou_from(inter, e.unit_area.sum(0), e.label_area.sum(0), primary)
    iou_check = float(np.abs(iou_all - lr.iou.astype(np.float64)).max()) if iou_all.size else 0.0
    det_iou = lr.units["iou"] > lr.iou_threshold
    det_fdr = det_iou & (q_label < cfg["fdr"]) if cfg["fdr"] < 1 else det_iou.copy()
    units = {"p": p_label, "q": q_label, "detector_iou": det_iou, "stability": same, "iou_lo": lo, "iou_hi": hi,
             "holdout_label": h_label, "holdout_iou": h_iou, "r_image": r_img, "r_pixel": r_pix, "auprc": ap}

    def mean_of(v, sel):
        v = v[sel]
        v = v[~np.isnan(v)]
        return round(float(v.mean()), 4) if len(v) else None

    def median_of(v, sel):
        v = v[sel]
        v = v[~np.isnan(v)]
        return round(float(np.median(v)), 4) if len(v) else None

    summary = {
        "fdr": cfg["fdr"], "tests": int(tested.sum()), "significant_pairs": int((q < cfg["fdr"]).sum()),
        "detectors_iou_rule": int(det_iou.sum()), "detectors_fdr_rule": int(det_fdr.sum()),
        "median_stability_detectors": median_of(same, det_fdr),
        "holdout": {"share": cfg["holdout"], "seed": cfg["seed"], "images_held_out": int((e.part[e.used] == 1).sum()),
                    "images_choose": int((e.part[e.used] == 0).sum()),
                    "labels_absent_from_held_out": int(absent.sum())},
        "mean_r_image": mean_of(r_img, h_has), "mean_r_pixel": mean_of(r_pix, h_has), "mean_auprc": mean_of(ap, h_has),
        "mean_r_image_detectors": mean_of(r_img, det_fdr), "mean_r_pixel_detectors": mean_of(r_pix, det_fdr),
        "bootstrap": {"resamples": cfg["resamples"], "candidates": int(e.cand.shape[1])},
        "iou_check_max_diff": round(iou_check, 7),
        "timing_s": {k: round(v, 3) for k, v in t.items()},
    }
    return {"units": units, "summary": summary, "matrices": {"p": p.astype(np.float32), "q": q.astype(np.float32)}}


class PixelScores(SpillFile):
    """Per held-out image, each unit's upsampled activation at the sampled pixels and whether the
    label's concept is there, written to a file in blocks (unit-major within a block) and read
    back one unit at a time: the pixel-level AUPRC sorts one unit's pixels, never all of them."""

    def __init__(self, units: int, samples: int, folder=None, block_bytes: int = 16 << 20):
        self.K, self.S = units, samples
        self.nb = max(1, block_bytes // max(1, units * samples * 5))
        super().__init__("pixels-", folder)
        self.blocks = []  # (offset, images)
        self._buf = []

    def add(self, counted: np.ndarray, vals: np.ndarray, truth: np.ndarray):
        """``counted`` (K,) bool: the units this image counts for; ``vals`` float32 and ``truth``
        bool (K, S)."""
        self._buf.append((counted, vals, truth))
        if len(self._buf) == self.nb:
            self._flush()

    def _flush(self):
        if not self._buf:
            return
        n = len(self._buf)
        counted = np.stack([b[0] for b in self._buf], 1).astype(np.uint8)    # (K, n)
        vals = np.stack([b[1] for b in self._buf], 1).astype(np.float32)     # (K, n, S)
        truth = np.stack([b[2] for b in self._buf], 1).astype(np.uint8)      # (K, n, S)
        self._f.seek(0, os.SEEK_END)
        self.blocks.append((self._f.tell(), n))
        for a in (counted, vals, truth):
            self._f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
        self._buf = []

    def unit(self, k: int):
        """(scores, truth) of unit k over the images it counts for."""
        self._flush()
        self._f.flush()
        f, K, S = self._f, self.K, self.S

        def read(offset, count, dtype):
            f.seek(offset)
            return np.frombuffer(f.read(count * np.dtype(dtype).itemsize), dtype)
        sc, tr = [], []
        for off, n in self.blocks:
            keep = read(off + k * n, n, np.uint8).astype(bool)
            if not keep.any():
                continue
            base = off + K * n
            v = read(base + 4 * k * n * S, n * S, np.float32).reshape(n, S)
            base += 4 * K * n * S
            t = read(base + k * n * S, n * S, np.uint8).reshape(n, S)
            sc.append(v[keep].ravel())
            tr.append(t[keep].ravel().astype(bool))
        if not sc:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        return np.concatenate(sc), np.concatenate(tr)

def _heldout(e, lr, label, ok, primary, read_acts, rows, spill_dir=None):
    """Image-level Pearson (peak activation vs the concept's area share), pixel-level Pearson
    (upsampled activation vs the mask, exact from U^T L) and pixel AUPRC (sampled pixels) over
    the held-out images holding the label's category, streamed over the held-out records
    (:class:`netdissect.trust.collect.HeldOutStore`) and their cached activations."""
    K = e.units
    lo, hi = rows
    cat = primary[label]  # (K,)
    nan = np.full(K, np.nan)
    if not e.heldout.count:
        return nan, nan.copy(), nan.copy()
    uniq, inv = np.unique(label, return_inverse=True)
    sS, sSS, sSL, sL, npx = (np.zeros(K) for _ in range(5))
    iP, iPP, iA, iAA, iPA, iN = (np.zeros(K) for _ in range(6))  # image level: peak and area share
    ups = {}
    scores = None
    record_bytes = int(np.prod(e.shape)) * 4 if e.shape else 1
    try:
        records = e.heldout.records()
        pending = []
        for rec in records:
            pending.append(rec)
            if len(pending) > 1 and (pending[-1][0] - pending[0][0] + 1) * record_bytes > READ_BYTES:
                last = pending.pop()
                scores = _heldout_rows(pending, e, read_acts, lo, cat, ok, uniq, inv, ups, scores, spill_dir,
                                       (sS, sSS, sSL, sL, npx), (iP, iPP, iA, iAA, iPA, iN))
                pending = [last]
        if pending:
            scores = _heldout_rows(pending, e, read_acts, lo, cat, ok, uniq, inv, ups, scores, spill_dir,
                                   (sS, sSS, sSL, sL, npx), (iP, iPP, iA, iAA, iPA, iN))
        r_img = stats.pearson(iP, iA, iPP, iAA, iPA, iN)
        r_pix = stats.pearson(sS, sL, sSS, sL, sSL, npx)
        ap = np.full(K, np.nan)
        if scores is not None:
            for k in np.flatnonzero(ok):
                sc, tr = scores.unit(k)
                if len(sc):
                    ap[k] = stats.average_precision(sc, tr)
    finally:
        if scores is not None:
            scores.close()
    r_img = np.where(ok, r_img, np.nan)
    r_pix = np.where(ok, r_pix, np.nan)
    return r_img, r_pix, ap


def _heldout_rows(recs, e, read_acts, lo, cat, ok, uniq, inv, ups, scores, spill_dir, pix_sums, img_sums):
    """Add the held-out records ``recs`` (consecutive in row order, one read of the cache) to the
    sums and the pixel scores."""
    sS, sSS, sSL, sL, npx = pix_sums
    iP, iPP, iA, iAA, iPA, iN = img_sums
    a0, a1 = recs[0][0] - lo, recs[-1][0] - lo + 1
    block = np.asarray(read_acts(e.name, a0, a1))
    for row, pixels, (sh, sw), has, concepts, areas, maps, pix, cols, whole in recs:
        sel = has[cat] & ok  # (K,) the units whose label's category this image holds
        if not sel.any():
            continue
        A = block[row - lo - a0].astype(np.float64)  # (K, h, w)
        key = (A.shape[1], A.shape[2], sh, sw)
        if key not in ups:
            Uy, Ux = upsample_matrix(A.shape[1], sh), upsample_matrix(A.shape[2], sw)
            ups[key] = (Uy.sum(0), Ux.sum(0), Uy.T @ Uy, Ux.T @ Ux, _axis(A.shape[1], sh), _axis(A.shape[2], sw))
        cy, cx, Yg, Xg, ay, ax = ups[key]
        where = {int(c): i for i, c in enumerate(concepts)}
        u_area = np.array([areas[where[int(c)]] if int(c) in where else 0.0 for c in uniq])
        w = sel.astype(np.float64)
        # image level: the unit's peak activation against the label's share of the image
        peak = A.max((1, 2))
        share = u_area[inv] / pixels
        iP += w * peak
        iPP += w * peak * peak
        iA += w * share
        iAA += w * share * share
        iPA += w * peak * share
        iN += w
        # pixel level, exact: sums of S, S^2 and S L over every pixel from the activation grid
        zero = np.zeros(A.shape[1:], np.float32)
        D = np.stack([maps[where[int(c)]] if int(c) in where else zero for c in uniq])[inv]  # (K, h, w)
        sS += w * ((cy @ A) @ cx)
        sSS += w * (np.matmul(np.matmul(Yg, A), Xg) * A).sum((1, 2))
        sSL += w * (A * D).sum((1, 2))
        sL += w * u_area[inv]
        npx += w * (sh * sw)
        # bilinear values at the sampled pixels: four cells each (PyTorch's weights)
        py, px = pix // sw, pix % sw
        n = len(pix)
        y0, y1, wy0, wy1 = (t[py] for t in ay)
        x0, x1, wx0, wx1 = (t[px] for t in ax)
        vals = ((wy0 * wx0) * A[:, y0, x0] + (wy0 * wx1) * A[:, y0, x1]
                + (wy1 * wx0) * A[:, y1, x0] + (wy1 * wx1) * A[:, y1, x1]).astype(np.float32)
        wset = set(whole.tolist())
        pos = np.stack([np.ones(n, bool) if int(c) in wset else
                        ((cols == c).any(0) if cols.shape[0] else np.zeros(n, bool)) for c in uniq])
        if scores is None:
            scores = PixelScores(e.units, n, spill_dir)
        scores.add(sel, vals, pos[inv])
    return scores


def layer_summary_line(s: dict) -> str:
    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
    return (f"detectors {s['detectors_iou_rule']} (IoU rule) -> {s['detectors_fdr_rule']} (q < {s['fdr']:g}); "
            f"median stability {f(s['median_stability_detectors'])}; held-out r image {f(s['mean_r_image'])}, "
            f"pixel {f(s['mean_r_pixel'])}, AUPRC {f(s['mean_auprc'])}")
