"""``netdissect score RUN``: add the label scorecard to a finished run, from its kept activation
cache (``dissect --keep-cache``), or say what to rerun."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.trust.scorecard import ScorecardError, score_layers, scorecard_config

CACHE_DIR = "cache"


def rerun_command(summary: dict, run_dir: Path) -> str:
    """The ``netdissect dissect`` command that makes this run again with its scorecard."""
    ident = summary.get("identity", {})
    model, cfg, ds = ident.get("model", {}), ident.get("config", {}), ident.get("dataset", {})
    parts = ["netdissect", "dissect", "--model", str(model.get("spec", "MODEL"))]
    if model.get("weights") is not None:
        parts += ["--weights", str(model["weights"])]
    for layer in ident.get("layers", []):
        parts += ["--layer", layer]
    if ds.get("kind") is None and "path" in ds:
        parts += ["--dataset", ds["path"]]
    elif ds.get("kind") == "images":
        parts += ["--images", ds.get("path", "DIR"), "--segmenter", "SEGMENTER"]
    else:
        parts += ["..."]
    if ds.get("resize"):  # --size of a Broden probe (an image folder records its size as a list)
        parts += ["--size", str(ds["size"][0] if ds.get("kind") == "images" else ds["resize"])]
    if ident.get("prefix_tokens") is not None:
        parts += ["--prefix-tokens", str(ident["prefix_tokens"])]
    if model.get("normalize") is not None and not str(model.get("spec", "")).startswith("torchvision:"):
        parts += ["--normalize", str(model["normalize"])]
    for key, flag in (("split", "--split"), ("limit", "--limit"), ("quantile", "--quantile"),
                      ("iou_threshold", "--iou-threshold"), ("seed", "--seed")):
        if cfg.get(key) is not None:
            parts += [flag, str(cfg[key])]
    parts += ["--out", f"{run_dir}-scored"]
    return " ".join(shlex.quote(p) if p != "..." else p for p in parts)


def _source(summary: dict, run_dir: Path, info: dict):
    """The run's concept source, rebuilt from summary.json: the Broden dataset's masks, or the
    segmenter labels that ``--keep-cache`` kept in ``RUN/cache/labels`` (no segmenter runs)."""
    from netdissect.concepts import BrodenMasks
    from netdissect.concepts.segmenter import PooledLabels
    from netdissect.data import Broden
    from netdissect.errors import DatasetError

    ident = summary["identity"]
    recorded, labels, cfg = ident["dataset"], ident.get("labels", {"kind": "broden"}), ident["config"]
    if labels.get("kind") in ("segmenter", "generated"):
        if "segmenter" not in info or not (run_dir / CACHE_DIR / "labels").is_dir():
            raise ScorecardError(
                f"{run_dir}: its kept cache has no copy of the segmenter's labels (kept by an older netdissect), so "
                f"`netdissect score` cannot rebuild them without the segmenter: rerun the dissection, which computes "
                f"the scorecard: {rerun_command(summary, run_dir)}")
        from netdissect.dissection.chunks import recorded_source

        return recorded_source(ident, info, run_dir / CACHE_DIR / "labels")[1]
    if recorded.get("kind") is not None or labels.get("kind") != "broden":
        return None
    ds = Broden(recorded["path"], split=cfg.get("split"), limit=cfg.get("limit"))
    mine = {k: v for k, v in ds.identity().items() if k != "path"}
    if mine != {k: v for k, v in recorded.items() if k != "path"}:
        raise DatasetError(f"{recorded['path']}: no longer holds the rows this run dissected: rerun the dissection")
    source = BrodenMasks(ds)
    if labels.get("iou") == "pnas":
        source = PooledLabels(source)
    return source


def score_run(run_dir, *, fdr: float = 0.05, holdout: float = 0.2, seed: int = 0, num_workers: int = 0,
              progress: bool = False):
    """Compute the scorecard of the finished run ``run_dir`` from ``run_dir/cache`` and rewrite its
    units.csv, scorecard.npz and summary.json.  Returns the reloaded :class:`DissectionResult`."""
    from netdissect.dissection.cache import ActivationCache
    from netdissect.dissection.result import layer_folder, load
    from netdissect.runfolder import RunLock

    run_dir = Path(run_dir)
    cfg = scorecard_config(holdout=holdout, seed=seed, fdr=fdr)
    result = load(run_dir)
    summary = result.summary
    info_path = run_dir / CACHE_DIR / "cache.json"
    if not info_path.exists():
        raise ScorecardError(
            f"{run_dir} has no activation cache ({run_dir / CACHE_DIR}; dissect removes it when a run finishes "
            f"unless --keep-cache), so its scorecard cannot be computed here: rerun the dissection, which "
            f"computes the scorecard: {rerun_command(summary, run_dir)}")
    try:
        info = json.loads(info_path.read_text())
        lo, hi = info["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScorecardError(f"{info_path}: unreadable ({exc}); rerun the dissection: "
                             f"{rerun_command(summary, run_dir)}") from None
    source = _source(summary, run_dir, info)
    if source is None:
        raise ScorecardError(f"{run_dir}: `netdissect score` rebuilds the labels of runs on a Broden dataset or of "
                             f"a segmenter; this run's labels are neither: rerun the dissection, which computes the "
                             f"scorecard: {rerun_command(summary, run_dir)}")
    caches = {}
    # image-level layers (no spatial map) carry their own p and q (dissection.imagelevel): map layers only
    maps = {name: lr for name, lr in result.items() if getattr(lr, "method", None) != "image-level"}
    try:
        for name, lr in maps.items():
            li = info["layers"].get(name)
            if li is None:
                raise ScorecardError(f"{info_path}: no cache of layer {name!r}; rerun the dissection: "
                                     f"{rerun_command(summary, run_dir)}")
            caches[name] = ActivationCache(run_dir / CACHE_DIR / li["file"], hi - lo, tuple(li["shape"]),
                                           info.get("dtype", "float32"), existing=True)
        skipped = {int(i) for i in info.get("skipped", [])}
        with RunLock(run_dir):
            cards = score_layers(maps, lambda name, a, b: caches[name].read(a, b), source, (lo, hi), skipped,
                                 hi, cfg, num_workers=num_workers, progress=progress, spill_dir=run_dir / CACHE_DIR)
            for name, card in cards.items():
                lr = result[name].with_scorecard(card, cfg["fdr"])
                names = [str(p) for p in lr.image_paths] if lr.image_paths is not None else None
                lr.save(layer_folder(run_dir, name), names)
                summary["layers"][name] = {**lr.summary(), **{k: v for k, v in summary["layers"][name].items()
                                                              if k == "method"}}  # (the labelling method stays)
            summary["scorecard"] = {"computed": True, **cfg, "by": "netdissect score"}
            atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    finally:
        for c in caches.values():
            c.close()
    return load(run_dir)


def absent_note(result) -> list[str]:
    """Console notes for labels whose concept no held-out image holds."""
    out = []
    for name, lr in result.items():
        s = lr.scorecard_summary or {}
        n = s.get("holdout", {}).get("labels_absent_from_held_out", 0)
        if n:
            out.append(f"layer {name}: {n} unit label(s) chosen on the other images name a concept that no held-out "
                       "image holds: their held-out scores are empty (a larger --holdout gives them images)")
    return out
