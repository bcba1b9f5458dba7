"""The label scorecard's cost against the dissection it scores (docs/label-trust.md).

    python benchmarks/bench_scorecard.py --dataset DIR [--n 400] [--model torchvision:resnet18 --layer layer4]

One process: ``dissect(..., scorecard=True)`` on the first N rows, then the same run's
``timing_s``: pass 1 (activations), pass 2 (IoU), the scorecard (its pass over the cache and the
labels; then per layer significance, stability and the held-out metrics).  Random weights.
The dataset: a Broden-format folder (``netdissect synth --out DIR --n N --size 224``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    from netdissect import dissect

    torch.manual_seed(0)
    out = tempfile.mkdtemp(prefix="bench-scorecard-")
    t0 = time.perf_counter()
    r = dissect(args.model, [args.layer], args.dataset, weights="none", limit=args.n, out=os.path.join(out, "run"),
                progress=False, num_workers=args.workers)
    wall = time.perf_counter() - t0
    t = r.summary["timing_s"]
    card = r[args.layer].scorecard_summary
    dissection = t["activations"] + t["iou"]
    rep = {"n": args.n, "model": args.model, "layer": args.layer, "wall_s": round(wall, 2), "timing_s": t,
           "scorecard_layer_timing_s": card["timing_s"],
           "scorecard_over_dissection": round(t["scorecard"] / dissection, 3),
           "detectors": [card["detectors_iou_rule"], card["detectors_fdr_rule"]]}
    print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
