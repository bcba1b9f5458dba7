#!/usr/bin/env python
"""Train ``zoo:world-seg`` on the synthetic world's dense labels and bundle it.

    python scripts/train_worldseg.py                       # the recipe below
    python scripts/train_worldseg.py --steps 200 --out /tmp/ws   # a quick try

Training images: world seed ``DATA_SEED`` (scenes only, with their object,
part and material masks); evaluation: pixel accuracy and per-category mIoU
on ``N_HELDOUT`` scenes of world seed ``HELDOUT_SEED``, a seed never used
in training (nor by the science check, which probes with seed 2017).  The
weights go to ``netdissect/segment/weights/world-seg.safetensors``
(float16, training record in the header) with the model card
``world-seg.md`` beside them.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from netdissect.atomic import write_with
from netdissect.data.synth.catalogue import CATALOGUE
from netdissect.data.synth.generate import make_sample
from netdissect.segment.worldseg import HEADS, WorldSeg

RECIPE = {"data_seed": 11, "heldout_seed": 12, "n_train": 3000, "n_heldout": 300, "size": 112, "steps": 1600,
          "batch": 24, "lr": 3e-3, "weight_decay": 1e-4, "warmup": 50, "torch_seed": 0, "width": 32}
WEIGHTS = Path(__file__).resolve().parents[1] / "netdissect" / "segment" / "weights"
META_KEY = "netdissect_segmenter"


def _tables():
    """Per head: global label number -> class index (0 = none)."""
    out = []
    for cat, names in HEADS:
        t = np.zeros(len(CATALOGUE) + 1, np.int64)
        for j, n in enumerate(names):
            t[CATALOGUE.number(cat, n)] = j + 1
        out.append(t)
    return out


def render(n: int, seed: int, size: int):
    """uint8 images (n, size, size, 3) and int64 targets (n, heads, size // 4, size // 4)."""
    tables = _tables()
    q = size // 4
    imgs = np.empty((n, size, size, 3), np.uint8)
    tg = np.zeros((n, len(HEADS), q, q), np.int64)
    for i in range(n):
        s = make_sample(seed, i, size, kind="scene")
        imgs[i] = s.image
        ms = s.masks["object"][0].shape[0]
        pick = np.minimum((np.arange(q) * ms) // q + (ms // q) // 2, ms - 1)
        for h, (cat, _) in enumerate(HEADS):
            planes = s.masks.get(cat, [])
            lab = np.zeros((ms, ms), np.int64)
            for p in planes:  # later planes (parts of parts) win where set
                lab = np.where(p > 0, p, lab)
            tg[i, h] = tables[h][lab][np.ix_(pick, pick)]
    return imgs, tg


def to_x(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255)


@torch.no_grad()
def evaluate(model, imgs, tg, batch: int = 100) -> dict:
    model.eval()
    preds = []
    for i in range(0, len(imgs), batch):
        preds.append(torch.stack([o.argmax(1) for o in model(to_x(imgs[i:i + batch]))], 1).numpy())
    pred = np.concatenate(preds)
    out = {}
    for h, (cat, names) in enumerate(HEADS):
        p, t = pred[:, h].ravel(), tg[:, h].ravel()
        ious = {}
        for j, n in enumerate(names):
            inter = np.sum((p == j + 1) & (t == j + 1))
            union = np.sum((p == j + 1) | (t == j + 1))
            if np.sum(t == j + 1):
                ious[n] = float(inter / union)
        out[cat] = {"pixel_accuracy": float((p == t).mean()),
                    "labelled_pixel_accuracy": float((p == t)[t > 0].mean()) if (t > 0).any() else None,
                    "miou": float(np.mean(list(ious.values()))) if ious else None, "iou": ious}
    return out


def card(r: dict, size_bytes: int) -> str:
    t = r["train"]
    rows = "\n".join(f"| {c} | {e['pixel_accuracy']:.3f} | {e['labelled_pixel_accuracy']:.3f} | {e['miou']:.3f} |"
                     for c, e in r["eval"].items())
    per = "\n".join(f"| {c} | {n} | {v:.3f} |" for c, e in r["eval"].items() for n, v in e["iou"].items())
    return f"""# Model card: `zoo:world-seg`

A small fully convolutional segmenter (`WorldSeg(width={t['width']})`, {r['params']:,} parameters) trained on
the dense labels of the synthetic world of `netdissect.data.synth` (`docs/world.md`): one head per
category, `object` ({len(HEADS[0][1])} classes), `part` ({len(HEADS[1][1])}; the inner part where the world's
two part planes overlap) and `material` ({len(HEADS[2][1])}), each with class 0 = none. Input RGB in [0, 1]
at any size; output at a quarter of the input resolution (the PNAS paper's 224 -> 56).

| field | value |
|---|---|
| training data | world seed {t['data_seed']}, {t['n_train']} scene images at {t['size']} px, labels at {t['size'] // 4} px |
| steps | {t['steps']} (batch {t['batch']}, AdamW lr {t['lr']}, {t['warmup']} warm-up steps then cosine, weight decay {t['weight_decay']}, torch seed {t['torch_seed']}) |
| held-out set | {t['n_heldout']} scenes of world seed {t['heldout_seed']} (never used in training), measured with the float16 weights as bundled |
| final training loss | {r['train_loss']:.3f} (mean of the last 50 steps) |
| wall time | {r['wall_time_s']:.0f} s on {r['threads']} CPU thread(s) ({r['machine']}), torch {r['torch']} |
| weights | `world-seg.safetensors`, float16, {size_bytes / 1e6:.2f} MB |

## Held-out accuracy

| category | pixel accuracy | accuracy on labelled pixels | mIoU (classes present) |
|---|---|---|---|
{rows}

## Per-class IoU (held-out)

| category | class | IoU |
|---|---|---|
{per}

## Reproduce

    python scripts/train_worldseg.py

## Intended use

Labels for `netdissect dissect --images ... --segmenter zoo:world-seg` on images of the synthetic world,
in place of the world's ground-truth masks (docs/segmenters.md). Not a model of real images.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t = dict(RECIPE)
    if a.steps:
        t["steps"] = a.steps
    if a.n_train:
        t["n_train"] = a.n_train
    t0 = time.time()
    imgs, tg = render(t["n_train"], t["data_seed"], t["size"])
    himgs, htg = render(t["n_heldout"], t["heldout_seed"], t["size"])
    print(f"rendered in {time.time() - t0:.0f} s", flush=True)
    torch.manual_seed(t["torch_seed"])
    model = WorldSeg(t["width"])
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / t["warmup"] if s < t["warmup"] else
                                              0.5 * (1 + math.cos(math.pi * (s - t["warmup"]) / max(1, t["steps"] - t["warmup"]))))
    rng = np.random.default_rng([t["torch_seed"], t["data_seed"]])
    losses, train_time = [], 0.0
    model.train()
    for step in range(t["steps"]):
        s0 = time.perf_counter()
        idx = rng.integers(0, len(imgs), t["batch"])
        x, y = to_x(imgs[idx]), torch.from_numpy(tg[idx])
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        outs = model(x)
        loss = sum(F.cross_entropy(o, y[:, h]) for h, o in enumerate(outs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_time += time.perf_counter() - s0
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.3f} {train_time:.0f} s", flush=True)
    from safetensors.torch import save_file

    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
             for k, v in model.state_dict().items()}
    rounded = WorldSeg(t["width"])
    rounded.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    ev = evaluate(rounded, himgs, htg)
    rec = {"train": t, "eval": ev, "train_loss": float(np.mean(losses[-50:])), "wall_time_s": train_time,
           "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.machine(), "heads": [h for h, _ in HEADS]}
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "world-seg.safetensors"
    write_with(path, lambda tmp: save_file(state, tmp, metadata={META_KEY: json.dumps(rec, sort_keys=True)}))
    text = card(rec, path.stat().st_size)
    write_with(a.out / "world-seg.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    print(json.dumps({c: {k: v for k, v in e.items() if k != "iou"} for c, e in ev.items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
