"""The role of units in a generator (PNAS 2020, "Role of units in a GAN"): removal and insertion.

    >>> from netdissect.roles.generator import removal, insertion, share_removed   # doctest: +SKIP
    >>> r = removal(gen, "layer4", ranked, seg, "tree", [1, 2, 4, 20], z)          # doctest: +SKIP
    >>> share_removed(r["baseline"], r["after"][-1])                              # doctest: +SKIP

Plain arrays in and out; the command line is ``netdissect gan remove|insert`` (docs/gan-roles.md).

The generator is cut at the layer (:class:`CutGenerator`): its first part runs once per batch of
latent vectors, and every edit ``x <- x (1 - a) + v a`` (:func:`netdissect.interventions.apply_edit`)
is applied to that cached activation, so only the modules after the layer rerun per edit.  The cut is
accepted only if, on the first batch, it reproduces the generator's own output; otherwise every edit
is a full forward pass with the edit hooked in (:attr:`CutGenerator.mode` says which).

Statistics (99% intervals are 2.58 standard errors of the mean, never standard deviations):

- removal: per image the fraction ``f`` of the segmentation's pixels labelled with the concept, before
  (``f0``, computed once) and after the edit (``f1``); ``share removed = -mean(f1 - f0) / mean(f0)``, its
  interval ``-(mean(f1 - f0) +/- 2.58 s.e.(f1 - f0)) / mean(f0)`` (the baseline mean taken as fixed,
  as PNAS does).
- insertion: per (sample, cell) the concept pixels added ``count1 - count0`` (at the segmentation's
  size); grouped by the label at the cell's centre in the sample's original segmentation (the context):
  mean, s.e., ``mean +/- 2.58 s.e.`` and the number of (sample, cell) pairs.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from netdissect.errors import LayerError, NetDissectError

__all__ = ["GeneratorError", "CutGenerator", "resolve_concept", "rank_units", "concept_counts", "share_removed",
           "removal", "removal_rows", "insertion_levels", "insertion", "context_table", "cell_centres",
           "region_pixels", "region_insertion",
           "CI_Z", "DEFAULT_SIZES", "DEFAULT_MIN_SAMPLES", "VALUE_POLICIES"]

CI_Z = 2.58                      # 99% two-sided normal interval
DEFAULT_SIZES = (1, 2, 4, 8, 16, 20, 30)
DEFAULT_MIN_SAMPLES = 100        # (sample, cell) pairs a context needs to be reported
VALUE_POLICIES = ("q99.5", "q99", "mean-present")


class GeneratorError(NetDissectError, ValueError):
    """A generator experiment whose layer, concept, units or values do not fit."""


# ----------------------------------------------------------------------------- the cut generator
def _default_rgb(x: torch.Tensor) -> torch.Tensor:
    from netdissect.models.proggan import to_image

    return to_image(x)


class CutGenerator:
    """``generator`` cut at ``layer``: :meth:`activations` of latent vectors, :meth:`images` of
    (edited) activations as RGB in [0, 1].

    ``to_rgb`` maps the generator's output to RGB in [0, 1] (default: ``[-1, 1] -> [0, 1]``, clamped).
    ``fast=False`` forces full forward passes (the naive path, for checking).
    """

    def __init__(self, generator: torch.nn.Module, layer: str, *, to_rgb=None, device="cpu", fast: bool = True):
        from netdissect.hooks.trace import TraceDict

        self.generator = generator.eval()
        self.layer = layer
        self.device = torch.device(device)
        self.to_rgb = to_rgb or _default_rgb
        try:
            with TraceDict(generator, [layer]):
                pass
        except LayerError as exc:
            names = getattr(generator, "layer_names", None)
            have = f"; the generator's blocks are {', '.join(names)}" if names else ""
            raise LayerError(f"{exc}{have}") from None
        self.head = None
        self.why_full = "fast=False" if not fast else None
        if fast:
            from netdissect.roles.core import head_after

            self.head = head_after(generator, layer)
            if self.head is None:
                self.why_full = "the generator after the layer is not a sequence of modules"
        self.mode = "suffix" if self.head is not None else "full"
        self._checked = False
        self.n_units = None
        self.shape = None

    @torch.inference_mode()
    def activations(self, z: torch.Tensor) -> torch.Tensor:
        """The layer's output for the latent batch ``z`` (one pass that stops at the layer)."""
        from netdissect.errors import ActivationError
        from netdissect.hooks.trace import TraceDict, run_to_layers

        z = z.to(self.device)
        with TraceDict(self.generator, [self.layer], stop=True) as tr:
            a = run_to_layers(self.generator, tr, z)[self.layer]
        if not isinstance(a, torch.Tensor) or a.dim() != 4:
            raise LayerError(f"layer {self.layer!r} returns {type(a).__name__} {tuple(getattr(a, 'shape', ()))}: "
                             "removal and insertion need a (N, C, H, W) feature map")
        if not torch.isfinite(a).all():
            raise ActivationError(f"layer {self.layer!r} has NaN or infinite activations for this latent batch")
        self.n_units, self.shape = a.shape[1], tuple(a.shape[1:])
        if self.head is not None and not self._checked:
            self._check(z[:8], a[:8])
        return a

    def _check(self, z, a) -> None:
        self._checked = True
        full = self.generator(z)
        try:
            mine = self.head(a)
        except (RuntimeError, ValueError, TypeError, IndexError):
            mine = None
        tol = 1e-4 * float(full.abs().max()) + 1e-5
        if mine is None or mine.shape != full.shape or not torch.allclose(mine, full, rtol=1e-4, atol=tol):
            self.head, self.mode = None, "full"
            self.why_full = "the modules after the layer, run in order, do not reproduce the generator's output"

    @torch.inference_mode()
    def images(self, act: torch.Tensor, z: torch.Tensor | None = None, alpha=None, value=0.0) -> torch.Tensor:
        """RGB in [0, 1] of ``act`` edited by ``x <- x (1 - alpha) + value alpha`` (no edit if alpha is None).

        ``z`` (the latent rows of ``act``'s rows) is needed only in ``full`` mode.
        """
        from netdissect.interventions import apply_edit, edit

        if self.head is not None:
            x = act if alpha is None else apply_edit(act, alpha, value)
            return self._rgb(self.head(x), alpha)
        if z is None:
            raise NetDissectError("full-pass mode needs the latent vectors of the activations")
        z = z.to(self.device)
        if alpha is None:
            return self._rgb(self.generator(z), alpha)
        with edit(self.generator, self.layer, alpha=alpha, value=value):
            return self._rgb(self.generator(z), alpha)

    def _rgb(self, y: torch.Tensor, alpha) -> torch.Tensor:
        from netdissect.models.loading import check_generated

        check_generated(y, what="the generator" + (" (unedited)" if alpha is None else " with the edit"))
        return self.to_rgb(y)


# ----------------------------------------------------------------------------- concepts and units
def resolve_concept(names, categories, concept: str) -> int:
    """Index of ``concept`` (``NAME`` or ``CATEGORY/NAME``) in the parallel lists ``names``/``categories``."""
    names, categories = [str(n) for n in names], [str(c) for c in categories]
    if not isinstance(concept, str) or not concept.strip():
        raise GeneratorError(f"a concept must be a name such as 'tree' (or CATEGORY/NAME), got {concept!r}")
    concept = concept.strip()
    cat, _, name = concept.rpartition("/")
    hits = [i for i, (n, c) in enumerate(zip(names, categories)) if n == name and (not cat or c == cat)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        opts = " or ".join(f"{categories[i]}/{name}" for i in hits)
        raise GeneratorError(f"concept {name!r} is in {len(hits)} categories: say which, e.g. --concept {opts}")
    close = difflib.get_close_matches(name, sorted(set(names)), n=6, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    where = f" in category {cat!r}" if cat else ""
    raise GeneratorError(f"unknown concept {concept!r}{where}: the segmenter's concepts are "
                         f"{', '.join(sorted(set(names))[:40])}{' ...' if len(set(names)) > 40 else ''}{hint}")


def rank_units(iou: np.ndarray, column: int, iou_threshold: float = 0.04, concept: str = "") -> tuple:
    """``(units by IoU with the concept, largest first (ties: lower unit first), their IoU, number above the
    threshold)``; refuses a concept with no unit whose IoU exceeds ``iou_threshold``."""
    col = np.nan_to_num(np.asarray(iou, np.float64)[:, column], nan=0.0)
    order = np.lexsort((np.arange(len(col)), -col))
    above = int((col > iou_threshold).sum())
    if above == 0:
        raise GeneratorError(f"no unit has IoU above {iou_threshold} with concept {concept or column!r} (best "
                             f"{col.max():.4f}, unit {int(order[0])}): choose a concept the layer detects (the "
                             "run's LAYER/units.csv lists each unit's best)")
    return order, col[order], above


def concept_counts(labels: torch.Tensor, number: int) -> torch.Tensor:
    """(B,) pixels labelled ``number`` in any plane of label planes (B, P, sh, sw) (a pixel counts once)."""
    return (labels == number).any(1).flatten(1).sum(1)


def _segment(seg, images, size) -> torch.Tensor:
    from netdissect.segment import checked_segment

    return checked_segment(seg, images, size)


def _seg_size(cut: CutGenerator, z: torch.Tensor, seg_size):
    if seg_size is not None:
        s = (seg_size, seg_size) if isinstance(seg_size, int) else tuple(int(v) for v in seg_size)
        if len(s) != 2 or min(s) < 1:
            raise GeneratorError(f"seg_size must be a positive size (N or (H, W)), got {seg_size!r}")
        return s
    a = cut.activations(z[:1])
    h, w = cut.images(a, z[:1]).shape[2:]
    return max(1, h // 4), max(1, w // 4)      # a quarter of the image, as the paper's 256 -> 64


def share_removed(baseline: np.ndarray, after: np.ndarray, z: float = CI_Z) -> tuple[float, float, float]:
    """``(share removed, low, high)``: ``-mean(after - baseline) / mean(baseline)`` and its interval,
    ``z`` standard errors of the mean change over the mean baseline."""
    b = np.asarray(baseline, np.float64)
    d = np.asarray(after, np.float64) - b
    mb = b.mean()
    if not mb > 0:
        return float("nan"), float("nan"), float("nan")
    m = d.mean()
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(-m / mb), float(-(m + z * se) / mb), float(-(m - z * se) / mb)


# ----------------------------------------------------------------------------- checkpoints
class _Checkpoint:
    """Finished batches' per-sample arrays in one ``.npz`` (written atomically), keyed by what they depend on."""

    def __init__(self, path, key: dict, every: float = 10.0):
        self.path = Path(path)
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        self.every = float(every)
        self._last = time.monotonic()

    def load(self, shapes: dict) -> dict | None:
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as zf:
                if str(zf["key"]) != self.key:
                    return None
                out = {k: zf[k].copy() for k in shapes}
        except (OSError, ValueError, KeyError):
            return None  # a torn or foreign file: start over
        if any(out[k].shape != s for k, s in shapes.items()):
            return None
        return out

    def save(self, final: bool = False, **arrays) -> None:
        """Write the arrays if ``every`` seconds passed since the last write (always when ``final``)."""
        from netdissect.atomic import savez

        if not final and time.monotonic() - self._last < self.every:
            return
        savez(self.path, key=np.asarray(self.key), **arrays)
        self._last = time.monotonic()


def _content_key(cut: CutGenerator, segmenter) -> dict:
    """What else a checkpoint's numbers depend on: the generator's weights and the segmenter."""
    from netdissect.models import model_identity

    ident = getattr(segmenter, "identity", None)
    try:
        seg = ident() if callable(ident) else type(segmenter).__qualname__
    except Exception:  # noqa: BLE001 - a segmenter's own identity() failing: key on its type only
        seg = type(segmenter).__qualname__
    return {"weights": model_identity(cut.generator), "segmenter": seg}


def _check_z(z) -> torch.Tensor:
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(np.ascontiguousarray(z))
    if not isinstance(z, torch.Tensor) or z.dim() < 2 or len(z) < 1:
        raise GeneratorError(f"z must be an (N, dim) array of latent vectors, got {getattr(z, 'shape', type(z))}")
    return z.float()


def _check_sizes(sizes, C: int) -> list[int]:
    try:
        out = [int(n) for n in sizes]
    except (TypeError, ValueError):
        raise GeneratorError(f"sizes must be whole numbers, got {sizes!r}") from None
    if not out or any(n < 1 for n in out):
        raise GeneratorError(f"sizes must be whole numbers >= 1, got {list(sizes)}")
    big = [n for n in out if n > C]
    if big:
        raise GeneratorError(f"sizes {big} are larger than the layer's {C} units: give sizes from 1 to {C}")
    return sorted(set(out))


# ----------------------------------------------------------------------------- removal
def removal(generator, layer: str, ranked_units, segmenter, concept: int, sizes, z, *, control_seed: int = 0,
            control: bool = True, batch_size: int = 32, seg_size=None, device="cpu", progress: bool = True, checkpoint=None,
            checkpoint_every: float = 10.0, to_rgb=None, fast: bool = True,
            cut: CutGenerator | None = None) -> dict:
    """Remove (zero at every position) the first n of ``ranked_units`` for each n in ``sizes``, and n random
    units (the control; ``control=False``: none, its arrays are NaN), on the latent rows ``z``.

    ``concept`` is the segmenter's label number (``concepts[j]`` is number ``j + 1``).  ``checkpoint``:
    a path; finished batches are kept there, so a killed call resumes.  Returns plain arrays:
    ``baseline`` (N,) and ``after``, ``control`` (len(sizes), N): per image the concept's pixel fraction;
    ``sizes``, ``units`` and ``control_units`` (lists per size), ``seg_size``, ``mode``, ``passes``
    (suffix + segmenter passes over the samples that were run).
    """
    z = _check_z(z)
    cut = cut or CutGenerator(generator, layer, to_rgb=to_rgb, device=device, fast=fast)
    seg_size = _seg_size(cut, z, seg_size)
    C = cut.n_units or cut.activations(z[:1]).shape[1]
    ranked = [int(u) for u in ranked_units]
    if sorted(ranked) != sorted(set(ranked)) or any(not 0 <= u < C for u in ranked):
        raise GeneratorError(f"ranked_units must be distinct unit numbers in 0..{C - 1}, got {ranked[:8]}...")
    sizes = _check_sizes(sizes, C)
    if max(sizes) > len(ranked):
        raise GeneratorError(f"sizes go up to {max(sizes)} but only {len(ranked)} ranked units were given")
    perm = np.random.default_rng(control_seed).permutation(C)
    units = [ranked[:n] for n in sizes]
    control_units = [sorted(int(u) for u in perm[:n]) for n in sizes]
    sets = units + (control_units if control else [])
    alphas = []
    for s in sets:
        a = torch.zeros(C)
        a[torch.as_tensor(s, dtype=torch.long)] = 1
        alphas.append(a.to(cut.device))
    N, k = len(z), len(sizes)
    starts = list(range(0, N, batch_size))
    ck = None
    state = None
    if checkpoint is not None:
        ck = _Checkpoint(checkpoint, {"what": "removal", "layer": layer, **_content_key(cut, segmenter), "z": hashlib.sha256(z.numpy().tobytes())
                                      .hexdigest(), "sets": sets, "concept": int(concept),
                                      "seg_size": list(seg_size), "batch": batch_size, "mode": cut.mode},
                         checkpoint_every)
        state = ck.load({"baseline": (N,), "fractions": (len(sets), N), "done": (len(starts),)})
    if state is None:
        state = {"baseline": np.zeros(N), "fractions": np.zeros((len(sets), N)), "done": np.zeros(len(starts), bool)}
    total = float(seg_size[0] * seg_size[1])
    passes = 0
    bar = tqdm(total=N, initial=int(sum(min(batch_size, N - s) for s, d in zip(starts, state["done"]) if d)),
               desc=f"removal at {layer}", unit="sample", disable=not progress)
    for bi, s in enumerate(starts):
        if state["done"][bi]:
            continue
        zb = z[s:s + batch_size]
        act = cut.activations(zb)
        labels = _segment(segmenter, cut.images(act, zb), seg_size)
        state["baseline"][s:s + len(zb)] = concept_counts(labels, concept).cpu().numpy() / total
        for m, a in enumerate(alphas):
            labels = _segment(segmenter, cut.images(act, zb, a, 0.0), seg_size)
            state["fractions"][m, s:s + len(zb)] = concept_counts(labels, concept).cpu().numpy() / total
        passes += (1 + len(alphas)) * len(zb)
        state["done"][bi] = True
        if ck is not None:
            ck.save(final=bool(state["done"].all()), **state)
        bar.update(len(zb))
    bar.close()
    ctrl = state["fractions"][k:] if control else np.full((k, N), np.nan)
    return {"baseline": state["baseline"], "after": state["fractions"][:k], "control": ctrl,
            "sizes": sizes, "units": units, "control_units": control_units, "seg_size": list(seg_size),
            "mode": cut.mode, "why_full": cut.why_full, "passes": passes / N, "n_units": C}


def removal_rows(result: dict, concept_name: str, z: float = CI_Z) -> list[dict]:
    """One dict per size, the columns of removal.csv."""
    rows = []
    base = result["baseline"]
    for i, n in enumerate(result["sizes"]):
        share, lo, hi = share_removed(base, result["after"][i], z)
        cshare, clo, chi = share_removed(base, result["control"][i], z)
        rows.append({"concept": concept_name, "n": n, "units": " ".join(str(u) for u in result["units"][i]),
                     "baseline_fraction": float(base.mean()), "fraction": float(result["after"][i].mean()),
                     "share_removed": share, "ci99_low": lo, "ci99_high": hi, "control_share_removed": cshare,
                     "control_ci99_low": clo, "control_ci99_high": chi,
                     "control_units": " ".join(str(u) for u in result["control_units"][i])})
    return rows


# ----------------------------------------------------------------------------- insertion
def cell_centres(h: int, w: int, sh: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation row and column of the centre of each of the layer's h x w cells:
    ``floor((i + 0.5) * sh / h)`` (clipped), the pixel at or just after the exact centre."""
    r = np.minimum(((np.arange(h) + 0.5) * sh / h).astype(np.int64), sh - 1)
    c = np.minimum(((np.arange(w) + 0.5) * sw / w).astype(np.int64), sw - 1)
    return r, c


def _upsample(a: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(a.float(), size=tuple(size), mode="bilinear", align_corners=False)


def insertion_levels(raw: np.ndarray, policy, seg_size=None, present: np.ndarray | None = None) -> np.ndarray:
    """Per unit the value inserted, from ``raw`` (N, n, h, w): the units' activations on the samples.

    ``q99.5``: the 99.5% quantile of the map upsampled (bilinear) to ``seg_size`` (PNAS's door experiment);
    ``q99``: the 99% quantile of the raw map (the paint app); ``mean-present``: the mean of the upsampled
    map where ``present`` (N, sh, sw) holds (the concept in the samples' segmentation); a number: that value
    for every unit.  Quantiles are numpy's ``linear`` ones, over every position of every sample given.
    """
    raw = np.asarray(raw, np.float32)
    n = raw.shape[1]
    if not isinstance(policy, str) or policy not in VALUE_POLICIES:
        try:
            v = float(policy)
        except (TypeError, ValueError):
            raise GeneratorError(f"value must be q99.5, q99, mean-present or a number, got {policy!r}") from None
        if not np.isfinite(v):
            raise GeneratorError(f"value must be a finite number, got {policy!r}")
        return np.full(n, v, np.float64)
    if policy == "q99":
        return np.quantile(raw.transpose(1, 0, 2, 3).reshape(n, -1), 0.99, axis=1).astype(np.float64)
    if seg_size is None:
        raise GeneratorError(f"value {policy}: needs the segmentation size to upsample to")
    if policy == "mean-present":
        if present is None or not present.any():
            raise GeneratorError("value mean-present: the concept is present in none of the samples' "
                                 "segmentations; give a number or q99.5")
    out = np.empty(n, np.float64)
    t = torch.from_numpy(raw)
    for u in range(n):
        up = torch.cat([_upsample(t[s:s + 256, u:u + 1], seg_size)[:, 0] for s in range(0, len(t), 256)]).numpy()
        out[u] = np.quantile(up.ravel(), 0.995) if policy == "q99.5" else up[present].mean()
    return out


def insertion(generator, layer: str, units, segmenter, concept: int, z, *, value="q99.5", context_plane: int = 0,
              batch_size: int = 64, seg_size=None, device="cpu", progress: bool = True, checkpoint=None,
              checkpoint_every: float = 10.0, to_rgb=None, fast: bool = True,
              cut: CutGenerator | None = None) -> dict:
    """Set ``units`` to their value at one cell of the layer at a time (every cell), on the latent rows ``z``.

    ``value``: a policy of :func:`insertion_levels` (computed over these samples, before any edit), a
    number, or a per-unit array.  Returns plain arrays: ``added`` (N, h, w) concept pixels added (at the
    segmentation's size; may be negative) by inserting at each cell, ``context`` (N, h, w) the label number
    at the cell's centre in plane ``context_plane`` of the sample's original segmentation (0: none),
    ``baseline`` (N,) concept pixels before, ``values`` (n,), ``units``, ``seg_size``, ``mode``.
    A killed call resumes from ``checkpoint`` (a path) after the last finished batch of samples.
    """
    z = _check_z(z)
    cut = cut or CutGenerator(generator, layer, to_rgb=to_rgb, device=device, fast=fast)
    seg_size = _seg_size(cut, z, seg_size)
    C = cut.n_units or cut.activations(z[:1]).shape[1]
    units = [int(u) for u in units]
    if not units or len(set(units)) != len(units) or any(not 0 <= u < C for u in units):
        raise GeneratorError(f"units must be distinct unit numbers in 0..{C - 1}, got {units[:8]}")
    N = len(z)
    h, w = cut.shape[1:]
    rows, cols = cell_centres(h, w, *seg_size)
    ut = torch.as_tensor(units, dtype=torch.long)
    # pass 1: baseline segmentation (once), contexts, the units' raw maps for the value policy
    baseline = np.zeros(N, np.int64)
    context = np.zeros((N, h, w), np.int64)
    raw = np.zeros((N, len(units), h, w), np.float32)
    need_present = isinstance(value, str) and value == "mean-present"
    present = np.zeros((N, *seg_size), bool) if need_present else None
    for s in tqdm(range(0, N, batch_size), desc=f"insertion baseline at {layer}", unit="batch",
                  disable=not progress):
        zb = z[s:s + batch_size]
        act = cut.activations(zb)
        labels = _segment(segmenter, cut.images(act, zb), seg_size)
        if not 0 <= context_plane < labels.shape[1]:
            raise GeneratorError(f"context_plane {context_plane}: the segmenter gives {labels.shape[1]} planes "
                                 f"(0..{labels.shape[1] - 1})")
        baseline[s:s + len(zb)] = concept_counts(labels, concept).cpu().numpy()
        lab = labels[:, context_plane].cpu().numpy()
        context[s:s + len(zb)] = lab[:, rows][:, :, cols]
        raw[s:s + len(zb)] = act[:, ut].float().cpu().numpy()
        if need_present:
            present[s:s + len(zb)] = (labels == concept).any(1).cpu().numpy()
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        values = insertion_levels(raw, value, seg_size, present)
    else:
        values = np.asarray(value, np.float64).reshape(-1)
        if values.shape != (len(units),) or not np.isfinite(values).all():
            raise GeneratorError(f"value: a per-unit array needs {len(units)} finite numbers, got {values.shape}")
    vfull = torch.zeros(C, dtype=torch.float32)
    vfull[ut] = torch.as_tensor(values, dtype=torch.float32)
    vfull = vfull.to(cut.device)
    # pass 2: every (sample, cell), batched
    per = max(1, batch_size // (h * w)) if batch_size >= h * w else 1
    sstarts = list(range(0, N, per))
    ck = state = None
    if checkpoint is not None:
        ck = _Checkpoint(checkpoint, {"what": "insertion", "layer": layer, **_content_key(cut, segmenter), "units": units, "concept": int(concept),
                                      "z": hashlib.sha256(z.numpy().tobytes()).hexdigest(),
                                      "values": [round(float(v), 5) for v in values], "seg_size": list(seg_size),
                                      "per": per, "mode": cut.mode}, checkpoint_every)
        state = ck.load({"added": (N, h, w), "done": (len(sstarts),)})
    if state is None:
        state = {"added": np.zeros((N, h, w), np.int64), "done": np.zeros(len(sstarts), bool)}
    cells = h * w
    ci, cj = np.divmod(np.arange(cells), w)
    chunk = max(1, batch_size)
    bar = tqdm(total=N * cells, initial=int(sum(min(per, N - s) for s, d in zip(sstarts, state["done"]) if d))
               * cells, desc=f"insertion at {layer}", unit="edit", disable=not progress)
    for bi, s in enumerate(sstarts):
        if state["done"][bi]:
            continue
        zb = z[s:s + per]
        act = cut.activations(zb)
        B = len(zb)
        sample = np.repeat(np.arange(B), cells)
        cell = np.tile(np.arange(cells), B)
        after = np.zeros(B * cells, np.int64)
        for p in range(0, B * cells, chunk):
            si, ce = sample[p:p + chunk], cell[p:p + chunk]
            M = len(si)
            x = act[torch.as_tensor(si)]
            a = torch.zeros(M, C, h, w, device=x.device, dtype=x.dtype)
            mi = torch.arange(M).view(M, 1)
            a[mi, ut.view(1, -1), torch.as_tensor(ci[ce]).view(M, 1), torch.as_tensor(cj[ce]).view(M, 1)] = 1
            labels = _segment(segmenter, cut.images(x, zb[torch.as_tensor(si)], a, vfull), seg_size)
            after[p:p + M] = concept_counts(labels, concept).cpu().numpy()
        state["added"][s:s + B] = (after.reshape(B, h, w) - baseline[s:s + B, None, None])
        state["done"][bi] = True
        if ck is not None:
            ck.save(final=bool(state["done"].all()), **state)
        bar.update(B * cells)
    bar.close()
    return {"added": state["added"], "context": context, "baseline": baseline, "values": values, "units": units,
            "seg_size": list(seg_size), "shape": [h, w], "mode": cut.mode, "why_full": cut.why_full,
            "n_units": C}


def region_pixels(region, seg_size) -> np.ndarray:
    """``region`` (h, w) cells of a layer's grid as a bool (sh, sw) mask of label pixels: pixel ``(i, j)``
    belongs to cell ``(floor(i h / sh), floor(j w / sw))`` (exact when the label size is a multiple of the grid).

    >>> region_pixels(np.array([[0, 1], [0, 0]], bool), (4, 4)).astype(int)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [0, 0, 0, 0],
           [0, 0, 0, 0]])
    """
    region = np.asarray(region, bool)
    h, w = region.shape
    sh, sw = (int(v) for v in seg_size)
    return region[(np.arange(sh) * h) // sh][:, (np.arange(sw) * w) // sw]


def region_insertion(generator, layer: str, edits, segmenter, concepts, z, region, *, seg_size=None,
                     batch_size: int = 32, device="cpu", to_rgb=None, fast: bool = True,
                     cut: CutGenerator | None = None, progress: bool = False) -> dict:
    """Insertion in a fixed region: each edit at once on the latent rows ``z``, concept pixels counted in the region.

    ``edits``: a list of ``(alpha, value)`` edits of the layer (broadcastable to its (C, h, w), applied with
    the one edit rule ``x <- x (1 - alpha) + value alpha``), ``concepts``: the label number counted for each
    edit, ``region``: bool (h, w) cells of the layer's grid, counted at the label size by
    :func:`region_pixels`.  The unedited samples are rendered and segmented once; each edit costs one pass
    of the generator after the layer (:class:`CutGenerator`) and one of the segmenter per sample.

    Returns ``before`` and ``after`` (E, N): pixels of edit ``e``'s concept (in any plane) inside the region,
    ``region_pixels`` (their number per sample), ``seg_size``, ``mode``.
    """
    z = _check_z(z)
    concepts = [int(c) for c in concepts]
    if len(concepts) != len(edits):
        raise GeneratorError(f"region_insertion: {len(edits)} edits but {len(concepts)} concepts (one each)")
    cut = cut or CutGenerator(generator, layer, to_rgb=to_rgb, device=device, fast=fast)
    seg_size = _seg_size(cut, z, seg_size)
    if cut.shape is None:
        cut.activations(z[:1])
    h, w = cut.shape[1:]
    region = np.asarray(region, bool)
    if region.shape != (h, w) or not region.any():
        raise GeneratorError(f"region must be a non-empty bool ({h}, {w}) mask of the layer's cells, "
                             f"got {region.shape}")
    inside = torch.from_numpy(region_pixels(region, seg_size)).to(cut.device)
    N, E = len(z), len(edits)
    before = np.zeros((E, N), np.int64)
    after = np.zeros((E, N), np.int64)
    numbers = torch.as_tensor(concepts, dtype=torch.long, device=cut.device).view(1, E, 1, 1, 1)

    def counts(labels):   # (B, P, sh, sw) -> (E, B): each concept's pixels (any plane) inside the region
        hit = (labels.unsqueeze(1) == numbers).any(2) & inside
        return hit.flatten(2).sum(2).T.cpu().numpy()

    for s in tqdm(range(0, N, batch_size), desc=f"region insertion at {layer}", unit="batch", disable=not progress):
        zb = z[s:s + batch_size]
        act = cut.activations(zb)
        before[:, s:s + len(zb)] = counts(_segment(segmenter, cut.images(act, zb), seg_size))
        for e, (alpha, value) in enumerate(edits):
            labels = _segment(segmenter, cut.images(act, zb, alpha, value), seg_size)
            after[e, s:s + len(zb)] = counts(labels)[e]
    return {"before": before, "after": after, "region_pixels": int(inside.sum()), "seg_size": list(seg_size),
            "mode": cut.mode, "why_full": cut.why_full}


def context_table(added: np.ndarray, context: np.ndarray, names, min_samples: int = DEFAULT_MIN_SAMPLES,
                  z: float = CI_Z) -> list[dict]:
    """Per context label (``names[j]`` is label ``j + 1``; 0 is ``(none)``) with at least ``min_samples``
    (sample, cell) pairs: ``context, samples, mean_added, se, ci99_low, ci99_high``, largest mean first."""
    a = np.asarray(added, np.float64).ravel()
    c = np.asarray(context).ravel()
    rows = []
    for lab in np.unique(c):
        v = a[c == lab]
        if len(v) < max(1, min_samples):
            continue
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        m = v.mean()
        rows.append({"context": "(none)" if lab == 0 else str(names[lab - 1]), "label": int(lab),
                     "samples": int(len(v)), "mean_added": float(m), "se": float(se),
                     "ci99_low": float(m - z * se), "ci99_high": float(m + z * se)})
    rows.sort(key=lambda r: (-r["mean_added"], r["context"]))
    return rows


# ----------------------------------------------------------------------------- runs (the command line's)
PAPER_REMOVAL = (20, 0.53, "paper: 20 tree units, 53% (LSUN church)")


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def read_generator_run(run_dir, layer: str) -> dict:
    """What a generator dissection run (``netdissect dissect --samples``) says: model, latent draw, segmenter,
    label size and the layer's IoU table; refuses runs of images and layers the run did not dissect."""
    from netdissect.dissection import load

    run_dir = Path(run_dir)
    res = load(run_dir)
    s = res.summary
    data = s.get("dataset") or {}
    if data.get("kind") != "latent":
        what = data.get("name") or data.get("path") or data.get("kind") or "images"
        raise GeneratorError(f"{run_dir} is a dissection of {what}, not of a generator's latent samples: dissect "
                             "a generator first, e.g. `netdissect dissect --model zoo:world-gan --layer layer4 "
                             "--samples 5000 --seed 1 --segmenter zoo:world-seg --out runs/gan`")
    if layer not in res:
        raise GeneratorError(f"{run_dir} has no dissection of layer {layer!r} (it has {', '.join(res) or 'none'}): "
                             f"dissect it with --layer {layer}, or choose one of those")
    labels = s.get("labels") or {}
    model = s.get("model") or {}
    if not labels.get("spec") or not model.get("spec"):
        raise GeneratorError(f"{run_dir}/summary.json names no {'segmenter' if not labels.get('spec') else 'model'} "
                             "spec; rerun the dissection with this version of netdissect")
    seg_id = labels.get("segmenter") or {}
    bad = [k for k in ("seed", "dim") if isinstance(data.get(k), bool) or not isinstance(data.get(k), int)
           or data[k] < (1 if k == "dim" else 0)]
    if bad:
        k = bad[0]
        state = "lacks it" if k not in data else f"has {json.dumps(data[k])[:30]}"
        raise GeneratorError(f"{run_dir}/summary.json: dataset.{k} (the latent {'seed' if k == 'seed' else 'size'}) "
                             f"{state}, not a whole number: the run is damaged or hand-edited; dissect the generator "
                             "again")
    if not isinstance(seg_id, dict):
        seg_id = {}
    return {"run": str(run_dir), "result": res, "layer": res[layer], "model_spec": model["spec"],
            "weights": model.get("weights"), "normalize": model.get("normalize"), "model_seed": model.get("seed", 0),
            "latent_seed": int(data["seed"]), "samples": int(data.get("samples", 0)), "dim": int(data["dim"]),
            "segmenter_spec": labels["spec"], "segmenter_identity": seg_id, "sha256": model.get("sha256"),
            "quad_parts": seg_id.get("kind") == "quad-parts", "seg_size": labels.get("seg_size"),
            "iou_threshold": float(s["config"]["iou_threshold"])}


def load_run_models(info: dict, device="cpu"):
    """``(generator, to_rgb, segmenter, segmenter matches the run's identity)`` for a run read by
    :func:`read_generator_run`."""
    import inspect

    from netdissect.models import load_model
    from netdissect.segment import load_segmenter

    kw = {"weights": info["weights"], "seed": info["model_seed"]}
    norm = info["normalize"]
    if isinstance(norm, str) and norm:
        kw["normalize"] = norm
    params = inspect.signature(load_model).parameters
    if "generator" in params:
        kw["generator"] = True
    if "z_dim" in params:
        kw["z_dim"] = info["dim"]
    try:
        try:
            model, prep = load_model(info["model_spec"], **kw)
        except NetDissectError as exc:
            if "--z-dim" in str(exc):
                raise
            kw.pop("normalize", None)  # a recorded normalisation in words, not a spec: the generator's default
            model, prep = load_model(info["model_spec"], **kw)
    except NetDissectError as exc:
        if "--z-dim" not in str(exc):
            raise
        # the latent size comes from the run's summary.json, not from the user: say so
        raise GeneratorError(f"{info['run']}/summary.json says the latent size (dataset.dim) is {info['dim']}, but "
                             f"{info['model_spec']} takes latents of another size: the run is damaged or of another "
                             "generator; dissect this generator again") from None
    if info.get("sha256"):
        from netdissect.models import model_identity

        ours = model_identity(model)
        if ours != info["sha256"]:
            raise GeneratorError(f"the generator {info['model_spec']} now has weights digest {ours}, but {info['run']} "
                                 f"dissected weights of digest {info['sha256']}: its unit ranking is of other weights "
                                 "(was the file changed?); dissect this generator again")
    to_rgb = prep.to_image if callable(getattr(prep, "to_image", None)) else None
    seg = load_segmenter(info["segmenter_spec"], quad_parts=info["quad_parts"])
    if hasattr(seg, "to"):
        seg = seg.to(device) or seg
    from netdissect.concepts.segmenter import segmenter_identity

    same = not info["segmenter_identity"] or segmenter_identity(seg) == info["segmenter_identity"]
    return model.to(device), to_rgb, seg, same


def _concept_of_run(info: dict, seg, concept: str) -> tuple[int, int, str]:
    """``(IoU column, segmenter label number, CATEGORY/NAME)``, checking the run's concepts are the segmenter's."""
    lr = info["layer"]
    col = resolve_concept(lr.concept_names, lr.concept_categories, concept)
    number = int(lr.concept_numbers[col])
    name, cat = str(lr.concept_names[col]), str(lr.concept_categories[col])
    if not 1 <= number <= len(seg.concepts) or seg.concepts[number - 1] != name:
        got = seg.concepts[number - 1] if 1 <= number <= len(seg.concepts) else "nothing"
        raise GeneratorError(f"the run's concept {name!r} is label {number}, but segmenter {info['segmenter_spec']!r} "
                             f"calls label {number} {got!r}: the segmenter changed since the dissection; rerun it")
    return col, number, f"{cat}/{name}"


def _refuse_seed(info: dict, seed: int) -> None:
    if int(seed) == info["latent_seed"]:
        raise GeneratorError(f"--seed {seed} is the seed of the dissection that ranked the units ({info['run']}): "
                             "measuring on the samples that chose the units overstates the effect (selection "
                             f"bias); give another seed, e.g. --seed {info['latent_seed'] + 1}")


def _csv(rows: list[dict], header: list[str]) -> str:
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join(f"{r[h]:.6f}" if isinstance(r[h], float) else str(r[h]) for h in header))
    return "\n".join(lines) + "\n"


REMOVAL_COLUMNS = ["concept", "n", "units", "baseline_fraction", "fraction", "share_removed", "ci99_low",
                   "ci99_high", "control_share_removed", "control_ci99_low", "control_ci99_high", "control_units"]
INSERTION_COLUMNS = ["concept", "context", "samples", "mean_added_pixels", "se", "ci99_low", "ci99_high",
                     "mean_added_fraction"]


def _prepare(run_dir, layer: str, concept: str, samples: int, seed: int, device, fast: bool):
    """What removal and insertion both start from: the run (seed checked), its generator and segmenter,
    the concept's units ranked by IoU, the generator cut at ``layer``, the measured z and the unit count."""
    from netdissect.probe.latent import latent_z

    info = read_generator_run(run_dir, layer)
    _refuse_seed(info, seed)
    model, to_rgb, seg, same = load_run_models(info, device)
    col, number, cname = _concept_of_run(info, seg, concept)
    order, ious, above = rank_units(info["layer"].iou, col, info["iou_threshold"], cname)
    cut = CutGenerator(model, layer, to_rgb=to_rgb, device=device, fast=fast)
    z = torch.from_numpy(latent_z(samples, seed, info["dim"]))
    C = cut.activations(z[:1]).shape[1]
    return info, model, seg, same, number, cname, order, ious, above, cut, z, C


GRID_MIN_SHARE = 0.05   # a sample shown in the removal grid has at least this share of the concept


def grid_samples(baseline: np.ndarray, k: int, concept: str, seed: int) -> tuple[np.ndarray, str]:
    """The samples the removal grid shows, and how they were chosen, in words: the first ``k`` of the seed
    (in order) whose label map is at least ``GRID_MIN_SHARE`` the concept; when fewer have that much, the
    rest are those with the most of it.

    >>> grid_samples(np.array([0., .2, .01, .3, .06]), 2, "sand", 2)[0].tolist()
    [1, 3]
    """
    base = np.asarray(baseline, dtype=np.float64)
    k = min(int(k), len(base))
    ok = np.flatnonzero(base >= GRID_MIN_SHARE)[:k]
    rule = (f"The samples are the first {k} of seed {seed}, in order, whose original image has at least "
            f"{GRID_MIN_SHARE:.0%} of its label map labelled {concept}")
    if len(ok) < k:
        rest = [i for i in np.argsort(-base, kind="stable") if i not in set(ok.tolist())][:k - len(ok)]
        ok = np.sort(np.concatenate([ok, np.asarray(rest, dtype=np.int64)]))
        rule += f" (only {int((base >= GRID_MIN_SHARE).sum())} have; the others are those with the most {concept})"
    return ok.astype(np.int64), rule + "."


def run_removal(run_dir, layer: str, concept: str, sizes, samples: int, seed: int, out, *, control_seed: int = 0,
                batch_size: int = 32, device="cpu", fast: bool = True, progress: bool = True, grid: int = 8,
                figures: bool = True) -> dict:
    """``netdissect gan remove``: the files of docs/gan-roles.md in ``out`` (claimed first, written whole,
    removal.json last); returns removal.json's dict."""
    from netdissect.runout import claim_output

    _check_run_options(device, batch_size)
    with claim_output(out, "gan remove", "removal.json", inputs=[("--run", run_dir)],
                      fmt="netdissect-gan-remove") as o:
        s = _run_removal(run_dir, layer, concept, sizes, samples, seed, o.path, o.stage, control_seed=control_seed,
                         batch_size=batch_size, device=device, fast=fast, progress=progress, grid=grid,
                         figures=figures)
        o.commit()
    return s


def _check_run_options(device, batch_size) -> None:
    from netdissect.roles.run import check_options

    check_options(batch_size=batch_size, device=device)


def _run_removal(run_dir, layer, concept, sizes, samples, seed, out, dest, *, control_seed, batch_size, device, fast,
                 progress, grid, figures) -> dict:
    from netdissect.atomic import savez, write_json, write_text

    t0 = time.perf_counter()
    out, dest = Path(out), Path(dest)
    info, model, seg, same, number, cname, order, ious, above, cut, z, C = _prepare(
        run_dir, layer, concept, samples, seed, device, fast)
    sizes = _check_sizes(sizes, C)
    r = removal(model, layer, order, seg, number, sizes, z, control_seed=control_seed, batch_size=batch_size,
                seg_size=info["seg_size"], device=device, progress=progress, cut=cut,
                checkpoint=out / "cache" / "removal_checkpoint.npz")
    rows = removal_rows(r, cname)
    write_text(dest / "removal.csv", _csv(rows, REMOVAL_COLUMNS))
    savez(dest / "removal.npz", baseline=r["baseline"].astype(np.float32), after=r["after"].astype(np.float32),
          control=r["control"].astype(np.float32), sizes=np.asarray(sizes, np.int32),
          ranking=order.astype(np.int32), ranking_iou=ious.astype(np.float32))
    summary = {
        "format": "netdissect-gan-remove", "version": 1, "run": str(run_dir), "model": info["model_spec"],
        "layer": layer, "units": C, "concept": cname, "label": number,
        "ranking": {"source": f"IoU in {run_dir} ({info['samples']} samples of seed {info['latent_seed']})",
                    "units": order[:max(sizes)].tolist(), "iou": [round(float(v), 6) for v in ious[:max(sizes)]],
                    "above_threshold": above, "iou_threshold": info["iou_threshold"]},
        "samples": samples, "seed": seed, "latent_draw": f"numpy RandomState({seed}).standard_normal(({samples}, "
        f"{info['dim']})), float32", "control_seed": control_seed,
        "control": "n units drawn uniformly from all the layer's units (numpy default_rng(control_seed)"
                   ".permutation, the first n)",
        "segmenter": info["segmenter_spec"], "segmenter_matches_run": same, "seg_size": r["seg_size"],
        "statistic": "share removed = -mean(f_after - f_before) / mean(f_before), f = per-image fraction of "
                     "the segmentation's pixels labelled with the concept; 99% interval = -(mean change +/- "
                     "2.58 s.e. of the mean change) / mean(f_before)",
        "mode": r["mode"], "why_full_passes": r["why_full"],
        "passes_per_sample": r["passes"], "passes_note": f"1 baseline + {len(sizes)} sizes + {len(sizes)} controls "
        "(suffix + segmenter passes; the layer's activation computed once per batch)",
        "rows": rows, "paper": {"n": PAPER_REMOVAL[0], "share_removed": PAPER_REMOVAL[1],
                                "what": "PNAS 2020: removing 20 tree units removes 53% of tree pixels (LSUN church)"},
        "figures": {}, "seconds": None,
    }
    if figures:
        from netdissect.roles import generator_figures as fg

        summary["figures"]["curve"] = fg.removal_curve(
            dest, rows, f"{cname} removed at {layer} ({samples} samples, seed {seed})",
            PAPER_REMOVAL if cname.endswith("/tree") else None)
        if grid > 0:
            n = 20 if 20 in sizes else max(sizes)
            i = sizes.index(n)
            pick, rule = grid_samples(r["baseline"], grid, cname.split("/")[-1], seed)
            summary["grid"] = {"samples": pick.tolist(), "rule": rule}
            zb = z[torch.as_tensor(pick, dtype=torch.long)]
            act = cut.activations(zb)
            rows_img = []
            for label, units, frac in (("original", None, r["baseline"]),
                                       (f"top {n} removed", r["units"][i], r["after"][i]),
                                       (f"{n} random removed", r["control_units"][i], r["control"][i])):
                a = None
                if units is not None:
                    a = torch.zeros(C, device=cut.device)
                    a[torch.as_tensor(units, dtype=torch.long)] = 1
                imgs = _uint8(cut.images(act, zb, a, 0.0))
                rows_img.append((label, imgs, [f"{100 * frac[k]:.0f}% {cname.split('/')[-1]}" for k in pick]))
            summary["figures"]["grid"] = fg.image_grid(dest, "removal_grid", rows_img,
                                                       f"{cname} units removed at {layer} (seed {seed})")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(dest / "removal.json", summary)
    return summary


def run_insertion(run_dir, layer: str, concept: str, n: int, value, samples: int, seed: int, out, *,
                  min_samples: int = DEFAULT_MIN_SAMPLES, context_plane: int = 0, batch_size: int = 64,
                  device="cpu", fast: bool = True, progress: bool = True, examples: int = 6,
                  figures: bool = True) -> dict:
    """``netdissect gan insert``: the files of docs/gan-roles.md in ``out`` (claimed first, written whole,
    insertion.json last); returns insertion.json's dict."""
    from netdissect.runout import claim_output

    _check_run_options(device, batch_size)
    with claim_output(out, "gan insert", "insertion.json", inputs=[("--run", run_dir)],
                      fmt="netdissect-gan-insert") as o:
        s = _run_insertion(run_dir, layer, concept, n, value, samples, seed, o.path, o.stage, min_samples=min_samples,
                           context_plane=context_plane, batch_size=batch_size, device=device, fast=fast,
                           progress=progress, examples=examples, figures=figures)
        o.commit()
    return s


def _run_insertion(run_dir, layer, concept, n, value, samples, seed, out, dest, *, min_samples, context_plane,
                   batch_size, device, fast, progress, examples, figures) -> dict:
    from netdissect.atomic import savez, write_json, write_text

    t0 = time.perf_counter()
    out, dest = Path(out), Path(dest)
    info, model, seg, same, number, cname, order, ious, above, cut, z, C = _prepare(
        run_dir, layer, concept, samples, seed, device, fast)
    n = _check_sizes([n], C)[0]
    units = order[:n].tolist()
    r = insertion(model, layer, units, seg, number, z, value=value, context_plane=context_plane,
                  batch_size=batch_size, seg_size=info["seg_size"], device=device, progress=progress, cut=cut,
                  checkpoint=out / "cache" / "insertion_checkpoint.npz")
    sh, sw = r["seg_size"]
    table = context_table(r["added"], r["context"], seg.concepts, min_samples)
    rows = [{"concept": cname, "context": t["context"], "samples": t["samples"], "mean_added_pixels": t["mean_added"],
             "se": t["se"], "ci99_low": t["ci99_low"], "ci99_high": t["ci99_high"],
             "mean_added_fraction": t["mean_added"] / (sh * sw)} for t in table]
    write_text(dest / "insertion.csv", _csv(rows, INSERTION_COLUMNS))
    cell_mean = r["added"].mean(0)
    savez(dest / "insertion.npz", added=r["added"].astype(np.int32), context=r["context"].astype(np.int32),
          baseline=r["baseline"].astype(np.int32), values=r["values"].astype(np.float32),
          units=np.asarray(units, np.int32), cell_mean=cell_mean.astype(np.float32))
    all_ctx = context_table(r["added"], r["context"], seg.concepts, 1)
    policy = value if isinstance(value, str) else float(value)
    summary = {
        "format": "netdissect-gan-insert", "version": 1, "run": str(run_dir), "model": info["model_spec"],
        "layer": layer, "units_in_layer": C, "concept": cname, "label": number, "n": n, "units": units,
        "units_iou": [round(float(v), 6) for v in ious[:n]], "above_threshold": above,
        "value": {"policy": policy, "values": [float(v) for v in r["values"]],
                  "computed_over": f"the {samples} insertion samples of seed {seed}, before any edit"
                  if policy in VALUE_POLICIES else "given",
                  "definition": {"q99.5": "99.5% quantile of the unit's map upsampled (bilinear) to the label size",
                                 "q99": "99% quantile of the unit's raw map at the layer's resolution",
                                 "mean-present": "mean of the upsampled map where the segmentation has the concept"}
                  .get(policy, "the number given, for every unit")},
        "samples": samples, "seed": seed, "latent_draw": f"numpy RandomState({seed}).standard_normal(({samples}, "
        f"{info['dim']})), float32", "cells": r["shape"], "seg_size": r["seg_size"],
        "segmenter": info["segmenter_spec"], "segmenter_matches_run": same, "context_plane": context_plane,
        "context": "the label at the cell's centre (label pixel floor((i + 0.5) * sh / h)) in plane "
                   f"{context_plane} of the sample's original segmentation",
        "statistic": "added = concept label pixels after - before (at the label size) per (sample, cell); per "
                     "context mean, s.e., 99% interval mean +/- 2.58 s.e.; contexts with fewer than min_samples "
                     "(sample, cell) pairs are left out",
        "min_samples": min_samples, "contexts": rows, "all_contexts": all_ctx,
        "cell_mean_added_pixels": [[round(float(v), 4) for v in row] for row in cell_mean],
        "mean_added_pixels": float(r["added"].mean()), "mode": r["mode"], "why_full_passes": r["why_full"],
        "figures": {}, "seconds": None,
    }
    if figures:
        from netdissect.roles import generator_figures as fg

        short = cname.split("/")[-1]
        summary["figures"]["contexts"] = fg.insertion_contexts(
            dest, table, f"{short} inserted at {layer}: top {n} units, {policy}",
            f"{short} label pixels (of {sh}x{sw})")
        summary["figures"]["map"] = fg.insertion_map(
            dest, cell_mean, f"{short} added by cell ({samples} samples)", f"{short} label pixels (of {sh}x{sw})")
        if examples > 0 and len(rows):
            k = min(examples, samples)
            h, w = r["shape"]
            flat = r["added"].reshape(len(r["added"]), -1)
            # the k samples where one cell adds the most (in seed order), each at that cell: examples of
            # insertion working, rather than of cells where it adds nothing
            pick = np.sort(np.argsort(-flat.max(1), kind="stable")[:k])
            best = np.argmax(flat[pick], 1)
            zb = z[torch.as_tensor(pick, dtype=torch.long)]
            act = cut.activations(zb)
            a = torch.zeros(k, C, h, w, device=cut.device)
            vfull = torch.zeros(C, device=cut.device)
            vfull[torch.as_tensor(units)] = torch.as_tensor(r["values"], dtype=torch.float32, device=cut.device)
            for b in range(k):
                a[b, torch.as_tensor(units), best[b] // w, best[b] % w] = 1
            before, after = _uint8(cut.images(act, zb)), _uint8(cut.images(act, zb, a, vfull))
            ctx = [seg.concepts[c - 1] if c else "(none)"
                   for c in r["context"].reshape(len(r["context"]), -1)[pick, best]]
            summary["examples_rule"] = (f"The {k} of the {samples} samples of seed {seed} where switching the "
                                        f"{n} units on at one cell adds the most {short}, in seed order, each at "
                                        f"that cell (its label before the edit in brackets).")
            summary["examples"] = pick.tolist()
            caps = [f"cell {bb // w},{bb % w} ({c})" for bb, c in zip(best, ctx)]
            added = [f"+{int(flat[i, bb])} {short} px" for i, bb in zip(pick, best)]
            H, W = before.shape[1:3]
            boxes = [((bb // w) * H // h, (bb % w) * W // w, H // h, W // w) for bb in best]   # the edited cell
            summary["figures"]["examples"] = fg.image_grid(
                dest, "insertion_examples", [("original", before, caps, boxes), (f"{short} inserted", after, added,
                                                                                  boxes)],
                f"top {n} {short} units set at the outlined cell (the samples and cells adding most; "
                f"pixels of the {sh}x{sw} label map)")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(dest / "insertion.json", summary)
    return summary
