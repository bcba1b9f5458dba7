"""The scorecard's one pass over the activation cache and the concept labels.

For every layer it gathers, from the same exact unit masks as pass 2
(:meth:`netdissect.dissection.masks.UnitMasks.hits`):

- the exact intersections and areas of every unit with every concept, split into the
  probe's two parts (labels chosen on one, scored on the other: ``--holdout``);
- the bootstrap's resampled counts, accumulated as the rows pass: each image x is counted
  w[r, x] ~ Poisson(1) times in resample r (:func:`poisson_weights`, a function of the seed and
  the row alone), so every resample's intersections of each unit with its J best concepts and
  its areas are weighted sums;
- coarse-grid coverage sums and Gram matrices of the unit masks and of the concept masks
  (what the image-permutation null's mean and variance are computed from,
  :mod:`netdissect.trust.stats`);
- for the held-out images: each present concept's mask pulled back through the bilinear
  upsampling (``U^T L``, so that sum_p S_k(x)[p] L_c(x)[p] = <A_k(x), U^T L_c(x)> exactly) and
  the concept columns of a seeded sample of pixels (the pixel-level AUPRC), written to a spill
  file (:class:`HeldOutStore`) that the held-out metrics read back once.

Everything here is a sum over images or a record per held-out image, so it does not depend on
the order in which rows come.  Memory does not grow with the probe: the sums are of fixed size,
and the per-image data of the held-out images is on disk (2 bytes per row stay in memory: the
split and which rows were counted).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from netdissect.dissection.masks import UnitMasks, _axis
from netdissect.dissection.rows import LabelCollate, LabelRows, loader
from netdissect.errors import DatasetError

GRID_MEAN = 28  # cells per side for the null's mean (first-order sums)
GRID_VAR = 8    # cells per side for the null's variance (Gram matrices)
AP_PIXELS = 128  # sampled pixels per held-out image for the pixel-level AUPRC
RESAMPLES = 100  # bootstrap resamples
WEIGHT_BLOCK = 1024  # rows per block of Poisson weights (one seeded generator per block)


def poisson_weights(seed: int, rows: np.ndarray, resamples: int, cache: dict | None = None) -> np.ndarray:
    """(len(rows), resamples) float64: how many times each row counts in each bootstrap resample,
    Poisson(1), a function of (seed, row) alone (rows are drawn in blocks of ``WEIGHT_BLOCK``, one
    generator per block), so one process, chunks and ranks give the same resamples."""
    rows = np.asarray(rows, np.int64)
    cache = {} if cache is None else cache
    out = np.empty((len(rows), resamples))
    blocks = rows // WEIGHT_BLOCK
    for b in np.unique(blocks):
        key = (int(seed), int(b), int(resamples))
        if key not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[key] = np.random.default_rng([seed, 4711, int(b)]).poisson(1.0, size=(WEIGHT_BLOCK, resamples))
        sel = blocks == b
        out[sel] = cache[key][rows[sel] - b * WEIGHT_BLOCK]
    return out


class SpillFile:
    """A temporary file that a pass appends to and reads back (``prefix``, in ``folder`` or the system's
    temporary folder); :meth:`close` closes and removes it."""

    def __init__(self, prefix: str, folder=None):
        fd, self.path = tempfile.mkstemp(prefix=prefix, suffix=".bin", dir=folder)
        self._f = os.fdopen(fd, "w+b")

    def close(self):
        if not self._f.closed:
            self._f.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class HeldOutStore(SpillFile):
    """Per held-out image of one layer, what the held-out metrics need (its categories, its
    concepts' label areas and masks pulled back to the layer's grid, the sampled pixels and their
    concept columns), appended to a file as the pass goes and read back in the same order."""

    HEAD = 11

    def __init__(self, folder):
        super().__init__("heldout-", folder)
        self.count = 0

    def add(self, row, pixels, sh, sw, has, concepts, areas, maps, pix, cols, whole):
        concepts = np.asarray(concepts, np.int64)
        maps = np.ascontiguousarray(maps, np.float32)
        h, w = maps.shape[1:] if maps.ndim == 3 else (0, 0)
        cols = np.ascontiguousarray(cols, np.int64)
        whole = np.asarray(whole, np.int64)
        head = np.asarray([row, pixels, sh, sw, len(has), len(concepts), h, w, len(pix), cols.shape[0], len(whole)],
                          np.int64)
        for a in (head, np.asarray(has, np.uint8), concepts, np.asarray(areas, np.float64), maps,
                  np.asarray(pix, np.int64), cols, whole):
            self._f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
        self.count += 1

    def records(self):
        """Yield every record in the order written: (row, pixels, (sh, sw), has (G,) bool,
        concepts (n,), areas (n,), maps (n, h, w) float32, pix (S,), cols (Pl, S), whole (W,))."""
        self._f.flush()
        with open(self.path, "rb") as f:
            for _ in range(self.count):
                head = np.frombuffer(f.read(8 * self.HEAD), np.int64)
                row, pixels, sh, sw, G, n, h, w, S, Pl, W = (int(v) for v in head)

                def take(dtype, count, shape=None):
                    a = np.frombuffer(f.read(np.dtype(dtype).itemsize * count), dtype)
                    return a if shape is None else a.reshape(shape)
                has = take(np.uint8, G).astype(bool)
                concepts = take(np.int64, n)
                areas = take(np.float64, n)
                maps = take(np.float32, n * h * w, (n, h, w))
                pix = take(np.int64, S)
                cols = take(np.int64, Pl * S, (Pl, S))
                whole = take(np.int64, W)
                yield row, float(pixels), (sh, sw), has, concepts, areas, maps, pix, cols, whole

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
    cand_concepts: np.ndarray = None  # int64 (Cc,) the distinct candidate concepts
    # the bootstrap, accumulated with each row's Poisson weights (R resamples)
    boot_inter: np.ndarray = None  # float64 (R, K, J) intersections with the J candidate concepts
    boot_area: np.ndarray = None   # float64 (R, K, G) mask area over the images holding g
    boot_label: np.ndarray = None  # float64 (R, Cc) label area of the candidate concepts
    # the null (fractions of each grid cell covered)
    m1: np.ndarray = None         # float64 (G, K, g1*g1) unit coverage summed over images holding g
    l1: np.ndarray = None         # float64 (C, g1*g1)
    gram_m: np.ndarray = None     # float64 (G, K, g2*g2, g2*g2)
    gram_l: np.ndarray = None     # float64 (C, g2*g2, g2*g2)
    m2: np.ndarray = None         # float64 (G, K, g2*g2)
    l2: np.ndarray = None         # float64 (C, g2*g2)
    a1: np.ndarray = None         # float64 (g1*g1,) pixels per cell (first mask size)
    a2: np.ndarray = None
    heldout: HeldOutStore = None  # the held-out images' records (on disk)
    resamples: int = RESAMPLES
    seed: int = 0

    def allocate(self, G1: int, G2: int, folder=None):
        K, C, G, n, J, R = self.units, self.concepts, self.categories, self.rows, self.cand.shape[1], self.resamples
        f8 = np.float64
        self.used = np.zeros(n, bool)
        self.inter = np.zeros((2, K, C), f8)
        self.unit_area = np.zeros((2, K, G), f8)
        self.label_area = np.zeros((2, C), f8)
        self.images_holding = np.zeros((2, G), f8)
        self.cand_concepts = np.unique(self.cand)
        self.boot_inter = np.zeros((R, K, J), f8)
        self.boot_area = np.zeros((R, K, G), f8)
        self.boot_label = np.zeros((R, len(self.cand_concepts)), f8)
        self.m1 = np.zeros((G, K, G1 * G1), f8)
        self.l1 = np.zeros((C, G1 * G1), f8)
        self.gram_m = np.zeros((G, K, G2 * G2, G2 * G2), f8)
        self.gram_l = np.zeros((C, G2 * G2, G2 * G2), f8)
        self.m2 = np.zeros((G, K, G2 * G2), f8)
        self.l2 = np.zeros((C, G2 * G2), f8)
        self.heldout = HeldOutStore(folder)

    def close(self):
        """Remove the held-out records' file."""
        if self.heldout is not None:
            self.heldout.close()


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
            ap_pixels: int = AP_PIXELS, skip_bad: bool = False, resamples: int = RESAMPLES,
            spill_dir=None) -> dict[str, LayerEvidence]:
    """One pass over rows ``[lo, hi)`` of every layer in ``layers`` (name -> (C, h, w)).

    ``read_acts(name, start, stop)`` returns the cached activations of rows start..stop-1
    (numpy (B, C, h, w)); ``thresholds[name]`` float64 (C,); ``part`` int8 (rows of the whole
    probe,): 1 for held-out rows; ``cands[name]`` int64 (C, J) each unit's candidate concepts.
    The held-out images' records go to a file in ``spill_dir`` (default: the system's temporary
    folder) that :meth:`LayerEvidence.close` removes.
    """
    cons = source.concepts
    K = len(cons)
    G = len(cons.categories)
    lo, hi = rows
    n = len(part)
    smallest = min(min(s) for s in source.mask_sizes()) if source.mask_sizes() else grid_mean
    grid_mean, grid_var = min(grid_mean, smallest), min(grid_var, smallest)  # no empty cell
    ev = {}
    try:
        for name, shape in layers.items():
            e = LayerEvidence(name, shape[0], K, G, n, part, np.asarray(cands[name], np.int64), tuple(shape),
                              resamples=resamples, seed=seed)
            ev[name] = e
            e.allocate(grid_mean, grid_var, spill_dir)
        _collect(ev, read_acts, thresholds, source, rows, skipped, part, batch_size, num_workers, progress, seed,
                 grid_mean, grid_var, ap_pixels, skip_bad)
    except BaseException:
        for e in ev.values():
            e.close()
        raise
    return ev


def _collect(ev, read_acts, thresholds, source, rows, skipped, part, batch_size, num_workers, progress, seed,
             grid_mean, grid_var, ap_pixels, skip_bad):
    cons = source.concepts
    K = len(cons)
    G = len(cons.categories)
    lo, hi = rows
    sizes = _Sizes(grid_mean, grid_var)
    masks: dict = {}
    lookups = {}
    for name, e in ev.items():
        J = e.cand.shape[1]
        lk = np.full((e.units, K + 1), J, np.int64)  # concept column -> candidate slot (J: none)
        for j in range(J):
            lk[np.arange(e.units), e.cand[:, j]] = j
        lookups[name] = torch.from_numpy(lk)
    ups: dict = {}
    wcache: dict = {}
    thr = {name: np.asarray(t, np.float64) for name, t in thresholds.items()}
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
        acts_all = {name: np.ascontiguousarray(read_acts(name, start - lo, stop - lo), np.float32) for name in ev}
        for (sh, sw), (lb, pos) in built.items():
            pos = [p for p in pos if start + p not in skip]
            if not pos:
                continue
            rows_b = np.asarray([start + p for p in pos], np.int64)
            _batch(ev, acts_all, pos, rows_b, lb, sh, sw, K, G, sizes, masks, lookups, thr, part, ups, seed, ap_pixels,
                   wcache)
        bar.update(stop - start)
    bar.close()


def _batch(ev, acts_all, pos, rows_b, lb, sh, sw, K, G, sizes, masks, lookups, thr, part, ups, seed, ap_pixels,
           wcache):
    """One batch of images of one mask size, every layer (numpy throughout: on a busy machine each
    small torch op paid for waking its thread pool)."""
    B = len(rows_b)
    P = sh * sw
    c1, c2, a1, a2 = (t.numpy() for t in sizes.get(sh, sw))
    g1c, g2c = len(a1), len(a2)
    hb = lb.has_category.numpy().astype(bool)  # (B, G)
    held = part[rows_b].astype(np.int64)       # (B,)
    planes = lb.planes.numpy()                 # (Pl, B * P), K for none
    Pl = planes.shape[0]
    flat = planes.reshape(Pl, B, P).astype(np.int64)
    wi, wc = lb.whole_image.numpy().astype(np.int64), lb.whole_concept.numpy().astype(np.int64)
    img = np.arange(B)[None, :, None]
    # per image, per concept: label pixels
    la = np.bincount((img * (K + 1) + flat).ravel(), minlength=B * (K + 1)).reshape(B, K + 1)[:, :K].astype(np.float64)
    if len(wc):
        np.add.at(la, (wi, wc), float(P))
    pres = np.flatnonzero(la.sum(0) > 0)
    kp = len(pres)
    compact = np.full(K + 1, kp, np.int64)
    compact[pres] = np.arange(kp)
    cf = compact[flat]  # (Pl, B, P), kp for none
    s1 = np.bincount((cf * g1c + c1[None, None, :]).ravel(), minlength=(kp + 1) * g1c).reshape(kp + 1, g1c)[:kp]
    f2 = np.bincount(((img * (kp + 1) + cf) * g2c + c2[None, None, :]).ravel(),
                     minlength=B * (kp + 1) * g2c).reshape(B, kp + 1, g2c)[:, :kp].astype(np.float64)
    s1 = s1.astype(np.float64)
    if len(wc):
        np.add.at(s1, compact[wc], a1)
        f2[wi, compact[wc]] = a2
    s1 /= a1
    f2 /= a2
    x2 = f2.transpose(1, 0, 2)  # (kp, B, g2)
    gram_l = np.matmul(x2.transpose(0, 2, 1), x2)
    sum2 = f2.sum(0)
    pb = la > 0
    weights = {}  # resamples -> (R, B) Poisson weights of these rows
    for name, e in ev.items():
        if e.a1 is None:
            e.a1, e.a2 = a1.copy(), a2.copy()
        if e.resamples not in weights:
            weights[e.resamples] = poisson_weights(seed, rows_b, e.resamples, wcache).T
        e.used[rows_b] = True
        e.boot_label += weights[e.resamples] @ la[:, e.cand_concepts]
        for p in (0, 1):
            sel = held == p
            e.label_area[p] += la[sel].sum(0)
            e.images_holding[p] += hb[sel].sum(0)
        e.l1[pres] += s1
        e.l2[pres] += sum2
        e.gram_l[pres] += gram_l
    # ------------------------------------------------------------------ per layer: the unit masks
    for name, e in ev.items():
        C = e.units
        acts = acts_all[name]
        if len(pos) < acts.shape[0]:
            acts = acts[pos]
        h, w = acts.shape[2:]
        key = (name, sh, sw)
        if key not in masks:
            masks[key] = UnitMasks(h, w, sh, sw)
        if masks[key].use_kernel:
            area, inter, cand_i, m1g, m2 = _counts_kernel(masks[key], acts, thr[name], planes, P, sw, K, c1, c2,
                                                          g1c, g2c, e.cand, hb, held)
        else:
            area, inter, cand_i, m1g, m2 = _counts_torch(masks[key], torch.from_numpy(acts), torch.from_numpy(thr[name]),
                                                         lb.planes.long(), P, K, torch.from_numpy(c1),
                                                         torch.from_numpy(c2), g1c, g2c, e.cand, lookups[name],
                                                         torch.from_numpy(hb), torch.from_numpy(held))
        J = e.cand.shape[1]
        for b, c in zip(wi.tolist(), wc.tolist()):  # image-level labels: the whole mask is on the concept
            inter[held[b], :, c] += area[b]
            for j in range(J):
                hit = e.cand[:, j] == c
                cand_i[b, hit, j] += area[b, hit]
        e.inter += inter
        W = weights[e.resamples]  # (R, B)
        e.boot_inter += (W @ cand_i.reshape(B, -1)).reshape(e.boot_inter.shape)
        hbf = hb.astype(np.float64)
        for g in range(G):
            e.boot_area[:, :, g] += (W * hbf[:, g]) @ area
        for p in (0, 1):
            sel = held == p
            e.unit_area[p] += area[sel].T @ hb[sel].astype(np.float64)
        e.m1 += m1g / a1
        m2 = (m2 / a2).astype(np.float32)
        for g in range(G):
            sel = hb[:, g]
            if not sel.any():
                continue
            x = m2[sel]
            e.m2[g] += x.sum(0)
            x = x.transpose(1, 0, 2)  # (C, Bg, g2)
            e.gram_m[g] += np.matmul(x.transpose(0, 2, 1), x)
        # held-out images: concepts pulled back through the upsampling, sampled pixels
        key_u = (h, w, sh, sw)
        if key_u not in ups:
            ups[key_u] = (upsample_matrix(h, sh).astype(np.float32), upsample_matrix(w, sw).astype(np.float32))
        Uy, Ux = ups[key_u]
        for b in np.flatnonzero(held == 1):
            r = int(rows_b[b])
            cs = np.flatnonzero(pb[b])
            whole_b = wc[wi == b]
            pix, cols, whole, _ = _sample_pixels(r, seed, flat[:, b], whole_b, sh, sw, ap_pixels, K)
            # every present concept's mask (one-hot over the planes), then U_y^T L U_x for all at once
            cb = np.full(K + 1, len(cs), np.int64)
            cb[cs] = np.arange(len(cs))
            onehot = np.zeros((len(cs) + 1, P), np.float32)
            for pl in flat[:, b]:
                onehot[cb[pl], np.arange(P)] = 1.0
            onehot = onehot[:len(cs)]
            onehot[cb[whole_b]] = 1.0
            L = onehot.reshape(len(cs), sh, sw)
            D = np.matmul(np.matmul(Uy.T[None], L), Ux[None])  # (c, h, w)
            e.heldout.add(r, P, sh, sw, hb[b], cs, la[b, cs], D, pix, cols, whole)


def _counts_kernel(um, acts, thr, planes, P, sw, K, c1, c2, g1c, g2c, cand, has, held):
    """Per image, with the compiled pass-2 kernel: the grid cells ride along as extra label planes
    (columns K.. of the fine grid, then of the coarse one), so one sweep of each mask counts its
    pixels per concept and per cell.  Returns area (B, C), inter (2, C, K), candidate
    intersections (B, C, J), fine-grid coverage summed per category (G, C, g1c) and per-image
    coarse coverage (B, C, g2c), all float64 pixel counts."""
    from netdissect.dissection import kernel

    B, C = acts.shape[:2]
    G = has.shape[1]
    kx = K + g1c + g2c
    dt = np.int16 if kx + 1 <= np.iinfo(np.int16).max else np.int32
    base = planes.astype(dt)
    base[base == K] = kx
    grid = np.stack([np.tile(K + c1, B), np.tile(K + g1c + c2, B)]).astype(dt)
    ext = np.ascontiguousarray(np.concatenate([base, grid]))
    a = np.ascontiguousarray(acts, np.float32)
    t = np.asarray(thr, np.float64)
    area = np.zeros((B, C))
    inter = np.zeros((2, C, K))
    cand_i = np.zeros((B, C, cand.shape[1]))
    m1g = np.zeros((G, C, g1c))
    m2 = np.zeros((B, C, g2c))
    rows = np.arange(C)[:, None]
    for b in range(B):
        ar, it = kernel.count(um.tables, a[b:b + 1], t, ext[:, b * P:(b + 1) * P], P, sw, kx)
        area[b] = ar[0]
        inter[held[b]] += it[:, :K]
        cand_i[b] = it[rows, cand]
        m1g[has[b]] += it[:, K:K + g1c]
        m2[b] = it[:, K + g1c:]
    return area, inter, cand_i, m1g, m2


def _counts_torch(um, acts, thr, planes, P, K, c1, c2, g1c, g2c, cand, lookup, has, held):
    """The same counts as :func:`_counts_kernel` from the torch hit list (GPU, or no numba)."""
    B, C = acts.shape[:2]
    G = has.shape[1]
    J = cand.shape[1]
    hits = um.hits(acts, thr)
    img, unit, pix = hits.image, hits.unit, hits.pixel
    hp = held[img]
    inter = torch.zeros((2, C, K + 1), dtype=torch.float64)
    cand_i = torch.zeros((B, C, J + 1), dtype=torch.float64)
    if len(pix):
        cols = planes.index_select(1, img * P + pix)  # (Pl, hits)
        ones = torch.ones(cols.shape[1], dtype=torch.float64)
        for row in cols:
            inter.view(-1).index_add_(0, (hp * C + unit) * (K + 1) + row, ones)
            cand_i.view(-1).index_add_(0, (img * C + unit) * (J + 1) + lookup[unit, row], ones)
    m1g = np.zeros((G, C, g1c))
    m2 = torch.zeros((B, C, g2c), dtype=torch.float64)
    if len(pix):
        m2.view(-1).index_add_(0, (img * C + unit) * g2c + c2[pix], torch.ones(len(pix), dtype=torch.float64))
        cell1 = unit * g1c + c1[pix]
        for g in range(G):
            hg = has[:, g][img]
            m1g[g] = torch.bincount(cell1[hg], minlength=C * g1c).double().view(C, g1c).numpy()
    return (hits.area.numpy(), inter[..., :K].numpy(), cand_i[..., :J].numpy(), m1g, m2.numpy())


def _sample_pixels(row: int, seed: int, planes_b: np.ndarray, whole, sh, sw, count: int, K: int):
    """A seeded sample of ``count`` pixels of one image (with replacement when it has fewer), and
    the concept columns there (K for none)."""
    rng = np.random.default_rng([seed, row, 1729])
    P = sh * sw
    pix = rng.integers(0, P, size=count) if P < count else rng.choice(P, size=count, replace=False)
    pix = np.sort(pix)
    cols = planes_b[:, pix] if planes_b.shape[0] else np.full((0, count), K)
    return pix, cols, np.asarray(whole, np.int64), (sh, sw)
