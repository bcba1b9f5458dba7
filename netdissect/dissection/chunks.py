"""A run split into chunks that run at different times, then merged exactly.

    netdissect dissect ... --chunk 0/3 --out chunks/c0     # pass 1 on rows 0..N/3, any machine, any time
    netdissect dissect ... --chunk 1/3 --out chunks/c1
    netdissect dissect ... --chunk 2/3 --out chunks/c2
    netdissect merge chunks/c0 chunks/c1 chunks/c2 --out runs/r18

    >>> from netdissect.dissection.chunks import merge_chunks
    >>> result = merge_chunks(["chunks/c0", "chunks/c1", "chunks/c2"], out="runs/r18")  # doctest: +SKIP

Thresholds need every image, so a chunk runs pass 1 only (the forward pass: its
activation cache, quantile buffers and top images) and stops.  The merge
combines the chunks' quantile buffers into the thresholds (exactly: see
:mod:`netdissect.stats.quantile`), then runs pass 2 (IoU from each chunk's
cache; no model) chunk by chunk, checkpointing into the chunk folders, sums
the counts and writes the run.  A preempted chunk or merge resumes
(``--resume`` / rerun the merge) and loses at most the work since its last
checkpoint; the result equals a single run's.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from netdissect.data import Broden
from netdissect.dissection.distributed import (
    combine_counts,
    combine_quantiles,
    combine_tops,
    resolve_device,
)
from netdissect.dissection.engine import (
    CHUNK_FILE,
    DissectConfig,
    _Run,
    build_summary,
    default_workers,
    write_run,
)
from netdissect.dissection.result import DissectionResult
from netdissect.errors import DatasetError, NetDissectError


def read_chunks(chunks: list[str | os.PathLike]) -> list[tuple[Path, dict]]:
    """The chunk folders with their ``chunk.json``, in chunk order; checks they are one complete run."""
    if not chunks:
        raise NetDissectError("no chunk folders given")
    found = []
    for d in map(Path, chunks):
        f = d / CHUNK_FILE
        if not f.exists():
            if (d / ".work").exists():
                raise NetDissectError(f"{d}: chunk has not finished its pass 1; continue it with its "
                                      f"`netdissect dissect ... --chunk I/N --out {d} --resume`")
            raise NetDissectError(f"{d}: not a chunk folder (no {CHUNK_FILE}; "
                                  f"`netdissect dissect ... --chunk I/N --out {d}` makes one)")
        found.append((d, json.loads(f.read_text())))
    (d0, first) = found[0]
    n = first["of"]
    by_id: dict[int, Path] = {}
    for d, info in found:
        if info["identity"] != first["identity"]:
            raise NetDissectError(f"{d} and {d0} are chunks of different runs (settings, model or dataset differ)")
        if info["of"] != n:
            raise NetDissectError(f"{d} is chunk {info['chunk']}/{info['of']} but {d0} is one of {n} chunks")
        if info["chunk"] in by_id:
            raise NetDissectError(f"{d} and {by_id[info['chunk']]} are both chunk {info['chunk']}/{n}")
        by_id[info["chunk"]] = d
    missing = [f"{i}/{n}" for i in range(n) if i not in by_id]
    if missing:
        raise NetDissectError(f"missing chunk(s) {', '.join(missing)}: every chunk of the run is needed")
    return sorted(found, key=lambda x: x[1]["chunk"])


def merge_chunks(
    chunks: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    dataset: str | os.PathLike | None = None,
    device: str = "cpu",
    num_workers: int | None = None,
    progress: bool = True,
    checkpoint_every: float = 60.0,
    remove_chunks: bool = False,
) -> DissectionResult:
    """Complete a chunked run: thresholds from every chunk, then IoU chunk by chunk; write ``out``.

    ``dataset`` overrides the dataset folder recorded by the chunks (the same rows at another
    path, e.g. another machine's mount).  ``remove_chunks`` deletes the chunk folders once
    ``out`` is written.
    """
    found = read_chunks(chunks)
    identity = found[0][1]["identity"]
    cfg = DissectConfig(**identity["config"], device=resolve_device(device),
                        num_workers=default_workers() if num_workers is None else num_workers)
    layers = identity["layers"]
    ds = Broden(dataset or identity["dataset"]["path"], split=cfg.split, limit=cfg.limit)
    mine = {k: v for k, v in ds.identity().items() if k != "path"}
    if mine != {k: v for k, v in identity["dataset"].items() if k != "path"}:
        raise DatasetError(f"{ds.root}: not the rows the chunks were computed on "
                           f"(chunks: {identity['dataset']}; here: {ds.identity()})")

    def open_run(d: Path, info: dict) -> _Run:
        run = _Run(None, None, layers, ds, cfg, d / ".work", identity, progress, tuple(info["rows"]))
        if not run.ckpt_path.exists():
            raise NetDissectError(f"{d}: chunk folder has no {run.ckpt_path.name} (was its .work removed?)")
        run.load_checkpoint()
        if run.phase == 1 and run.done != run.hi:
            raise NetDissectError(f"{d}: chunk pass 1 stopped at row {run.done} of {run.lo}..{run.hi}")
        return run

    def close(run: _Run) -> None:
        for c in run.caches.values():
            c.close()

    # pass-1 statistics: one chunk in memory at a time
    shapes, quantiles, tops = {}, {}, {}
    for d, info in found:
        run = open_run(d, info)
        try:
            for name, shape in run.shapes.items():
                if shapes.setdefault(name, shape) != shape:
                    raise NetDissectError(f"layer {name!r}: chunk {d} has maps {shape}, others {shapes[name]}")
                q = run.quantiles[name]
                quantiles[name] = combine_quantiles([quantiles[name], q]) if name in quantiles else q
                C, h, w = shape
                tops[name] = combine_tops([tops[name].state_dict(), run.tops[name].state_dict()], C, cfg.topk,
                                          (h, w)) if name in tops else run.tops[name]
        finally:
            close(run)
    if len(shapes) < len(layers):
        raise DatasetError(f"{ds.index_path}: no usable image in any chunk (all {len(ds)} rows were skipped)")
    thresholds = {name: quantiles[name].threshold() for name in layers}
    del quantiles

    # pass 2, chunk by chunk (checkpointed into each chunk folder)
    t0 = time.monotonic()
    counts, skipped, unknown = {}, {}, 0
    lead = None
    for d, info in found:
        run = open_run(d, info)
        try:
            for name in layers:
                if name not in run.shapes:
                    run._allocate(name, shapes[name])
            same = run.phase == 2 and all(n in run.thresholds and np.array_equal(run.thresholds[n], thresholds[n], equal_nan=True)
                                          for n in layers)
            if not same:
                run.thresholds = dict(thresholds)
                run.counts = {name: run._new_counts(name) for name in layers}
                run.phase, run.done = 2, run.lo
                run.save_checkpoint()
            run.pass_iou(checkpoint_every)
            run.save_checkpoint()
            for name in layers:
                c = run.counts[name]
                counts[name] = combine_counts([counts[name].state_dict(), c.state_dict()], *run._count_dims(name),
                                              device=run.device) if name in counts else c
            skipped.update(run.skipped)
            unknown += run.unknown_labels
            lead = run
        finally:
            close(run)
    lead.thresholds, lead.merged_tops, lead.merged_counts = thresholds, tops, counts
    layer_results = lead.results()
    timing = {"activations": sum(info.get("timing_s", {}).get("activations", 0.0) for _, info in found),
              "iou": time.monotonic() - t0}
    summary = build_summary(identity, ds, cfg.device, skipped, unknown, timing, layer_results,
                            chunks=len(found))
    run_dir = Path(out)
    write_run(run_dir, ds, layer_results, summary)
    if remove_chunks:
        for d, _ in found:
            shutil.rmtree(d, ignore_errors=True)
    return DissectionResult(layer_results, summary, run_dir)
