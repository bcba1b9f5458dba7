"""Image-level labelling (``method: "image-level"``) of units without a spatial map.

A fully connected layer's units ((N, C) outputs), globally pooled features ((N, C, 1, 1)) and a
transformer's class token (``--layer NAME:cls``: feature k of prefix token 0 of layer NAME) give one
number per image and unit, ``a_k(x)``.  Such a layer is dissected in the same forward pass as the
run's map layers: its activations go to the same on-disk cache (as (C, 1, 1) records, float32),
its top images are the images of highest ``a_k``; pass 2 records, while it reads the labels for the
map layers, which concepts each image holds (``Presence``: one bit per image and concept), and then
every unit is scored against every concept (:mod:`netdissect.stats.ranks`):

- over the images counted for concept c (those holding a label of c's primary category, as the
  IoU of CVPR 2017 counts; with a segmenter every image), ``positives`` are the images holding c
  (at least one pixel of c in a label plane, or c among the image-level labels);
- AUROC of ``a_k`` for c's presence (mid-ranks for ties), a one-sided Mann-Whitney U p-value
  (tie-corrected normal approximation), Benjamini-Hochberg q-values over all unit x concept tests
  of the layer;
- the unit's label is its concept of highest AUROC (as INVERT does), none when no AUROC exceeds
  0.5 (a constant unit scores exactly 0.5 everywhere);
- a detector when that AUROC >= ``auroc_threshold`` (0.9, docs/label-trust.md "Image-level
  labels") and its q-value < ``fdr``.

Memory: the presence bits (rows x concepts / 8 bytes) and, while scoring, one block of units'
activations and mid-ranks (at most 64 MB) plus one category's presence (images x its concepts,
bool); the activations stay in the on-disk cache.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netdissect.atomic import savez as atomic_savez
from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.dissection.result import LayerResult, _load_npz
from netdissect.errors import LayerError, NetDissectError

METHOD = "image-level"
SUFFIX = ":cls"
AUROC_THRESHOLD = 0.9
KINDS = ("vector", "pooled", "cls")  # (N, C); (N, C, 1, 1); a token layer's prefix token 0


def module_of(name: str) -> str:
    """The module a run layer reads: ``blocks.9:cls`` -> ``blocks.9``."""
    return name[:-len(SUFFIX)] if isinstance(name, str) and name.endswith(SUFFIX) else name


def is_cls(name) -> bool:
    return isinstance(name, str) and name.endswith(SUFFIX)


def kind_of(name: str, raw, batch: int, layout=None) -> str | None:
    """``"vector"``, ``"pooled"`` or ``"cls"`` for a layer labelled image-level, None for a map
    or token layer (dissected by masks).  ``layout``: the module's token layout (``:cls`` only).
    Raises :class:`LayerError` for an output that is none of these."""
    import torch

    if is_cls(name):
        if layout is None or not layout.is_tokens or layout.prefix < 1:
            what = layout.describe() if layout is not None else "no token layout"
            raise LayerError(f"layer {module_of(name)!r} has no class token ({what}): {name} needs a token "
                             f"layer with a prefix token; dissect it as a map (--layer {module_of(name)})")
        return "cls"
    if isinstance(raw, (tuple, list)) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, torch.Tensor):
        return None  # find_layout explains what it is
    if raw.dim() == 2 and raw.shape[0] == batch:
        return "vector"
    if raw.dim() == 4 and raw.shape[0] == batch and raw.shape[2] == 1 and raw.shape[3] == 1:
        return "pooled"
    if raw.dim() not in (3, 4):
        raise LayerError(f"layer {name!r} outputs {tuple(raw.shape)}; dissection needs (N, C, H, W) feature maps, "
                         "(N, T, C) / (T, N, C) token sequences, or one vector per image (N, C) or (N, C, 1, 1), "
                         "labelled image-level: `netdissect layers` shows output shapes")
    return None


def as_units(kind: str, raw, layout=None):
    """The (N, C, 1, 1) view of an image-level layer's raw output."""
    if isinstance(raw, (tuple, list)) and len(raw) == 1:
        raw = raw[0]
    if kind == "cls":
        return layout.prefix_view(raw)[:, 0][:, :, None, None]
    if kind == "vector":
        if raw.dim() != 2:
            raise LayerError(f"layer output {tuple(raw.shape)} is not the (N, C) vector found on the first image")
        return raw[:, :, None, None]
    return raw


def trace_plan(layers: list[str], layouts: dict, image_level: dict):
    """``(modules, views, split)``: the modules to trace for the run's ``layers``, each module's
    view, and ``split(outs)`` turning the traced outputs into one (N, C, H, W) tensor per run layer.
    Without image-level layers this is the plain plan (each layer its own module, views only for
    token and channels-last layers)."""
    if not image_level and all(module_of(n) == n for n in layers):
        return list(layers), {n: lay.to_map for n, lay in layouts.items()}, (lambda outs: outs)
    users: dict[str, list[str]] = {}
    for n in layers:
        users.setdefault(module_of(n), []).append(n)

    def view_for(names):
        def view(out, _layer):
            got = {}
            for n in names:
                if n in image_level:
                    kind, lay = image_level[n]
                    got[n] = as_units(kind, out, lay)
                elif n in layouts:
                    got[n] = layouts[n].to_map(out, n)
                else:
                    got[n] = out
            return got
        return view

    views = {m: view_for(names) for m, names in users.items()}

    def split(outs):
        flat = {}
        for m, got in outs.items():
            flat.update(got)
        return flat

    return list(users), views, split


# ---------------------------------------------------------------- presence of concepts per image
class Presence:
    """Which concepts each row holds (bits) and which categories it holds labels of, rows [lo, hi)."""

    def __init__(self, rows: int, K: int, G: int):
        self.K, self.G = K, G
        self.bits = np.zeros((rows, (K + 7) // 8), np.uint8)
        self.has = np.zeros((rows, G), bool)

    def add(self, start: int, rows: list[int], lb) -> None:
        """Rows ``start + rows[b]`` (relative to lo) from the :class:`LabelBatch` ``lb`` (CPU)."""
        K = self.K
        planes = lb.planes.numpy() if hasattr(lb.planes, "numpy") else np.asarray(lb.planes)
        S = lb.pixels
        B = len(rows)
        present = np.zeros((B, K + 2), bool)
        for b in range(B):
            cols = planes[:, b * S:(b + 1) * S].ravel()
            present[b, :] |= np.bincount(cols.astype(np.int64), minlength=K + 2)[:K + 2] > 0
        wi = np.asarray(lb.whole_image, np.int64)
        wc = np.asarray(lb.whole_concept, np.int64)
        keep = wc < K
        present[wi[keep], wc[keep]] = True
        idx = start + np.asarray(rows, np.int64)
        self.bits[idx] = np.packbits(present[:, :K], axis=1)
        self.has[idx] = np.asarray(lb.has_category, bool)

    def present(self, idx: np.ndarray, cols: np.ndarray, block: int = 4096) -> np.ndarray:
        """bool (len(idx), len(cols)): whether row idx[i] holds concept cols[j]."""
        out = np.empty((len(idx), len(cols)), bool)
        for s in range(0, len(idx), block):
            out[s:s + block] = np.unpackbits(self.bits[idx[s:s + block]], axis=1, count=self.K)[:, cols].astype(bool)
        return out

    def state_dict(self) -> dict:
        return {"presence/bits": self.bits, "presence/has": self.has}

    @classmethod
    def from_state(cls, arrays: dict, K: int, G: int) -> "Presence":
        p = cls(0, K, G)
        p.bits, p.has = np.asarray(arrays["presence/bits"]), np.asarray(arrays["presence/has"])
        return p


# ---------------------------------------------------------------- scoring
def score_layer(acts: np.ndarray, presence: Presence, used: np.ndarray, primary: np.ndarray):
    """``(auroc, p)`` float64 (C, K) of every unit of ``acts`` (rows, C) (a memmap: read in blocks of
    units) for every concept, over the ``used`` rows holding a label of the concept's primary
    category (``primary[k]``: its category index)."""
    from netdissect.stats.ranks import mann_whitney, unit_blocks

    n_rows, C = acts.shape
    K = len(primary)
    auroc = np.full((C, K), np.nan)
    p = np.full((C, K), np.nan)
    rows = np.flatnonzero(used)
    groups = []
    for g in np.unique(primary):
        keep = presence.has[rows, g]  # the used rows holding a label of category g
        if keep.sum() >= 2:
            groups.append((np.flatnonzero(primary == g), keep))
    if not groups:
        return auroc, p
    # each block of units is read from the cache once (all used rows), then ranked per category
    for u0, u1 in unit_blocks(len(rows), C):
        x_all = np.asarray(acts[rows, u0:u1], dtype=np.float32)
        for cols, keep in groups:
            a, pv = mann_whitney(x_all[keep], presence.present(rows[keep], cols))
            auroc[u0:u1, cols] = a
            p[u0:u1, cols] = pv
    return auroc, p


def read_acts(path: Path, rows: int, C: int, dtype) -> np.ndarray:
    """The cache of an image-level layer as a read-only (rows, C) memmap (records of (C, 1, 1))."""
    if rows == 0:
        return np.zeros((0, C), dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, C))


def dead_units(acts: np.ndarray, used: np.ndarray, block: int = 4096) -> np.ndarray:
    """bool (C,): the unit takes one value on every used row."""
    C = acts.shape[1]
    lo, hi = np.full(C, np.inf), np.full(C, -np.inf)
    idx = np.flatnonzero(used)
    for s in range(0, len(idx), block):
        x = np.asarray(acts[idx[s:s + block]], np.float64)
        lo, hi = np.minimum(lo, x.min(0)), np.maximum(hi, x.max(0))
    return ~(hi > lo)


# ---------------------------------------------------------------- the layer's result
def unit_dtype(names, categories) -> list:
    w = max([1] + [len(str(n)) for n in names])
    c = max([1] + [len(str(n)) for n in categories])
    return [("unit", "i4"), ("label", f"U{w}"), ("category", f"U{c}"), ("auroc", "f8"), ("p", "f8"),
            ("q", "f8"), ("detector", "?")]


@dataclass
class ImageLevelResult(LayerResult):
    """An image-level layer (``method == "image-level"``): ``auroc`` (C, K) float32 (NaN: untested),
    ``p``, ``q`` (C, K); ``units`` fields ``unit, label, category, auroc, p, q, detector``;
    ``category_best[g]`` each unit's best concept and AUROC within category g.  ``iou`` is the
    AUROC with untested pairs at 0 (what generic readers rank concepts by); ``thresholds`` are NaN
    (no activation threshold: no region)."""

    p: np.ndarray | None = None
    q: np.ndarray | None = None
    auroc_threshold: float = AUROC_THRESHOLD
    kind: str = "vector"
    positives: np.ndarray | None = None  # int (K,) images holding each concept among those counted
    method: str = METHOD

    @property
    def auroc(self) -> np.ndarray:
        return self._auroc

    def __post_init__(self):
        if not hasattr(self, "_auroc") or self._auroc is None or self._auroc.shape != self.iou.shape:
            self._auroc = np.asarray(self.iou, np.float32)
        self.iou = np.nan_to_num(self._auroc, nan=0.0).astype(np.float32)
        C, K = self._auroc.shape
        p = self.p if self.p is not None else np.full((C, K), np.nan)
        q = self.q if self.q is not None else np.ones((C, K))
        score = np.nan_to_num(self._auroc.astype(np.float64), nan=-1.0)
        best = score.argmax(1) if K else np.zeros(C, int)
        rows = np.arange(C)
        best_a = score[rows, best] if K else np.full(C, -1.0)
        has = best_a > 0.5
        units = np.zeros(C, dtype=unit_dtype(self.concept_names, self.concept_categories))
        units["unit"] = rows
        units["label"] = np.where(has, self.concept_names[best] if K else "", "")
        units["category"] = np.where(has, self.concept_categories[best] if K else "", "")
        units["auroc"] = np.where(has, best_a, np.nan)
        units["p"] = np.where(has, p[rows, best] if K else np.nan, np.nan)
        units["q"] = np.where(has, q[rows, best] if K else np.nan, np.nan)
        with np.errstate(invalid="ignore"):
            units["detector"] = has & (units["auroc"] >= self.auroc_threshold) & (units["q"] < self.fdr)
        self.units = units
        self.category_best = {}
        for g in self.categories:
            cols = np.flatnonzero(self.concept_categories == g)
            if len(cols) == 0:
                self.category_best[g] = (np.full(C, "", dtype=self.concept_names.dtype), np.full(C, np.nan))
                continue
            sub = score[:, cols]
            b = sub.argmax(1)
            v = sub[rows, b]
            self.category_best[g] = (np.where(v > 0.5, self.concept_names[cols[b]], ""), np.where(v >= 0, v, np.nan))

    def summary(self) -> dict:
        det = self.units["detector"]
        tested = ~np.isnan(self.p) if self.p is not None else np.zeros(self.iou.shape, bool)
        with np.errstate(invalid="ignore"):
            sig = int(((self.q < self.fdr) & tested).sum()) if self.q is not None else 0
        return {
            "method": METHOD, "kind": self.kind,
            "shape": list(self.shape), "mask_size": [], "mask_sizes": [], "n_units": int(len(self.units)),
            "n_detectors": int(det.sum()), "n_unique_detectors": int(sum(self.unique_detectors.values())),
            "unique_detectors": self.unique_detectors, "detector_units": self.detector_units,
            "dead_units": int(self.dead.sum()) if self.dead is not None else 0,
            "image_level": {"auroc_threshold": self.auroc_threshold, "fdr": self.fdr, "tests": int(tested.sum()),
                            "significant_pairs": sig,
                            "detectors_auroc_rule": int((self.units["auroc"] >= self.auroc_threshold).sum())},
        }

    def with_scorecard(self, card, fdr):  # the IoU scorecard does not apply (its own p, q are built in)
        return self

    def units_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        header = ["unit", "label", "category", "auroc", "p", "q", "detector"]
        for g in self.categories:
            header += [f"{g}_label", f"{g}_auroc"]
        w.writerow(header)

        def num(v, fmt):
            return "" if not np.isfinite(v) else format(float(v), fmt)

        for k, u in enumerate(self.units):
            row = [int(u["unit"]), u["label"], u["category"], num(u["auroc"], ".6f"), num(u["p"], ".6g"),
                   num(u["q"], ".6g"), int(u["detector"])]
            for g in self.categories:
                names, vals = self.category_best[g]
                row += [names[k], num(vals[k], ".6f")]
            w.writerow(row)
        return buf.getvalue()

    def save(self, folder, image_paths=None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        C, K = self._auroc.shape
        atomic_savez(folder / "auroc.npz", auroc=self._auroc.astype(np.float32),
                     p=(self.p if self.p is not None else np.full((C, K), np.nan)).astype(np.float64),
                     q=(self.q if self.q is not None else np.ones((C, K))).astype(np.float64),
                     positives=(self.positives if self.positives is not None else np.zeros(K, np.int64)),
                     concept_names=self.concept_names.astype(str),
                     concept_categories=self.concept_categories.astype(str),
                     concept_numbers=self.concept_numbers.astype(np.int32),
                     dead=(self.dead if self.dead is not None else np.zeros(C, bool)))
        if self.top_images is not None:
            atomic_savez(folder / "topk.npz", images=self.top_images, values=self.top_values,
                         maps=self.top_maps, image_paths=np.asarray(image_paths or [], dtype=str))
        atomic_write_bytes(folder / "units.csv", self.units_csv().encode())

    @classmethod
    def load(cls, folder, name, categories, iou_threshold=0.04, info=None) -> "ImageLevelResult":
        folder = Path(folder)
        z = _load_npz(folder / "auroc.npz")
        top = _load_npz(folder / "topk.npz") if (folder / "topk.npz").exists() else {}
        info = info or {}
        il = info.get("image_level") or {}
        return make(name=name, auroc=z["auroc"], p=z["p"], q=z["q"], positives=z.get("positives"),
                    concept_names=z["concept_names"], concept_categories=z["concept_categories"],
                    concept_numbers=z["concept_numbers"], categories=categories,
                    auroc_threshold=float(il.get("auroc_threshold", AUROC_THRESHOLD)),
                    fdr=float(il.get("fdr", 0.05)), kind=str(info.get("kind", "vector")),
                    shape=tuple(info.get("shape", ())), top_images=top.get("images"), top_values=top.get("values"),
                    top_maps=top.get("maps"), dead=z.get("dead"), image_paths=top.get("image_paths"),
                    folder=folder)


def make(*, name, auroc, p, q, concept_names, concept_categories, concept_numbers, categories, auroc_threshold,
         fdr, kind, shape, top_images=None, top_values=None, top_maps=None, dead=None, image_paths=None,
         folder=None, positives=None) -> ImageLevelResult:
    C = auroc.shape[0]
    obj = ImageLevelResult.__new__(ImageLevelResult)
    obj._auroc = np.asarray(auroc, np.float32)
    ImageLevelResult.__init__(
        obj, name=name, iou=obj._auroc, thresholds=np.full(C, np.nan, np.float32),
        concept_names=np.asarray(concept_names), concept_categories=np.asarray(concept_categories),
        concept_numbers=np.asarray(concept_numbers), categories=list(categories), iou_threshold=float("nan"),
        shape=tuple(shape), top_images=top_images, top_values=top_values, top_maps=top_maps, dead=dead,
        image_paths=image_paths, folder=folder, fdr=float(fdr), p=p, q=q, auroc_threshold=float(auroc_threshold),
        kind=kind, positives=positives)
    return obj


def layer_result(st, name: str, kind: str, auroc_threshold: float, fdr: float) -> ImageLevelResult:
    """Score image-level layer ``name`` of the run state ``st`` (one process, after pass 2)."""
    st.caches[name].flush()
    C = st.shapes[name][0]
    acts = read_acts(st.cache_path(name), st.hi - st.lo, C, st.caches[name].dtype)
    used = np.ones(st.hi - st.lo, bool)
    for i in st.all_skipped:
        if st.lo <= i < st.hi:
            used[i - st.lo] = False
    return score(name, acts, st.presence, used, st.source.concepts, st.merged_tops[name], st.shapes[name], kind,
                 auroc_threshold, fdr)


def score(name, acts, presence: Presence, used, cons, top, shape, kind, auroc_threshold, fdr) -> ImageLevelResult:
    """The :class:`ImageLevelResult` of activations ``acts`` (rows, C) and ``presence`` over the ``used`` rows."""
    from netdissect.trust.stats import bh

    C = acts.shape[1]
    primary = np.asarray(cons.primary, np.int64)
    auroc, p = score_layer(acts, presence, used, primary)
    q = bh(np.nan_to_num(p, nan=1.0), ~np.isnan(p))
    positives = np.zeros(len(primary), np.int64)
    for g in np.unique(primary):
        cols = np.flatnonzero(primary == g)
        idx = np.flatnonzero(used & presence.has[:, g])
        positives[cols] = presence.present(idx, cols).sum(0)
    dead = dead_units(acts, used) if used.any() else np.ones(C, bool)
    return make(name=name, auroc=auroc, p=p, q=q, positives=positives,
                concept_names=np.asarray(cons.names, dtype=str), concept_categories=np.asarray(cons.primary_names, str),
                concept_numbers=cons.numbers, categories=list(cons.categories), auroc_threshold=auroc_threshold,
                fdr=fdr, kind=kind, shape=shape, top_images=top.images, top_values=top.values,
                top_maps=top.maps, dead=dead)


class Stacked:
    """Row blocks (each a (rows, C) array or memmap) read as one (sum of rows, C) array: ``x[idx, u0:u1]``
    and ``x[idx]`` with sorted row indices ``idx`` (every rank's cache, in row order)."""

    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), parts[0].shape[1] if parts else 0)

    def __getitem__(self, key):
        idx, cols = key if isinstance(key, tuple) else (key, slice(None))
        idx = np.asarray(idx)
        out = []
        for r, part in enumerate(self.parts):
            sel = idx[(idx >= self.starts[r]) & (idx < self.starts[r + 1])] - self.starts[r]
            if len(sel):
                out.append(np.asarray(part[sel, cols]))
        if not out:
            width = len(range(*cols.indices(self.shape[1])))
            return np.zeros((0, width), np.float32)
        return np.concatenate(out)


def layer_results_ranks(st, image_level: dict, image_cfg: dict, group) -> dict:
    """Under torchrun: rank 0 scores every image-level layer over every rank's cache (RUN/.work/rank<r>, a
    file system the ranks share, as the scorecard needs) and presence bits (gathered); every rank returns it."""
    for name in image_level:
        st.caches[name].flush()
    parts = group.gather((st.lo, st.hi, st.presence.bits, st.presence.has))
    group.barrier()  # every rank's cache is on disk
    results, err = None, None
    if group.rank == 0:
        try:
            results = _score_ranks(st, image_level, image_cfg, group.world, parts)
        except (NetDissectError, OSError, ValueError) as exc:
            err = str(exc)
    group.agree(err, LayerError)
    return group.broadcast(results)


def _score_ranks(st, image_level: dict, image_cfg: dict, world: int, parts: list) -> dict:
    from netdissect.dissection.distributed import shard_rows

    top = st.work.parent
    if top.name != ".work":
        raise NetDissectError(f"layer {next(iter(image_level))!r} is labelled image-level, which under torchrun "
                              "needs --out (rank 0 reads every rank's activation cache from RUN/.work)")
    parts = sorted(parts, key=lambda t: t[0])
    cons = st.source.concepts
    pres = Presence(0, len(cons), len(cons.categories))
    pres.bits = np.concatenate([b for _, _, b, _ in parts])
    pres.has = np.concatenate([h for _, _, _, h in parts])
    n = len(st.probe)
    used = np.ones(n, bool)
    used[[i for i in st.all_skipped if i < n]] = False
    results = {}
    for name, (kind, _) in image_level.items():
        C = st.shapes[name][0]
        blocks = []
        for r in range(world):
            lo, hi = shard_rows(n, r, world)
            blocks.append(read_acts(top / f"rank{r}" / st.cache_path(name).name, hi - lo, C, st.caches[name].dtype))
        results[name] = score(name, Stacked(blocks), pres, used, cons, st.merged_tops[name], st.shapes[name], kind,
                              **image_cfg)
    return results


def score_chunks(states, presence: list, image_level: dict, tops: dict, shapes: dict, skipped, n_rows: int, cons,
                 auroc_threshold: float = AUROC_THRESHOLD, fdr: float = 0.05) -> dict:
    """`netdissect merge`: every image-level layer scored over every chunk's cache (``states``, open
    :class:`RunState` of the chunks) and presence bits (``presence``: (first row, bits, has) per chunk)."""
    states = sorted(states, key=lambda st: st.lo)
    presence = sorted(presence, key=lambda t: t[0])
    pres = Presence(0, len(cons), len(cons.categories))
    pres.bits = np.concatenate([b for _, b, _ in presence])
    pres.has = np.concatenate([h for _, _, h in presence])
    used = np.ones(n_rows, bool)
    used[[i for i in skipped if i < n_rows]] = False
    out = {}
    for name, (kind, _) in image_level.items():
        C = shapes[name][0]
        blocks = []
        for st in states:
            st.caches[name].flush()
            blocks.append(read_acts(st.cache_path(name), st.hi - st.lo, C, st.caches[name].dtype))
        out[name] = score(name, Stacked(blocks), pres, used, cons, tops[name], shapes[name], kind, auroc_threshold, fdr)
    return out


def check_auroc_threshold(v) -> float:
    from netdissect.errors import NetDissectError

    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.5 <= v <= 1:
        raise NetDissectError(f"auroc_threshold (--auroc-threshold) must be in [0.5, 1], got {v!r}")
    return float(v)


__all__ = ["ImageLevelResult", "Presence", "METHOD", "SUFFIX", "AUROC_THRESHOLD", "module_of", "is_cls", "kind_of",
           "trace_plan", "score_layer", "layer_result", "make"]
