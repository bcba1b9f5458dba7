"""The state of one dissection run over rows ``[lo, hi)``: caches, statistics, checkpoints.

This is the seam the passes (:mod:`.activations`, :mod:`.counting`), the
torchrun merges (:mod:`.distributed`) and chunk merges (:mod:`.chunks`) share.

``quantiles``, ``tops``, ``counts``, ``skipped`` and ``unknown_labels`` are this
process's own (they are what its checkpoint holds); ``thresholds``,
``merged_tops`` and ``merged_counts`` are over every shard, set by the merges.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from netdissect.atomic import savez as atomic_savez
from netdissect.dissection.cache import ActivationCache
from netdissect.dissection.result import LayerResult
from netdissect.errors import NetDissectError
from netdissect.stats import IoUCounts, TopImages, TopQuantile

CHECKPOINT = "checkpoint.npz"


class RunState:
    def __init__(self, layers: list[str], probe, source, cfg, work: Path, rows: tuple[int, int] | None = None,
                 layer_thresholds: bool = True):
        """``layer_thresholds=False``: no quantile statistic over the layer's own positions (the PNAS
        thresholds are computed over the upsampled maps after pass 1 instead)."""
        import torch

        self.layers, self.probe, self.source, self.cfg, self.work = layers, probe, source, cfg, Path(work)
        self.lo, self.hi = rows if rows is not None else (0, len(probe))
        self.layer_thresholds = layer_thresholds
        self.device = torch.device(cfg.device)
        self.shapes: dict[str, tuple] = {}
        self.caches: dict[str, ActivationCache] = {}
        self.quantiles: dict[str, TopQuantile] = {}
        self.tops: dict[str, TopImages] = {}
        self.counts: dict[str, IoUCounts] = {}
        self.thresholds: dict[str, np.ndarray] = {}
        self.merged_tops: dict[str, TopImages] = {}
        self.merged_counts: dict[str, IoUCounts] = {}
        self.skipped: dict[int, str] = {}
        self.unknown_labels = 0
        self.label_positions = 0
        self.tied: dict[str, int] = {}  # lossy cache: positions equal to their unit's threshold
        self.phase, self.done = 1, self.lo
        self.all_skipped: dict[int, str] = {}
        self.all_unknown = 0
        # layer -> pnas.ExactStream: the PNAS threshold scan fed by pass 1 (set by the engine)
        self.pnas_streams: dict = {}
        # layer -> (kind, layout): layers without a spatial map, labelled image-level (set by the engine);
        # pass 2 records which concepts each row holds for them (imagelevel.Presence)
        self.image_level: dict = {}
        self.presence = None

    # ---------------------------------------------------------- checkpoints
    @property
    def ckpt_path(self) -> Path:
        return self.work / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.ckpt_path.exists()

    def save_checkpoint(self) -> None:
        flush = getattr(self.source, "flush", None)  # the labels of the rows done are on disk before
        if flush is not None:                        # the checkpoint says they are done
            flush()
        for c in self.caches.values():
            c.flush()
        arrays = {"phase": np.int64(self.phase), "done": np.int64(self.done),
                  "rows": np.asarray([self.lo, self.hi], np.int64),
                  "unknown_labels": np.int64(self.unknown_labels),
                  "label_positions": np.int64(self.label_positions),
                  "skipped_rows": np.asarray(sorted(self.skipped), np.int64),
                  "skipped_why": np.asarray([self.skipped[i] for i in sorted(self.skipped)], dtype=str),
                  "files": np.asarray(self.processed_files())}
        if self.presence is not None:
            arrays.update(self.presence.state_dict())
        for name in self.layers:
            if name not in self.shapes:
                continue
            arrays[f"{name}/shape"] = np.asarray(self.shapes[name], np.int64)
            arrays[f"{name}/tied"] = np.int64(self.tied.get(name, 0))
            for key, stat in (("q", self.quantiles), ("top", self.tops), ("iou", self.counts)):
                if name in stat:
                    for k, v in stat[name].state_dict().items():
                        arrays[f"{name}/{key}/{k}"] = v
            if name in self.thresholds:
                arrays[f"{name}/thresholds"] = self.thresholds[name]
        atomic_savez(self.ckpt_path, **arrays)

    def load_checkpoint(self) -> None:
        """Restore from the work folder's checkpoint; the activation caches must be intact."""
        fix = f"it cannot be resumed: start afresh (remove {self.work}, or run without --resume after removing it)"
        try:
            with np.load(self.ckpt_path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            phase, done = int(a["phase"]), int(a["done"])
            rows = tuple(int(v) for v in a["rows"])
        except FileNotFoundError:
            raise NetDissectError(f"{self.ckpt_path}: no checkpoint; {fix}") from None
        except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
            raise NetDissectError(f"{self.ckpt_path}: corrupt checkpoint ({type(exc).__name__}: {exc}); {fix}") from None
        if rows != (self.lo, self.hi):
            raise NetDissectError(f"{self.ckpt_path}: checkpoint of rows {rows}, not of this run's rows "
                                  f"({self.lo}, {self.hi})")
        self.phase, self.done = phase, done
        saved = str(a["files"]) if "files" in a else ""
        if saved and saved != self.processed_files():
            raise NetDissectError(f"{self.ckpt_path}: files already processed (pass {phase}, rows {self.lo}.."
                                  f"{self.done - 1}) were added, removed, renamed or changed in size since the "
                                  f"checkpoint; {fix}")
        self.unknown_labels = int(a.get("unknown_labels", 0))
        self.label_positions = int(a.get("label_positions", 0))
        self.skipped = {int(i): str(w) for i, w in zip(a["skipped_rows"], a["skipped_why"])}
        if "presence/bits" in a:
            from netdissect.dissection.imagelevel import Presence

            cons = self.source.concepts
            self.presence = Presence.from_state(a, len(cons), len(cons.categories))
        try:
            for name in self.layers:
                if f"{name}/shape" not in a:
                    continue
                self.allocate(name, tuple(int(v) for v in a[f"{name}/shape"]), existing=True)
                self.tied[name] = int(a.get(f"{name}/tied", 0))

                def sub(prefix):
                    return {k[len(prefix):]: v for k, v in a.items() if k.startswith(prefix)}
                if name in self.quantiles:
                    self.quantiles[name].load_state_dict(sub(f"{name}/q/"))
                self.tops[name].load_state_dict(sub(f"{name}/top/"))
                if f"{name}/thresholds" in a:
                    self.thresholds[name] = a[f"{name}/thresholds"]
                if f"{name}/iou/inter" in a:
                    self.counts[name] = self.new_counts(name).load_state_dict(sub(f"{name}/iou/"))
        except (KeyError, ValueError, RuntimeError) as exc:
            raise NetDissectError(f"{self.ckpt_path}: inconsistent checkpoint ({exc}); {fix}") from None

    def processed_files(self) -> str:
        """Digest (names and sizes) of the files processed so far: in pass 1 the inputs of the rows
        done; in pass 2 the inputs of every row (they are in the cache) and the labels of the rows done."""
        inputs = range(self.lo, self.hi if self.phase == 2 else self.done)
        labels = range(self.lo, self.done) if self.phase == 2 else range(0)
        return f"{self.probe.files_digest(inputs, mtime=False)}/{self.source.files_digest(labels, mtime=False)}"

    # ---------------------------------------------------------- allocation
    def allocate(self, name: str, shape: tuple, existing: bool = False) -> None:
        """Cache and statistics of layer ``name`` with maps ``shape`` (C, h, w).  ``existing``: the
        cache file must already be there, whole (resume, merge)."""
        C, h, w = shape
        self.shapes[name] = shape
        self.caches[name] = ActivationCache(self.cache_path(name), self.hi - self.lo, shape, self.cfg.cache_dtype,
                                            existing=existing)
        # total: every position of the WHOLE probe, so shards keep enough values to merge exactly
        if self.layer_thresholds:
            self.quantiles[name] = TopQuantile(C, self.cfg.quantile, total=len(self.probe) * h * w, device=self.device,
                                               memory=self.cfg.quantile_memory)
        self.tops[name] = TopImages(C, self.topk, (h, w))

    @property
    def topk(self) -> int:
        """Top images kept per unit: ``cfg.topk``, at most the probe's rows."""
        return max(1, min(self.cfg.topk, len(self.probe)))

    def cache_path(self, name: str) -> Path:
        return self.work / f"{name.replace('/', '_')}.acts"

    def count_dims(self, name: str) -> tuple[int, int, int]:
        cons = self.source.concepts
        return self.shapes[name][0], len(cons), len(cons.categories)

    def new_counts(self, name: str) -> IoUCounts:
        return IoUCounts(*self.count_dims(name), device=self.device)

    def feed_cache(self, name: str, stat, block_bytes: int = 64 << 20) -> None:
        """Add this process's cached values of layer ``name`` (rows not skipped) to ``stat``: the
        further passes of a quantile statistic whose exact buffer did not fit its memory."""
        import torch

        if name not in self.caches:  # a chunk without a usable row
            return
        C = self.shapes[name][0]
        cache = self.caches[name]
        step = max(1, block_bytes // max(1, cache.record))
        for s in range(0, self.hi - self.lo, step):
            e = min(s + step, self.hi - self.lo)
            keep = [j for j in range(e - s) if self.lo + s + j not in self.skipped]
            if not keep:
                continue
            a = torch.from_numpy(cache.read(s, e))
            if len(keep) < e - s:
                a = a[keep]
            stat.add(a.transpose(0, 1).reshape(C, -1))

    def start_pass2(self) -> None:
        for name in self.layers:
            self.counts[name] = self.new_counts(name)
        if self.image_level:
            from netdissect.dissection.imagelevel import Presence

            cons = self.source.concepts
            self.presence = Presence(self.hi - self.lo, len(cons), len(cons.categories))
        self.tied = {}
        self.phase, self.done = 2, self.lo

    def close(self) -> None:
        for c in self.caches.values():
            c.close()

    # ---------------------------------------------------------- results
    def results(self) -> dict[str, LayerResult]:
        cons = self.source.concepts
        names = np.asarray(cons.names, dtype=str)
        cats = np.asarray(cons.primary_names, dtype=str)
        used = [i for i in range(len(self.probe)) if i not in self.all_skipped]
        sizes = self.source.mask_sizes(used) if used else []
        out = {}
        for name in self.layers:
            if name in self.image_level:  # scored by dissection.imagelevel, not by masks
                continue
            counts = self.merged_counts[name]
            top = self.merged_tops[name]
            out[name] = LayerResult(
                name=name, iou=counts.iou(cons.primary).astype(np.float32),
                thresholds=self.thresholds[name].astype(np.float32),
                concept_names=names, concept_categories=cats, concept_numbers=cons.numbers,
                categories=list(cons.categories), iou_threshold=self.cfg.iou_threshold,
                shape=self.shapes[name], mask_size=tuple(sizes[0]) if len(sizes) == 1 else (),
                mask_sizes=[tuple(s) for s in sizes],
                top_images=top.images, top_values=top.values, top_maps=top.maps,
                dead=(counts.total_area == 0).cpu().numpy(),
            )
        return out
