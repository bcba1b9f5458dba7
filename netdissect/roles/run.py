"""``netdissect ablate``: the whole PNAS classifier experiment into one run folder.

    >>> from netdissect.roles.run import run_ablation                          # doctest: +SKIP
    >>> run_ablation("zoo:scene-cnn", "conv5", "data/world-train", "data/world-val", "runs/ablate")  # doctest: +SKIP

Writes (atomically) ``importance.npz``, ``baseline.csv``, ``removal.csv``,
``unit_classifiers.csv``, ``roles.json`` (what was run and how), figures
(``figures/*.png`` + ``.svg``) and ``index.html`` (see docs/run-format.md).
Single-unit ablations are checkpointed in ``cache/``: a killed run resumes
without recomputing the finished units.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from netdissect.atomic import savez, write_json, write_text
from netdissect.errors import NetDissectError
from netdissect.roles.core import (Checkpoint, Evaluator, balanced_accuracy, importance_table, peaks, ranking,
                                   removal_curves, unit_classifiers)
from netdissect.roles.data import load_labelled

DEFAULT_SIZES = (1, 2, 4, 8, 16, 20, 32, 64)
TOP_K = 4  # "important to a class" = in its top 4 (PNAS)


def model_classes(spec, meta_classes=None, classes_arg: str | None = None) -> list[str]:
    """The model's class names: ``--classes`` (comma list or a file of one per line), else the zoo's."""
    if classes_arg:
        p = Path(classes_arg)
        names = p.read_text().split() if p.is_file() else [c.strip() for c in classes_arg.split(",") if c.strip()]
        if not names:
            raise NetDissectError(f"--classes {classes_arg!r} names no class")
        return names
    if meta_classes:
        return list(meta_classes)
    raise NetDissectError(f"model {spec!r} carries no class names: give --classes (a comma list, or a file with "
                          "one class name per line in the order of the model's outputs)")


def _zoo_meta(spec, weights=None) -> dict | None:
    """The training record of a zoo classifier spec: its --weights file's when that is a zoo-format file."""
    if not (isinstance(spec, str) and spec.startswith("zoo:")):
        return None
    from netdissect.models.zoo import file_record, load_zoo_model
    rec = file_record(weights)
    if rec is not None:
        return rec
    return load_zoo_model(spec[4:])[1]


def classifier_world(spec, weights=None) -> int | None:
    """The synthetic-world version a zoo classifier was trained on (None for other models)."""
    from netdissect.models.zoo import record_world
    meta = _zoo_meta(spec, weights)
    return None if meta is None else record_world(meta)


def load_classifier(spec: str, weights=None, normalize=None, classes=None):
    from netdissect.models import load_model
    if isinstance(spec, str) and spec.startswith(("zoo:", "proggan:")):
        from netdissect.models.zoo import GENERATORS
        if spec.startswith("proggan:") or spec[4:] in GENERATORS:
            raise NetDissectError(f"--model {spec} is a generator (latent vectors in, images out), not a classifier: "
                                  "the classifier experiments (ablate, adversarial) need a model that classifies "
                                  "images; for a generator's units use `netdissect gan remove|insert`")
    model, prep = load_model(spec, weights=weights, normalize=normalize)
    meta_classes, size = None, None
    if isinstance(spec, str) and spec.startswith("zoo:"):
        meta = _zoo_meta(spec, weights)
        meta_classes, size = meta.get("classes"), meta.get("input_size")
        if isinstance(size, (list, tuple)):
            size = int(size[-1])
    if size is None and getattr(prep, "size", None):  # the size a timm/hf/open_clip/torchvision ViT records
        size = int(prep.size[-1])
    id2label = getattr(getattr(model, "config", None), "id2label", None)  # a Hugging Face classifier's classes
    if meta_classes is None and isinstance(id2label, dict) and id2label and str(spec).startswith("hf:"):
        meta_classes = [str(id2label[i]) for i in sorted(id2label)]
    return model, prep, model_classes(spec, meta_classes, classes), size


def _csv(rows, header) -> str:
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in r))
    return "\n".join(lines) + "\n"


def _parse_sizes(sizes, C: int) -> list[int]:
    out = sorted({min(int(n), C) for n in sizes} | {C})
    if any(n < 1 for n in out):
        raise NetDissectError(f"--sizes must be whole numbers >= 1, got {list(sizes)}")
    return out


def run_ablation(model_spec, layer: str, train, val, out, *, dissection=None, weights=None, normalize=None,
                 classes=None, size=None, sizes=DEFAULT_SIZES, batch_size: int = 64, device: str = "cpu",
                 limit: int | None = None, fast: bool = True, progress: bool = True, figures: bool = True,
                 model=None, prep=None, prefix_tokens=None, layout=None, world: int | None = None) -> dict:
    """Run the experiment; returns the summary written to ``roles.json``.

    ``world``: the synthetic-world version the model was trained on (read from a zoo model's record when
    None); a synthetic dataset of another version is refused.

    ``out`` is claimed first (:func:`netdissect.runout.claim_output`: locked, apart from the inputs,
    empty or an ``ablate`` run) and the results land there whole, ``roles.json`` last."""
    from netdissect.runout import claim_output

    check_options(batch_size=batch_size, device=device, size=size, limit=limit)
    inputs = [("--train", train), ("--val", val), ("--dissection", dissection)]
    with claim_output(out, "ablate", "roles.json", inputs=inputs, fmt="netdissect-roles") as o:
        summary = _run_ablation(model_spec, layer, train, val, o.path, o.stage, dissection=dissection, weights=weights,
                                normalize=normalize, classes=classes, size=size, sizes=sizes, batch_size=batch_size,
                                device=device, limit=limit, fast=fast, progress=progress, figures=figures,
                                model=model, prep=prep, prefix_tokens=prefix_tokens, layout=layout, world=world)
        o.commit()
    return summary


def check_options(*, batch_size=None, device=None, size=None, limit=None, flag_prefix: str = "--") -> None:
    """Options of the classifier commands, refused in one line before any work."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise NetDissectError(f"{flag_prefix}batch-size must be a whole number >= 1, got {batch_size!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise NetDissectError(f"{flag_prefix}size must be a whole number of pixels >= 8 (the image side the model "
                              f"takes), got {size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise NetDissectError(f"{flag_prefix}limit must be >= 1, got {limit!r}")
    if device is not None:
        check_device(device)


def check_device(device) -> torch.device:
    """``device`` as a torch device this machine has, or one line saying why not."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise NetDissectError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise NetDissectError(f"--device {device}: this machine has no CUDA GPU that torch can use; use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise NetDissectError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices "
                                  f"(0..{torch.cuda.device_count() - 1})")
    elif d.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NetDissectError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif d.type != "cpu":
        raise NetDissectError(f"--device {device}: netdissect runs on cpu, cuda or mps")
    return d


def forward_checked(model, x, spec=None) -> torch.Tensor:
    """``model(x)``, its failure or a non-logits result explained in one line."""
    name = spec if isinstance(spec, str) else type(model).__name__
    try:
        y = model(x)
    except NetDissectError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own failure, explained
        msg = " ".join(str(exc).split())[:200]
        raise NetDissectError(f"model {name} fails on a batch of images {tuple(x.shape)}: "
                              f"{type(exc).__name__}: {msg}") from None
    if not isinstance(y, torch.Tensor) or y.dim() != 2:
        raise NetDissectError(f"model {name} returns {type(y).__name__} {tuple(getattr(y, 'shape', ()))}, not "
                              "(N, classes) logits: the classifier experiments need a classifier")
    bad = (~torch.isfinite(y).all(1)).nonzero().flatten().tolist()
    if bad:
        raise NetDissectError(f"model {name} gives NaN or infinite logits on image(s) {bad[:8]} of the probe batch "
                              "(check its weights)")
    return y


def _describe(prep) -> str:
    """The preprocessing, stably (a ``Preprocess`` describes itself; a repr could hold an address)."""
    if prep is None:
        return "none"
    describe = getattr(prep, "describe", None)
    return describe() if callable(describe) else type(prep).__qualname__


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _run_ablation(model_spec, layer, train, val, out, dest, *, dissection, weights, normalize, classes, size, sizes,
                  batch_size, device, limit, fast, progress, figures, model, prep, prefix_tokens=None,
                  layout=None, world=None) -> dict:
    t0 = time.perf_counter()
    out, dest = Path(out), Path(dest)
    if model is None:
        model, prep, class_names, zsize = load_classifier(model_spec, weights, normalize, classes)
    else:
        class_names, zsize = model_classes(model_spec, None, classes), None
    size = size or zsize
    K = len(class_names)
    if world is None:
        world = classifier_world(model_spec, weights)
    model.to(device)
    # the dissection is checked before any work: its model and layer here, its width once known
    dissected = None if dissection is None else _dissected_units(dissection, layer, model, model_spec)
    ev = Evaluator(model, layer, prep, batch_size=batch_size, device=device, fast=fast, progress=progress,
                   prefix_tokens=prefix_tokens, layout=layout)
    splits = {}
    for name, root in (("train", train), ("val", val)):
        imgs, y, paths, skipped = load_labelled(root, class_names, size, limit=limit, progress=progress,
                                                interpolation=getattr(prep, "interpolation", None),
                                                world=world, model=str(model_spec))
        present = sorted(set(y.tolist()))
        if len(present) < 2:
            only = class_names[present[0]] if present else "none"
            raise NetDissectError(f"--{name} {root}: its {len(y)} image(s) are all of one class ({only}){' with --limit ' + str(limit) if limit else ''}: "
                                  "the importance of a unit to a class needs images of at least two classes "
                                  "(balanced accuracy compares the class with the others)")
        splits[name] = dict(images=imgs, y=y, paths=paths, skipped=skipped, root=str(root))
    with torch.inference_mode():
        probe = ev._batch(splits["val"]["images"][:1])
        logits = forward_checked(model, probe, model_spec)
        n_out = logits.shape[-1]
    if n_out != K:
        raise NetDissectError(f"the model has {n_out} outputs but {K} class names ({', '.join(class_names[:8])}...)")
    for s in splits.values():
        s["acts"] = ev.activations(s["images"], desc=f"{layer} on {Path(s['root']).name}")
    C = splits["train"]["acts"].shape[1]
    if dissected is not None and len(dissected) != C:
        raise NetDissectError(f"dissection {dissection} layer {layer!r} has {len(dissected)} units, "
                              f"the model's has {C}")
    sizes = _parse_sizes(sizes, C)
    tables = {}
    from netdissect.models import model_identity
    digest = model_identity(model)
    for name, s in splits.items():
        # everything the predictions depend on: the weights (digest), the preprocessing, the images'
        # pixels and labels, the layer, the classes and the evaluation path
        key = hashlib.sha256(json.dumps([str(model_spec), digest, str(normalize), _describe(prep), layer, s["root"],
                                         s["paths"], _digest(s["images"], s["y"]), class_names, size,
                                         ev.mode, prefix_tokens, layout]).encode()).hexdigest()
        ck = Checkpoint(out / "cache" / f"single_{name}.npz", key)
        tables[name] = importance_table(ev, s["acts"], s["y"], K, s["images"], checkpoint=ck,
                                        desc=f"single-unit ablation ({name})")
    base_tr, imp_tr, lpd_tr, _ = tables["train"]
    base_va, imp_va, lpd_va, preds_va = tables["val"]
    order = ranking(imp_tr, lpd_tr)
    savez(dest / "importance.npz", train=imp_tr.astype(np.float32), val=imp_va.astype(np.float32),
          train_logp_drop=lpd_tr.astype(np.float32), val_logp_drop=lpd_va.astype(np.float32),
          ranking=order.astype(np.int32), units=np.arange(C, dtype=np.int32), classes=np.asarray(class_names))
    ba, rec, tnr, acc = balanced_accuracy(preds_va[0], splits["val"]["y"], K)
    write_text(dest / "baseline.csv", _csv([(class_names[y], float(ba[y]), float(rec[y]), float(tnr[y]))
                                           for y in range(K)] + [("all", float(acc), float("nan"), float("nan"))],
                                          ["class", "balanced_accuracy", "recall", "true_negative_rate"]))
    removal = removal_curves(ev, splits["val"]["acts"], splits["val"]["y"], K, order, sizes,
                             splits["val"]["images"], desc="set removal (val)")
    write_text(dest / "removal.csv", _csv([(class_names[y], m, n, b, a) for y, m, n, b, a in removal],
                                         ["class", "mode", "n", "balanced_accuracy", "all_class_accuracy"]))
    pk = {n: peaks(s["acts"]) for n, s in splits.items()}
    uc = unit_classifiers(pk["train"], splits["train"]["y"], pk["val"], splits["val"]["y"], K)
    write_text(dest / "unit_classifiers.csv", _csv([(class_names[y], u, t, a, b) for y, u, t, a, b in uc],
                                                  ["class", "unit", "threshold", "train_balanced_accuracy",
                                                   "val_balanced_accuracy"]))
    counts = np.zeros(C, np.int64)
    for y in range(K):
        counts[order[y, :TOP_K]] += 1
    ious = labels = None
    if dissected is not None:
        ious, labels = dissected["iou"].astype(float).tolist(), [str(v) for v in dissected["label"]]
    summary = {
        "format": "netdissect-roles", "version": 1, "model": str(model_spec), "weights": weights,
        "model_sha256": digest, "normalize": _describe(prep), "layer": layer,
        "classes": class_names, "units": C, "mode": ev.mode, "why_full_passes": ev.why_full,
        "train": {"root": splits["train"]["root"], "images": len(splits["train"]["y"]),
                  "skipped_unlabelled": splits["train"]["skipped"]},
        "val": {"root": splits["val"]["root"], "images": len(splits["val"]["y"]),
                "skipped_unlabelled": splits["val"]["skipped"]},
        "sizes": sizes, "top_k": TOP_K, "dissection": None if dissection is None else str(dissection),
        "baseline_val": {"all_class_accuracy": float(acc),
                         "balanced_accuracy": {c: float(ba[y]) for y, c in enumerate(class_names)}},
        "importance_count": counts.tolist(),
        "best_iou": None if ious is None else [float(v) for v in ious],
        "unit_labels": labels,
        "seconds": None,
    }
    if figures:
        from netdissect.roles.figures import ablation_figures
        ablation_figures(dest, summary, removal, imp_tr, order, uc, pk, splits)
        from netdissect.roles.report import ablation_report
        ablation_report(dest, summary, removal, order, uc, final=out)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(dest / "roles.json", summary)
    return summary


def _dissected_units(run_dir, layer: str, model, model_spec):
    """The units table of ``layer`` in the dissection ``run_dir``, which must have dissected these
    very weights (summary.json's model digest): another model's labels, even of a layer as wide,
    would be silently wrong."""
    from netdissect.dissection import load
    from netdissect.models import model_identity
    res = load(run_dir)
    made, ours = res.summary.get("model") or {}, model_identity(model)
    if made.get("sha256") and made["sha256"] != ours:
        raise NetDissectError(f"dissection {run_dir} was made with {made.get('spec', 'another model')} "
                              f"(weights digest {made['sha256']}), not with {model_spec or 'this model'} "
                              f"(digest {ours}): dissect this model's {layer!r} first "
                              "(netdissect dissect --model ... --layer ...) and pass that run")
    if layer not in res:
        raise NetDissectError(f"dissection {run_dir} has no layer {layer!r} (it has {', '.join(res)})")
    return res[layer].units


def read_ablation(run_dir) -> dict:
    """``roles.json`` and ``importance.npz`` of a finished ``ablate`` run."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "roles.json").read_text())
        with np.load(run_dir / "importance.npz") as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise NetDissectError(f"{run_dir}: not a finished `netdissect ablate` run ({Path(exc.filename).name} "
                              "missing)") from None
    except (ValueError, OSError) as exc:
        raise NetDissectError(f"{run_dir}: unreadable ablate run ({exc})") from None
    return {**summary, **arrays}
