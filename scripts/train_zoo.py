#!/usr/bin/env python
"""Train zoo models on the synthetic world's scene labels and bundle them.

    python scripts/train_zoo.py scene-cnn                 # baseline (+ its snapshots)
    python scripts/train_zoo.py scene-cnn-bn scene-cnn-gap --steps 1500
    python scripts/train_zoo.py --list
    nice -n 19 python scripts/train_zoo.py scene-cnn-wide --world 2 --out /work/exp/world2 \
        --threads 1 --max-minutes 55          # stops with a checkpoint; run again to resume

Each model is trained from its registry recipe
(``netdissect/models/zoo/registry.py``): world seed ``data_seed`` for the
training images, a separate ``heldout_seed`` for the held-out accuracy
(seeds 0-999 are the training range; the demo probes with seed 2017).  The
weights go to ``netdissect/models/zoo/weights/<name>.safetensors`` (float16,
written atomically, with the training record in the header) and a model
card ``<name>.md`` beside them.  Snapshots listed for a model are saved at
their steps during its run.

Long runs: the full training state (weights, optimiser, schedule, data order,
random generators, losses, elapsed time) is written atomically to
``<out>/<name>.train-state.pt`` every ``--checkpoint-every`` seconds, when
``--max-minutes`` is reached, and on SIGTERM/SIGINT; the same command run
again resumes from it (the recipe must match, else it is refused).  The
rendered training images are cached in ``<out>/cache/``.  ``--world 2``
trains on world v2 (32 scene classes) and refuses to write into the bundled
weights folder, whose models are world 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from netdissect.atomic import write_with
from netdissect.data.synth import NORMALIZE, SCENES, SceneDataset
from netdissect.data.synth.dataset import random_crops
from netdissect.data.synth.worlds import get_world
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
    classes = getattr(data, "classes", SCENES)
    per_class = {c: float((pred[data.targets == k] == k).mean()) for k, c in enumerate(classes)}
    return {"accuracy": float((pred == data.targets).mean()), "per_class": per_class}


def _fp16_state(model: torch.nn.Module) -> dict:
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
            for k, v in model.state_dict().items()}


def _rounded(model: torch.nn.Module, name: str, world: int = 1) -> torch.nn.Module:
    """A copy of ``model`` with float16-rounded weights (what the bundle holds)."""
    copy = build(name, world)
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


def _elapsed(r: dict) -> str:
    if "elapsed_s" not in r:
        return ""
    return f"; {r['elapsed_s']:.0f} s elapsed in {r.get('sessions', 1)} session(s) (rendering and evaluation included)"


def _rev(r: dict) -> str:
    return f" revision {r['world_revision']}" if r.get("world", 1) != 1 and "world_revision" in r else ""


def model_card(name: str, r: dict, size_bytes: int) -> str:
    entry = ZOO[name]
    t = r["train"]
    per_class = "\n".join(f"| {c} | {a:.3f} |" for c, a in r["per_class"].items())
    return f"""# Model card: `zoo:{name}`

{entry.description}.  A small AlexNet-like scene classifier (stages `conv1`..`conv5`,
hook `conv5` for the last conv stage after its ReLU) trained **only on scene labels** of the
synthetic world of `netdissect.data.synth` (world v{t.get('world', 1)}{_rev(r)}, {len(r['classes'])} scenes; see `docs/world.md`).

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
| wall time | {r['wall_time_s']:.0f} s of training on {r['threads']} CPU thread(s) ({r['machine']}), torch {r['torch']}{_elapsed(r)} |
| weights | `{name}.safetensors`, float16, {size_bytes / 1e6:.2f} MB |

## Held-out accuracy per class

| scene | accuracy |
|---|---|
{per_class}

## Reproduce

    {r.get('command') or entry.train_command}

Training is deterministic given the recipe up to floating-point differences between machines and
thread counts; expect the held-out accuracy within a few points.

## Intended use

A subject for Network Dissection on the synthetic world (`netdissect dissect --model zoo:{name}`),
whose dense labels (objects, parts, materials, colours, textures) were never shown to the model.
Not a model of real images.
"""


class _Stop:
    """SIGTERM / SIGINT set a flag; the training loop checkpoints and returns at the next step."""

    def __init__(self):
        self.flag = False
        self.old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.old[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)


def _dataset(t: dict, seed_key: str, n_key: str, out_dir: Path, cache: dict, progress: bool) -> SceneDataset:
    """The rendered scenes of a recipe (kept in ``cache`` and, for world != 1, on disk under out_dir/cache)."""
    world = t.get("world", 1)
    key = (world, t[seed_key], t[n_key], t["size"])
    if key in cache:
        return cache[key]
    rev = f"r{get_world(world).revision}" if world != 1 else ""     # a cache of another revision is not reused
    disk = out_dir / "cache" / f"world{world}{rev}-seed{t[seed_key]}-n{t[n_key]}-{t['size']}px.npz"
    if world != 1 and disk.is_file():
        z = np.load(disk)
        ds = SceneDataset(0, t[seed_key], t["size"], world=world)
        ds.n, ds.images, ds.targets = len(z["targets"]), z["images"], z["targets"]
        tqdm.write(f"read {ds.n} rendered scenes from {disk}")
    else:
        ds = SceneDataset(t[n_key], t[seed_key], t["size"], progress=progress, world=world)
        if world != 1:
            disk.parent.mkdir(parents=True, exist_ok=True)
            def _write(tmp):
                with open(tmp, "wb") as f:
                    np.savez(f, images=ds.images, targets=ds.targets)
            write_with(disk, _write)
    cache[key] = ds
    return ds


def train(name: str, steps: int | None, out_dir: Path, cache: dict, progress: bool = True,
          overrides: dict | None = None, max_minutes: float | None = None,
          checkpoint_every: float = 300.0, command: str | None = None) -> list[dict]:
    """Train zoo model ``name`` (and save its snapshots); returns one record per file saved.

    Resumes from ``out_dir/<name>.train-state.pt`` when that holds a run of the same recipe; writes it
    every ``checkpoint_every`` s, at ``max_minutes`` (then returns without the final save) and on
    SIGTERM/SIGINT.
    """
    t_start = time.time()
    entry = ZOO[name]
    if entry.snapshot_of:
        raise SystemExit(f"{name} is a snapshot of {entry.snapshot_of}: run `{entry.train_command}`")
    t = dict(entry.train)
    t.update(overrides or {})
    if steps is not None:
        t["steps"] = steps
    world = t.get("world", 1)
    classes = list(get_world(world).scenes)
    state_path = out_dir / f"{name}.train-state.pt"
    state = None
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["recipe"] != t:
            diff = sorted(k for k in set(t) | set(state["recipe"]) if t.get(k) != state["recipe"].get(k))
            raise SystemExit(f"{state_path}: a run of another recipe (differs in {', '.join(diff)}); "
                             "remove it to start afresh, or give the same options to resume it")
        if state.get("done"):
            tqdm.write(f"{state_path}: that run is finished ({state['step']} steps); nothing to do")
            return []
    data = _dataset(t, "data_seed", "n_train", out_dir, cache, progress)
    held = _dataset(t, "heldout_seed", "n_heldout", out_dir, cache, progress)

    torch.manual_seed(t["torch_seed"])
    model = build(name, world)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])

    def lr_at(step):
        if step < t["warmup"]:
            return (step + 1) / t["warmup"]
        return 0.5 * (1 + math.cos(math.pi * (step - t["warmup"]) / max(t["steps"] - t["warmup"], 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng([t["torch_seed"], t["data_seed"]])
    order, pos = rng.permutation(len(data)), 0
    losses, saved, train_time, start, elapsed0, sessions = [], [], 0.0, 0, 0.0, 1
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        order, pos, losses = np.asarray(state["order"]), state["pos"], list(state["losses"])
        train_time, start = state["train_time"], state["step"]
        elapsed0, sessions = state["elapsed"], state["sessions"] + 1
        tqdm.write(f"resuming {name} (world {world}) at step {start} of {t['steps']} from {state_path} "
                   f"({train_time:.0f} s of training so far)")
    snaps = {s: f"{name}-step{s}" for s in entry.snapshots if s < t["steps"]}
    base = {"classes": classes, "world": world, "world_revision": get_world(world).revision, "normalize": NORMALIZE, "input_size": t["size"], "train": t,
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.machine(), "layers": LAYERS}
    if command:
        base["command"] = command

    def elapsed():
        return elapsed0 + time.time() - t_start

    def save_state(step, done=False):
        st = {"recipe": t, "name": name, "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
              "sched": sched.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
              "order": order, "pos": pos, "losses": losses, "train_time": train_time, "elapsed": elapsed(),
              "sessions": sessions, "done": done, "saved_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        out_dir.mkdir(parents=True, exist_ok=True)
        write_with(state_path, lambda tmp: torch.save(st, tmp))

    def checkpoint(file_name, step):
        rounded = _rounded(model, name, world)
        ev = evaluate(rounded, held)
        rec = {**base, **ev, "steps": step, "train_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
               "wall_time_s": train_time, "elapsed_s": elapsed(), "sessions": sessions, "model": file_name}
        path = save(model, file_name, rec, out_dir)
        tqdm.write(f"{file_name}: step {step}, held-out accuracy {ev['accuracy']:.3f}, "
                   f"{train_time:.0f} s, {path.stat().st_size / 1e6:.2f} MB")
        saved.append(rec)

    last_ck = time.time()
    bar = tqdm(range(start, t["steps"]), desc=f"training {name}", disable=not progress, unit="step",
               mininterval=5, initial=start, total=t["steps"])
    with _Stop() as stop:
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
            out_of_time = max_minutes is not None and time.time() - t_start > max_minutes * 60
            if stop.flag or out_of_time or time.time() - last_ck > checkpoint_every:
                save_state(step + 1)
                last_ck = time.time()
                if stop.flag or out_of_time:
                    bar.close()
                    why = "signal" if stop.flag else f"--max-minutes {max_minutes:g}"
                    tqdm.write(f"stopped ({why}) at step {step + 1} of {t['steps']}; state in {state_path}; "
                               "run the same command again to resume")
                    return saved
    checkpoint(name, t["steps"])
    save_state(t["steps"], done=True)
    return saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="zoo models to train (snapshots come with their base model)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for weights and cards")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--list", action="store_true", help="list the zoo's recipes and exit")
    p.add_argument("--world", type=int, choices=[1, 2], default=None,
                   help="synthetic world version to train on (default: the recipe's, world 1)")
    p.add_argument("--n-train", type=int, default=None, help="override the recipe's number of training images")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes with a resumable checkpoint")
    p.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints (300)")
    p.add_argument("--nice", type=int, default=0, help="add this to the process's niceness (e.g. 19)")
    args = p.parse_args(argv)
    if args.list or not args.names:
        for name, e in ZOO.items():
            print(f"{name:20s} {e.description}" + (f"  [saved while training {e.snapshot_of}]" if e.snapshot_of else ""))
        return 0
    for n in args.names:
        if n not in ZOO:
            print(f"train_zoo: unknown zoo model {n!r}; known: {', '.join(ZOO)}", file=sys.stderr)
            return 2
    overrides = {}
    if args.world is not None:
        overrides["world"] = args.world
    if args.n_train is not None:
        overrides["n_train"] = args.n_train
    if overrides.get("world", 1) != 1 and args.out.resolve() == WEIGHTS_DIR.resolve():
        print(f"train_zoo: the bundled weights in {WEIGHTS_DIR} are world-1 models; give --out for a "
              f"world-{overrides['world']} run (e.g. --out /work/exp/world2)", file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache: dict = {}
    for n in args.names:
        command = None
        if overrides or args.steps is not None:   # not the registry recipe: the card names the options
            opts = [f"--world {args.world}" if args.world is not None else "",
                    f"--n-train {args.n_train}" if args.n_train is not None else "",
                    f"--steps {args.steps}" if args.steps is not None else "", f"--out {args.out}"]
            command = " ".join(["python scripts/train_zoo.py", ZOO[n].trainer] + [o for o in opts if o])
        train(ZOO[n].trainer, args.steps, args.out, cache, overrides=overrides, max_minutes=args.max_minutes,
              checkpoint_every=args.checkpoint_every, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
