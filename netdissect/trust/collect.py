"""The scorecard's one pass over the activation cache and the concept labels.

For every layer it gathers, from the same exact unit masks as pass 2
(:meth:`netdissect.dissection.masks.UnitMasks.hits`):

- the exact intersections and areas of every unit with every concept, split into the
  probe's two parts (labels chosen on one, scored on the other: ``--holdout``);
- per image, the intersections of each unit with its J best concepts, its mask area and
  its peak activation (what the bootstrap resamples);
- coarse-grid coverage sums and Gram matrices of the unit masks and of the concept masks
  (what the image-permutation null's mean and variance are computed from,
  :mod:`netdissect.trust.stats`);
- for the held-out images: each present concept's mask pulled back through the bilinear
  upsampling (``U^T L``, so that sum_p S_k(x)[p] L_c(x)[p] = <A_k(x), U^T L_c(x)> exactly) and
  the concept columns of a seeded sample of pixels (the pixel-level AUPRC).

Everything here is a sum over images or an array indexed by image, so it does not depend on
the order in which rows come.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from netdissect.dissection.masks import UnitMasks, _axis
from netdissect.dissection.rows import LabelCollate, LabelRows, loader
from netdissect.errors import DatasetError

GRID_MEAN = 28  # cells per side for the null's mean (first-order sums)
GRID_VAR = 8    # cells per side for the null's variance (Gram matrices)
AP_PIXELS = 256  # sampled pixels per held-out image for the pixel-level AUPRC


def upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64: PyTorch's bilinear upsampling along one axis (align_corners=False)."""
    i0, i1, l0, l1 = _axis(n_in, n_out)
    U = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(U, (rows, i0), l0)
    np.add.at(U, (rows, i1), l1)
    return U


def cell_index(sh: int, sw: int, g: int) -> np.ndarray:
    """(sh * sw,) int64: the g x g grid cell of each pixel (row-major)."""
    cy = np.minimum(np.arange(sh) * g // sh, g - 1)
    cx = np.minimum(np.arange(sw) * g // sw, g - 1)
    return (cy[:, None] * g + cx[None, :]).ravel()


def cell_areas(sh: int, sw: int, g: int) -> np.ndarray:
    return np.bincount(cell_index(sh, sw, g), minlength=g * g).astype(np.float64)


@dataclass
class LayerEvidence:
    """What the scorecard pass gathers for one layer (see the module docstring)."""

    name: str
    units: int
    concepts: int
    categories: int
    rows: int
    part: np.ndarray              # int8 (rows,): 0 choose labels, 1 held out
    cand: np.ndarray              # int64 (K, J): each unit's J best concepts (full-probe IoU)
    shape: tuple = ()
    used: np.ndarray = None       # bool (rows,) rows counted (not skipped)
    inter: np.ndarray = None      # float64 (2, K, C)
    unit_area: np.ndarray = None  # float64 (2, K, G): mask area over the images holding g
    label_area: np.ndarray = None  # float64 (2, C)
    images_holding: np.ndarray = None  # float64 (2, G)
    has: np.ndarray = None        # bool (rows, G)
    peak: np.ndarray = None       # float32 (rows, K)
    area: np.ndarray = None       # float32 (rows, K) mask area
    cand_inter: np.ndarray = None  # float32 (rows, K, J)
    cand_concepts: np.ndarray = None  # int64 (Cc,) the distinct candidate concepts
    cand_label_area: np.ndarray = None  # float32 (rows, Cc)
    pixels: np.ndarray = None     # float64 (rows,) label pixels of each image
    # the null (fractions of each grid cell covered)
    m1: np.ndarray = None         # float64 (G, K, g1*g1) unit coverage summed over images holding g
    l1: np.ndarray = None         # float64 (C, g1*g1)
    gram_m: np.ndarray = None     # float64 (G, K, g2*g2, g2*g2)
    gram_l: np.ndarray = None     # float64 (C, g2*g2, g2*g2)
    m2: np.ndarray = None         # float64 (G, K, g2*g2)
    l2: np.ndarray = None         # float64 (C, g2*g2)
    a1: np.ndarray = None         # float64 (g1*g1,) pixels per cell (first mask size)
    a2: np.ndarray = None
    # held-out images: row -> {concept: U^T L_c (h, w) float32}, sampled pixels and their columns
    pulled: dict = field(default_factory=dict)
    held_area: dict = field(default_factory=dict)  # row -> {concept: label pixels}
    sampled: dict = field(default_factory=dict)  # row -> (pix (S,) int64, cols (P, S) int64, whole (W,) int64, (sh, sw))

    def allocate(self, G1: int, G2: int):
        K, C, G, n, J = self.units, self.concepts, self.categories, self.rows, self.cand.shape[1]
        f8 = np.float64
        self.used = np.zeros(n, bool)
        self.inter = np.zeros((2, K, C), f8)
        self.unit_area = np.zeros((2, K, G), f8)
        self.label_area = np.zeros((2, C), f8)
        self.images_holding = np.zeros((2, G), f8)
        self.has = np.zeros((n, G), bool)
        self.peak = np.zeros((n, K), np.float32)
        self.area = np.zeros((n, K), np.float32)
        self.cand_inter = np.zeros((n, K, J), np.float32)
        self.cand_concepts = np.unique(self.cand)
        self.cand_label_area = np.zeros((n, len(self.cand_concepts)), np.float32)
        self.pixels = np.zeros(n, f8)
        self.m1 = np.zeros((G, K, G1 * G1), f8)
        self.l1 = np.zeros((C, G1 * G1), f8)
        self.gram_m = np.zeros((G, K, G2 * G2, G2 * G2), f8)
        self.gram_l = np.zeros((C, G2 * G2, G2 * G2), f8)
        self.m2 = np.zeros((G, K, G2 * G2), f8)
        self.l2 = np.zeros((C, G2 * G2), f8)


class _Sizes:
    """Per mask size: grid cells of every pixel, cell areas, upsampling matrices per layer shape."""

    def __init__(self, g1: int, g2: int):
        self.g1, self.g2 = g1, g2
        self.cache: dict = {}

    def get(self, sh, sw):
        key = (sh, sw)
        if key not in self.cache:
            c1, c2 = cell_index(sh, sw, self.g1), cell_index(sh, sw, self.g2)
            self.cache[key] = (torch.from_numpy(c1), torch.from_numpy(c2),
                               torch.from_numpy(cell_areas(sh, sw, self.g1)),
                               torch.from_numpy(cell_areas(sh, sw, self.g2)))
        return self.cache[key]


def collect(layers: dict, read_acts, thresholds: dict, source, rows: tuple[int, int], skipped, part: np.ndarray,
            cands: dict, *, batch_size: int = 64, num_workers: int = 0, progress: bool = False,
            seed: int = 0, grid_mean: int = GRID_MEAN, grid_var: int = GRID_VAR,
            ap_pixels: int = AP_PIXELS, skip_bad: bool = False) -> dict[str, LayerEvidence]:
    """One pass over rows ``[lo, hi)`` of every layer in ``layers`` (name -> (C, h, w)).

    ``read_acts(name, start, stop)`` returns the cached activations of rows start..stop-1
    (numpy (B, C, h, w)); ``thresholds[name]`` float64 (C,); ``part`` int8 (rows of the whole
    probe,): 1 for held-out rows; ``cands[name]`` int64 (C, J) each unit's candidate concepts.
    """
    cons = source.concepts
    K = len(cons)
    G = len(cons.categories)
    primary = torch.as_tensor(np.asarray(cons.primary, np.int64))
    lo, hi = rows
    n = len(part)
    smallest = min(min(s) for s in source.mask_sizes()) if source.mask_sizes() else grid_mean
    grid_mean, grid_var = min(grid_mean, smallest), min(grid_var, smallest)  # no empty cell
    ev = {}
    for name, shape in layers.items():
        e = LayerEvidence(name, shape[0], K, G, n, part, np.asarray(cands[name], np.int64), tuple(shape))
        e.allocate(grid_mean, grid_var)
        ev[name] = e
    sizes = _Sizes(grid_mean, grid_var)
    masks: dict = {}
    lookups = {}
    for name, e in ev.items():
        J = e.cand.shape[1]
        lk = np.full((e.units, K + 1), J, np.int64)  # concept column -> candidate slot (J: none)
        for j in range(J):
            lk[np.arange(e.units), e.cand[:, j]] = j
        lookups[name] = torch.from_numpy(lk)
        e.cc_index = {int(c): i for i, c in enumerate(e.cand_concepts)}
    ups: dict = {}
    thr = {name: torch.from_numpy(np.asarray(t, np.float64)) for name, t in thresholds.items()}
    collate = LabelCollate(cons, skipped)
    workers = 0 if getattr(source, "loads_from_memory", False) else num_workers
    batches = loader(LabelRows(source, lo, hi), batch_size, workers, collate)
    bar = tqdm(total=hi - lo, desc="scorecard", unit="img", disable=not progress, dynamic_ncols=True)
    skip = set(skipped)
    for start, stop, errors, built in batches:
        for i, err in sorted(errors.items()):
            if not skip_bad:
                raise DatasetError(f"{err} (pass --skip-bad to skip bad rows and count them)")
            skip.add(i)
        acts_all = {name: torch.from_numpy(np.ascontiguousarray(read_acts(name, start - lo, stop - lo))).float()
                    for name in ev}
        for (sh, sw), (lb, pos) in built.items():
            pos = [p for p in pos if start + p not in skip]
            if not pos:
                continue
            if len(pos) < lb.has_category.shape[0]:
                raise AssertionError("bad rows inside a label batch")  # LabelCollate leaves them out
            rows_b = np.asarray([start + p for p in pos], np.int64)
            B = len(rows_b)
            P = sh * sw
            c1, c2, a1, a2 = sizes.get(sh, sw)
            g1c, g2c = len(a1), len(a2)
            has = lb.has_category.bool()  # (B, G)
            hb = has.numpy()
            held = torch.from_numpy(part[rows_b].astype(np.int64))  # (B,)
            planes = lb.planes.long()  # (Pl, B * P), K for none
            # label sums (model independent): per concept and cell, from every plane's pixels
            flat = planes.reshape(planes.shape[0], B, P)
            img_of = torch.arange(B).view(1, B, 1).expand_as(flat)
            pix_of = torch.arange(P).view(1, 1, P).expand_as(flat)
            valid = flat < K
            lc, li, lp = flat[valid], img_of[valid], pix_of[valid]
            # whole-image labels
            wi, wc = lb.whole_image.long(), lb.whole_concept.long()
            # per image, per concept: area
            la = torch.zeros((B, K + 1), dtype=torch.float64)
            la.view(-1).index_add_(0, li * (K + 1) + lc, torch.ones(len(lc), dtype=torch.float64))
            if len(wc):
                la.view(-1).index_add_(0, wi * (K + 1) + wc, torch.full((len(wc),), float(P), dtype=torch.float64))
            la = la[:, :K]
            # coverage fractions: summed over the batch on the fine grid, per image on the coarse one,
            # only for the concepts present in the batch
            pres = torch.unique(torch.cat([lc, wc]))
            compact = torch.full((K + 1,), -1, dtype=torch.long)
            compact[pres] = torch.arange(len(pres))
            kp = len(pres)
            s1 = torch.zeros((kp, g1c), dtype=torch.float64)
            s1.view(-1).index_add_(0, compact[lc] * g1c + c1[lp], torch.ones(len(lc), dtype=torch.float64))
            f2 = torch.zeros((B, kp, g2c), dtype=torch.float64)
            f2.view(-1).index_add_(0, (li * kp + compact[lc]) * g2c + c2[lp], torch.ones(len(lc), dtype=torch.float64))
            if len(wc):
                s1.index_add_(0, compact[wc], a1.expand(len(wc), g1c).contiguous())
                f2[wi, compact[wc]] = a2
            s1 = (s1 / a1).numpy()
            f2 = f2 / a2
            pres_np = pres.numpy()
            pb = (la > 0).numpy()
            lan = la.numpy()
            x2 = f2.permute(1, 0, 2)  # (kp, B, g2)
            gram_l = torch.bmm(x2.transpose(1, 2), x2).numpy()
            sum2 = f2.sum(0).numpy()
            for name, e in ev.items():
                if e.a1 is None:
                    e.a1, e.a2 = a1.numpy().copy(), a2.numpy().copy()
                e.used[rows_b] = True
                e.has[rows_b] = hb
                e.pixels[rows_b] = P
                e.cand_label_area[rows_b] = lan[:, e.cand_concepts]
                for p in (0, 1):
                    sel = (held == p).numpy()
                    e.label_area[p] += lan[sel].sum(0)
                    e.images_holding[p] += hb[sel].sum(0)
                e.l1[pres_np] += s1
                e.l2[pres_np] += sum2
                e.gram_l[pres_np] += gram_l
            # ---------------------------------------------------------------- per layer: the masks
            for name, e in ev.items():
                C = e.units
                acts = acts_all[name][pos] if len(pos) < acts_all[name].shape[0] else acts_all[name]
                h, w = acts.shape[2:]
                key = (name, sh, sw)
                if key not in masks:
                    masks[key] = UnitMasks(h, w, sh, sw)
                hits = masks[key].hits(acts, thr[name])
                area = hits.area  # (B, C) float64
                e.area[rows_b] = area.numpy()
                e.peak[rows_b] = acts.amax((2, 3)).numpy()
                img, unit, pix = hits.image, hits.unit, hits.pixel
                hp = held[img]
                # exact intersections, split by part: every plane's column at every hit pixel
                inter = torch.zeros((2, C, K + 1), dtype=torch.float64)
                cand_i = torch.zeros((B, C, e.cand.shape[1] + 1), dtype=torch.float64)
                lk = lookups[name]
                if len(pix):
                    cols = planes.index_select(1, img * P + pix)  # (Pl, hits)
                    ones = torch.ones(cols.shape[1], dtype=torch.float64)
                    for row in cols:
                        inter.view(-1).index_add_(0, (hp * C + unit) * (K + 1) + row, ones)
                        slot = lk[unit, row]
                        cand_i.view(-1).index_add_(0, (img * C + unit) * (e.cand.shape[1] + 1) + slot, ones)
                inter = inter[..., :K]
                if len(wc):  # image-level labels: the whole mask is on the concept
                    for b, c in zip(wi.tolist(), wc.tolist()):
                        inter[int(held[b]), :, c] += area[b]
                        slots = lk[:, c]
                        hit = slots < e.cand.shape[1]
                        cand_i[b, torch.arange(C)[hit], slots[hit]] += area[b, hit]
                e.inter += inter.numpy()
                e.cand_inter[rows_b] = cand_i[..., :-1].numpy()
                for p in (0, 1):
                    sel = held == p
                    e.unit_area[p] += (area[sel].T @ has[sel].double()).numpy()
                # grid coverage of the unit masks: summed per category on the fine grid, per image on
                # the coarse one (its Gram matrices per category)
                m2 = torch.zeros((B, C, g2c), dtype=torch.float32)
                if len(pix):
                    cell1 = unit * g1c + c1[pix]
                    m2.view(-1).index_add_(0, (img * C + unit) * g2c + c2[pix], torch.ones(len(pix)))
                m2 /= a2.float()
                for g in range(G):
                    sel = has[:, g]
                    if not bool(sel.any()):
                        continue
                    if len(pix):
                        hg = sel[img]
                        e.m1[g] += (torch.bincount(cell1[hg], minlength=C * g1c).double().view(C, g1c) / a1).numpy()
                    x = m2[sel]
                    e.m2[g] += x.sum(0).double().numpy()
                    x = x.permute(1, 0, 2)  # (C, Bg, g2)
                    e.gram_m[g] += torch.bmm(x.transpose(1, 2), x).double().numpy()
                # held-out images: concepts pulled back through the upsampling, sampled pixels
                key_u = (h, w, sh, sw)
                if key_u not in ups:
                    ups[key_u] = (torch.from_numpy(upsample_matrix(h, sh)).float(),
                                  torch.from_numpy(upsample_matrix(w, sw)).float())
                Uy, Ux = ups[key_u]
                for b in np.flatnonzero(part[rows_b] == 1):
                    r = int(rows_b[b])
                    cs = np.flatnonzero(pb[b])
                    e.held_area[r] = {int(c): float(lan[b, c]) for c in cs}
                    if r not in e.sampled:
                        e.sampled[r] = _sample_pixels(r, seed, flat[:, b], wc[wi == b], sh, sw, ap_pixels, K)
                    maps = {}
                    whole_b = set(wc[wi == b].tolist())
                    for c in cs:
                        if c in whole_b:
                            L = torch.ones((sh, sw))
                        else:
                            L = (flat[:, b] == int(c)).any(0).float().view(sh, sw)
                        maps[int(c)] = (Uy.T @ L @ Ux).numpy()
                    e.pulled[r] = maps
        bar.update(stop - start)
    bar.close()
    return ev


def _sample_pixels(row: int, seed: int, planes_b, whole, sh, sw, count: int, K: int):
    """A seeded sample of ``count`` pixels of one image (with replacement when it has fewer), and
    the concept columns there (K for none)."""
    rng = np.random.default_rng([seed, row, 1729])
    P = sh * sw
    pix = rng.integers(0, P, size=count) if P < count else rng.choice(P, size=count, replace=False)
    pix = np.sort(pix)
    cols = planes_b[:, torch.from_numpy(pix)].numpy() if planes_b.shape[0] else np.full((0, count), K)
    return pix, cols, np.asarray(whole.tolist(), np.int64), (sh, sw)
