#!/usr/bin/env python
"""Train zoo models on the synthetic world's scene labels and bundle them.

    python scripts/train_zoo.py scene-cnn                 # baseline (+ its snapshots)
    python scripts/train_zoo.py scene-cnn-bn scene-cnn-gap --steps 1500
    python scripts/train_zoo.py --list

Each model is trained from its registry recipe
(``netdissect/models/zoo/registry.py``): world seed ``data_seed`` for the
training images, a separate ``heldout_seed`` for the held-out accuracy
(seeds 0-999 are the training range; the demo probes with seed 2017).  The
weights go to ``netdissect/models/zoo/weights/<name>.safetensors`` (float16,
written atomically, with the training record in the header) and a model
card ``<name>.md`` beside them.  Snapshots listed for a model are saved at
their steps during its run.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from netdissect.atomic import write_with
from netdissect.data.synth import NORMALIZE, SCENES, SceneDataset
from netdissect.data.synth.dataset import random_crops
from netdissect.models.zoo import META_KEY, WEIGHTS_DIR, ZOO, build, card_path, weights_path
from netdissect.models.zoo.registry import LAYERS


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: SceneDataset, batch: int = 250) -> dict:
    """Held-out accuracy, overall and per class, of ``model`` on ``data``."""
    was = model.training
    model.eval()
    preds = []
    for i in range(0, len(data), batch):
        x, _ = data.batch(np.arange(i, min(i + batch, len(data))))
        preds.append(model(x).argmax(1).numpy())
    model.train(was)
    pred = np.concatenate(preds)
    per_class = {c: float((pred[data.targets == k] == k).mean()) for k, c in enumerate(SCENES)}
    return {"accuracy": float((pred == data.targets).mean()), "per_class": per_class}


def _fp16_state(model: torch.nn.Module) -> dict:
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
            for k, v in model.state_dict().items()}


def _rounded(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A copy of ``model`` with float16-rounded weights (what the bundle holds)."""
    copy = build(name)
    copy.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in _fp16_state(model).items()})
    return copy


def save(model: torch.nn.Module, name: str, record: dict, out_dir: Path) -> Path:
    from safetensors.torch import save_file

    path = out_dir / weights_path(name).name
    meta = {META_KEY: json.dumps(record, sort_keys=True)}
    write_with(path, lambda tmp: save_file(_fp16_state(model), tmp, metadata=meta))
    card = out_dir / card_path(name).name
    text = model_card(name, record, path.stat().st_size)
    write_with(card, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def _augmentation(t: dict) -> str:
    crop = t.get("crop_scale", 1.0)
    if crop >= 1:
        return "random left-right flips"
    return (f"random left-right flips, then random crops of {crop:g}-1 of the image area (aspect 3/4-4/3) "
            "resized back to the input size")


def model_card(name: str, r: dict, size_bytes: int) -> str:
    entry = ZOO[name]
    t = r["train"]
    per_class = "\n".join(f"| {c} | {a:.3f} |" for c, a in r["per_class"].items())
    return f"""# Model card: `zoo:{name}`

{entry.description}.  A small AlexNet-like scene classifier (stages `conv1`..`conv5`,
hook `conv5` for the last conv stage after its ReLU) trained **only on scene labels** of the
synthetic world of `netdissect.data.synth` (8 scenes; see `docs/world.md`).

| field | value |
|---|---|
| architecture | `SceneCNN({json.dumps(entry.arch)})` |
| parameters | {r['params']:,} |
| input | {r['input_size']} x {r['input_size']} RGB in [0, 1], normalised with mean {r['normalize']['mean']} std {r['normalize']['std']} |
| classes | {', '.join(r['classes'])} |
| training data | world seed {t['data_seed']}, {t['n_train']} scene images at {t['size']} px, {_augmentation(t)} |
| steps | {r['steps']} of {t['steps']} (batch {t['batch']}, AdamW lr {t['lr']} with {t['warmup']} warm-up steps then cosine decay, weight decay {t['weight_decay']}, torch seed {t['torch_seed']}) |
| held-out accuracy | **{r['accuracy']:.3f}** on {t['n_heldout']} scenes of world seed {t['heldout_seed']} (chance {1 / len(r['classes']):.3f}), measured with the float16-rounded weights as bundled |
| final training loss | {r['train_loss']:.3f} (mean of the last 50 steps) |
| wall time | {r['wall_time_s']:.0f} s of training on {r['threads']} CPU thread(s) ({r['machine']}), torch {r['torch']} |
| weights | `{name}.safetensors`, float16, {size_bytes / 1e6:.2f} MB |

## Held-out accuracy per class

| scene | accuracy |
|---|---|
{per_class}

## Reproduce

    {entry.train_command}

Training is deterministic given the recipe up to floating-point differences between machines and
thread counts; expect the held-out accuracy within a few points.

## Intended use

A subject for Network Dissection on the synthetic world (`netdissect dissect --model zoo:{name}`),
whose dense labels (objects, parts, materials, colours, textures) were never shown to the model.
Not a model of real images.
"""


def train(name: str, steps: int | None, out_dir: Path, cache: dict, progress: bool = True) -> list[dict]:
    """Train zoo model ``name`` (and save its snapshots); returns one record per file saved."""
    entry = ZOO[name]
    if entry.snapshot_of:
        raise SystemExit(f"{name} is a snapshot of {entry.snapshot_of}: run `{entry.train_command}`")
    t = dict(entry.train)
    if steps is not None:
        t["steps"] = steps
    key = (t["data_seed"], t["n_train"], t["size"])
    if key not in cache:
        cache[key] = SceneDataset(t["n_train"], t["data_seed"], t["size"], progress=progress)
    hkey = (t["heldout_seed"], t["n_heldout"], t["size"])
    if hkey not in cache:
        cache[hkey] = SceneDataset(t["n_heldout"], t["heldout_seed"], t["size"], progress=progress)
    data, held = cache[key], cache[hkey]

    torch.manual_seed(t["torch_seed"])
    model = build(name)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])

    def lr_at(step):
        if step < t["warmup"]:
            return (step + 1) / t["warmup"]
        return 0.5 * (1 + math.cos(math.pi * (step - t["warmup"]) / max(t["steps"] - t["warmup"], 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng([t["torch_seed"], t["data_seed"]])
    order, pos = rng.permutation(len(data)), 0
    losses, saved, train_time = [], [], 0.0
    snaps = {s: f"{name}-step{s}" for s in entry.snapshots if s < t["steps"]}
    base = {"classes": list(SCENES), "normalize": NORMALIZE, "input_size": t["size"], "train": t,
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.machine(), "layers": LAYERS}

    def checkpoint(file_name, step):
        rounded = _rounded(model, name)
        ev = evaluate(rounded, held)
        rec = {**base, **ev, "steps": step, "train_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
               "wall_time_s": train_time, "model": file_name}
        path = save(model, file_name, rec, out_dir)
        tqdm.write(f"{file_name}: step {step}, held-out accuracy {ev['accuracy']:.3f}, "
                   f"{train_time:.0f} s, {path.stat().st_size / 1e6:.2f} MB")
        saved.append(rec)

    bar = tqdm(range(t["steps"]), desc=f"training {name}", disable=not progress, unit="step", mininterval=5)
    for step in bar:
        t0 = time.perf_counter()
        if pos + t["batch"] > len(order):
            order, pos = rng.permutation(len(data)), 0
        idx = order[pos:pos + t["batch"]]
        pos += t["batch"]
        x, y = data.batch(idx, flip_rng=rng)
        x = random_crops(x, rng, t.get("crop_scale", 1.0))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_time += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step + 1 in snaps:
            checkpoint(snaps[step + 1], step + 1)
    checkpoint(name, t["steps"])
    return saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="zoo models to train (snapshots come with their base model)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for weights and cards")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--list", action="store_true", help="list the zoo's recipes and exit")
    args = p.parse_args(argv)
    if args.list or not args.names:
        for name, e in ZOO.items():
            print(f"{name:20s} {e.description}" + (f"  [saved while training {e.snapshot_of}]" if e.snapshot_of else ""))
        return 0
    for n in args.names:
        if n not in ZOO:
            print(f"train_zoo: unknown zoo model {n!r}; known: {', '.join(ZOO)}", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cache: dict = {}
    for n in args.names:
        train(ZOO[n].trainer, args.steps, args.out, cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
