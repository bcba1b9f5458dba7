"""The dissection engine: one forward pass, then IoU from an on-disk cache.

    >>> from netdissect import dissect
    >>> result = dissect("torchvision:resnet18", layers=["layer4"],
    ...                  dataset="path/to/broden1_224", out="runs/r18")   # doctest: +SKIP

and, run here, a random 8-unit conv layer on a tiny synthetic world (``world``: 6 images of 32 px):

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> result = dissect(net, ["1"], world, out="runs/tiny", normalize="none", progress=False)
    >>> print(result.table())                                           # doctest: +ELLIPSIS
    layer  units  detectors     color    object      part  material     scene   texture
    1          8 ...
    >>> result["1"].iou.shape                     # (units, concepts)
    (8, 79)

The pipeline, one module per stage: a **probe** (:mod:`netdissect.probe`: what
is fed to the model, row by row) and a **concept source**
(:mod:`netdissect.concepts`: the label planes of each row); pass 1
(:mod:`.activations`) runs the model once over every row (no autograd,
stopping after the last requested layer), writes each layer's activations to
an exact on-disk cache (float32; float16 on request) and streams the exact
per-unit top quantile and each unit's top images; pass 2 (:mod:`.counting`)
reads the cache back with the concept labels and counts each unit's
thresholded, upsampled mask against them.  :class:`.state.RunState` holds the
caches, statistics and checkpoints; a killed run resumes (``resume=True``) to
the same result.

The same code runs as one process or as the ranks of ``torchrun``
(:mod:`.distributed`, :mod:`.merges`): each rank takes a contiguous slice of
the rows, the statistics merge exactly between the passes and at the end, and
rank 0 writes the run.  ``chunk=(i, n)`` runs pass 1 on slice i of n only and
stops (keeping its rows' segmenter labels, and a generator's top images, in the
chunk folder); :func:`netdissect.dissection.chunks.merge_chunks` completes the run.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.data import Broden
from netdissect.data.digest import files_digest
from netdissect.dissection.activations import ActivationPass
from netdissect.dissection import config, kernel
from netdissect.dissection.config import CACHE_DTYPES, DissectConfig, default_workers, resolve_precision
from netdissect.dissection.counting import run_iou_pass
from netdissect.dissection.inputs import Inputs, resolve_generator_inputs, resolve_inputs
from netdissect.dissection.pnas import ExactStream, ScanWorker, pnas_thresholds
from netdissect.dissection.distributed import Group, shard_rows
from netdissect.dissection.merges import merge_pass1, merge_pass2
from netdissect.dissection.output import (IMAGES_IN_RUN, build_summary, generated_image_paths, top_rows,
                                          write_generated_images, write_run)
from netdissect.dissection.result import DissectionResult
from netdissect.dissection.state import RunState
from netdissect.errors import DatasetError, LayerError, ModelError, NetDissectError
from netdissect.hooks import TraceDict, check_layers, resolve_layer, run_to_layers
from netdissect.models import describe_weights, forward_error, load_model, model_identity, preserved, spec_name
from netdissect.stats.quantile import quantile_plan
from netdissect.runfolder import CHUNK_FILE, CHUNK_LABELS, RunLock, check_out, has_progress, read_chunk_info, read_json

IDENTITY_FILE = "identity.json"
MAX_UNKNOWN_SHARE = 0.01  # label-plane positions whose number label.csv does not list

__all__ = ["dissect", "DissectConfig", "CHUNK_FILE", "default_workers", "parse_chunk", "check_unknown_labels"]


def _fingerprint(identity: dict) -> str:
    return json.dumps(identity, sort_keys=True)


def parse_chunk(chunk) -> tuple[int, int] | None:
    """``"i/n"`` or ``(i, n)`` -> (i, n) with 0 <= i < n; None stays None."""
    if chunk is None:
        return None
    try:
        i, n = (int(v) for v in (chunk.split("/") if isinstance(chunk, str) else chunk))
    except (TypeError, ValueError):
        raise NetDissectError(f"chunk must be I/N (e.g. 0/8: the first of 8 chunks), got {chunk!r}") from None
    if not 0 <= i < n:
        raise NetDissectError(f"chunk {i}/{n}: I must be in 0..{n - 1}")
    return i, n


def check_unknown_labels(unknown: int, positions: int, where: str) -> str | None:
    """A console message when labels hold numbers the catalogue does not list; an error above
    :data:`MAX_UNKNOWN_SHARE` of all label-plane positions (a mask format problem, not a few strays)."""
    if not unknown:
        return None
    share = unknown / max(positions, 1)
    msg = (f"{where}: {unknown:,} label-plane positions ({share:.2%}) hold label numbers that label.csv "
           "does not list; they count as unlabelled")
    if share > MAX_UNKNOWN_SHARE:
        raise DatasetError(f"{msg}. Above {MAX_UNKNOWN_SHARE:.0%} this is a mask format problem (masks must be "
                           "RGB PNGs with label = R + 256 G, see docs/run-format.md): fix the masks or label.csv")
    return msg


def dissect(
    model: nn.Module | str,
    layers: str | list[str],
    dataset: str | os.PathLike | Broden | None = None,
    *,
    images: str | os.PathLike | None = None,
    segmenter=None,
    iou: str | None = None,
    seg_size=None,
    label_cache: str | os.PathLike | None = None,
    quad_parts: bool = False,
    size: int | None = None,
    crop: bool = False,
    out: str | os.PathLike | None = None,
    weights: str | None = None,
    normalize: str | None = None,
    quantile: float | None = None,
    iou_threshold: float = 0.04,
    topk: int = 10,
    batch_size: int = 64,
    num_workers: int | None = None,
    cache_dtype: str = "float32",
    device: str = "cpu",
    precision: str = "fp32",
    skip_bad: bool = False,
    split: str | None = None,
    limit: int | None = None,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: float = 60.0,
    chunk: str | tuple[int, int] | None = None,
    model_spec: str | None = None,
    quantile_memory: int = 256 << 20,
    seed: int = 0,
    samples=None,
    latent_seed: int | None = None,
    z_dim: int | None = None,
    prefix_tokens: int | None = None,
    layouts: dict | None = None,
    scorecard: bool | None = None,
    fdr: float = 0.05,
    holdout: float = 0.2,
    scorecard_seed: int = 0,
    keep_cache: bool = False,
    auroc_threshold: float = 0.9,
) -> DissectionResult | None:
    """Dissect ``layers`` of ``model`` on a Broden-format ``dataset``, a folder of ``images``, or
    (a generator) ``samples`` latent vectors.

    Parameters
    ----------
    model : an ``nn.Module`` taking (N, 3, H, W) RGB batches, or a spec such as
        ``"torchvision:resnet18"``, ``"zoo:scene-cnn"``, ``"file.py:factory"``.  A module is
        left as it was found (training flags, device, memory format).
    layers : dotted names of submodules whose outputs are (N, C, H, W); ``NAME#K`` for the K-th
        call of a module that runs more than once per forward.
    dataset : path to a Broden-format folder, or a :class:`netdissect.data.Broden` (then
        ``split``/``limit`` must be given to the Broden itself).
    images : instead of ``dataset``, a folder of images (recursive; ``docs/segmenters.md``),
        labelled by ``segmenter``.
    segmenter : a segmenter spec (``"zoo:world-seg+color"``, ``"hf:PATH"``, ``"file.py:factory"``)
        or object (:mod:`netdissect.segment`); its labels replace the dataset's masks.
    iou : ``"broden"`` (CVPR 2017: thresholds at the layer's resolution, sums over the images
        holding the concept's category; the default with a dataset) or ``"pnas"`` (PNAS 2020:
        thresholds over the upsampled activation, one pooled count; the default with a segmenter).
    seg_size : label size N or (H, W) of the segmenter (default: the image size / 4).
    label_cache : folder of the label cache (default under the user's cache folder).
    quad_parts : add ``<object>-top/-bottom/-left/-right`` parts of every object component.
    size, crop : resize the images of ``images`` to ``size`` x ``size`` (``crop``: shorter side,
        then the centre square); default: the first image's size.  With a ``dataset``, ``size``
        resizes each whole image (no crop) before the model, and the masks keep their size (for
        models that need a fixed input size, e.g. a ViT at 224 px: docs/transformers.md).
    out : run directory to write (``docs/run-format.md``); None keeps results in memory only.
    weights, normalize, seed : see :func:`netdissect.models.load_model` (``seed`` seeds random
        initialisation, e.g. ``weights="none"``; recorded in summary.json).
    quantile : the top quantile q defining each unit's threshold (default 0.005 as CVPR 2017 with
        ``iou="broden"``, 0.01 as PNAS 2020 with ``iou="pnas"``).
    iou_threshold : a unit is a detector when its best IoU exceeds this (0.04).
    topk : how many top images (by peak activation) to keep per unit.
    cache_dtype : ``float32`` (default: exact) or ``float16`` (half the disk; lossy: rounding creates
        ties at the thresholds, counted in summary.json as ``lossy_cache``).
    device : ``cpu``, ``cuda`` (under torchrun: ``cuda:LOCAL_RANK``), ``cuda:1``, ...
    precision : ``fp32`` (default) or ``bf16``: the forward pass under ``torch.autocast`` in bfloat16,
        only where the device runs bf16 natively (AVX512-BF16/AMX CPUs, CUDA >= 8.0); elsewhere a
        warning and fp32 (summary.json records the precision used).
    skip_bad : skip (and count in summary.json) rows with missing or corrupt files instead of failing.
        Pass 1 then reads each row's masks too, so a skipped row enters no statistic at all.
    resume : continue a killed run in ``out`` from its last checkpoint.
    checkpoint_every : seconds between checkpoints.
    chunk : ``"i/n"``: run pass 1 on the i-th of n contiguous slices of the rows into the chunk
        folder ``out`` and stop (returns None); ``netdissect merge`` (:func:`merge_chunks`) completes
        the run from all n chunk folders (a dataset's masks or segmenter labels, either ``iou``;
        a generator's chunk also keeps its top images).
    quantile_memory : bytes the threshold statistic may hold per layer (exact in any case).
    samples : a generator's probe (``docs/gan.md``): N latent samples (or a
        :class:`netdissect.probe.latent.LatentSamples`), z row i = row i of
        ``numpy.random.RandomState(seed).standard_normal((N, z_dim))``.  ``model`` is then a generator
        (``proggan:PATH``, ``zoo:world-gan``, a module mapping z (N, z_dim) to images); ``segmenter``
        labels its outputs, segmented in the forward pass that records the layers (never written as
        files); ``iou`` defaults to ``"pnas"``, ``seg_size`` to the output size / 4 but at least 32 px;
        ``normalize`` names how its outputs are normalised (default ``0.5,0.5``: [-1, 1] ->
        (y + 1) / 2).  With ``out``, the units' top images are regenerated into ``out/images/``.
    latent_seed : the seed of the latent draw (default: ``seed``, which also seeds random init).
    z_dim : the latent size of a generator module without a ``z_dim`` attribute.
    prefix_tokens : the number of prefix tokens (class, distillation, register) before the patch
        tokens of the model's token layers, where the model does not say (``docs/transformers.md``).
    layouts : ``{layer: "nchw" | "nhwc" | "tokens" | "tokens-seq"}``, a layer's layout where its
        shape alone leaves it open (:mod:`netdissect.hooks.tokens`).
    scorecard : compute the label scorecard (significance, stability, held-out prediction;
        docs/label-trust.md) from the activation cache before it is removed.  None (default):
        when the probe has enough images for it (50 with ``holdout=0.2``), else skipped with a
        note in summary.json; True: required (too few images is an error); False: never.
    fdr : with the scorecard, a detector also needs its label's BH q-value below ``fdr``
        (1 keeps the IoU rule alone).
    holdout, scorecard_seed : the share of probe images held out to score labels chosen on the
        others, and the seed of that split and of the bootstrap (recorded in summary.json).
    keep_cache : keep the activation cache in ``out/cache`` (``netdissect score RUN`` reads it).
    auroc_threshold : layers without a spatial map ((N, C) outputs, (N, C, 1, 1) pooled features and
        ``NAME:cls`` class tokens) are labelled image-level (:mod:`netdissect.dissection.imagelevel`):
        a unit is a detector when its label's AUROC >= this (0.9) and its q-value < ``fdr``.

    Under ``torchrun`` every rank calls this; each dissects a slice of the rows, the statistics
    merge exactly, rank 0 writes ``out``, and every rank returns the same result.

    Returns
    -------
    DissectionResult : ``result[layer].units`` (one row per unit), ``result.summary``.
    """
    inputs = Inputs(dataset=dataset, images=images, segmenter=segmenter, iou=iou, seg_size=seg_size,
                    label_cache=label_cache, quad_parts=quad_parts, size=size, crop=crop, samples=samples,
                    latent_seed=latent_seed)
    inputs.check()
    if quantile is None:
        quantile = 0.01 if inputs.mode == "pnas" else 0.005
    cfg = DissectConfig(quantile=quantile, iou_threshold=iou_threshold, topk=topk, batch_size=batch_size,
                        num_workers=default_workers() if num_workers is None else num_workers,
                        cache_dtype=cache_dtype, device=device, skip_bad=skip_bad, split=split, limit=limit,
                        precision=precision, quantile_memory=quantile_memory, seed=seed)
    cfg.check()
    card_cfg = None
    if scorecard or scorecard is None:
        from netdissect.trust import scorecard_config

        card_cfg = {**scorecard_config(holdout=holdout, seed=scorecard_seed, fdr=fdr), "required": bool(scorecard)}
    part = parse_chunk(chunk)
    if part is not None and (scorecard is False or fdr != 0.05 or holdout != 0.2 or scorecard_seed != 0 or keep_cache):
        raise NetDissectError("--fdr, --holdout, --scorecard-seed, --no-scorecard and --keep-cache do not apply to "
                              "a chunk: `netdissect merge` computes the whole run's scorecard with the default "
                              "settings; leave them out with --chunk")
    if part is not None and out is None:
        raise NetDissectError("a chunk needs out= (--out): the folder that keeps the chunk for `netdissect merge`")
    if isinstance(dataset, Broden) and (split is not None or limit is not None):
        raise NetDissectError("split= and limit= select rows when the dataset is a path; for a Broden object "
                              "pass them to it: Broden(path, split=..., limit=...)")
    layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not layers:
        raise LayerError("no layers given: name at least one layer to dissect")
    from netdissect.dissection.imagelevel import check_auroc_threshold, is_cls

    image_cfg = {"auroc_threshold": check_auroc_threshold(auroc_threshold), "fdr": float(fdr)}
    if any(is_cls(n) for n in layers) and samples is not None:
        raise LayerError(f"--layer {next(n for n in layers if is_cls(n))}: a generator has no class token "
                         "(NAME:cls is a token layer's prefix token 0, labelled image-level)")
    group = Group.from_env(device)
    lock = None
    try:
        if part is not None and group.distributed:
            raise NetDissectError("--chunk runs in one process: torchrun shards the rows itself, "
                                  "so launch chunks without torchrun (or torchrun without --chunk)")
        cfg.device = group.device
        if out is not None:
            lock = _claim_out(out, group)  # before the model loads: fail fast
        return _dissect(model, layers, inputs, cfg, group, part, out=out, weights=weights, normalize=normalize,
                        resume=resume, progress=progress and group.rank == 0, checkpoint_every=checkpoint_every,
                        model_spec=model_spec, z_dim=z_dim, prefix_tokens=prefix_tokens, layouts=layouts,
                        card_cfg=card_cfg, keep_cache=keep_cache, image_cfg=image_cfg)
    finally:
        if lock is not None:
            lock.release()
        group.close()


def _claim_out(out, group: Group) -> RunLock:
    """``out`` checked on every rank (each writes its work folder there); locked by rank 0."""
    lock, err = RunLock(out if str(out).strip() else ".", rank=group.rank), None
    try:
        check_out(out)
        lock.acquire()
    except NetDissectError as exc:
        err = str(exc)
    group.agree(err)
    return lock


def _prepare_work(run_dir: Path, group: Group, part, resume: bool, identity: dict):
    """The work folder of this process, or ``("finished", work)`` when ``resume`` finds the run done.

    A work folder without a checkpoint holds nothing to resume (a run that failed on its first
    batch): it is started afresh, with or without ``resume``."""
    top = run_dir / ".work"
    work = top / f"rank{group.rank}" if group.distributed else top
    err, finished = None, False
    fp = json.loads(_fingerprint(identity))
    if part is not None:
        marker = run_dir / CHUNK_FILE
        if marker.exists():
            saved = read_chunk_info(run_dir)["identity"]
            if saved != fp:
                err = (f"{run_dir} holds a chunk of a different run (other settings, model or dataset): "
                       "choose another --out for this one")
            elif not resume:
                err = f"{run_dir} holds finished chunk {part[0]}/{part[1]}: pass --resume to keep it, or remove {run_dir}"
            finished = err is None
        elif has_progress(top) and not resume:
            err = f"{run_dir} holds an unfinished chunk: pass --resume to continue it, or remove {top} to start over"
    elif group.rank == 0 or not group.distributed:
        summary = run_dir / "summary.json"
        if has_progress(top) and not resume:
            err = f"{run_dir} holds an unfinished run: pass --resume to continue it, or remove {top} to start over"
        elif resume and not has_progress(top) and summary.exists():
            try:
                saved = json.loads(summary.read_text()).get("identity")
            except (OSError, json.JSONDecodeError) as exc:
                saved, err = None, f"{summary}: corrupt ({exc}); remove {run_dir} and run again"
            if err is None and saved != fp:
                err = (f"{run_dir} holds a finished run of other settings, model, layers or dataset; --resume "
                       "would return that result: choose another --out, or remove the folder to run this one")
            finished = err is None
    elif has_progress(work) and not resume:
        err = f"{run_dir} holds an unfinished run: pass --resume to continue it, or remove {work} to start over"
    group.agree(err)
    if group.broadcast(finished):
        return "finished", work
    if not has_progress(work):
        shutil.rmtree(work, ignore_errors=True)  # nothing checkpointed: start afresh
    work.mkdir(parents=True, exist_ok=True)
    return "work", work


def _first_input(probe, prep, device):
    """The first readable row as a batch of one, normalised (None when no row is readable)."""
    for i in range(len(probe)):
        try:
            payload = probe.load(i)
            break
        except DatasetError:
            continue
    else:
        return None
    return prep(probe.batch([payload], device))


def _find_layouts(model, x, layers, explain, prefix_tokens=None, force=None) -> tuple[dict, dict]:
    """Each layer's :class:`~netdissect.hooks.tokens.Layout` (map, channels-last map or token sequence),
    from its raw output on the batch ``x`` (one image), and each layer's (C, h, w) (a token layer: on
    its patch grid); plain (N, C, H, W) maps are left out of the layouts."""
    from netdissect.hooks.tokens import find_layout, model_tokens

    from netdissect.dissection import imagelevel

    if x is None:
        return {}, {}, {}
    try:
        modules = list(dict.fromkeys(imagelevel.module_of(n) for n in layers))
        with TraceDict(model, modules, stop=True) as traces, torch.inference_mode():
            raw = run_to_layers(model, traces, x)
    except NetDissectError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own failure, explained
        raise explain(tuple(x.shape), exc) from None
    if x.dim() != 4:  # a generator's latent z: its layers are (N, C, H, W) maps, no input grid to lay tokens on
        return {}, {n: tuple(o.shape[1:]) if isinstance(o, torch.Tensor) else None for n, o in raw.items()}, {}
    info = model_tokens(model)
    out, shapes, image_level = {}, {}, {}
    for name in layers:
        r = raw[imagelevel.module_of(name)]
        lay = None
        if imagelevel.is_cls(name):
            mod = imagelevel.module_of(name)
            lay = find_layout(mod, r, x.shape[0], tuple(x.shape[-2:]), info, prefix_tokens, (force or {}).get(mod))
        kind = imagelevel.kind_of(name, r, x.shape[0], lay)
        if kind is not None:  # no spatial map: labelled image-level
            image_level[name] = (kind, lay)
            shapes[name] = tuple(imagelevel.as_units(kind, r, lay).shape[1:])
            continue
        lay = find_layout(name, r, x.shape[0], tuple(x.shape[-2:]), info, prefix_tokens,
                          (force or {}).get(name))
        if lay.kind != "nchw" or lay.why:
            out[name] = lay
        shapes[name] = tuple(lay.to_map(r, name).shape[1:])
    return out, shapes, image_level


def _probe_layers(model, x, layers, explain, prefix_tokens=None, force=None):
    """Each layer's layout and output shape (C, h, w) (a token layer: on its patch grid) on ``x`` (the
    first readable row), before pass 1 (see :func:`_find_layouts`); a model that fails on the images,
    or a layer that runs more than once per forward pass (name its call, ``NAME#K``) or not at all, is
    refused here."""
    from netdissect.dissection.imagelevel import module_of

    layouts, shapes, image_level = _find_layouts(model, x, layers, explain, prefix_tokens, force)
    if x is not None:
        # one whole forward pass: a module that runs more than once, or a layer that never runs, is refused
        check_layers(model, list(dict.fromkeys(module_of(n) for n in layers)), x)
    return layouts, (shapes or None), image_level


def _generator_output(model, prep, dim: int, device, explain) -> tuple[int, int]:
    """(H, W) of the generator's output on one z (zeros), checked to be an RGB image batch; a
    failing forward is explained here, before pass 1."""
    z = prep(torch.zeros(1, dim, device=device))
    try:
        with torch.inference_mode():
            y = model(z)
    except NetDissectError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own failure, explained
        raise explain(tuple(z.shape), exc) from None
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[1] != 3:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ModelError(f"the generator outputs {got} for z of shape {tuple(z.shape)}; a generator to dissect "
                         "must output RGB images (N, 3, H, W) for its outputs to be segmented")
    return int(y.shape[2]), int(y.shape[3])


def _generator_error(spec, prep):
    def explain(shape, exc):
        from netdissect.models.forward import _torch_says

        return ModelError(f"generator {spec_name(spec)} fails on latent samples: it was given z of shape "
                          f"{tuple(shape)} (standard normal), and torch says {_torch_says(exc)!r}: it must take "
                          f"z of shape (N, {prep.z_dim}) and return images (N, 3, H, W); give z_dim= (--z-dim) "
                          "if its latent size is another")
    return explain


def _check_resources(shapes: dict, rows: int, total: int, cfg, work: Path, progress: bool) -> None:
    """Refuse before starting what cannot fit: the cache's disk and the top images' memory."""
    item = np.dtype(CACHE_DTYPES[cfg.cache_dtype]).itemsize
    need = sum(int(np.prod(s)) for s in shapes.values() if s) * rows * item
    tops = sum(s[0] * min(cfg.topk, total) * s[1] * s[2] * 2 for s in shapes.values() if s and len(s) == 3)
    if tops > config.MAX_TOPK_BYTES:
        raise NetDissectError(f"topk={cfg.topk} keeps {tops / 2**30:.1f} GiB of activation maps "
                              f"(units x topk x map size, float16) over {config.MAX_TOPK_BYTES / 2**30:.0f} GiB: "
                              "choose a smaller --topk (the report shows 10)")
    for name, s in shapes.items():
        if s and len(s) == 3:
            try:
                quantile_plan(s[0], cfg.quantile, total * s[1] * s[2], cfg.quantile_memory)
            except ValueError as exc:
                raise NetDissectError(f"--quantile-memory {cfg.quantile_memory} bytes is too small for layer {name!r} "
                                      f"({s[0]} units): {str(exc).split(': ', 1)[-1]}") from None
    free = shutil.disk_usage(work).free
    gib = need / 2**30
    if need > free:
        half = " --cache-dtype float16 halves it (lossy: ties at thresholds, counted in summary.json);" \
            if cfg.cache_dtype == "float32" else ""
        raise NetDissectError(f"the activation cache needs {gib:.1f} GiB in {work} but only {free / 2**30:.1f} GiB "
                              f"are free:{half} dissect fewer layers per run, or split the rows with --chunk I/N "
                              "over machines (docs/run-format.md)")
    if progress and need > 1 << 30:
        print(f"netdissect: the activation cache takes {gib:.1f} GiB in {work} ({free / 2**30:.0f} GiB free); "
              "it is removed when the run finishes", file=sys.stderr)


def _scorecard(st, layer_results: dict, card_cfg, group: Group, progress: bool) -> dict:
    """The label scorecard from the run's activation cache (docs/label-trust.md); what summary.json
    records under ``scorecard``."""
    if card_cfg is None:
        return {"computed": False, "why": "not asked (--no-scorecard)"}
    if group.distributed:
        return _scorecard_ranks(st, layer_results, card_cfg, group, progress)
    from netdissect.trust import TooFewImages, score_layers

    card_cfg = dict(card_cfg)
    required = card_cfg.pop("required", True)
    try:
        cards = _score(st, layer_results, card_cfg, progress, score_layers)
    except TooFewImages as exc:
        if required:
            raise
        if progress:
            print(f"netdissect: no label scorecard: {exc}", file=sys.stderr)
        return {"computed": False, "why": str(exc)}
    for name, card in cards.items():
        layer_results[name].with_scorecard(card, card_cfg["fdr"])
    return {"computed": True, **card_cfg}


def _scorecard_ranks(st, layer_results: dict, card_cfg, group: Group, progress: bool) -> dict:
    """Under torchrun: rank 0 computes the scorecard over every rank's cache (RUN/.work/rank<r>, in
    row order, as one process would) and the ranks take its result."""
    from netdissect.trust import TooFewImages, score_layers
    from netdissect.trust.shards import read_across

    cfg = dict(card_cfg)
    required = cfg.pop("required", True)
    group.barrier()  # every rank's cache is whole (flushed when pass 2 started)
    cards, err, why = None, None, None
    if group.rank == 0:
        top = st.work.parent
        if top.name != ".work":
            why = "not computed under torchrun without --out (the ranks' caches are in temporary folders)"
        else:
            parts = []
            try:
                for r in range(group.world):
                    lo, hi = shard_rows(len(st.probe), r, group.world)
                    caches = {}
                    for name in st.layers:
                        path = top / f"rank{r}" / st.cache_path(name).name
                        if path.exists():
                            from netdissect.dissection.cache import ActivationCache

                            caches[name] = ActivationCache(path, hi - lo, st.shapes[name], st.cfg.cache_dtype,
                                                           existing=True)
                    parts.append((lo, hi, caches))
                cards = score_layers(layer_results, read_across(parts, layer_results), st.source, (0, len(st.probe)),
                                     st.all_skipped, len(st.probe), cfg, batch_size=st.cfg.batch_size,
                                     num_workers=st.cfg.num_workers, progress=progress, skip_bad=st.cfg.skip_bad,
                                     spill_dir=top)
            except TooFewImages as exc:
                if required:
                    err = str(exc)
                else:
                    why = str(exc)
            except NetDissectError as exc:
                err = str(exc)
            finally:
                for _, _, caches in parts:
                    for c in caches.values():
                        c.close()
    group.agree(err)
    cards, why = group.broadcast((cards, why))
    if cards is None:
        if progress:
            print(f"netdissect: no label scorecard: {why}", file=sys.stderr)
        return {"computed": False, "why": why}
    for name, card in cards.items():
        layer_results[name].with_scorecard(card, cfg["fdr"])
    return {"computed": True, **cfg}


def _score(st, layer_results, card_cfg, progress, score_layers):
    return score_layers(layer_results, lambda name, a, b: st.caches[name].read(a, b), st.source, (st.lo, st.hi),
                         st.all_skipped, len(st.probe), card_cfg, batch_size=st.cfg.batch_size,
                         num_workers=st.cfg.num_workers, progress=progress, skip_bad=st.cfg.skip_bad,
                         spill_dir=st.work)


CACHE_DIR = "cache"  # --keep-cache: RUN/cache/<layer>.acts and cache.json


def _keep_cache(st, run_dir: Path) -> None:
    """Move the activation caches out of the work folder into ``run_dir/cache`` (before the work
    folder is removed), with what reading them back needs."""
    dest = Path(run_dir) / CACHE_DIR
    dest.mkdir(parents=True, exist_ok=True)
    info = {"rows": [st.lo, st.hi], "dtype": st.cfg.cache_dtype, "skipped": sorted(int(i) for i in st.all_skipped),
            "layers": {}}
    for name in st.layers:
        if name not in st.caches or name in st.image_level:  # (`score` rescores map layers only)
            continue
        target = dest / st.cache_path(name).name
        os.replace(st.cache_path(name), target)
        info["layers"][name] = {"file": target.name, "shape": list(st.shapes[name])}
    labels = getattr(st.source, "inner", st.source)
    if hasattr(labels, "export"):  # segmenter labels: `netdissect score` reads them back here (runs no segmenter)
        labels.export([i for i in range(st.lo, st.hi) if i not in st.all_skipped], dest / "labels")
        info["segmenter"] = {"concepts": list(labels.concepts.names),
                             "categories": [labels.concepts.categories[g] for g in labels.concepts.primary]}
    atomic_write_bytes(dest / "cache.json", json.dumps(info, indent=2).encode())


def _dissect(model, layers, inputs, cfg: DissectConfig, group: Group, part, **kw):
    with preserved(model):  # a user's module is left as it was found, however this ends
        return _run(model, layers, inputs, cfg, group, part, **kw)


def _run(model, layers, inputs, cfg: DissectConfig, group: Group, part, *, out, weights, normalize,
         resume, progress, checkpoint_every, model_spec, z_dim=None, prefix_tokens=None, layouts=None,
         card_cfg=None, keep_cache=False, image_cfg=None):
    from netdissect.dissection import imagelevel

    image_cfg = image_cfg or {"auroc_threshold": imagelevel.AUROC_THRESHOLD, "fdr": 0.05}
    given = model
    gen = inputs.generator
    if torch.device(cfg.device).type == "cpu" and (gen or not cfg.num_workers):
        # numba and the compiled kernels load while the model and data do (a generator's latent rows
        # need no loader workers); with workers they load after the workers fork, beside the forward
        # pass (a spare core's work, not a wait)
        kernel.warm_in_background()
    model_spec = model if isinstance(model, str) else (model_spec or spec_name(model))
    if not gen and (z_dim is not None or inputs.latent_seed is not None):
        raise NetDissectError("z_dim/latent_seed (--z-dim/--latent-seed) apply to a generator's latent samples: "
                              "add samples=N (--samples N)")
    if cfg.split is not None and gen:
        raise NetDissectError("--split selects rows of a Broden dataset; latent samples have none")
    if cfg.limit is not None and gen:
        raise NetDissectError("--limit selects rows of a dataset; with latent samples give fewer --samples")
    model, prep = load_model(model, weights=weights, normalize=normalize, seed=cfg.seed, generator=gen,
                             z_dim=z_dim)
    for name in layers:
        resolve_layer(model, imagelevel.module_of(name))
    if not gen:
        if inputs.interpolation is None:  # --size resamples as the model's library does (timm: often bicubic)
            inputs.interpolation = getattr(prep, "interpolation", None)
        probe, source, ds = resolve_inputs(inputs, cfg.split, cfg.limit)
    precision, why = resolve_precision(cfg.precision, cfg.device)
    model.eval()
    model = model.to(cfg.device)
    group.broadcast_module(model)  # the same weights on every rank, random initialisation included
    sha = model_identity(model)
    gen_info = None
    if gen:
        explain_gen = _generator_error(given, prep)
        out_shape = _generator_output(model, prep, prep.z_dim, cfg.device, explain_gen)
        gen_info = {"z_dim": prep.z_dim, "output_size": list(out_shape), "output": prep.describe()}
        probe, source, ds = resolve_generator_inputs(
            inputs, prep.z_dim, out_shape, {"sha256": sha, "output": prep.describe(), "precision": precision},
            cfg.seed)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    def explain_images(shape, exc):
        err = forward_error(given, shape, exc, normalize=prep.describe())
        want = getattr(prep, "size", None)
        if want and tuple(shape[-2:]) != tuple(want):  # a ViT built for 224 px, given 227 px images
            return ModelError(f"{err} (the model is built for {want[0]}x{want[1]} images and these are "
                              f"{shape[-2]}x{shape[-1]}: pass --size {want[0]} (size={want[0]}) to resize them)")
        return err

    explain = explain_gen if gen else explain_images
    if prefix_tokens is not None and (isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int)
                                      or prefix_tokens < 0):
        raise LayerError(f"--prefix-tokens {prefix_tokens!r}: expected a whole number >= 0")
    unknown = [k for k in (layouts or {}) if k not in layers and k not in map(imagelevel.module_of, layers)]
    if unknown:
        raise LayerError(f"--layout names layer(s) {', '.join(map(repr, unknown))} that are not dissected "
                         f"(--layer {', '.join(layers)})")
    identity = {
        "model": {"spec": model_spec, "weights": weights, "weights_description": describe_weights(given, weights, cfg.seed),
                  "seed": cfg.seed,
                  "normalize": prep.describe(), "sha256": sha, **({"generator": gen_info} if gen else {}),
                  # the input size and resampling the model's library records (timm, hf, open_clip, torchvision)
                  **({"input_size": list(prep.size)} if getattr(prep, "size", None) else {}),
                  **({"interpolation": prep.interpolation} if getattr(prep, "interpolation", None) else {})},
        "dataset": probe.identity(),
        "labels": source.identity(),
        "layers": layers,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("num_workers", "device")},
    }
    if prefix_tokens is not None:  # token layers (docs/transformers.md)
        identity["prefix_tokens"] = prefix_tokens
    if layouts:
        identity["layouts"] = dict(sorted(layouts.items()))
    run_cfg = DissectConfig(**{**asdict(cfg), "precision": precision,
                               "num_workers": 0 if getattr(probe, "loads_from_memory", False) else cfg.num_workers})
    rows = shard_rows(len(probe), *part) if part else shard_rows(len(probe), group.rank, group.world)
    shard = {"rows": list(rows), "rank": group.rank, "world_size": group.world, "chunk": list(part) if part else None}
    run_dir = Path(out) if out is not None else None
    if run_dir is not None:
        state, work = _prepare_work(run_dir, group, part, resume, identity)
        if state == "finished":
            if part is not None:
                return None
            from netdissect.dissection.result import load

            return group.broadcast(load(run_dir) if group.rank == 0 else None)
        cleanup = None
    else:
        work = Path(tempfile.mkdtemp(prefix="netdissect-"))
        cleanup = work

    st = None
    scan_worker = None
    try:
        st = RunState(layers, probe, source, run_cfg, work, rows, layer_thresholds=inputs.mode != "pnas")
        ident_path = work / IDENTITY_FILE
        err = None
        resuming = resume and st.has_checkpoint()
        if resuming:
            try:
                saved = read_json(ident_path, what="identity file",
                                  fix=f"the run cannot be resumed: remove {work} to start afresh")
            except NetDissectError as exc:
                saved, err = None, str(exc)
            if err is None and saved != json.loads(_fingerprint({**identity, "shard": shard})):
                err = (f"cannot resume {run_dir}: it was started with different settings, model, dataset "
                       "or number of processes; start a new run or remove its .work folder")
        else:
            atomic_write_bytes(ident_path, _fingerprint({**identity, "shard": shard}).encode())
        group.agree(err)
        x0 = _first_input(probe, prep, st.device)
        if resuming:
            st.load_checkpoint()
            found_layouts, _, image_level = _find_layouts(model, x0, layers, explain, prefix_tokens, layouts)
        else:
            found_layouts, shapes, image_level = _probe_layers(model, x0, layers, explain, prefix_tokens, layouts)
            if shapes:
                _check_resources(shapes, rows[1] - rows[0], len(probe), run_cfg, work, progress)
        st.image_level = image_level  # layers without a spatial map: labelled image-level (imagelevel.py)
        if inputs.mode == "pnas" and st.phase == 1 and st.done == st.lo and st.device.type == "cpu":
            sizes = source.mask_sizes()
            if len(sizes) == 1:  # the exact threshold scan runs beside pass 1 (pnas.ExactStream)
                scan_worker = ScanWorker()
                st.pnas_streams = {name: ExactStream(st, name, sizes[0], scan_worker) for name in layers
                                   if name not in image_level}
        st.layouts = found_layouts  # token layers and channels-last maps: traced as (N, C, H, W) views
        t0 = time.monotonic()
        p1 = ActivationPass(st, model, prep, progress, explain=explain, keep_images=run_dir is not None)
        if st.phase == 1:
            p1.run(checkpoint_every)
        if part is not None:
            st.save_checkpoint()
            info = {"chunk": part[0], "of": part[1], "rows": list(rows), "identity": identity,
                    "timing_s": {"activations": round(time.monotonic() - t0, 3)}}
            if image_level:  # layers without a spatial map, and their kind (the merge labels them image-level)
                info["image_level"] = {name: kind for name, (kind, _) in image_level.items()}
                info["image_level_cfg"] = image_cfg
            labels = getattr(source, "inner", source)
            if hasattr(labels, "export"):  # segmenter labels: the chunk keeps its rows' (the merge runs no model)
                labels.export([i for i in range(*rows) if i not in st.skipped], run_dir / CHUNK_LABELS)
                info["segmenter"] = {"concepts": list(labels.concepts.names), "segmented_images": labels.segmented,
                                     "categories": [labels.concepts.categories[g] for g in labels.concepts.primary]}
            if gen:  # the generated images of its rows in its units' top sets: the merge has no generator
                write_generated_images(run_dir, model, prep, probe, top_rows(t.images for t in st.tops.values()),
                                       cfg.device, cfg.batch_size, False, kept=p1.kept)
            atomic_write_bytes(run_dir / CHUNK_FILE, json.dumps(info, indent=2).encode())
            return None
        merge_pass1(st, group)
        t_thr = time.monotonic()
        if inputs.mode == "pnas":  # thresholds over the upsampled activations (algorithms.md section 2)
            for name in layers:
                if name in image_level:  # no region, no threshold
                    st.thresholds[name] = np.full(st.shapes[name][0], np.nan, np.float32)
                    continue
                st.thresholds[name] = pnas_thresholds(st, name, group)
        t_thr = time.monotonic() - t_thr
        if st.phase == 1:
            st.start_pass2()
            st.save_checkpoint()
        t1 = time.monotonic()
        p1.join()
        run_iou_pass(st, checkpoint_every, progress)
        merge_pass2(st, group)
        t2 = time.monotonic()
        map_results = st.results()
        card_info = _scorecard(st, map_results, card_cfg, group, progress) if map_results else \
            {"computed": False, "why": "no layer with a spatial map (image-level layers have their own p and q)"}
        t_card = time.monotonic()
        if group.distributed and image_level:  # rank 0 scores over every rank's cache
            image_results = imagelevel.layer_results_ranks(st, image_level, image_cfg, group)
        else:
            image_results = {name: imagelevel.layer_result(st, name, image_level[name][0], **image_cfg)
                             for name in image_level}
        layer_results = {name: map_results.get(name) or image_results[name] for name in layers}
        t_img = time.monotonic() - t_card
    finally:
        if scan_worker is not None:
            scan_worker.close()
        if st is not None:
            st.close()
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)

    where = ds.root if ds is not None else getattr(probe, "root", probe.describe())
    note = check_unknown_labels(st.all_unknown, st.all_positions, str(where))
    if note and progress:
        print(f"netdissect: {note}", file=sys.stderr)
    extra = {"precision": {"asked": cfg.precision, "used": precision, **({"why": why} if why else {})},
             **({"layouts": {n: lay.to_json() for n, lay in found_layouts.items()}} if found_layouts else {}),
             "cache": {"dtype": cfg.cache_dtype, "exact": cfg.cache_dtype == "float32"}}
    if cfg.cache_dtype != "float32":
        extra["lossy_cache"] = {"tied_positions": st.all_tied}
    summary = build_summary(identity, probe, source, cfg.device, st.all_skipped, st.all_unknown,
                            {"activations": t1 - t0, "iou": t2 - t1}, layer_results, group.world, extra=extra)
    if inputs.mode == "pnas":  # (a part of "activations")
        summary["timing_s"]["pnas_thresholds"] = round(t_thr, 3)
    summary["scorecard"] = card_info
    # the labelling method (one result format for every method: docs/run-format.md)
    # a mixed run's top-level method is that of its map layers; "image-level" when it has no map layer
    summary["method"] = inputs.mode if len(image_level) < len(layers) else imagelevel.METHOD
    for name, info in summary["layers"].items():
        info["method"] = imagelevel.METHOD if name in image_level else inputs.mode
    if image_level:
        summary["timing_s"]["image_level"] = round(t_img, 3)
    if card_info.get("computed"):
        summary["timing_s"]["scorecard"] = round(t_card - t2, 3)
    image_paths = None
    if gen:  # no image files: the units' top images are regenerated into the run (docs/gan.md)
        image_paths = generated_image_paths(probe)
        if run_dir is not None:
            t3 = time.monotonic()
            if group.rank == 0:
                # the images pass 1 held, encoded here in the main thread (a writer thread beside pass 2
                # fought it for the GIL: both ran slower than one after the other); the others (rows
                # checkpointed before a resume, other ranks' rows) are generated again
                rows = top_rows(lr.top_images for lr in layer_results.values())
                write_generated_images(run_dir, model, prep, probe, rows, cfg.device, cfg.batch_size, progress,
                                       kept=p1.kept)
            group.barrier()
            summary["timing_s"]["images"] = round(time.monotonic() - t3, 3)
            summary["dataset"]["images_in_run"] = IMAGES_IN_RUN
            summary["dataset"]["files_digest"] = files_digest(run_dir / IMAGES_IN_RUN, image_paths)
    else:
        # the images as the report checks them before drawing (names, sizes, mtimes)
        summary["dataset"]["files_digest"] = files_digest(probe.image_dir if ds is None else ds.image_dir,
                                                          probe.row_names())
    summary["labels"] = {**source.identity(), "iou": inputs.mode, "n_concepts": len(source.concepts)}
    labels = getattr(source, "inner", source)
    if hasattr(labels, "segmented"):  # images this run segmented (the others came from the label cache)
        summary["labels"]["segmented_images"] = labels.segmented
    result = DissectionResult(layer_results, summary, run_dir)
    if run_dir is not None:
        group.barrier()  # every rank has closed its caches
        if group.rank == 0:
            write_run(run_dir, probe, layer_results, summary, image_paths)
        group.barrier()  # the run is written: the work folders can go
        if group.distributed and group.rank != 0:
            shutil.rmtree(work, ignore_errors=True)  # (on other machines, rank 0 cannot reach it)
        group.barrier()
        if group.rank == 0:
            if keep_cache and not group.distributed:
                # only now that the run is written: a kill before this point still resumes from .work
                _keep_cache(st, run_dir)
            shutil.rmtree(run_dir / ".work", ignore_errors=True)
    return result
