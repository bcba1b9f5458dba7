"""``netdissect adversarial``: which units a targeted attack moves (PNAS 2020, "Applications").

    >>> from netdissect.roles.adversarial import run_adversarial           # doctest: +SKIP
    >>> run_adversarial("zoo:scene-cnn", "conv5", "runs/ablate", "data/world-val", "runs/adv",  # doctest: +SKIP
    ...                 attack="cw", targets=["forest", "office"], n=200)

Val images the model classifies correctly, of a class other than the target,
are attacked toward the target.  Per attacked image: success, L2 and L-inf
norm of the perturbation (pixels in [0, 1]); per unit the change of its peak
(spatial max) activation.  Per target class, over successful attacks: the
mean |change| and the mean signed change of three groups of (image, unit)
pairs: the target's 4 most important units (ranked on train by ``ablate``),
the source class's 4, and all other units; 99% intervals are 2.58 standard
errors.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from netdissect.atomic import write_json, write_text
from netdissect.errors import NetDissectError
from netdissect.hooks.trace import TraceDict
from netdissect.roles.attacks import cw_l2, pgd
from netdissect.roles.data import class_index, load_labelled
from netdissect.roles.run import _csv, load_classifier, read_ablation

Z99 = 2.58


def _stat(v: np.ndarray) -> dict:
    v = np.asarray(v, np.float64)
    n = len(v)
    if n == 0:
        return {"n": 0, "mean_abs": None, "ci_abs": None, "mean": None, "ci": None}
    se_a = v.__abs__().std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    se = v.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean_abs": float(np.abs(v).mean()), "ci_abs": float(Z99 * se_a),
            "mean": float(v.mean()), "ci": float(Z99 * se)}


def group_changes(change: np.ndarray, source: np.ndarray, target: np.ndarray, order: np.ndarray, k: int = 4):
    """Per image and unit ``'target'``, ``'source'`` or ``'other'`` (target wins where the sets overlap)."""
    N, C = change.shape
    groups = np.full((N, C), "other", dtype=object)
    for i in range(N):
        groups[i, order[source[i], :k]] = "source"
        groups[i, order[target[i], :k]] = "target"
    return groups


def summarise(change, success, source, target, order, classes, k: int = 4) -> dict:
    groups = group_changes(change, source, target, order, k)
    out = {}
    for t in sorted(set(target.tolist())):
        rows = success & (target == t)
        out[classes[t]] = {"attacked": int((target == t).sum()), "succeeded": int(rows.sum()),
                           **{g: _stat(change[rows][groups[rows] == g]) for g in ("target", "source", "other")}}
    return out


def peaks_at(model, layer, prep, x: torch.Tensor, maps: bool = False, prefix_tokens=None):
    """Each unit's peak activation (N, C) on ``x`` (and the maps); a token layer's units peak over its
    patch tokens (hooks.tokens: the prefix tokens are not part of the map)."""
    from netdissect.hooks.tokens import find_layout, model_tokens

    v = prep(x) if prep is not None else x
    with torch.inference_mode(), TraceDict(model, [layer], stop=True) as tr:
        try:
            model(v)
        except Exception as exc:
            from netdissect.hooks.trace import StopForward
            if not isinstance(exc, StopForward):
                raise
        a = tr[layer].output
        if isinstance(a, (tuple, list)) and len(a) == 1:  # a layer's 1-tuple (older Hugging Face layers)
            a = a[0]
        if isinstance(a, torch.Tensor) and a.dim() != 2:
            a = find_layout(layer, a, v.shape[0], tuple(v.shape[-2:]), model_tokens(model), prefix_tokens).to_map(a)
        a = a.float()
    p = a.flatten(2).amax(2)
    return (p, a) if maps else p


def run_adversarial(model_spec, layer: str, ablation, val, out, *, attack: str = "cw", targets=None,
                    n: int = 200, weights=None, normalize=None, classes=None, size=None, batch_size: int = 32,
                    device: str = "cpu", eps: float = 16 / 255, steps: int | None = None, binary_steps: int = 5,
                    lr: float | None = None, initial_const: float = 1e-2, seed: int = 0, progress: bool = True,
                    figures: bool = True, prefix_tokens: int | None = None) -> dict:
    """Attack, measure and write ``out`` (claimed first, written whole; ``adversarial.json`` last)."""
    from netdissect.runout import claim_output

    check_attack_options(attack=attack, n=n, eps=eps, steps=steps, binary_steps=binary_steps, lr=lr,
                         initial_const=initial_const, seed=seed, batch_size=batch_size, size=size, device=device,
                         targets=targets)
    with claim_output(out, "adversarial", "adversarial.json", inputs=[("--ablation", ablation), ("--val", val)],
                      fmt="netdissect-adversarial") as o:
        summary = _run_adversarial(model_spec, layer, ablation, val, o.stage, attack=attack, targets=targets, n=n,
                                   weights=weights, normalize=normalize, classes=classes, size=size,
                                   batch_size=batch_size, device=device, eps=eps, steps=steps,
                                   binary_steps=binary_steps, lr=lr, initial_const=initial_const, seed=seed,
                                   progress=progress, figures=figures, prefix_tokens=prefix_tokens)
        o.commit()
    return summary


def _finite_positive(name: str, v) -> None:
    if v is None:
        return
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise NetDissectError(f"{name} must be a number > 0, got {v!r}") from None
    if not (np.isfinite(f) and f > 0):
        raise NetDissectError(f"{name} must be a finite number > 0, got {v!r}")


def check_attack_options(*, attack, n, eps, steps, binary_steps, lr, initial_const, seed, batch_size, size, device,
                         targets) -> None:
    """Every option of ``adversarial`` checked in one line before any work (the attacks take the longest)."""
    from netdissect.roles.run import check_options

    if attack not in ("cw", "pgd"):
        raise NetDissectError(f"--attack must be 'cw' or 'pgd', got {attack!r}")
    for name, v in (("--n", n), ("--steps", steps), ("--binary-steps", binary_steps)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NetDissectError(f"{name} must be a whole number >= 1, got {v!r}")
    _finite_positive("--eps", eps)
    _finite_positive("--lr", lr)
    _finite_positive("--initial-const", initial_const)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2 ** 32 - 1:
        raise NetDissectError(f"--seed must be a whole number from 0 to 2**32-1, got {seed!r}")
    check_options(batch_size=batch_size, size=size, device=device)
    if not targets:
        raise NetDissectError("--targets names no class")
    seen = set()
    for t in targets:
        if t in seen:
            raise NetDissectError(f"--targets names {t!r} twice: each target is attacked once")
        seen.add(t)


def _run_adversarial(model_spec, layer: str, ablation, val, out, *, attack, targets, n, weights, normalize, classes,
                     size, batch_size, device, eps, steps, binary_steps, lr, initial_const, seed, progress,
                     figures, prefix_tokens=None) -> dict:
    t0 = time.perf_counter()
    out = Path(out)
    abl = read_ablation(ablation)
    if abl.get("layer") != layer:
        raise NetDissectError(f"{ablation} ranked units of layer {abl.get('layer')!r}, not {layer!r}")
    model, prep, class_names, zsize = load_classifier(model_spec, weights, normalize, classes)
    if list(abl["classes"]) != list(class_names):
        raise NetDissectError(f"{ablation} was run with other classes ({', '.join(map(str, abl['classes'][:5]))}...)")
    from netdissect.models import model_identity
    made, ours = abl.get("model_sha256"), model_identity(model)
    if made and made != ours:
        raise NetDissectError(f"--ablation {ablation} ranked the units of {abl.get('model')} (weights digest "
                              f"{made}), not of {model_spec} (digest {ours}): its unit ranking belongs to another "
                              "model; run `netdissect ablate` on this model first")
    model.to(device)
    size = size or zsize
    K = len(class_names)
    lookup = class_index(class_names)
    bad = [t for t in targets if t not in lookup]
    if bad:
        raise NetDissectError(f"target class(es) {', '.join(bad)} are not among the model's classes "
                              f"({', '.join(class_names)})")
    tidx = [lookup[t] for t in targets]
    if len(set(tidx)) != len(tidx):
        raise NetDissectError(f"--targets {','.join(targets)} names one class twice (with and without -s)")
    order = np.asarray(abl["ranking"])
    from netdissect.roles.run import classifier_world
    world = classifier_world(model_spec, weights)
    images, y, paths, _ = load_labelled(val, class_names, size, progress=progress, world=world,
                                        model=str(model_spec), interpolation=getattr(prep, "interpolation", None))
    x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)

    def fn(v):
        return model(prep(v.to(device)) if prep is not None else v.to(device))

    width = peaks_at(model, layer, prep, x_all[:1].to(device), prefix_tokens=prefix_tokens).shape[1]
    if order.ndim != 2 or order.shape != (K, width):
        raise NetDissectError(f"--ablation {ablation} ranks {order.shape[-1] if order.ndim == 2 else '?'} units of "
                              f"{layer!r}, but this model's {layer!r} has {width}: the ablation is of another model")

    with torch.inference_mode():
        pred = torch.cat([fn(x_all[s:s + batch_size]).argmax(1).cpu()
                          for s in range(0, len(x_all), batch_size)]).numpy()
    correct = pred == y
    jobs = []
    rng = np.random.default_rng(seed)
    for t in tidx:
        cand = np.flatnonzero(correct & (y != t))
        if len(cand) == 0:
            raise NetDissectError(f"no val image is classified correctly and of a class other than "
                                  f"{class_names[t]!r}: nothing to attack")
        pick = np.sort(rng.permutation(cand)[:n])
        jobs.extend((int(i), t) for i in pick)
    rows, changes, before_all = [], [], []
    steps = steps if steps is not None else (1000 if attack == "cw" else 40)
    bar = tqdm(total=len(jobs), desc=f"{attack} attacks", unit="img", disable=not progress)
    for s in range(0, len(jobs), batch_size):
        chunk = jobs[s:s + batch_size]
        idx = torch.as_tensor([i for i, _ in chunk])
        tgt = torch.as_tensor([t for _, t in chunk], device=device)
        x = x_all[idx].to(device)
        if attack == "pgd":
            adv = pgd(fn, x, tgt, eps=eps, alpha=eps / 10 if lr is None else lr, steps=steps, seed=seed + s)
        else:
            adv = cw_l2(fn, x, tgt, binary_steps=binary_steps, steps=steps, lr=5e-3 if lr is None else lr,
                        initial_const=initial_const)
        with torch.inference_mode():
            p_adv = fn(adv).argmax(1)
            pb = peaks_at(model, layer, prep, x, prefix_tokens=prefix_tokens)
            pa = peaks_at(model, layer, prep, adv, prefix_tokens=prefix_tokens)
        d = (adv - x).flatten(1)
        for j, (i, t) in enumerate(chunk):
            rows.append((paths[i], class_names[y[i]], class_names[t], attack, int(p_adv[j] == t),
                         float(d[j].norm()), float(d[j].abs().max()), class_names[int(p_adv[j])]))
        changes.append((pa - pb).cpu().numpy())
        before_all.append(pb.cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    change = np.concatenate(changes)
    before = np.concatenate(before_all)
    success = np.array([r[4] for r in rows], bool)
    if not success.any():
        raise NetDissectError(f"the {attack} attack failed on every one of {len(rows)} images: give it more "
                              f"steps (--steps) or a larger budget (--eps for pgd)")
    src = np.array([y[i] for i, _ in jobs])
    tgt_all = np.array([t for _, t in jobs])
    groups = group_changes(change, src, tgt_all, order)
    write_text(out / "attacks.csv", _csv(rows, ["image", "source", "target", "attack", "success", "l2", "linf",
                                               "adversarial_prediction"]))
    urows = [(r[0], r[1], r[2], u, groups[k, u], float(before[k, u]), float(before[k, u] + change[k, u]),
              float(change[k, u])) for k, r in enumerate(rows) if r[4] for u in range(change.shape[1])]
    write_text(out / "unit_changes.csv", _csv(urows, ["image", "source", "target", "unit", "group", "peak_before",
                                                      "peak_after", "change"]))
    summary = {"format": "netdissect-adversarial", "version": 1, "model": str(model_spec), "layer": layer,
               "ablation": str(ablation), "attack": attack, "steps": steps,
               "eps": eps if attack == "pgd" else None, "targets": [class_names[t] for t in tidx],
               "attacked": len(rows), "succeeded": int(success.sum()),
               "median_l2": float(np.median([r[5] for r in rows if r[4]])),
               "groups": summarise(change, success, src, tgt_all, order, class_names)}
    if figures:
        from netdissect.roles.figures import adversarial_figure
        adversarial_figure(out, summary, model, layer, prep, x_all, jobs, success, order, class_names, fn, attack,
                           dict(eps=eps, steps=steps, lr=lr, binary_steps=binary_steps, initial_const=initial_const,
                                seed=seed), prefix_tokens=prefix_tokens)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "adversarial.json", summary)
    return summary
