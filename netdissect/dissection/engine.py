"""The dissection engine: one forward pass, then IoU from an on-disk cache.

    >>> from netdissect import dissect
    >>> result = dissect("torchvision:resnet18", layers=["layer4"],
    ...                  dataset="path/to/broden1_224", out="runs/r18")   # doctest: +SKIP
    >>> print(result.table())                                           # doctest: +SKIP

Pass 1 runs the model once over every image (no autograd, stopping after the
last requested layer), writes each layer's activations to a compact on-disk
cache, and streams the exact per-unit top quantile and each unit's top
images.  Pass 2 reads the cache back with the concept masks (decoded in the
loader workers) and counts each unit's thresholded, upsampled mask against
them, visiting only the 2 x 2 cell blocks that exceed the threshold
(:mod:`netdissect.dissection.masks`; on the CPU the compiled kernel of
:mod:`netdissect.dissection.kernel`, loaded in a thread during pass 1).
Both passes checkpoint, and a killed run resumes (``resume=True``) to the
same result.

The same code runs as one process or as the ranks of ``torchrun``
(:mod:`netdissect.dissection.distributed`): each rank takes a contiguous slice
of the rows, the statistics merge exactly between the passes and at the end,
and rank 0 writes the run.  ``chunk=(i, n)`` runs pass 1 on slice i of n only
and stops; :func:`netdissect.dissection.chunks.merge_chunks` completes the run.
``precision="bf16"`` runs the forward pass under ``torch.autocast`` (bfloat16).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from netdissect import __version__
from netdissect.data import Broden
from netdissect.atomic import savez as atomic_savez
from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.dissection import kernel
from netdissect.dissection.cache import ActivationCache
from netdissect.dissection.distributed import (
    Group,
    combine_counts,
    combine_tops,
    shard_rows,
)
from netdissect.dissection.masks import UnitMasks
from netdissect.dissection.result import (
    FORMAT_VERSION,
    DissectionResult,
    LayerResult,
    layer_folder,
)
from netdissect.errors import ActivationError, DatasetError, LayerError, NetDissectError
from netdissect.hooks import TraceDict, resolve_layer, run_to_layers
from netdissect.models import load_model
from netdissect.models.loading import model_identity
from netdissect.stats import IoUCounts, LabelBatch, TopImages, TopQuantile

CACHE_DTYPES = {"float16": np.float16, "float32": np.float32}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
CHUNK_FILE = "chunk.json"


@dataclass
class DissectConfig:
    """Parameters of a dissection run (see :func:`dissect`)."""

    quantile: float = 0.005
    iou_threshold: float = 0.04
    topk: int = 10
    batch_size: int = 64
    num_workers: int | None = None
    cache_dtype: str = "float16"
    device: str = "cpu"
    skip_bad: bool = False
    split: str | None = None
    limit: int | None = None
    channels_last: bool = True
    precision: str = "fp32"

    def check(self) -> None:
        if not 0 < self.quantile < 1:
            raise NetDissectError(f"quantile must be in (0, 1), got {self.quantile}")
        if not 0 <= self.iou_threshold <= 1:
            raise NetDissectError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise NetDissectError(f"cache_dtype must be one of {sorted(CACHE_DTYPES)}, got {self.cache_dtype!r}")
        if self.batch_size < 1 or self.topk < 1:
            raise NetDissectError("batch_size and topk must be at least 1")
        if self.precision not in PRECISIONS:
            raise NetDissectError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")


# ---------------------------------------------------------------- data views
class _Rows(Dataset):
    """Rows ``[start, stop)`` of a dataset; a bad row comes back as an error, never raises in a worker."""

    def __init__(self, ds: Broden, start: int, stop: int | None = None):
        self.ds, self.start, self.stop = ds, start, len(ds) if stop is None else stop

    def __len__(self):
        return max(0, self.stop - self.start)

    def __getitem__(self, j):
        i = self.start + j
        try:
            return self.load(i)
        except DatasetError as exc:
            return self.failed(i, str(exc))


class _Images(_Rows):
    """Images of pass 1; with ``check_labels`` a row whose masks cannot be read fails here too,
    so that a skipped row is left out of every statistic, not only of the IoU counts."""

    def __init__(self, ds: Broden, start: int, stop: int | None = None, check_labels: bool = False):
        super().__init__(ds, start, stop)
        self.check_labels = check_labels

    def load(self, i):
        image = self.ds.load_image(i)
        if self.check_labels:
            self.ds.load_labels(i)
        return i, image, None

    def failed(self, i, error):
        return i, None, error


class _Labels(_Rows):
    def load(self, i):
        sample = self.ds.load_labels(i)
        sample.planes = sample.planes.astype(np.uint16)  # R + 256 G < 65536: half the bytes to send
        return sample

    def failed(self, i, error):
        from netdissect.data import LabelSample

        return LabelSample(i, None, None, None, error=error)


def _collate_images(items):
    return items  # stacking happens in the main process, where errors can be raised cleanly


class _LabelCollate:
    """Runs in the loader workers: groups a batch's rows by mask size and builds their
    :class:`LabelBatch` there, in parallel with the counting in the main process.

    Returns ``(start, stop, errors, groups)``: ``errors`` maps rows whose files are bad to the
    message; ``groups`` maps (sh, sw) to (LabelBatch on the CPU, batch positions of its rows).
    Rows in ``skip`` (skipped in pass 1) and bad rows are left out of the groups.
    """

    def __init__(self, concepts, skip):
        self.concepts, self.skip = concepts, frozenset(skip)
        self.tables: dict = {}  # number -> column tables, kept by each worker across its batches

    def __call__(self, samples):
        start, stop = samples[0].index, samples[-1].index + 1
        errors, groups = {}, {}
        for s in samples:
            if s.error is not None:
                errors[s.index] = s.error
            elif s.index not in self.skip:
                groups.setdefault(tuple(s.planes.shape[1:]), []).append(s)
        built = {size: (LabelBatch.from_samples(group, self.concepts, tables=self.tables),
                        [s.index - start for s in group])
                 for size, group in groups.items()}
        return start, stop, errors, built


def _quietly(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the same call in pass 2 raises it where it can be reported
        pass


def _loader(dataset, batch_size, num_workers, collate):
    kw = {}
    if num_workers:
        kw = dict(num_workers=num_workers, prefetch_factor=4, persistent_workers=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **kw)


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


# ---------------------------------------------------------------- the run
class _Run:
    """State of one dissection run over rows ``[lo, hi)``: caches, statistics, checkpoints.

    ``quantiles``, ``tops``, ``counts`` and ``skipped`` are this process's own
    (they are what its checkpoint holds); ``thresholds``, ``merged_tops`` and
    ``merged_counts`` are over every shard, set by the merges.
    """

    def __init__(self, model, prep, layers, ds, cfg, work: Path, identity: dict, progress: bool,
                 rows: tuple[int, int] | None = None):
        self.model, self.prep, self.layers, self.ds, self.cfg = model, prep, layers, ds, cfg
        self.work, self.identity, self.progress = work, identity, progress
        self.lo, self.hi = rows if rows is not None else (0, len(ds))
        self.device = torch.device(cfg.device)
        self.shapes: dict[str, tuple] = {}
        self.caches: dict[str, ActivationCache] = {}
        self.quantiles: dict[str, TopQuantile] = {}
        self.tops: dict[str, TopImages] = {}
        self.counts: dict[str, IoUCounts] = {}
        self.thresholds: dict[str, np.ndarray] = {}
        self.merged_tops: dict[str, TopImages] = {}
        self.merged_counts: dict[str, IoUCounts] = {}
        self._masks: dict[tuple, UnitMasks] = {}
        self._warm: threading.Thread | None = None
        self.skipped: dict[int, str] = {}
        self.unknown_labels = 0
        self.phase, self.done = 1, self.lo

    # ---------------------------------------------------------- checkpoints
    @property
    def ckpt_path(self) -> Path:
        return self.work / "checkpoint.npz"

    def save_checkpoint(self) -> None:
        for c in self.caches.values():
            c.flush()
        arrays = {"phase": np.int64(self.phase), "done": np.int64(self.done),
                  "rows": np.asarray([self.lo, self.hi], np.int64),
                  "unknown_labels": np.int64(self.unknown_labels),
                  "skipped_rows": np.asarray(sorted(self.skipped), np.int64),
                  "skipped_why": np.asarray([self.skipped[i] for i in sorted(self.skipped)], dtype=str)}
        for name in self.layers:
            if name not in self.shapes:
                continue
            arrays[f"{name}/shape"] = np.asarray(self.shapes[name], np.int64)
            for key, stat in (("q", self.quantiles), ("top", self.tops), ("iou", self.counts)):
                if name in stat:
                    for k, v in stat[name].state_dict().items():
                        arrays[f"{name}/{key}/{k}"] = v
            if name in self.thresholds:
                arrays[f"{name}/thresholds"] = self.thresholds[name]
        atomic_savez(self.ckpt_path, **arrays)

    def load_checkpoint(self) -> None:
        with np.load(self.ckpt_path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        if "rows" in a and tuple(int(v) for v in a["rows"]) != (self.lo, self.hi):
            raise NetDissectError(f"{self.ckpt_path}: checkpoint of rows {tuple(a['rows'])}, "
                                  f"not of this run's rows ({self.lo}, {self.hi})")
        self.phase, self.done = int(a["phase"]), int(a["done"])
        self.unknown_labels = int(a["unknown_labels"])
        self.skipped = {int(i): str(w) for i, w in zip(a["skipped_rows"], a["skipped_why"])}
        for name in self.layers:
            if f"{name}/shape" not in a:
                continue
            self._allocate(name, tuple(int(v) for v in a[f"{name}/shape"]))
            def sub(prefix):
                return {k[len(prefix):]: v for k, v in a.items() if k.startswith(prefix)}
            self.quantiles[name].load_state_dict(sub(f"{name}/q/"))
            self.tops[name].load_state_dict(sub(f"{name}/top/"))
            if f"{name}/thresholds" in a:
                self.thresholds[name] = a[f"{name}/thresholds"]
            if f"{name}/iou/inter" in a:
                self.counts[name] = self._new_counts(name).load_state_dict(sub(f"{name}/iou/"))

    # ---------------------------------------------------------- allocation
    def _allocate(self, name: str, shape: tuple) -> None:
        C, h, w = shape
        self.shapes[name] = shape
        safe = name.replace("/", "_")
        self.caches[name] = ActivationCache(self.work / f"{safe}.acts", self.hi - self.lo, shape, self.cfg.cache_dtype)
        # total: every position of the WHOLE dataset, so shards keep enough values to merge exactly
        self.quantiles[name] = TopQuantile(C, self.cfg.quantile, total=len(self.ds) * h * w, device=self.device)
        self.tops[name] = TopImages(C, self.cfg.topk, (h, w))

    def _new_counts(self, name: str) -> IoUCounts:
        return IoUCounts(*self._count_dims(name), device=self.device)

    # ---------------------------------------------------------- pass 1
    def pass_activations(self, checkpoint_every: float) -> None:
        cfg, ds = self.cfg, self.ds
        # with --skip-bad, masks are read here as well: a row with a bad mask is skipped from the start
        images = _Images(ds, self.done, self.hi, check_labels=cfg.skip_bad)
        loader = iter(_loader(images, cfg.batch_size, cfg.num_workers, _collate_images))
        if self.device.type == "cpu":  # load pass 2's kernel during the forward pass (workers forked: no lock leaks)
            self._warm = threading.Thread(target=_quietly, args=(kernel.warm,), name="netdissect-warm", daemon=True)
            self._warm.start()
        last = time.monotonic()
        bar = tqdm(total=self.hi - self.lo, initial=self.done - self.lo, desc="pass 1/2: activations", unit="img",
                   disable=not self.progress, dynamic_ncols=True)
        with TraceDict(self.model, self.layers, stop=True) as traces, torch.inference_mode():
            for batch in loader:
                start = batch[0][0]
                good = [(i, img) for i, img, err in batch if err is None]
                for i, img, err in batch:
                    if err is not None:
                        if not cfg.skip_bad:
                            raise DatasetError(f"{err} (pass --skip-bad to skip bad rows and count them)")
                        self.skipped[i] = err
                if good:
                    self._forward_batch(traces, start, len(batch), good)
                self.done = start + len(batch)
                bar.update(len(batch))
                if time.monotonic() - last >= checkpoint_every:
                    self.save_checkpoint()
                    last = time.monotonic()
        bar.close()

    def _forward_batch(self, traces, start: int, n: int, good) -> None:
        shapes = {img.shape for _, img in good}
        if len(shapes) > 1:
            i = good[[img.shape for _, img in good].index(sorted(shapes)[-1])][0]
            raise DatasetError(f"{self.ds.where(i)}: images in one batch differ in size ({sorted(shapes)}); "
                               "netdissect expects one image size per dataset, as Broden releases have")
        idx = torch.tensor([i for i, _ in good])
        x = torch.from_numpy(np.stack([img for _, img in good])).to(self.device)
        x = self.prep(x.permute(0, 3, 1, 2).float().div_(255))
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = PRECISIONS[self.cfg.precision]
        with torch.autocast(self.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            outs = run_to_layers(self.model, traces, x)
        np_dtype = CACHE_DTYPES[self.cfg.cache_dtype]
        t_dtype = torch.float16 if np_dtype == np.float16 else torch.float32
        for name in self.layers:
            a = outs[name]
            if not isinstance(a, torch.Tensor) or a.ndim != 4:
                got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                raise LayerError(f"layer {name!r} outputs {got}; dissection needs 4-D (N, C, H, W) feature maps "
                                 "(choose a convolutional layer; `netdissect layers` shows output shapes)")
            if name not in self.shapes:
                self._allocate(name, tuple(a.shape[1:]))
            elif tuple(a.shape[1:]) != self.shapes[name]:
                raise LayerError(f"layer {name!r} output changed shape from {self.shapes[name]} to "
                                 f"{tuple(a.shape[1:])} at {self.ds.where(int(idx[0]))}")
            ac = a.detach().to(t_dtype)
            if not torch.isfinite(ac).all():
                bad = (~torch.isfinite(ac.flatten(1))).any(1).nonzero()[:, 0]
                row = self.ds.where(int(idx[bad[0].cpu()]))
                if torch.isfinite(a[bad]).all():
                    raise ActivationError(f"layer {name!r}: activations overflow float16 at {row}; "
                                          "use cache_dtype='float32' (--cache-dtype float32)")
                raise ActivationError(f"layer {name!r}: NaN or infinite activations at {row} "
                                      f"({len(bad)} image(s) in this batch)")
            rows = ac.cpu().numpy()
            if len(good) < n:  # skipped rows keep zeros in the cache
                full = np.zeros((n, *self.shapes[name]), dtype=np_dtype)
                full[(idx - start).numpy()] = rows
                rows = full
            self.caches[name].write(start - self.lo, rows)
            C = ac.shape[1]
            self.quantiles[name].add(ac.transpose(0, 1).reshape(C, -1))  # the cached values, as float32
            self.tops[name].add(ac, idx)

    # ---------------------------------------------------------- pass 2
    def pass_iou(self, checkpoint_every: float) -> None:
        cfg, ds = self.cfg, self.ds
        if self._warm is not None:  # never fork the loader workers while that thread may hold locks
            self._warm.join()
        thr = {n: torch.from_numpy(self.thresholds[n]).to(self.device, torch.float64) for n in self.layers}
        collate = _LabelCollate(ds.concepts, self.skipped)
        loader = _loader(_Labels(ds, self.done, self.hi), cfg.batch_size, cfg.num_workers, collate)
        last = time.monotonic()
        bar = tqdm(total=self.hi - self.lo, initial=self.done - self.lo, desc="pass 2/2: IoU", unit="img",
                   disable=not self.progress, dynamic_ncols=True)
        for start, stop, errors, built in loader:
            for i, err in sorted(errors.items()):
                if not cfg.skip_bad:
                    raise DatasetError(f"{err} (pass --skip-bad to skip bad rows and count them)")
                self.skipped.setdefault(i, err)
            labels = {}
            for size, (lb, rows) in built.items():
                self.unknown_labels += lb.unknown
                labels[size] = (lb.to(self.device), torch.tensor(rows, device=self.device))
            for name in self.layers:
                acts = torch.from_numpy(self.caches[name].read(start - self.lo, stop - self.lo)).to(self.device)
                for size, (lb, rows) in labels.items():
                    key = (name, size)
                    if key not in self._masks:
                        self._masks[key] = UnitMasks(*self.shapes[name][1:], *size, device=self.device)
                    area, inter = self._masks[key].count(acts[rows].float(), thr[name], lb)
                    self.counts[name].add(lb, area, inter)
            self.done = stop
            bar.update(stop - start)
            if time.monotonic() - last >= checkpoint_every:
                self.save_checkpoint()
                last = time.monotonic()
        bar.close()

    # ---------------------------------------------------------- merges (collectives: every rank calls them)
    def merge_pass1(self, group: Group) -> None:
        """Layer shapes, thresholds and top images over every rank's rows."""
        shapes: dict[str, tuple] = {}
        for r, theirs in enumerate(group.gather(self.shapes)):
            for name, shape in theirs.items():
                if shapes.setdefault(name, tuple(shape)) != tuple(shape):
                    raise LayerError(f"layer {name!r} outputs {shapes[name]} on one rank and {tuple(shape)} "
                                     f"on rank {r}: every image must give the same feature-map size")
        if len(shapes) < len(self.layers):
            raise DatasetError(f"{self.ds.index_path}: no usable image (all {len(self.ds)} rows were skipped)")
        for name in self.layers:
            if name not in self.shapes:  # this rank had no usable row
                self._allocate(name, shapes[name])
            self.thresholds[name] = group.merge_quantile(self.quantiles[name]).threshold()
            if group.distributed:
                C, h, w = self.shapes[name]
                self.merged_tops[name] = combine_tops(group.gather(self.tops[name].state_dict()),
                                                      C, self.cfg.topk, (h, w))
            else:
                self.merged_tops[name] = self.tops[name]

    def merge_pass2(self, group: Group) -> None:
        """IoU counts, skipped rows and unknown labels over every rank's rows."""
        for name in self.layers:
            if name not in self.counts:
                self.counts[name] = self._new_counts(name)
            if group.distributed:
                self.merged_counts[name] = combine_counts(group.gather(self.counts[name].state_dict()),
                                                          *self._count_dims(name), device=self.device)
            else:
                self.merged_counts[name] = self.counts[name]
        self.all_skipped = {i: e for part in group.gather(self.skipped) for i, e in part.items()}
        self.all_unknown = sum(group.gather(self.unknown_labels))

    def _count_dims(self, name: str) -> tuple[int, int, int]:
        return self.shapes[name][0], len(self.ds.concepts), len(self.ds.concepts.categories)

    # ---------------------------------------------------------- results
    def results(self) -> dict[str, LayerResult]:
        cons = self.ds.concepts
        names = np.asarray(cons.names, dtype=str)
        cats = np.asarray(cons.primary_names, dtype=str)
        out = {}
        for name in self.layers:
            counts = self.merged_counts[name]
            top = self.merged_tops[name]
            row0 = self.ds.rows[0]
            out[name] = LayerResult(
                name=name, iou=counts.iou(cons.primary).astype(np.float32),
                thresholds=self.thresholds[name].astype(np.float32),
                concept_names=names, concept_categories=cats, concept_numbers=cons.numbers,
                categories=list(cons.categories), iou_threshold=self.cfg.iou_threshold,
                shape=self.shapes[name], mask_size=(row0.sh, row0.sw),
                top_images=top.images, top_values=top.values, top_maps=top.maps,
                dead=(counts.total_area == 0).cpu().numpy(),
            )
        return out


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


def build_summary(identity: dict, ds: Broden, device: str, skipped: dict, unknown: int, timing: dict,
                  layer_results: dict, world: int = 1, chunks: int | None = None) -> dict:
    """summary.json of a finished run (``docs/run-format.md``)."""
    return {
        "format_version": FORMAT_VERSION,
        "netdissect_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": identity["model"],
        "dataset": {**identity["dataset"], "n_used": len(ds) - len(skipped),
                    "skipped": [{"row": i, "error": e} for i, e in sorted(skipped.items())],
                    "unknown_label_count": unknown,
                    "categories": list(ds.concepts.categories), "n_concepts": len(ds.concepts)},
        "config": {**identity["config"], "device": device, "world_size": world,
                   **({"chunks": chunks} if chunks else {})},
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "layers": {name: lr.summary() for name, lr in layer_results.items()},
    }


def write_run(run_dir: Path, ds: Broden, layer_results: dict, summary: dict) -> None:
    """The run directory's files (each written atomically; summary.json last)."""
    image_paths = [r.image for r in ds.rows]
    for name, lr in layer_results.items():
        lr.save(layer_folder(run_dir, name), image_paths)
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())


def dissect(
    model: nn.Module | str,
    layers: str | list[str],
    dataset: str | os.PathLike | Broden,
    *,
    out: str | os.PathLike | None = None,
    weights: str | None = None,
    normalize: str | None = None,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    topk: int = 10,
    batch_size: int = 64,
    num_workers: int | None = None,
    cache_dtype: str = "float16",
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
) -> DissectionResult | None:
    """Dissect ``layers`` of ``model`` on a Broden-format ``dataset``.

    Parameters
    ----------
    model : an ``nn.Module`` taking (N, 3, H, W) RGB batches, or a spec such as
        ``"torchvision:resnet18"``, ``"zoo:scene-cnn"``, ``"file.py:factory"``.
    layers : dotted names of submodules whose outputs are (N, C, H, W).
    dataset : path to a Broden-format folder, or a :class:`netdissect.data.Broden`.
    out : run directory to write (``docs/run-format.md``); None keeps results in memory only.
    weights, normalize : see :func:`netdissect.models.load_model`.
    quantile : the top quantile q defining each unit's threshold (0.005 as CVPR 2017; PNAS uses 0.01).
    iou_threshold : a unit is a detector when its best IoU exceeds this (0.04).
    topk : how many top images (by peak activation) to keep per unit.
    cache_dtype : ``float16`` (compact, default) or ``float32`` (exact) for the on-disk activation cache.
        Thresholds and masks are both computed from the cached values, so they agree.
    device : ``cpu``, ``cuda`` (under torchrun: ``cuda:LOCAL_RANK``), ``cuda:1``, ...
    precision : ``fp32`` (default) or ``bf16``: the forward pass under ``torch.autocast`` in bfloat16
        (faster on CPUs with AVX512-BF16/AMX and on GPUs; labels agree closely, not bit for bit).
    skip_bad : skip (and count in summary.json) rows with missing or corrupt files instead of failing.
        Pass 1 then reads each row's masks too, so a skipped row enters no statistic at all.
    resume : continue a killed run in ``out`` from its last checkpoint.
    checkpoint_every : seconds between checkpoints.
    chunk : ``"i/n"``: run pass 1 on the i-th of n contiguous slices of the rows into the chunk
        folder ``out`` and stop (returns None); ``netdissect merge`` (:func:`merge_chunks`) completes
        the run from all n chunk folders.

    Under ``torchrun`` every rank calls this; each dissects a slice of the rows, the statistics
    merge exactly, rank 0 writes ``out``, and every rank returns the same result.

    Returns
    -------
    DissectionResult : ``result[layer].units`` (one row per unit), ``result.summary``.
    """
    cfg = DissectConfig(quantile=quantile, iou_threshold=iou_threshold, topk=topk, batch_size=batch_size,
                        num_workers=default_workers() if num_workers is None else num_workers,
                        cache_dtype=cache_dtype, device=device, skip_bad=skip_bad, split=split, limit=limit,
                        precision=precision)
    cfg.check()
    part = parse_chunk(chunk)
    if part is not None and out is None:
        raise NetDissectError("a chunk needs out= (--out): the folder that keeps the chunk for `netdissect merge`")
    layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not layers:
        raise LayerError("no layers given: name at least one layer to dissect")
    group = Group.from_env(device)
    try:
        if part is not None and group.distributed:
            raise NetDissectError("--chunk runs in one process: torchrun shards the rows itself, "
                                  "so launch chunks without torchrun (or torchrun without --chunk)")
        cfg.device = group.device
        return _dissect(model, layers, dataset, cfg, group, part, out=out, weights=weights, normalize=normalize,
                        resume=resume, progress=progress and group.rank == 0, checkpoint_every=checkpoint_every,
                        model_spec=model_spec)
    finally:
        group.close()


def _prepare_work(run_dir: Path, group: Group, part, resume: bool, identity: dict):
    """The work folder of this process, or ``("finished", value)`` when ``resume`` finds the run done."""
    top = run_dir / ".work"
    work = top / f"rank{group.rank}" if group.distributed else top
    err, finished = None, False
    if part is not None:
        marker = run_dir / CHUNK_FILE
        if marker.exists():
            saved = json.loads(marker.read_text()).get("identity")
            if saved != json.loads(_fingerprint(identity)):
                err = (f"{run_dir} holds a chunk of a different run (other settings, model or dataset): "
                       "choose another --out for this one")
            elif not resume:
                err = f"{run_dir} holds finished chunk {part[0]}/{part[1]}: pass --resume to keep it, or remove {run_dir}"
            finished = err is None
        elif top.exists() and not resume:
            err = f"{run_dir} holds an unfinished chunk: pass --resume to continue it, or remove {top} to start over"
    elif group.rank == 0 or not group.distributed:
        if top.exists() and not resume:
            err = f"{run_dir} holds an unfinished run: pass --resume to continue it, or remove {top} to start over"
        finished = resume and not top.exists() and (run_dir / "summary.json").exists()
    elif work.exists() and not resume:
        err = f"{run_dir} holds an unfinished run: pass --resume to continue it, or remove {work} to start over"
    group.agree(err)
    if group.broadcast(finished):
        return "finished", work
    if resume and not (work / "checkpoint.npz").exists():
        shutil.rmtree(work, ignore_errors=True)  # nothing checkpointed yet: start afresh
    work.mkdir(parents=True, exist_ok=True)
    return "work", work


def _dissect(model, layers, dataset, cfg: DissectConfig, group: Group, part, *, out, weights, normalize,
             resume, progress, checkpoint_every, model_spec):
    if isinstance(model, str):
        model_spec = model
    else:
        model_spec = model_spec or f"python:{type(model).__name__}"
    model, prep = load_model(model, weights=weights, normalize=normalize)
    for name in layers:
        resolve_layer(model, name)
    ds = dataset if isinstance(dataset, Broden) else Broden(dataset, split=cfg.split, limit=cfg.limit)
    model = model.to(cfg.device)
    group.broadcast_module(model)  # the same weights on every rank, random initialisation included
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    identity = {
        "model": {"spec": model_spec, "weights": weights or ("DEFAULT" if model_spec.startswith("torchvision:") else None),
                  "normalize": prep.describe(), "sha256": model_identity(model)},
        "dataset": ds.identity(),
        "layers": layers,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("num_workers", "device")},
    }
    rows = shard_rows(len(ds), *part) if part else shard_rows(len(ds), group.rank, group.world)
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

    run = None
    try:
        run = _Run(model, prep, layers, ds, cfg, work, identity, progress, rows)
        ident_path = work / "identity.json"
        err = None
        if resume and run.ckpt_path.exists():
            saved = json.loads(ident_path.read_text()) if ident_path.exists() else None
            if saved != json.loads(_fingerprint({**identity, "shard": shard})):
                err = (f"cannot resume {run_dir}: it was started with different settings, model, dataset "
                       "or number of processes; start a new run or remove its .work folder")
        else:
            atomic_write_bytes(ident_path, _fingerprint({**identity, "shard": shard}).encode())
        group.agree(err)
        if resume and run.ckpt_path.exists():
            run.load_checkpoint()
        t0 = time.monotonic()
        if run.phase == 1:
            run.pass_activations(checkpoint_every)
        if part is not None:
            run.save_checkpoint()
            atomic_write_bytes(run_dir / CHUNK_FILE, json.dumps(
                {"chunk": part[0], "of": part[1], "rows": list(rows), "identity": identity,
                 "timing_s": {"activations": round(time.monotonic() - t0, 3)}}, indent=2).encode())
            return None
        run.merge_pass1(group)
        if run.phase == 1:
            for name in layers:
                run.counts[name] = run._new_counts(name)
            run.phase, run.done = 2, run.lo
            run.save_checkpoint()
        t1 = time.monotonic()
        run.pass_iou(checkpoint_every)
        run.merge_pass2(group)
        t2 = time.monotonic()
        layer_results = run.results()
    finally:
        for c in getattr(run, "caches", {}).values():
            c.close()
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)

    summary = build_summary(identity, ds, cfg.device, run.all_skipped, run.all_unknown,
                            {"activations": t1 - t0, "iou": t2 - t1}, layer_results, group.world)
    result = DissectionResult(layer_results, summary, run_dir)
    if run_dir is not None:
        group.barrier()  # every rank has closed its caches
        if group.rank == 0:
            write_run(run_dir, ds, layer_results, summary)
        group.barrier()  # the run is written: the work folders can go
        if group.distributed and group.rank != 0:
            shutil.rmtree(work, ignore_errors=True)  # (on other machines, rank 0 cannot reach it)
        group.barrier()
        if group.rank == 0:
            shutil.rmtree(run_dir / ".work", ignore_errors=True)
    return result
