"""Signatures: the dataset's pixels grouped by what a formula can see of them.

Two pixels whose images hold the same categories and that carry the same concepts get the
same value from every formula, so the search never needs single pixels: it needs, per
*signature* (a set of concepts and a set of held categories), how many pixels carry it (``n``)
and how many of those lie in each unit's mask (``H[unit]``).  One sweep over the label planes
and the activation cache builds both (:func:`count_run`), with the dissection's own mask kernel
(:meth:`netdissect.dissection.masks.UnitMasks.count`: the same thresholded, upsampled masks,
counted per signature instead of per concept); :func:`problem_from_pixels` does the same from
plain arrays (tests, small data).
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from netdissect.explain.search import Problem


def pattern_ints(has_category: np.ndarray) -> list:
    """Each row of bool (B, G) as a Python int with bit g set when column g is (no limit on G)."""
    has = np.asarray(has_category, bool)
    if has.ndim != 2:
        raise ValueError("has_category must be (images, categories)")
    packed = np.packbits(has, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


class Signatures:
    """Signature ids assigned batch by batch (a key -> id table), with each one's concepts and categories."""

    def __init__(self, n_concepts: int):
        self.K = n_concepts
        self.ids: dict[bytes, int] = {}
        self.members: list[np.ndarray] = []   # concept columns of each signature
        self.patterns: list[int] = []
        self.classes: dict[tuple, int] = {}   # (category pattern, image-level concepts) -> class id
        self.class_info: list[tuple[int, tuple]] = []
        self.n = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.members)

    def _class(self, pattern: int, whole: tuple) -> int:
        key = (pattern, whole)
        c = self.classes.get(key)
        if c is None:
            c = self.classes[key] = len(self.class_info)
            self.class_info.append(key)
        return c

    def add(self, planes: np.ndarray, pixels: int, has_category: np.ndarray, whole_image, whole_concept) -> np.ndarray:
        """Signature id (int32) of every pixel of a batch of B images: ``planes`` (P, B * pixels) concept
        columns (K: none), ``has_category`` (B, G), image-level labels as (image, column) pairs."""
        B = has_category.shape[0]
        whole: list[list[int]] = [[] for _ in range(B)]
        for b, c in zip(np.asarray(whole_image).tolist(), np.asarray(whole_concept).tolist()):
            whole[b].append(c)
        self.G = has_category.shape[1]
        pats = pattern_ints(has_category)  # Python ints: any number of categories (1 << 64 overflows int64)
        cls = np.array([self._class(pats[b], tuple(sorted(set(whole[b])))) for b in range(B)], np.int32)
        planes = np.sort(np.asarray(planes, np.int32), axis=0)  # a set of concepts, whatever plane holds them
        keys = np.empty((B * pixels, planes.shape[0] + 1), np.int32)
        keys[:, 0] = np.repeat(cls, pixels)
        keys[:, 1:] = planes.T
        keys = np.ascontiguousarray(keys)
        view = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()
        uniq, first, inv = np.unique(view, return_index=True, return_inverse=True)
        local = np.empty(len(uniq), np.int32)
        for j, (u, f) in enumerate(zip(uniq, first)):
            k = u.tobytes()
            s = self.ids.get(k)
            if s is None:
                s = self.ids[k] = len(self.members)
                row = keys[f]
                pattern, wc = self.class_info[row[0]]
                cols = row[1:]
                self.members.append(np.unique(np.concatenate([cols[cols < self.K], np.asarray(wc, np.int64)])
                                              ).astype(np.int64))
                self.patterns.append(pattern)
            local[j] = s
        ids = local[inv.ravel()]
        if len(self.n) < len(self.members):
            self.n = np.concatenate([self.n, np.zeros(len(self.members) - len(self.n), np.int64)])
        self.n += np.bincount(ids, minlength=len(self.members))
        return ids

    def pattern_matrix(self) -> np.ndarray:
        """bool (S, G): the categories held by each signature's images."""
        G = getattr(self, "G", 0)
        return np.array([[(p >> g) & 1 for g in range(G)] for p in self.patterns], bool).reshape(len(self.patterns), G)

    def member_matrix(self) -> np.ndarray:
        T = np.zeros((self.K, len(self.members)), bool)
        for s, cols in enumerate(self.members):
            T[cols, s] = True
        return T


def problem_from_pixels(concepts: np.ndarray, image: np.ndarray, has_category: np.ndarray, primary: np.ndarray,
                        units: np.ndarray | None = None, device=None):
    """(Problem, H) from plain arrays: ``concepts`` bool (K, N) label of every pixel (already empty where
    the image lacks the concept's primary category), ``image`` (N,) image of each pixel,
    ``has_category`` bool (images, G), ``primary`` (K,), ``units`` bool (U, N) unit masks."""
    concepts = np.asarray(concepts, bool)
    K, N = concepts.shape
    G = has_category.shape[1]
    has_category = np.asarray(has_category, bool)
    pat = has_category[np.asarray(image)]                    # (N, G) bool: any number of categories
    from netdissect.explain.formula import pack

    keys = np.concatenate([pack(concepts.T), pack(pat)], 1)
    view = np.ascontiguousarray(keys).view(np.dtype((np.void, 8 * keys.shape[1]))).ravel()
    uniq, first, sig = np.unique(view, return_index=True, return_inverse=True)
    sig = sig.ravel()
    member = concepts[:, first]
    n = np.bincount(sig, minlength=len(uniq))
    problem = Problem(member, n, pat[first], primary, device=device)  # pattern as a (S, G) bool matrix
    H = None
    if units is not None:
        units = np.asarray(units, bool)
        H = np.stack([np.bincount(sig[u], minlength=len(uniq)) for u in units]).astype(np.float64)
    return problem, H


def count_run(source, cache, shape, thresholds, skipped=(), batch_size: int = 64, workers: int = 0,
              progress: bool = True, device="cpu"):
    """One sweep over ``source``'s label planes and the activation ``cache`` of one layer: the
    :class:`Signatures` and H float64 (units, signatures), the pixels of each unit's mask per signature.

    ``thresholds`` (C,) are the run's; ``shape`` (C, h, w) the layer's maps; rows in ``skipped`` are
    left out as the run left them out."""
    import torch
    from tqdm.auto import tqdm

    from netdissect.dissection.masks import UnitMasks
    from netdissect.dissection.rows import LabelCollate, LabelRows, loader
    from netdissect.errors import DatasetError

    C, h, w = shape
    K = len(source.concepts)
    sigs = Signatures(K)
    H = np.zeros((C, 0), np.float64)
    thr = torch.from_numpy(np.asarray(thresholds)).to(torch.float64)
    masks: dict = {}
    rows = cache.rows
    collate = LabelCollate(source.concepts, set(skipped))
    workers = 0 if getattr(source, "loads_from_memory", False) else workers
    batches = loader(LabelRows(source, 0, rows), batch_size, workers, collate)
    bar = tqdm(total=rows, desc="explain: counting masks per signature", unit="img", disable=not progress,
               dynamic_ncols=True)
    t0 = time.monotonic()
    for start, stop, errors, built in batches:
        if errors:
            i, err = sorted(errors.items())[0]
            raise DatasetError(f"{err} (row {i}: the dataset changed since the run, or a file is damaged)")
        acts = torch.from_numpy(cache.read(start, stop))
        for size, (lb, sel) in built.items():
            pixels = lb.pixels
            ids = sigs.add(lb.planes.numpy(), pixels, lb.has_category.numpy(), lb.whole_image.numpy(),
                           lb.whole_concept.numpy())
            S = len(sigs)
            if H.shape[1] < S:
                H = np.concatenate([H, np.zeros((C, S - H.shape[1]))], 1)
            key = size
            if key not in masks:
                masks[key] = UnitMasks(h, w, *size, device=device)
            a = acts[sel].float().to(device)
            planes = torch.from_numpy(ids.astype(np.int32)).view(1, -1)
            if masks[key].use_kernel:
                planes = planes.cpu()
            else:  # torch ops on the device: signature ids as int64 columns there
                planes = planes.long().to(device)
            labels = SimpleNamespace(planes=planes, pixels=pixels, label_area=torch.zeros(S, dtype=torch.float64))
            _, inter = masks[key].count(a, thr, labels)
            H += inter.cpu().numpy()
        bar.update(stop - start)
    bar.close()
    return sigs, H, time.monotonic() - t0


def null_run(source, cache, shape, thresholds, formulas, skipped=(), batch_size: int = 64, workers: int = 0,
             progress: bool = True, device="cpu", chunk: int = 8, checkpoint=None, key: str = "",
             checkpoint_every: float = 30.0, _stop_after: int | None = None):
    """One sweep over ``source``'s label planes and the activation ``cache`` gathering the significance
    null's sums of every unit's formula (:class:`netdissect.explain.null.NullSums`): per image, the grid
    coverage of the unit's mask and of its formula's mask.  ``formulas`` (C,) a :class:`Formula` over the
    source's concept columns per unit, or None (no formula: nothing gathered).  ``checkpoint`` (a path):
    the sums so far and the next row are saved there every ``checkpoint_every`` seconds (atomically,
    with ``key``), and a sweep with the same key resumes from them; the file is removed at the end."""
    import torch
    from tqdm.auto import tqdm

    from netdissect.dissection.masks import UnitMasks
    from netdissect.dissection.rows import LabelCollate, LabelRows, loader
    from netdissect.errors import DatasetError
    from netdissect.atomic import savez as atomic_savez
    from netdissect.explain.formula import pack
    from netdissect.explain.null import NullSums
    from netdissect.trust.collect import GRID_MEAN, GRID_VAR, cell_index

    C, h, w = shape
    try:
        sizes = source.mask_sizes()
    except (AttributeError, NotImplementedError, TypeError):
        sizes = []
    sums = None
    if sizes:
        smallest = min(min(s) for s in sizes)
        sums = NullSums(C, min(GRID_MEAN, smallest), min(GRID_VAR, smallest))  # no empty cell, as the scorecard
    units = np.array([k for k in range(C) if formulas[k] is not None], np.int64)
    needed = sorted({c for k in units for c in formulas[k].concepts})
    thr = torch.from_numpy(np.asarray(thresholds)).to(torch.float64)
    thr_np = np.ascontiguousarray(thresholds, np.float64)
    masks: dict = {}
    first_row, fresh = 0, sums
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            with np.load(checkpoint, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    sums, first_row = NullSums.from_state(z), int(z["next_row"])
        except Exception:  # noqa: BLE001 - a damaged checkpoint: sweep afresh
            sums, first_row = fresh, 0

    def save(next_row):
        if checkpoint is not None and sums is not None:
            atomic_savez(checkpoint, key=np.asarray(key), next_row=np.int64(next_row), **sums.state())

    collate = LabelCollate(source.concepts, set(skipped))
    workers = 0 if getattr(source, "loads_from_memory", False) else workers
    batches = loader(LabelRows(source, first_row, cache.rows), batch_size, workers, collate)
    bar = tqdm(total=cache.rows, initial=first_row, desc="explain: the formulas' significance", unit="img",
               disable=not progress, dynamic_ncols=True)
    last = time.monotonic()
    done_batches = 0
    for start, stop, errors, built in batches:
        if _stop_after is not None and done_batches >= _stop_after:  # tests: a sweep killed after some batches
            save(start)
            raise KeyboardInterrupt
        if errors:
            i, err = sorted(errors.items())[0]
            raise DatasetError(f"{err} (row {i}: the dataset changed since the run, or a file is damaged)")
        acts = torch.from_numpy(cache.read(start, stop))
        for size, (lb, sel) in built.items():
            sh, sw = size
            P = lb.pixels
            if sums is None:   # mask sizes not listed by the source: the first one seen
                sums = NullSums(C, min(GRID_MEAN, sh, sw), min(GRID_VAR, sh, sw))
            g1, g2 = sums.g1, sums.g2
            if size not in masks:
                masks[size] = UnitMasks(h, w, sh, sw, device=device)
            c1, c2 = cell_index(sh, sw, g1), cell_index(sh, sw, g2)
            planes = lb.planes.numpy()
            has = lb.has_category.numpy()
            wimg, wcon = lb.whole_image.numpy(), lb.whole_concept.numpy()
            B = has.shape[0]
            pats = pattern_ints(has)
            a = acts[sel].float().to(device)
            for b0 in range(0, B, chunk):
                b1 = min(B, b0 + chunk)
                nb = b1 - b0
                pl = planes[:, b0 * P:b1 * P]
                present = np.zeros((len(needed), nb * P), bool)   # the needed concepts' pixels
                for i, c in enumerate(needed):   # (LabelCollate dropped labels off c's category)
                    present[i] = (pl == c).any(0)
                    for bb in wimg[(wcon == c) & (wimg >= b0) & (wimg < b1)]:
                        present[i, (bb - b0) * P:(bb - b0 + 1) * P] = True
                # local signatures: pixels carrying the same needed concepts get the same formula values
                keys = np.ascontiguousarray(pack(present.T))
                view = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()
                _, first, sig = np.unique(view, return_index=True, return_inverse=True)
                sig = sig.ravel()
                L = len(first)
                cm = {c: present[i, first] for i, c in enumerate(needed)}
                Fsig = np.zeros((C, L))
                for k in units:
                    Fsig[k] = formulas[k].evaluate(cm)
                um = masks[size]
                q1, q2 = g1 * g1, g2 * g2
                if um.use_kernel:  # the compiled pass-2 kernel, grid cells riding along as label planes
                    from netdissect.dissection import kernel

                    kx = L + q1 + q2
                    dt = np.int16 if kx + 1 <= np.iinfo(np.int16).max else np.int32
                    ext = np.ascontiguousarray(np.stack([sig, np.tile(L + c1, nb), np.tile(L + q1 + c2, nb)]).astype(dt))
                    an = np.ascontiguousarray(a[b0:b1].cpu().numpy(), np.float32)
                    m1, m2 = np.zeros((nb, C, q1)), np.zeros((nb, C, q2))
                    for b in range(nb):
                        _, it = kernel.count(um.tables, an[b:b + 1], thr_np, ext[:, b * P:(b + 1) * P], P, sw, kx)
                        sums.inter += (it[:, :L] * Fsig).sum(1)
                        m1[b], m2[b] = it[:, L:L + q1], it[:, L + q1:L + q1 + q2]
                else:  # torch hit lists (GPU, or no numba)
                    hits = um.hits(a[b0:b1], thr)
                    img, unit, pix = (t.cpu().numpy().astype(np.int64) for t in (hits.image, hits.unit, hits.pixel))
                    sums.inter += np.bincount(unit, weights=Fsig[unit, sig[img * P + pix]], minlength=C)
                    m1, m2 = (np.bincount((img * C + unit) * (g * g) + cells[pix], minlength=nb * C * g * g)
                              .reshape(nb, C, g * g).astype(np.float64) for cells, g in ((c1, g1), (c2, g2)))
                f1, f2 = ((np.bincount((np.repeat(np.arange(nb), P) * (g * g) + np.tile(cells, nb)) * L + sig,
                                       minlength=nb * g * g * L).reshape(nb * g * g, L).astype(np.float64) @ Fsig.T)
                          .reshape(nb, g * g, C).transpose(0, 2, 1) for cells, g in ((c1, g1), (c2, g2)))
                sums.add(pats[b0:b1], m1, m2, f1, f2, sh, sw)
        bar.update(stop - start)
        done_batches += 1
        if time.monotonic() - last >= checkpoint_every:
            save(stop)
            last = time.monotonic()
    bar.close()
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    return sums if sums is not None else NullSums(C)
