"""Ablation on a ViT block: the head path (the blocks after the layer, on cached patch tokens) against full passes.

    python benchmarks/bench_vit_ablate.py                       # timm vit_tiny_patch16_224, blocks.7, 32 images, 16 sets
    python benchmarks/bench_vit_ablate.py --model torchvision:vit_b_16 --layer encoder.layers.encoder_layer_7

Random weights and random images (timing does not depend on them).  For each of ``--sets`` ablation
sets (one unit each, the single-unit importance table's shape), ``head`` is
``Evaluator.predict`` through the token head (roles.core.token_head_after), ``full`` the same with
``fast=False`` (a full forward pass per set with the ablation hooked in).  Both are timed in this one
process, alternated ``--repeat`` times (the fastest of each kept); the predictions must agree.  The
activations pass (once, shared) is timed apart.  JSON to stdout and benchmarks/out/bench_vit_ablate.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="timm:vit_tiny_patch16_224")
    ap.add_argument("--layer", default="blocks.7")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--sets", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=str(HERE / "out" / "bench_vit_ablate.json"))
    args = ap.parse_args()
    import numpy as np
    import torch

    from netdissect.models import load_model
    from netdissect.roles.core import Evaluator

    model, prep = load_model(args.model, weights="none")
    size = prep.size[0] if prep.size else 224
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, size, size, 3), dtype=np.uint8)
    fast = Evaluator(model, args.layer, prep, batch_size=args.batch_size, progress=False)
    slow = Evaluator(model, args.layer, prep, batch_size=args.batch_size, progress=False, fast=False)
    t = time.perf_counter()
    acts = fast.activations(images)
    t_acts = time.perf_counter() - t
    sacts = slow.activations(images)
    assert fast.mode == "head", fast.why_full
    sets = [[int(u)] for u in rng.choice(acts.shape[1], args.sets, replace=False)]
    times = {"head": [], "full": []}
    for _ in range(max(1, args.repeat)):
        for key, ev, a in (("head", fast, acts), ("full", slow, sacts)):
            t = time.perf_counter()
            preds = ev.predict(a, sets, images)
            times[key].append(time.perf_counter() - t)
            if key == "head":
                ph = preds
            else:
                assert np.array_equal(ph, preds), "the head path and full passes disagree"
    h, f = min(times["head"]), min(times["full"])
    report = {"setup": {"model": args.model, "layer": args.layer, "images": args.n, "sets": args.sets,
                        "size": size, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                        "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_at_end": os.getloadavg()},
              "activations_s": round(t_acts, 3), "head_s": [round(v, 3) for v in times["head"]],
              "full_s": [round(v, 3) for v in times["full"]], "full_over_head": round(f / h, 3),
              "predictions_equal": True}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
