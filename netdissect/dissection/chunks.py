"""A run split into chunks that run at different times, then merged exactly.

    netdissect dissect ... --chunk 0/3 --out chunks/c0     # pass 1 on rows 0..N/3, any machine, any time
    netdissect dissect ... --chunk 1/3 --out chunks/c1
    netdissect dissect ... --chunk 2/3 --out chunks/c2
    netdissect merge chunks/c0 chunks/c1 chunks/c2 --out runs/r18

    >>> import torch
    >>> from netdissect import dissect
    >>> from netdissect.dissection.chunks import merge_chunks
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> for i in range(2):                          # on two machines, say (each returns None: pass 1 only)
    ...     dissect(net, ["1"], world, out=f"chunks/c{i}", chunk=f"{i}/2", normalize="none", progress=False)
    >>> result = merge_chunks(["chunks/c0", "chunks/c1"], out="runs/r18", progress=False)
    >>> one = dissect(net, ["1"], world, normalize="none", progress=False)      # the same in one process
    >>> bool((result["1"].iou == one["1"].iou).all() and (result["1"].thresholds == one["1"].thresholds).all())
    True

Thresholds need every image, so a chunk runs pass 1 only (the forward pass: its
activation cache, quantile buffers and top images; with a segmenter, a copy of
its rows' labels) and stops.  The merge combines the chunks' quantile buffers
into the thresholds (exactly: see :mod:`netdissect.stats.quantile`; with
``--iou pnas`` it scans every chunk's cache of the upsampled maps instead, as
one process does: :mod:`.pnas`), then runs pass 2 (IoU from each chunk's
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

from netdissect.atomic import write_bytes
from netdissect.concepts import BrodenMasks
from netdissect.concepts.generated import GeneratedLabels
from netdissect.concepts.segmenter import PooledLabels, SegmenterLabels
from netdissect.data import Broden
from netdissect.data.digest import files_digest
from netdissect.dissection.config import DissectConfig, default_workers
from netdissect.dissection.counting import run_iou_pass
from netdissect.dissection.distributed import (
    Group,
    combine_counts,
    combine_quantiles,
    combine_tops,
    resolve_device,
)
from netdissect.dissection.engine import check_unknown_labels
from netdissect.dissection.output import IMAGES_IN_RUN, build_summary, generated_image_paths, top_rows, write_run
from netdissect.dissection.pnas import pnas_thresholds
from netdissect.dissection.result import DissectionResult
from netdissect.dissection.state import RunState
from netdissect.errors import DatasetError, NetDissectError
from netdissect.probe import BrodenImages
from netdissect.probe.folder import ImageFolder
from netdissect.probe.latent import LatentSamples
from netdissect.runfolder import CHUNK_FILE, CHUNK_LABELS, check_merge_folders, check_out, lock_folders, read_chunk_info

_ABSENT = object()


def _difference(a, b, where: str = "identity") -> tuple[str, str, str]:
    """The first place where the JSON values ``a`` and ``b`` differ, with both values there (as
    JSON; ``absent`` for a key one of them lacks), e.g. ``("labels.seg_size", "[9, 7]", "[8, 8]")``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k, _ABSENT) != b.get(k, _ABSENT):
                return _difference(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{where}.{k}")
    show = lambda v: "absent" if v is _ABSENT else json.dumps(v)[:80]  # noqa: E731
    return where.removeprefix("identity."), show(a), show(b)


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
            where, mine, theirs = _difference(info["identity"], first["identity"])
            raise NetDissectError(f"{d} and {d0} are chunks of different runs: {where} is {mine} in {d} but "
                                  f"{theirs} in {d0}")
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

    ``dataset`` overrides the dataset (or image) folder recorded by the chunks (the same rows at
    another path, e.g. another machine's mount).  Segmenter labels are read from the copies the
    chunks kept (``CHUNK/labels/``), a generator's top images copied from ``CHUNK/images/``: no
    segmenter or model runs.  ``remove_chunks`` deletes the chunk folders once ``out`` is written.
    """
    check_merge_folders(chunks, out)
    found = read_chunks(chunks)
    with lock_folders([check_out(out)], what="run folder", flag="--out"), \
            lock_folders([d for d, _ in found], what="chunk folder"):
        return _merge(found, out, dataset, device, num_workers, progress, checkpoint_every, remove_chunks)


class _RecordedSegmenter:
    """The segmenter of a chunked run as its chunks recorded it (identity and catalogue): what the
    merge needs to read the labels the chunks kept; it segments nothing."""

    def __init__(self, labels: dict, catalogue: dict):
        self.spec = labels.get("spec")
        self.concepts, self.categories = list(catalogue["concepts"]), list(catalogue["categories"])
        self._identity = labels.get("segmenter")

    def identity(self):
        return self._identity


def _probe(identity: dict, dataset, cfg):
    """``(probe, broden_or_None)``: the rows the chunks were computed on, read from ``dataset``
    (default: the recorded path), checked to be the same rows."""
    recorded = identity["dataset"]
    if recorded.get("kind") == "latent":  # a generator's: the rows are the latent draw itself
        if dataset is not None:
            raise NetDissectError("--dataset: these chunks dissect a generator on latent samples, which "
                                  "read no dataset")
        probe = LatentSamples(recorded["samples"], recorded["seed"], recorded["dim"])
        probe.shape = tuple(identity["model"]["generator"]["output_size"])
        return probe, None
    path = dataset or recorded["path"]
    if recorded.get("kind") == "images":
        size = recorded["size"][0] if recorded.get("resize") else None
        probe, ds = ImageFolder(path, size=size, crop=recorded.get("crop", False), limit=cfg.limit,
                                interpolation=recorded.get("resample")), None
    elif recorded.get("kind") is None:
        ds = Broden(path, split=cfg.split, limit=cfg.limit)
        probe = BrodenImages(ds, size=recorded.get("resize"),  # --size recorded by the chunks
                             interpolation=recorded.get("resample"))
    else:
        raise NetDissectError(f"chunks of {recorded.get('kind')} rows cannot be merged (this netdissect merges "
                              "chunks of a dataset, an image folder or latent samples)")
    mine = {k: v for k, v in probe.identity().items() if k != "path"}
    if mine != {k: v for k, v in recorded.items() if k != "path"}:
        raise DatasetError(f"{path}: not the rows the chunks were computed on "
                           f"(chunks: {recorded}; here: {probe.identity()})")
    return probe, ds


def recorded_source(identity: dict, info: dict, labels_dir: Path, dataset=None):
    """``(probe, labels)`` of a finished run from its recorded identity: the same rows, and the
    dataset's masks or the segmenter labels kept in ``labels_dir`` (``info["segmenter"]`` the
    segmenter's catalogue as kept beside them; no segmenter runs).  ``netdissect score`` uses it."""
    cfg = DissectConfig(**identity["config"])
    probe, ds = _probe(identity, dataset, cfg)
    return probe, _labels(identity, info, probe, ds, labels_dir.parent, labels_dir=labels_dir)


def _labels(identity: dict, info: dict, probe, ds, folder: Path, labels_dir: Path | None = None):
    """The concept source of one chunk: the dataset's masks, or the segmenter labels the chunk kept
    in its folder (no segmenter runs); pooled for ``--iou pnas``."""
    labels_dir = folder / CHUNK_LABELS if labels_dir is None else labels_dir
    labels = identity.get("labels", {"kind": "broden"})
    if labels.get("kind") == "broden":
        source = BrodenMasks(ds)
    elif labels.get("kind") == "segmenter" and "segmenter" in info:
        source = SegmenterLabels(_RecordedSegmenter(labels, info["segmenter"]), probe, seg_size=labels["seg_size"],
                                 cache_dir=labels_dir)
    elif labels.get("kind") == "generated" and "segmenter" in info:
        source = GeneratedLabels(_RecordedSegmenter(labels, info["segmenter"]), probe, labels["generator"],
                                 seg_size=labels["seg_size"], cache_dir=labels_dir)
    else:
        raise NetDissectError(f"{folder / CHUNK_FILE}: labels of kind {labels.get('kind')!r} that this netdissect "
                              "cannot merge (a chunk of another version?): rerun the chunks with this version")
    if labels.get("iou") == "pnas":
        source = PooledLabels(source)
    mine = {k: v for k, v in source.identity().items() if k != "path"}
    if mine != {k: v for k, v in labels.items() if k != "path"}:
        raise NetDissectError(f"{folder}: its labels, read back, are not the ones it recorded "
                              f"(recorded: {labels}; read back: {source.identity()}): rerun the chunk")
    return source


def _merge(found, out, dataset, device, num_workers, progress, checkpoint_every, remove_chunks):
    identity = found[0][1]["identity"]
    try:
        cfg = DissectConfig(**identity["config"], device=resolve_device(device),
                            num_workers=default_workers() if num_workers is None else num_workers)
        layers = identity["layers"]
    except (TypeError, KeyError) as exc:
        raise NetDissectError(f"{found[0][0] / CHUNK_FILE}: identity of another netdissect version ({exc}); "
                              "rerun the chunks with this version") from None
    mode = identity.get("labels", {}).get("iou", "broden")
    # layers without a spatial map, labelled image-level (dissection.imagelevel): name -> (kind, None)
    image_level = {name: (kind, None) for name, kind in (found[0][1].get("image_level") or {}).items()}
    probe, ds = _probe(identity, dataset, cfg)
    sources = {d: _labels(identity, info, probe, ds, d) for d, info in found}
    source = sources[found[0][0]]

    def open_run(d: Path, info: dict) -> RunState:
        st = RunState(layers, probe, sources[d], cfg, d / ".work", tuple(info["rows"]),
                      layer_thresholds=mode != "pnas")
        st.image_level = image_level
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
                q = st.quantiles.get(name)  # (none with --iou pnas: its thresholds are over the upsampled maps)
                if q is not None:
                    quantiles[name] = combine_quantiles([quantiles[name], q]) if name in quantiles else q
                C, h, w = shape
                tops[name] = combine_tops([tops[name].state_dict(), st.tops[name].state_dict()], C, st.topk,
                                          (h, w)) if name in tops else st.tops[name]
        finally:
            st.close()
    if len(shapes) < len(layers):
        raise DatasetError(f"no usable row in any chunk of {probe.describe()} (all {len(probe)} rows were skipped)")
    thresholds = {}
    if mode == "pnas":  # one scan over every chunk's cache of the upsampled maps (algorithms.md section 2)
        states = []
        try:
            for d, info in found:
                states.append(open_run(d, info))
            for name in layers:
                if name in image_level:  # no region, no threshold
                    thresholds[name] = np.full(shapes[name][0], np.nan, np.float32)
                    continue
                lead = next(st for st in states if name in st.shapes)
                thresholds[name] = pnas_thresholds(lead, name, Group(device=cfg.device), parts=states)
        finally:
            for st in states:
                st.close()
    for name in list(quantiles):  # further passes over every chunk's cache when the buffer did not fit its memory
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
    presence = []  # each chunk's (first row, presence bits, categories held), for the image-level layers
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
            if st.presence is not None:
                presence.append((st.lo, st.presence.bits.copy(), st.presence.has.copy()))
            skipped.update(st.skipped)
            unknown += st.unknown_labels
            positions += st.label_positions
            lead = st
        finally:
            st.close()
    lead.thresholds, lead.merged_tops, lead.merged_counts = thresholds, tops, counts
    lead.all_skipped = skipped
    layer_results = lead.results()  # (the map layers)
    # the label scorecard over every chunk's cache, as one process computes it (docs/label-trust.md)
    from netdissect.trust.shards import chunk_scorecard

    # (only the chunks' cache files, one chunk's open at a time: no checkpoint is loaded)
    t_card = time.monotonic()
    parts = []
    for d, info in found:
        cache_of = RunState(layers, probe, sources[d], cfg, d / ".work", tuple(info["rows"])).cache_path
        parts.append((*info["rows"], {name: cache_of(name) for name in layers if name not in image_level}, sources[d]))
    card_info = chunk_scorecard(layer_results, parts, len(probe), skipped, dtype=cfg.cache_dtype,
                                num_workers=cfg.num_workers, progress=progress, spill_dir=found[0][0] / ".work") \
        if layer_results else {"computed": False, "why": "no layer with a spatial map"}
    if image_level:  # scored over every chunk's cache, as one process scores them
        from netdissect.dissection import imagelevel

        states = []
        try:
            for d, info in found:
                states.append(open_run(d, info))
            image_results = imagelevel.score_chunks(states, presence, image_level, tops, shapes, skipped,
                                                    len(probe), source.concepts,
                                                    **(found[0][1].get("image_level_cfg") or {}))
        finally:
            for st in states:
                st.close()
        layer_results = {name: layer_results.get(name) or image_results[name] for name in layers}
    t_card = time.monotonic() - t_card
    where = ds.root if ds is not None else getattr(probe, "root", probe.describe())
    note = check_unknown_labels(unknown, positions, str(where))
    if note and progress:
        print(f"netdissect: {note}")
    timing = {"activations": sum(info.get("timing_s", {}).get("activations", 0.0) for _, info in found),
              "iou": time.monotonic() - t0}
    extra = {"cache": {"dtype": cfg.cache_dtype, "exact": cfg.cache_dtype == "float32"}}
    if cfg.cache_dtype != "float32":
        extra["lossy_cache"] = {"tied_positions": tied}
    summary = build_summary(identity, probe, source, cfg.device, skipped, unknown, timing, layer_results,
                            chunks=len(found), extra=extra)
    summary["scorecard"] = card_info
    if card_info.get("computed"):
        summary["timing_s"]["scorecard"] = round(t_card, 3)
    summary["method"] = mode if len(image_level) < len(layers) else "image-level"
    for name, info in summary["layers"].items():
        info["method"] = "image-level" if name in image_level else mode
    run_dir = Path(out)
    image_paths = None
    if isinstance(probe, LatentSamples):  # the units' top images, from the chunks that generated them
        image_paths = generated_image_paths(probe)
        for i in top_rows(lr.top_images for lr in layer_results.values()):
            d = next(d for d, info in found if info["rows"][0] <= i < info["rows"][1])
            src = d / IMAGES_IN_RUN / image_paths[i]
            if not src.is_file():
                raise NetDissectError(f"{d}: chunk folder lacks the generated image {src.relative_to(d)} of one of "
                                      "its top rows (was it removed?); rerun the chunk")
            write_bytes(run_dir / IMAGES_IN_RUN / image_paths[i], src.read_bytes())
        summary["dataset"]["images_in_run"] = IMAGES_IN_RUN
        summary["dataset"]["files_digest"] = files_digest(run_dir / IMAGES_IN_RUN, image_paths)
    else:  # the images as the report checks them before drawing (names, sizes, mtimes)
        summary["dataset"]["files_digest"] = files_digest(probe.image_dir if ds is None else ds.image_dir,
                                                          probe.row_names())
    summary["labels"] = {**source.identity(), "iou": mode, "n_concepts": len(source.concepts)}
    if "segmenter" in found[0][1]:  # images the chunks segmented (the others came from their label caches)
        summary["labels"]["segmented_images"] = sum(info["segmenter"].get("segmented_images", 0) for _, info in found)
    write_run(run_dir, probe, layer_results, summary, image_paths)
    if remove_chunks:
        for d, _ in found:
            shutil.rmtree(d, ignore_errors=True)
    return DissectionResult(layer_results, summary, run_dir)
