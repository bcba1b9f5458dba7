"""Dissect a layer in another basis of its channels, from one forward pass.

    >>> from netdissect.experiments.basis import ActivationRun
    >>> with ActivationRun("zoo:scene-cnn", "conv5", "runs/world") as run:    # doctest: +SKIP
    ...     plain = run.dissect_basis(None)                 # the units themselves
    ...     turned = run.dissect_basis(Q)                   # units are the rows of Q (K x C)

A basis is a (K, C) matrix M whose rows are directions in the layer's channel space: the
"unit" k of the dissection reads ``M[k] . f(x)[:, i, j]`` at every position, i.e. the layer
followed by a 1 x 1 convolution with weights M (:class:`BasisLayer`).  Pass 1 (the model)
runs once and caches the activations exactly (float32); every basis is then pass 1's
statistics (threshold, top images) recomputed from the cache projected on M, and pass 2
(IoU) on them (the projections are cached too, one basis at a time).  The result equals dissecting the model whose layer is followed by
:class:`BasisLayer` (M applied in float64, rounded to float32, in both paths).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netdissect.errors import LayerError, NetDissectError

__all__ = ["ActivationRun", "BasisLayer", "apply_basis", "check_basis", "load_basis", "pca_basis", "ica_basis"]


def apply_basis(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) activations -> (N, K, h, w) float32 projections on the rows of ``M`` (K, C),
    computed in float64 (so that the rounding does not depend on how rows are batched)."""
    y = torch.einsum("kc,nchw->nkhw", M.to(x.device, torch.float64), x.to(torch.float64))
    return y.to(torch.float32)


class BasisLayer(nn.Module):
    """A 1 x 1 convolution by ``M`` (K, C), computed as :func:`apply_basis`: put after a layer to
    dissect that layer in the basis M the ordinary way."""

    def __init__(self, M):
        super().__init__()
        self.register_buffer("M", torch.as_tensor(np.asarray(M), dtype=torch.float64))

    def forward(self, x):
        return apply_basis(x, self.M)


def check_basis(M, channels: int, where: str = "basis") -> np.ndarray:
    """``M`` as a finite float64 (K, C) matrix for a layer of ``channels`` channels."""
    M = np.asarray(M)
    if M.ndim != 2:
        raise NetDissectError(f"{where}: a basis is a 2-D matrix (directions x channels), got shape {M.shape}")
    if M.shape[1] != channels:
        hint = " (transpose it: rows must be the directions)" if M.shape[0] == channels else ""
        raise NetDissectError(f"{where}: a basis for a layer of {channels} channels must have {channels} "
                              f"columns, got shape {M.shape}{hint}")
    if M.shape[0] < 1:
        raise NetDissectError(f"{where}: the basis has no directions (shape {M.shape})")
    if not np.issubdtype(M.dtype, np.number) or np.iscomplexobj(M):
        raise NetDissectError(f"{where}: a basis must hold real numbers, got dtype {M.dtype}")
    M = M.astype(np.float64)
    if not np.isfinite(M).all():
        raise NetDissectError(f"{where}: the basis holds NaN or infinite values")
    zero = np.flatnonzero(~np.any(M != 0, axis=1))
    if len(zero):
        raise NetDissectError(f"{where}: direction {int(zero[0])} is all zeros")
    return M


def load_basis(path, channels: int) -> np.ndarray:
    """A user's basis from ``.npy`` or ``.safetensors`` (one tensor, or ``FILE.safetensors:KEY``),
    rows = directions (e.g. a sparse autoencoder's decoder dictionary, transposed if need be)."""
    text = str(path)
    key = None
    if ".safetensors:" in text:
        text, key = text.rsplit(":", 1)
    p = Path(text)
    if not p.is_file():
        raise NetDissectError(f"basis file {p}: not found")
    if p.suffix == ".npy":
        try:
            M = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise NetDissectError(f"basis file {p}: not a readable .npy array ({exc})") from None
    elif p.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(p))
        except Exception as exc:  # safetensors raises its own error types
            raise NetDissectError(f"basis file {p}: not a readable safetensors file ({exc})") from None
        if key is None:
            if len(tensors) != 1:
                raise NetDissectError(f"basis file {p} holds {len(tensors)} tensors ({', '.join(sorted(tensors))}): "
                                      f"name one as {p}:KEY")
            key = next(iter(tensors))
        if key not in tensors:
            raise NetDissectError(f"basis file {p}: no tensor {key!r} (it has {', '.join(sorted(tensors))})")
        M = tensors[key]
    else:
        raise NetDissectError(f"basis file {p}: expected a .npy or .safetensors file")
    return check_basis(M, channels, where=f"basis file {p}")


class ActivationRun:
    """Pass 1 of one layer (the model's only forward pass), kept for dissections in many bases.

    Use as a context manager (the cache lives in a temporary folder, or in ``work``, and is
    removed on exit).  Arguments are those of :func:`netdissect.dissect`.

    A token layer (a transformer block) is cached as its (N, C, h, w) patch map, as ``dissect`` does
    (:mod:`netdissect.hooks.tokens`; ``prefix_tokens``, ``layout`` as ``--prefix-tokens``/``--layout``;
    ``size`` resizes the images for a fixed-size ViT with the model's recorded interpolation), so a
    basis of C directions rotates the feature dimension C of every patch token.
    """

    def __init__(self, model, layer: str, dataset, *, weights=None, normalize=None, seed: int = 0,
                 quantile: float = 0.005, iou_threshold: float = 0.04, topk: int = 10, batch_size: int = 64,
                 num_workers: int | None = None, device: str = "cpu", split=None, limit=None,
                 quantile_memory: int = 256 << 20, progress: bool = False, work=None, model_spec=None,
                 size: int | None = None, prefix_tokens: int | None = None, layout: str | None = None):
        from netdissect.data import Broden
        from netdissect.dissection.config import DissectConfig, default_workers

        if not isinstance(layer, str) or not layer:
            raise LayerError(f"name one layer to dissect, got {layer!r}")
        self.cfg = DissectConfig(quantile=quantile, iou_threshold=iou_threshold, topk=topk, batch_size=batch_size,
                                 num_workers=default_workers() if num_workers is None else num_workers,
                                 cache_dtype="float32", device=device, skip_bad=False, split=split, limit=limit,
                                 precision="fp32", quantile_memory=quantile_memory, seed=seed)
        self.cfg.check()
        if isinstance(dataset, Broden) and (split is not None or limit is not None):
            raise NetDissectError("split= and limit= select rows when the dataset is a path; for a Broden object "
                                  "pass them to it")
        self.model_arg, self.layer, self.dataset_arg = model, layer, dataset
        self.size, self.prefix_tokens, self.layout_force = size, prefix_tokens, layout
        self.layout = None  # a token layer's or channels-last map's Layout, found on the first image
        self.weights, self.normalize, self.progress = weights, normalize, progress
        self.model_spec = model if isinstance(model, str) else (model_spec or type(model).__name__)
        self._work_given = work
        self.work = None
        self.state = None
        self.timing = {}

    # ------------------------------------------------------------------ pass 1
    def __enter__(self) -> "ActivationRun":
        try:
            self._pass1()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None
        if self.work is not None and self._work_given is None:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work = None

    def _pass1(self) -> None:
        from netdissect.concepts import BrodenMasks
        from netdissect.data import Broden
        from netdissect.dissection.activations import ActivationPass
        from netdissect.dissection.distributed import Group, resolve_device
        from netdissect.dissection.merges import merge_pass1
        from netdissect.dissection.state import RunState
        from netdissect.hooks import resolve_layer
        from netdissect.models import describe_weights, forward_error, load_model, model_identity
        from netdissect.probe import BrodenImages

        cfg = self.cfg
        cfg.device = resolve_device(cfg.device)
        given = self.model_arg
        model, prep = load_model(given, weights=self.weights, normalize=self.normalize, seed=cfg.seed)
        resolve_layer(model, self.layer)
        ds = self.dataset_arg if isinstance(self.dataset_arg, Broden) else Broden(self.dataset_arg, split=cfg.split,
                                                                                    limit=cfg.limit)
        resample = getattr(prep, "interpolation", None) if self.size is not None else None
        self.ds, self.probe, self.source = ds, BrodenImages(ds, size=self.size, interpolation=resample), BrodenMasks(ds)
        model.eval()
        model = model.to(cfg.device)
        if len(ds):  # the layer's layout on the first image: a token layer is traced as its patch map
            from netdissect.hooks.tokens import probe_layout

            x0 = self.probe.batch([self.probe.load(0)], cfg.device)
            with torch.no_grad():
                try:
                    lay = probe_layout(model, self.layer, prep(x0), self.prefix_tokens, self.layout_force)
                except NetDissectError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the model fails on the images: say why, in one line
                    err, want = forward_error(given, tuple(x0.shape), exc, normalize=prep.describe()), prep.size
                    if want and tuple(x0.shape[-2:]) != tuple(want):  # a ViT built for 224 px, given 227 px
                        from netdissect.errors import ModelError

                        err = ModelError(f"{err} (the model is built for {want[0]}x{want[1]} images and these are "
                                         f"{x0.shape[-2]}x{x0.shape[-1]}: pass --size {want[0]} to resize them)")
                    raise err from None
            if lay.kind != "nchw" or lay.item:
                self.layout = lay
        self.identity = {
            "model": {"spec": self.model_spec, "weights": self.weights,
                      "weights_description": describe_weights(given, self.weights, cfg.seed), "seed": cfg.seed,
                      "normalize": prep.describe(), "sha256": model_identity(model)},
            "dataset": self.probe.identity(), "labels": self.source.identity(), "layers": [self.layer],
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("num_workers", "device")},
            **({"layouts": {self.layer: self.layout.to_json()}} if self.layout is not None else {}),
        }
        if self._work_given is not None:
            self.work = Path(self._work_given)
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix="netdissect-basis-"))
        self.group = Group()
        st = RunState([self.layer], self.probe, self.source, cfg, self.work)
        if self.layout is not None:
            st.layouts = {self.layer: self.layout}  # traced as the (N, C, h, w) patch map (a view)
        self.state = st

        def explain(shape, exc):
            return forward_error(given, shape, exc, normalize=prep.describe())

        t0 = time.monotonic()
        with torch.no_grad():
            ActivationPass(st, model, prep, self.progress, explain=explain).run(float("inf"))
        if self.layer not in st.shapes:
            raise NetDissectError(f"no usable row in {self.probe.describe()}")
        merge_pass1(st, self.group)
        self.timing["activations"] = time.monotonic() - t0
        del model

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the layer's output."""
        return self.state.shapes[self.layer]

    @property
    def channels(self) -> int:
        return self.shape[0]

    def blocks(self, rows: int = 64):
        """The cached activations, (n, C, h, w) float32 numpy blocks of ``rows`` rows, in row order."""
        cache = self.state.caches[self.layer]
        for s in range(0, cache.rows, rows):
            yield cache.read(s, min(s + rows, cache.rows))

    def positions(self, limit: int | None = None, seed: int = 0) -> np.ndarray:
        """Channel vectors at the cached positions, (m, C) float64: all of them, or ``limit``
        sampled uniformly without replacement (seeded)."""
        C, h, w = self.shape
        total = self.state.caches[self.layer].rows * h * w
        pick = None
        if limit is not None and limit < total:
            pick = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
        out, base = [], 0
        for a in self.blocks():
            v = a.transpose(0, 2, 3, 1).reshape(-1, C)
            if pick is None:
                out.append(v.astype(np.float64))
            else:
                sel = pick[(pick >= base) & (pick < base + len(v))] - base
                out.append(v[sel].astype(np.float64))
            base += len(v)
        return np.concatenate(out)

    # ------------------------------------------------------------------ pass 2 per basis
    def dissect_basis(self, M=None, progress: bool | None = None):
        """The layer's :class:`~netdissect.dissection.result.LayerResult` in basis ``M`` (K, C)
        (None: the units themselves, the ordinary dissection)."""
        from netdissect.dissection.counting import run_iou_pass
        from netdissect.dissection.merges import merge_pass1, merge_pass2
        from netdissect.dissection.state import RunState
        from netdissect.stats import TopImages, TopQuantile

        progress = self.progress if progress is None else progress
        st0, name = self.state, self.layer
        t0 = time.monotonic()
        if M is None:
            st = st0
            if st.phase != 1:
                raise NetDissectError("the unit basis was dissected already: reuse its result")
        else:
            M = check_basis(M, self.channels)
            st = RunState([name], self.probe, self.source, self.cfg, self.work)
            K, (h, w) = M.shape[0], self.shape[1:]
            st.shapes[name] = (K, h, w)
            # the projections are computed once and cached (float32, exact: the values every
            # statistic sees), as pass 1 caches the layer; the file goes when this basis is done
            from netdissect.dissection.cache import ActivationCache

            st.caches[name] = ActivationCache(self.work / "basis.acts", st0.caches[name].rows, (K, h, w))
            try:
                st.quantiles[name] = TopQuantile(K, self.cfg.quantile, total=len(self.probe) * h * w,
                                                 device=st.device, memory=self.cfg.quantile_memory)
            except ValueError as exc:
                raise NetDissectError(f"--quantile-memory {self.cfg.quantile_memory} bytes is too small for "
                                      f"{K} directions: {exc}") from None
            st.tops[name] = TopImages(K, st.topk, (h, w))
            base, cache = st0.caches[name], st.caches[name]
            Mt = torch.from_numpy(M)
            step = self.cfg.batch_size
            try:
                for s in range(0, base.rows, step):
                    e = min(s + step, base.rows)
                    a = apply_basis(torch.from_numpy(base.read(s, e)), Mt)
                    cache.write(s, a.numpy())
                    a = a.to(st.device)
                    st.quantiles[name].add(a.transpose(0, 1).reshape(K, -1))
                    st.tops[name].add(a, torch.arange(s, e))
                merge_pass1(st, self.group)
            except BaseException:
                cache.close()
                cache.path.unlink(missing_ok=True)
                raise
        try:
            st.start_pass2()
            run_iou_pass(st, float("inf"), progress)
            merge_pass2(st, self.group)
            result = st.results()[name]
        finally:
            if st is not st0:
                st.close()
                st.caches[name].path.unlink(missing_ok=True)
        self.all_unknown, self.all_positions = st.all_unknown, st.all_positions
        self.timing.setdefault("bases", []).append(time.monotonic() - t0)
        return result

    # ------------------------------------------------------------------ a normal run folder
    def write_run(self, out, result, basis: dict) -> dict:
        """Write ``result`` as an ordinary run directory (report, compare and load work on it);
        ``basis`` (how the directions were made) goes into summary.json and its identity."""
        from netdissect.data.digest import files_digest
        from netdissect.dissection.output import build_summary, write_run

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        identity = {**self.identity, "basis": basis}
        timing = {"activations": self.timing.get("activations", 0.0), "iou": sum(self.timing.get("bases", []))}
        summary = build_summary(identity, self.probe, self.source, self.cfg.device, {}, self.all_unknown, timing,
                                {self.layer: result}, extra={"basis": basis,
                                                             "cache": {"dtype": "float32", "exact": True},
                                                             "precision": {"asked": "fp32", "used": "fp32"}})
        summary["dataset"]["files_digest"] = files_digest(self.ds.image_dir, [r.image for r in self.ds.rows])
        write_run(out, self.probe, {self.layer: result}, summary)
        return summary


def pca_basis(run: ActivationRun, limit: int | None = 200_000, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Principal directions of the layer's channel vectors over the probe (every position, or
    ``limit`` sampled): rows sorted by decreasing variance, each signed so that the mean
    activation projects positively."""
    X = run.positions(limit, seed)
    mean = X.mean(0)
    cov = np.cov(X, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    M = vecs[:, order].T
    M *= np.where(M @ mean < 0, -1.0, 1.0)[:, None]
    return M, {"kind": "pca", "positions": int(len(X)), "explained_variance": [float(v) for v in vals[order]]}


def ica_basis(run: ActivationRun, limit: int | None = 50_000, seed: int = 0,
              max_iter: int = 400) -> tuple[np.ndarray, dict]:
    """Independent directions (scikit-learn FastICA, unit-variance whitening) over ``limit``
    sampled positions; rows are the unmixing filters, each signed to a positive heavy tail."""
    import warnings

    try:
        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:
        raise NetDissectError("--basis ica needs scikit-learn: pip install scikit-learn") from None
    X = run.positions(limit, seed)
    keep = X.std(0) > 0
    C = X.shape[1]
    n = int(keep.sum())
    if n == 0:
        raise NetDissectError("every channel of the layer is constant over the probe: no independent directions")
    ica = FastICA(n_components=n, whiten="unit-variance", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        S = ica.fit_transform(X[:, keep])
    W = np.zeros((n, C))
    W[:, keep] = ica.components_
    skew = ((S - S.mean(0)) ** 3).mean(0)
    W *= np.where(skew < 0, -1.0, 1.0)[:, None]
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return W, {"kind": "ica", "positions": int(len(X)), "components": n, "iterations": int(ica.n_iter_),
               "converged": converged, "seed": seed}
