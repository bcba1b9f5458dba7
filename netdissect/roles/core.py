"""Unit importance in a classifier (PNAS 2020, "Role of units in a scene classifier").

    >>> import numpy as np, torch
    >>> from netdissect.roles.core import Evaluator, balanced_accuracy
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    ...                             torch.nn.Flatten(), torch.nn.Linear(4, 3))     # e.g. zoo:scene-cnn, "conv5"
    >>> ev = Evaluator(model, "1", progress=False)
    >>> images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    >>> acts = ev.activations(images)               # (N, C, h, w), once
    >>> preds = ev.predict(acts, [[], [3], [0, 3]])  # none, unit 3, units 0 and 3 ablated
    >>> preds.shape, ev.mode                         # from the cached activations through the head
    ((3, 5), 'head')
    >>> ba, recall, tnr, acc = balanced_accuracy(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    >>> ba.round(3).tolist(), acc
    ([0.833, 0.75, 1.0], 0.75)

The fast path runs only the part of the network after the layer on cached
activations.  The "head" is found by walking the module tree: the siblings
that follow the layer in their parent's child order, outwards to the model
(a ``Linear`` given a map flattens it first, as torchvision's ``forward``
does).  It is accepted only if, on a probe batch, it reproduces the model's
own logits; otherwise (a residual block, a ``NAME#K`` call, a forward that
does more than run its children in order) every evaluation is a full forward
pass with the ablation hooked in (:attr:`Evaluator.mode` says which).

A token layer (a transformer block) is evaluated on its patch tokens laid out
as (N, C, H, W) (:mod:`netdissect.hooks.tokens`): a unit is one feature
dimension on every patch token, ablated there with the prefix tokens left as
they were.  What follows a transformer block (more blocks, then class-token
pooling or token averaging inside the model's ``forward``) is not a sequence of
modules, so the fast path knows two models whose rest it can cut off
(:func:`token_head_after`): a timm ``VisionTransformer`` (or a subclass keeping
its ``forward`` and ``forward_features``, e.g. distilled DeiT) at ``blocks.K``
runs ``blocks[K+1:]``, ``norm`` and the model's own ``forward_head``; a
torchvision ``VisionTransformer`` at ``encoder.layers.encoder_layer_K`` runs
the encoder layers after K, ``encoder.ln``, the class token and ``heads``.
The cached patch map is put back into the token sequence after the layer's own
(cached, unablated) prefix tokens.  The same probe-batch check applies; any
other token layer, and any channels-last map, is evaluated with full passes.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from netdissect.errors import ActivationError, LayerError, NetDissectError
from netdissect.hooks.trace import TraceDict, run_to_layers, split_layer
from netdissect.interventions import ablate


class _Head(nn.Module):
    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(modules)

    def forward(self, x):
        for m in self.steps:
            if isinstance(m, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = m(x)
        return x


def head_after(model: nn.Module, layer: str) -> _Head | None:
    """The modules that run after ``layer`` if the model runs its children in order; None if not separable."""
    name, call = split_layer(model, layer)
    if call is not None:
        return None
    parts = name.split(".")
    steps: list[nn.Module] = []
    for depth in range(len(parts), 0, -1):
        parent = model if depth == 1 else model.get_submodule(".".join(parts[:depth - 1]))
        kids = list(parent.named_children())
        idx = [k for k, _ in kids].index(parts[depth - 1])
        if depth > 1 and not isinstance(parent, nn.Sequential):
            return None  # a block's forward (residual, ...) is not its children in order
        steps.extend(m for _, m in kids[idx + 1:])
    return _Head(steps)


class _TokenHead(nn.Module):
    """The network after a token layer, from the layer's (N, C, h, w) patch map and (N, P, C) prefix tokens."""

    def __init__(self, rest, layout, what: str):
        super().__init__()
        self.rest, self.layout, self.what = rest, layout, what

    def tokens(self, x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """The layer's token output again: prefix tokens, then the patch map's cells in row-major order."""
        if self.layout.kind == "tokens":
            return torch.cat([prefix.to(x.dtype), x.flatten(2).transpose(1, 2)], 1)
        return torch.cat([prefix.to(x.dtype).transpose(0, 1), x.flatten(2).permute(2, 0, 1)], 0)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return self.rest(self.tokens(x, prefix))


def token_head_after(model: nn.Module, layer: str, layout) -> tuple[_TokenHead | None, str]:
    """``(head, why)``: the network after token layer ``layer`` where it can be cut off (a timm or
    torchvision ``VisionTransformer`` at one of its blocks), else ``(None, why not)``."""
    parts = layer.split(".")
    try:
        from timm.models.vision_transformer import VisionTransformer as TimmViT
    except ImportError:  # pragma: no cover - timm is an optional extra
        TimmViT = None
    if TimmViT is not None and isinstance(model, TimmViT):
        cls = type(model)
        if cls.forward is not TimmViT.forward or cls.forward_features is not TimmViT.forward_features:
            return None, f"a token layer of {cls.__name__}, whose forward is not timm VisionTransformer's"
        if (len(parts) != 2 or parts[0] != "blocks" or not parts[1].isdigit()
                or not isinstance(model.blocks, nn.Sequential)):
            return None, "a token layer of a timm VisionTransformer that is not one of its blocks (blocks.K)"
        k = int(parts[1])
        rest_blocks = model.blocks[k + 1:]

        def rest(t):
            return model.forward_head(model.norm(rest_blocks(t)))
        return _TokenHead(rest, layout, f"timm {cls.__name__}: blocks[{k + 1}:], norm, forward_head"), ""
    try:
        from torchvision.models.vision_transformer import Encoder, VisionTransformer as TVViT
    except ImportError:  # pragma: no cover
        TVViT = None
    if TVViT is not None and isinstance(model, TVViT):
        if type(model).forward is not TVViT.forward or type(model.encoder).forward is not Encoder.forward:
            return None, f"a token layer of {type(model).__name__}, whose forward is not torchvision VisionTransformer's"
        names = [n for n, _ in model.encoder.layers.named_children()]
        if len(parts) != 3 or parts[:2] != ["encoder", "layers"] or parts[2] not in names:
            return None, ("a token layer of a torchvision VisionTransformer that is not one of its encoder layers "
                          "(encoder.layers.encoder_layer_K)")
        k = names.index(parts[2])
        rest_layers = model.encoder.layers[k + 1:]

        def rest(t):
            return model.heads(model.encoder.ln(rest_layers(t))[:, 0])
        return _TokenHead(rest, layout, f"torchvision VisionTransformer: encoder layers after {parts[2]}, "
                          "encoder.ln, class token, heads"), ""
    return None, (f"a token layer of {type(model).__name__}: the network after it is not a sequence of modules "
                  "(only timm and torchvision VisionTransformer blocks are cut off)")


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray, n_classes: int):
    """Per class ``(balanced accuracy, recall, true-negative rate)`` of "y vs every other image", and top-1 accuracy.

    ``pred`` may be ``(N,)`` or ``(M, N)`` (M evaluations); the outputs then gain a leading M axis.
    A class without images has NaN.
    """
    pred = np.asarray(pred)
    single = pred.ndim == 1
    pred = pred[None] if single else pred
    truth = np.asarray(truth)
    N = truth.shape[0]
    P = np.bincount(truth, minlength=n_classes)[:n_classes].astype(np.float64)
    M = pred.shape[0]
    flat = pred + n_classes * np.arange(M)[:, None]
    PP = np.bincount(flat.ravel(), minlength=M * n_classes).reshape(M, n_classes).astype(np.float64)
    hit = pred == truth[None]
    TP = np.bincount((flat[hit]), minlength=M * n_classes).reshape(M, n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = TP / P
        tn = (N - P) - (PP - TP)
        tnr = tn / (N - P)
    ba = (recall + tnr) / 2
    acc = hit.mean(1)
    if single:
        return ba[0], recall[0], tnr[0], float(acc[0])
    return ba, recall, tnr, acc


class Evaluator:
    """Top-1 predictions of ``model`` with units of ``layer`` ablated, from the layer's cached output."""

    def __init__(self, model: nn.Module, layer: str, prep=None, *, batch_size: int = 64,
                 device: str | torch.device = "cpu", fast: bool = True, progress: bool = True,
                 prefix_tokens: int | None = None, layout: str | None = None):
        self.model = model.eval()
        self.fast = fast
        self._prefixes = {}  # id(acts) -> (weakref to acts, their (N, P, C) prefix tokens): token heads only
        self.prefix_tokens, self.layout_force = prefix_tokens, layout
        self.layout = None  # found on the first images (hooks.tokens): a token layer's is not None
        self.layer = layer
        self.prep = prep
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.progress = progress
        with TraceDict(model, [layer]):  # checks the name now (LayerError with close names)
            pass
        self.head = head_after(model, layer) if fast else None
        self.mode = "head" if self.head is not None else "full"
        self.why_full = None if fast else "fast=False"
        if self.head is None and self.why_full is None:
            self.why_full = "the network after the layer is not a sequence of modules"
        self._checked = False

    # ---------------------------------------------------------------- inputs
    def _batch(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        x = x.to(self.device)
        return self.prep(x) if self.prep is not None else x

    def _run_head(self, x: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
        return self.head(x, prefix) if isinstance(self.head, _TokenHead) else self.head(x)

    def _check_head(self, x: torch.Tensor, act: torch.Tensor, prefix: torch.Tensor | None = None) -> None:
        if self._checked or self.head is None:
            return
        self._checked = True
        full = self.model(x)
        try:
            mine = self._run_head(act, prefix)
        except (RuntimeError, ValueError, TypeError, IndexError):
            mine = None
        if (mine is None or not isinstance(full, torch.Tensor) or mine.shape != full.shape
                or not torch.allclose(mine, full, rtol=1e-4, atol=1e-5 * float(full.abs().max()) + 1e-6)
                or not torch.equal(mine.argmax(1), full.argmax(1))):
            self.head, self.mode = None, "full"
            self.why_full = "the modules after the layer, run in order, do not reproduce the model's logits"

    @torch.inference_mode()
    def activations(self, images: np.ndarray, desc: str = "layer activations") -> torch.Tensor:
        """The layer's output for every image (float32, on the CPU), one forward pass that stops at the layer."""
        outs, pres = [], []
        self._find_layout(images)
        views = {self.layer: self.layout.to_map} if self.layout is not None else None
        if isinstance(self.head, _TokenHead):
            lay = self.layout

            def view(output, name):  # the patch map, and the prefix tokens the token head puts back
                m = lay.to_map(output, name)
                p = lay.prefix_view(output)
                pres.append(m.new_zeros(m.shape[0], 0, m.shape[1]) if p is None else p.clone())
                return m
            views = {self.layer: view}
        with TraceDict(self.model, [self.layer], stop=True, views=views) as tr:
            for s in tqdm(range(0, len(images), self.batch_size), desc=desc, unit="batch",
                          disable=not self.progress):
                x = self._batch(images[s:s + self.batch_size])
                a = run_to_layers(self.model, tr, x)[self.layer]
                if not isinstance(a, torch.Tensor) or a.dim() < 2:
                    raise LayerError(f"layer {self.layer!r} returns {type(a).__name__} "
                                     f"{tuple(getattr(a, 'shape', ()))}: ablation needs a (N, C, ...) tensor")
                if not torch.isfinite(a).all():
                    raise ActivationError(f"layer {self.layer!r} has NaN or infinite activations on images "
                                          f"{s}..{s + len(x) - 1}: ablation needs finite values")
                outs.append(a.float().cpu())
        prefix = torch.cat(pres).float().cpu() if pres else None
        acts = torch.cat(outs)
        if self.head is not None and not self._checked:
            with torch.inference_mode():
                # (the first 8 images, across batches: a batch smaller than 8 compared the wrong rows)
                x = self._batch(images[:min(8, len(images))])
                self._check_head(x, acts[:len(x)].to(self.device),
                                 None if prefix is None else prefix[:len(x)].to(self.device))
        if isinstance(self.head, _TokenHead):
            self._prefixes = {k: v for k, v in self._prefixes.items() if v[0]() is not None}
            self._prefixes[id(acts)] = (weakref.ref(acts), prefix)
        return acts

    def _prefix_of(self, acts: torch.Tensor, images) -> torch.Tensor:
        """The prefix tokens cached with ``acts`` (by :meth:`activations`), or found again from ``images``."""
        ref, prefix = self._prefixes.get(id(acts), (None, None))
        if ref is not None and ref() is acts:
            return prefix
        if images is None or len(images) != acts.shape[0]:
            raise NetDissectError("the token-layer head path needs the activations returned by "
                                  "Evaluator.activations (they carry the prefix tokens), or the images")
        again = self.activations(images)
        return self._prefixes[id(again)][1]

    def _find_layout(self, images: np.ndarray) -> None:
        """The layer's layout, from one image; a token layer or channels-last map falls back to full passes."""
        if self.layout is not None or not len(images):
            return
        from netdissect.hooks.tokens import find_layout, model_tokens

        x = self._batch(images[:1])
        with TraceDict(self.model, [self.layer], stop=True) as tr:
            raw = run_to_layers(self.model, tr, x)[self.layer]
        if isinstance(raw, torch.Tensor) and raw.dim() == 2 and self.layout_force is None:
            return  # (N, C) units (a pooled or fully connected layer): as they are
        lay = find_layout(self.layer, raw, x.shape[0], tuple(x.shape[-2:]), model_tokens(self.model),
                          self.prefix_tokens, self.layout_force)
        if lay.kind == "nchw" and not lay.item:
            return
        self.layout = lay
        if not self.fast:
            return
        if lay.is_tokens and not lay.item:
            self.head, why = token_head_after(self.model, self.layer, lay)
            self.mode = "head" if self.head is not None else "full"
            self.why_full = why or None
        elif self.head is not None:
            self.head, self.mode = None, "full"
            self.why_full = (f"a {'token layer' if lay.is_tokens else 'channels-last map'}: the network after it "
                             "is not a sequence of modules that takes its (N, C, H, W) view")

    # ---------------------------------------------------------------- predictions
    @torch.inference_mode()
    def predict(self, acts: torch.Tensor, ablate_sets: list, images: np.ndarray | None = None,
                desc: str | None = None, truth: np.ndarray | None = None, n_classes: int | None = None):
        """``(len(ablate_sets), N)`` top-1 predictions, each set of units ablated (``[]``: none).

        With ``truth`` and ``n_classes``, also ``(M, n_classes)``: per class the mean log-probability
        of the true class over that class's images (a finer score than accuracy, to break ties).
        """
        M, N = len(ablate_sets), acts.shape[0]
        C = acts.shape[1]
        out = np.empty((M, N), np.int64)
        want = truth is not None
        logp = np.zeros((M, N), np.float64) if want else None
        if self.head is None:
            if images is None:
                raise NetDissectError("the full-pass fallback needs the images, not only the activations")
            for m, units in enumerate(tqdm(ablate_sets, desc=desc, disable=not self.progress or not desc,
                                           unit="set")):
                out[m], lp = self.predict_full(images, units, truth)
                if want:
                    logp[m] = lp
        else:
            keep = torch.ones(M, C)
            for m, units in enumerate(ablate_sets):
                if len(units):
                    keep[m, torch.as_tensor(list(units), dtype=torch.long)] = 0
            per = max(1, (4 * self.batch_size) // max(1, min(N, self.batch_size)))  # ablations per pass
            pre_all = None
            if isinstance(self.head, _TokenHead):
                pre_all = self._prefix_of(acts, images)
                per = max(1, self.batch_size // max(1, min(N, self.batch_size)))  # a transformer's memory
            t_all = torch.as_tensor(truth) if want else None
            for s in tqdm(range(0, N, self.batch_size), desc=desc, disable=not self.progress or not desc,
                          unit="batch"):
                a = acts[s:s + self.batch_size].to(self.device)
                b = a.shape[0]
                for m0 in range(0, M, per):
                    kp = keep[m0:m0 + per].to(self.device)
                    k = kp.shape[0]
                    # x * 1 and x * 0 are exact for the finite activations: the same as apply_edit(a=1, v=0)
                    x = (a.unsqueeze(0) * kp.view(k, 1, C, *([1] * (a.dim() - 2)))).reshape(k * b, *a.shape[1:])
                    pre = None
                    if pre_all is not None:
                        p = pre_all[s:s + b].to(self.device)
                        pre = p.unsqueeze(0).expand(k, *p.shape).reshape(k * b, *p.shape[1:])
                    logits = self._run_head(x, pre).view(k, b, -1)
                    _finite(logits.reshape(k * b, -1), s, b)
                    out[m0:m0 + k, s:s + b] = logits.argmax(2).cpu().numpy()
                    if want:
                        lp = torch.log_softmax(logits.double(), 2)
                        idx = t_all[s:s + b].to(lp.device).view(1, b, 1).expand(k, b, 1)
                        logp[m0:m0 + k, s:s + b] = lp.gather(2, idx)[..., 0].cpu().numpy()
        if not want:
            return out
        cnt = np.bincount(truth, minlength=n_classes)[:n_classes]
        sums = np.stack([np.bincount(truth, weights=row, minlength=n_classes)[:n_classes] for row in logp])
        with np.errstate(invalid="ignore", divide="ignore"):
            return out, sums / cnt[None]

    @torch.inference_mode()
    def predict_full(self, images: np.ndarray, units, truth: np.ndarray | None = None):
        """Top-1 predictions (and the true class's log-probability) of full forward passes with
        ``units`` ablated: the naive path."""
        preds, lps = [], []
        with ablate(self.model, self.layer, units=list(units), layout=self.layout):
            for s in range(0, len(images), self.batch_size):
                logits = self.model(self._batch(images[s:s + self.batch_size]))
                _finite(logits, s, len(logits))
                preds.append(logits.argmax(1).cpu().numpy())
                if truth is not None:
                    lp = torch.log_softmax(logits.double(), 1)
                    t = torch.as_tensor(truth[s:s + len(logits)], device=lp.device).view(-1, 1)
                    lps.append(lp.gather(1, t)[:, 0].cpu().numpy())
        return np.concatenate(preds), (np.concatenate(lps) if truth is not None else None)


def _finite(logits: torch.Tensor, start: int, b: int) -> None:
    """Refuse NaN or infinite logits (argmax would silently predict class 0), naming the images."""
    ok = torch.isfinite(logits).all(-1)
    if not bool(ok.all()):
        rows = sorted({start + int(i) % b for i in (~ok).nonzero().flatten().tolist()})
        raise ActivationError(f"the model gives NaN or infinite logits on image(s) {rows[:8]} (rows of the split, "
                              "from 0): its weights or the images are broken; no prediction is made from them")


def importance_table(ev: Evaluator, acts: torch.Tensor, truth: np.ndarray, n_classes: int,
                     images: np.ndarray | None = None, *, checkpoint=None, chunk: int = 16,
                     desc: str = "importance"):
    """``(baseline balanced accuracy (K,), importance (C, K), log-probability drop (C, K), predictions (C + 1, N))``.

    ``importance[u, y]`` = balanced accuracy of y with nothing ablated minus with unit u alone
    ablated; ``logp_drop[u, y]`` the drop of the mean log-probability of y on y's images (used
    only to order units whose accuracy drop ties).  ``checkpoint`` (a :class:`Checkpoint`) keeps the predictions of finished units, so a
    killed run resumes where it stopped.
    """
    C = acts.shape[1]
    N = acts.shape[0]
    state = checkpoint.load(C + 1, N, n_classes) if checkpoint is not None else None
    if state is None:
        preds, logp, done = np.full((C + 1, N), -1, np.int64), np.zeros((C + 1, n_classes)), np.zeros(C + 1, bool)
    else:
        preds, logp, done = state
    todo = [i for i in range(C + 1) if not done[i]]
    sets = [[] if i == 0 else [i - 1] for i in range(C + 1)]
    bar = tqdm(total=C + 1, initial=C + 1 - len(todo), desc=desc, unit="unit", disable=not ev.progress)
    for s in range(0, len(todo), chunk):
        idx = todo[s:s + chunk]
        preds[idx], logp[idx] = ev.predict(acts, [sets[i] for i in idx], images, truth=truth,
                                           n_classes=n_classes)
        done[idx] = True
        if checkpoint is not None:
            checkpoint.save(preds, logp, done)
        bar.update(len(idx))
    bar.close()
    ba = balanced_accuracy(preds, truth, n_classes)[0]
    return ba[0], ba[0][None, :] - ba[1:], logp[0][None, :] - logp[1:], preds


class Checkpoint:
    """Predictions of finished ablations in one ``.npz`` (written atomically), keyed by what they depend on."""

    def __init__(self, path, key: str):
        from pathlib import Path
        self.path, self.key = Path(path), key

    def load(self, M: int, N: int, K: int):
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as z:
                if str(z["key"]) != self.key or z["preds"].shape != (M, N) or z["logp"].shape != (M, K):
                    return None
                return z["preds"].copy(), z["logp"].copy(), z["done"].copy()
        except (OSError, ValueError, KeyError):
            return None  # a torn or foreign file: start over

    def save(self, preds, logp, done) -> None:
        from netdissect.atomic import savez
        savez(self.path, preds=preds, logp=logp, done=done, key=np.asarray(self.key))


def ranking(importance: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """``(K, C)``: per class, units from most to least important.

    Ties of the accuracy drop are ordered by ``tiebreak`` (larger first: the drop of the class's
    log-probability), then by unit number.
    """
    C, K = importance.shape
    tb = np.zeros_like(importance) if tiebreak is None else np.nan_to_num(tiebreak, nan=0.0)
    imp = np.nan_to_num(importance, nan=0.0)
    units = np.arange(C)
    return np.stack([np.lexsort((units, -tb[:, y], -imp[:, y])) for y in range(K)])


def removal_curves(ev: Evaluator, acts, truth, n_classes: int, order: np.ndarray, sizes, images=None,
                   desc: str = "set removal"):
    """Rows ``(class, mode, n, balanced_accuracy, all_class_accuracy)`` removing per class its n most
    important units (``most_important``) or all but them (``all_but_most_important``)."""
    C = acts.shape[1]
    sizes = sorted({min(int(n), C) for n in sizes if int(n) >= 1})
    sets, keys = [], []
    for y in range(n_classes):
        for n in sizes:
            top = order[y, :n].tolist()
            sets.append(top)
            keys.append((y, "most_important", n))
            sets.append(order[y, n:].tolist())
            keys.append((y, "all_but_most_important", n))
    preds = ev.predict(acts, sets, images, desc=desc)
    ba, _, _, acc = balanced_accuracy(preds, truth, n_classes)
    return [(y, mode, n, float(ba[m, y]), float(acc[m])) for m, (y, mode, n) in enumerate(keys)]


def peaks(acts: torch.Tensor) -> np.ndarray:
    """``(N, C)`` each unit's peak (spatial max) activation per image."""
    return acts.flatten(2).amax(2).numpy() if acts.dim() > 2 else acts.numpy()


def best_thresholds(peak: np.ndarray, is_pos: np.ndarray):
    """Per unit the threshold t maximising the balanced accuracy of "peak > t means positive".

    Returns ``(thresholds (C,), balanced accuracy (C,))``; t is the midpoint between consecutive
    distinct peak values (below the minimum: everything positive).
    """
    N, C = peak.shape
    P = is_pos.sum()
    Nn = N - P
    if P == 0 or Nn == 0:
        return np.full(C, np.nan), np.full(C, np.nan)
    order = np.argsort(-peak, axis=0, kind="stable")
    v = np.take_along_axis(peak, order, 0)                      # descending
    pos = is_pos[order].astype(np.float64)
    tp = np.cumsum(pos, 0)                                      # predicting the first i+1 positive
    fp = np.cumsum(1 - pos, 0)
    ba = (tp / P + (Nn - fp) / Nn) / 2
    valid = np.ones_like(ba, bool)
    valid[:-1] = v[:-1] != v[1:]                                # a cut only between distinct values
    ba_v = np.where(valid, ba, -np.inf)
    i = ba_v.argmax(0)
    cols = np.arange(C)
    best = ba_v[i, cols]
    nxt = np.where(i + 1 < N, v[np.minimum(i + 1, N - 1), cols], v[i, cols] - 1.0)
    thr = (v[i, cols] + nxt) / 2
    none_ba = 0.5  # predicting nothing positive
    worse = best < none_ba
    thr[worse] = v[0, cols][worse]
    best[worse] = none_ba
    return thr.astype(np.float64), best


def threshold_ba(peak: np.ndarray, is_pos: np.ndarray, thr: np.ndarray) -> np.ndarray:
    pred = peak > thr[None]
    P = is_pos.sum()
    Nn = len(is_pos) - P
    if P == 0 or Nn == 0:
        return np.full(peak.shape[1], np.nan)
    tpr = (pred & is_pos[:, None]).sum(0) / P
    tnr = (~pred & ~is_pos[:, None]).sum(0) / Nn
    return (tpr + tnr) / 2


def unit_classifiers(train_peak, train_y, val_peak, val_y, n_classes: int):
    """Rows ``(class, unit, threshold, train_ba, val_ba)`` for every class and unit, best train first per class."""
    rows = []
    for y in range(n_classes):
        thr, tr = best_thresholds(train_peak, train_y == y)
        va = threshold_ba(val_peak, val_y == y, thr)
        for u in np.lexsort((np.arange(len(tr)), -np.nan_to_num(tr, nan=-1))):
            rows.append((y, int(u), float(thr[u]), float(tr[u]), float(va[u])))
    return rows
