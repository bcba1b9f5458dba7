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

from netdissect.concepts import BrodenMasks
from netdissect.data import Broden
from netdissect.data.digest import files_digest
from netdissect.dissection.config import DissectConfig, default_workers
from netdissect.dissection.counting import run_iou_pass
from netdissect.dissection.distributed import (
    combine_counts,
    combine_quantiles,
    combine_tops,
    resolve_device,
)
from netdissect.dissection.engine import check_unknown_labels
from netdissect.dissection.output import build_summary, write_run
from netdissect.dissection.result import DissectionResult
from netdissect.dissection.state import RunState
from netdissect.errors import DatasetError, NetDissectError
from netdissect.probe import BrodenImages
from netdissect.runfolder import CHUNK_FILE, check_merge_folders, check_out, lock_folders, read_chunk_info

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
        found.append((d, read_chunk_info(d)))
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
    check_merge_folders(chunks, out)
    found = read_chunks(chunks)
    with lock_folders([check_out(out)], what="run folder", flag="--out"), \
            lock_folders([d for d, _ in found], what="chunk folder"):
        return _merge(found, out, dataset, device, num_workers, progress, checkpoint_every, remove_chunks)


def _merge(found, out, dataset, device, num_workers, progress, checkpoint_every, remove_chunks):
    identity = found[0][1]["identity"]
    try:
        cfg = DissectConfig(**identity["config"], device=resolve_device(device),
                            num_workers=default_workers() if num_workers is None else num_workers)
        layers = identity["layers"]
    except (TypeError, KeyError) as exc:
        raise NetDissectError(f"{found[0][0] / CHUNK_FILE}: identity of another netdissect version ({exc}); "
                              "rerun the chunks with this version") from None
    ds = Broden(dataset or identity["dataset"]["path"], split=cfg.split, limit=cfg.limit)
    mine = {k: v for k, v in ds.identity().items() if k != "path"}
    if mine != {k: v for k, v in identity["dataset"].items() if k != "path"}:
        raise DatasetError(f"{ds.root}: not the rows the chunks were computed on "
                           f"(chunks: {identity['dataset']}; here: {ds.identity()})")
    probe, source = BrodenImages(ds), BrodenMasks(ds)

    def open_run(d: Path, info: dict) -> RunState:
        st = RunState(layers, probe, source, cfg, d / ".work", tuple(info["rows"]))
        if not st.has_checkpoint():
            raise NetDissectError(f"{d}: chunk folder has no {st.ckpt_path.name} (was its .work removed?); "
                                  f"rerun the chunk")
        try:
            st.load_checkpoint()
        except NetDissectError as exc:
            raise NetDissectError(f"chunk {d}: {exc}") from None
        if st.phase == 1 and st.done != st.hi:
            raise NetDissectError(f"{d}: chunk pass 1 stopped at row {st.done} of {st.lo}..{st.hi}")
        return st

    # pass-1 statistics: one chunk in memory at a time
    shapes, quantiles, tops = {}, {}, {}
    for d, info in found:
        st = open_run(d, info)
        try:
            for name, shape in st.shapes.items():
                if shapes.setdefault(name, shape) != shape:
                    raise NetDissectError(f"layer {name!r}: chunk {d} has maps {shape}, others {shapes[name]}")
                q = st.quantiles[name]
                quantiles[name] = combine_quantiles([quantiles[name], q]) if name in quantiles else q
                C, h, w = shape
                tops[name] = combine_tops([tops[name].state_dict(), st.tops[name].state_dict()], C, st.topk,
                                          (h, w)) if name in tops else st.tops[name]
        finally:
            st.close()
    if len(shapes) < len(layers):
        raise DatasetError(f"{ds.index_path}: no usable image in any chunk (all {len(ds)} rows were skipped)")
    thresholds = {}
    for name in layers:  # further passes over every chunk's cache when the buffer did not fit its memory
        stat = quantiles.pop(name)
        while not stat.exact:
            stat = stat.refinement()
            for d, info in found:
                st = open_run(d, info)
                try:
                    st.feed_cache(name, stat)
                finally:
                    st.close()
        thresholds[name] = stat.threshold()

    # pass 2, chunk by chunk (checkpointed into each chunk folder)
    t0 = time.monotonic()
    counts, skipped, unknown, positions, tied = {}, {}, 0, 0, {}
    lead = None
    for d, info in found:
        st = open_run(d, info)
        try:
            for name in layers:
                if name not in st.shapes:
                    st.allocate(name, shapes[name])  # a chunk without a usable row has no cache
            same = st.phase == 2 and all(n in st.thresholds and np.array_equal(st.thresholds[n], thresholds[n],
                                                                               equal_nan=True) for n in layers)
            if not same:
                st.thresholds = dict(thresholds)
                st.start_pass2()
                st.save_checkpoint()
            run_iou_pass(st, checkpoint_every, progress)
            st.save_checkpoint()
            for name in layers:
                c = st.counts[name]
                counts[name] = combine_counts([counts[name].state_dict(), c.state_dict()], *st.count_dims(name),
                                              device=st.device) if name in counts else c
                tied[name] = tied.get(name, 0) + st.tied.get(name, 0)
            skipped.update(st.skipped)
            unknown += st.unknown_labels
            positions += st.label_positions
            lead = st
        finally:
            st.close()
    lead.thresholds, lead.merged_tops, lead.merged_counts = thresholds, tops, counts
    lead.all_skipped = skipped
    layer_results = lead.results()
    note = check_unknown_labels(unknown, positions, str(ds.root))
    if note and progress:
        print(f"netdissect: {note}")
    timing = {"activations": sum(info.get("timing_s", {}).get("activations", 0.0) for _, info in found),
              "iou": time.monotonic() - t0}
    extra = {"cache": {"dtype": cfg.cache_dtype, "exact": cfg.cache_dtype == "float32"}}
    if cfg.cache_dtype != "float32":
        extra["lossy_cache"] = {"tied_positions": tied}
    summary = build_summary(identity, probe, source, cfg.device, skipped, unknown, timing, layer_results,
                            chunks=len(found), extra=extra)
    # the images as the report checks them before drawing (names, sizes, mtimes)
    summary["dataset"]["files_digest"] = files_digest(ds.image_dir, [r.image for r in ds.rows])
    run_dir = Path(out)
    write_run(run_dir, probe, layer_results, summary)
    if remove_chunks:
        for d, _ in found:
            shutil.rmtree(d, ignore_errors=True)
    return DissectionResult(layer_results, summary, run_dir)
