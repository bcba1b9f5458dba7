"""The label scorecard's cost against the dissection it scores (docs/label-trust.md).

    python benchmarks/bench_scorecard.py --dataset DIR [--n 400] [--model torchvision:resnet18 --layer layer4]
    python benchmarks/bench_scorecard.py --dataset PROBE --n 1000 --model zoo:scene-cnn-wide --weights default \
        --layer conv1,conv2,conv3,conv4,conv5

One process: ``dissect(..., scorecard=True)`` on the first N rows, then the same run's
``timing_s``: pass 1 (activations), pass 2 (IoU), the scorecard (its pass over the cache and the
labels, shared by the layers and split evenly in each layer's ``pass``; then per layer
significance, stability and the held-out metrics).  Random weights unless ``--weights``.
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
    ap.add_argument("--layer", default="layer4", help="a layer, or several comma-separated")
    ap.add_argument("--weights", default="none", help="as for dissect (default none: random weights)")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    from netdissect import dissect

    torch.manual_seed(0)
    out = tempfile.mkdtemp(prefix="bench-scorecard-")
    t0 = time.perf_counter()
    layers = args.layer.split(",")
    weights = None if args.weights == "default" else args.weights
    r = dissect(args.model, layers, args.dataset, weights=weights, limit=args.n, out=os.path.join(out, "run"),
                progress=False, num_workers=args.workers, scorecard=True)
    wall = time.perf_counter() - t0
    t = r.summary["timing_s"]
    dissection = t["activations"] + t["iou"]
    rep = {"n": args.n, "model": args.model, "layers": layers, "wall_s": round(wall, 2), "timing_s": t,
           "scorecard_over_dissection": round(t["scorecard"] / dissection, 3),
           "per_layer": {n: {"timing_s": r[n].scorecard_summary["timing_s"],
                             "detectors_iou_fdr": [r[n].scorecard_summary["detectors_iou_rule"],
                                                   r[n].scorecard_summary["detectors_fdr_rule"]]} for n in layers}}
    print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
