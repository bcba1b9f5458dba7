"""``netdissect ablate``: the role of a classifier's units (PNAS 2020): importance, removal, unit classifiers.

    netdissect synth --split train --out data/world-train --n 2000
    netdissect synth --split val --out data/world-val --n 1000
    netdissect ablate --model zoo:scene-cnn --layer conv5 --train data/world-train --val data/world-val \\
        --dissection runs/demo/run --out runs/ablate

Importance of unit u for class y: the drop of y's balanced accuracy when u
alone is ablated, on --train; sets ranked by it are removed on --val.  The
layer's activations are computed once per split; only the network after the
layer reruns per ablation (or full passes, said in roles.json, where the rest
of the network cannot be separated).  A killed run resumes.
"""
from __future__ import annotations

import argparse

from netdissect.cli._common import add_token_args, sizes_arg
from netdissect.errors import NetDissectError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ablate", help="unit importance in a classifier: ablation, removal, unit classifiers",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model spec (zoo:NAME, torchvision:NAME, file.py:factory)")
    p.add_argument("--weights", default=None, help="weights (see `netdissect dissect --help`)")
    p.add_argument("--normalize", default=None, help="imagenet | none | MEAN,STD")
    p.add_argument("--layer", required=True, help="layer whose units are ablated")
    p.add_argument("--train", required=True, help="labelled dataset ranking the units (Broden folder or class folders)")
    p.add_argument("--val", required=True, help="held-out labelled dataset the removals are measured on")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--dissection", default=None,
                   help="a dissection run of the same model (same weights) and layer: unit labels and IoU")
    p.add_argument("--classes", default=None, help="the model's class names (comma list or file); zoo models know theirs")
    p.add_argument("--size", type=int, default=None, help="image side the model takes (zoo models know theirs)")
    p.add_argument("--sizes", type=sizes_arg, default=[1, 2, 4, 8, 16, 20, 32, 64],
                   help="numbers of units removed / kept (default 1,2,4,8,16,20,32,64 and the layer's size)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many labelled images per split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--full-passes", action="store_true",
                   help="run the whole model for every ablation (the naive path; slower, for checking)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_token_args(p)
    return p


def run(args) -> int:
    from netdissect.roles.run import run_ablation

    if args.limit is not None and args.limit < 1:
        raise NetDissectError(f"--limit must be >= 1, got {args.limit}")
    s = run_ablation(args.model, args.layer, args.train, args.val, args.out, dissection=args.dissection,
                     weights=args.weights, normalize=args.normalize, classes=args.classes, size=args.size,
                     sizes=args.sizes, batch_size=args.batch_size, device=args.device, limit=args.limit,
                     fast=not args.full_passes, progress=not args.quiet, prefix_tokens=args.prefix_tokens,
                     layout=dict(args.layout or []).get(args.layer))
    print(f"{s['units']} units x {len(s['classes'])} classes of {s['layer']} ({s['mode']} evaluation) in "
          f"{s['seconds']:.1f} s; val all-class accuracy {s['baseline_val']['all_class_accuracy']:.3f}; "
          f"wrote {args.out}/index.html")
    return 0
