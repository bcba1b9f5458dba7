"""Cost of the single-unit importance table against its floor and against naive ablation.

    python benchmarks/bench_ablate.py                      # resnet18 (random weights) layer3, 2000 images, 224 px
    python benchmarks/bench_ablate.py --n 200 --size 64    # a quick look

- ``forward``: one full forward pass over the images (fp32, no grad, batch 64).
- ``head``: one pass of the network after the layer (layer4, avgpool, fc) over the cached activations.
- ``floor`` = forward + units x head: the issue's target is ``table <= 1.2 x floor``.
- ``table``: :func:`netdissect.roles.importance_table` (activations once, units + 1 head evaluations, several
  ablations batched per pass), activations included.
- ``naive`` (estimated): (units + 1) full forward passes with the ablation hooked in.
The images are random (timing does not depend on them); results go to stdout as JSON.
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--layer", default="layer3")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    import numpy as np
    import torch
    import torchvision

    from netdissect.models import load_model
    from netdissect.roles.core import Evaluator, importance_table
    if args.threads:
        torch.set_num_threads(args.threads)
    model, prep = load_model("torchvision:resnet18", weights="none")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    truth = rng.integers(0, 1000, args.n)
    ev = Evaluator(model, args.layer, prep, batch_size=args.batch_size, progress=False)
    with torch.inference_mode():
        t = time.perf_counter()
        for s in range(0, args.n, args.batch_size):
            model(ev._batch(images[s:s + args.batch_size]))
        forward = time.perf_counter() - t
    t = time.perf_counter()
    acts = ev.activations(images)
    act_s = time.perf_counter() - t
    with torch.inference_mode():
        t = time.perf_counter()
        for s in range(0, args.n, args.batch_size):
            ev.head(acts[s:s + args.batch_size])
        head = time.perf_counter() - t
    units = acts.shape[1]
    t = time.perf_counter()
    importance_table(ev, acts, truth, 1000, images)
    table = time.perf_counter() - t + act_s
    floor = forward + units * head
    print(json.dumps({"model": "resnet18 (random)", "layer": args.layer, "images": args.n, "size": args.size,
                      "units": units, "mode": ev.mode, "forward_s": round(forward, 3), "head_s": round(head, 4),
                      "floor_s": round(floor, 2), "table_s": round(table, 2),
                      "table_over_floor": round(table / floor, 3),
                      "naive_estimate_s": round((units + 1) * forward, 1),
                      "naive_over_table": round((units + 1) * forward / table, 2)}, indent=1))


if __name__ == "__main__":
    main()
