"""``netdissect compare RUN_DIR... --out DIR [--labels ...]``: the paper's plots across runs.

    $ netdissect compare runs/alexnet runs/vgg16 runs/resnet18 --out runs/cmp \\
          --labels AlexNet VGG-16 ResNet-18 --layers conv5 features.28 layer4
    runs/cmp/unique_detectors.png
    ...

Draws unique detectors (and detector units) per category, one stacked bar per
layer (one run) or per model (one layer per run), as PNG and SVG.  For a generator
run (``dissect --samples``) ``detector_units`` is the PNAS 2020 figure of object,
part and material units per generator layer (where each category peaks):

    $ netdissect compare runs/gan --out runs/gan-compare     # layers in the order dissected

Runs with the label scorecard also get scorecard.png/.svg: per layer, detectors with and without
the FDR rule, the detectors' median stability and the mean held-out correlation (docs/label-trust.md).
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="plot unique detectors per category across layers or runs",
        description="Draw the CVPR 2017 comparison plots (unique detectors and detector units per "
                    "category) for the layers of one run or for several runs, as PNG and SVG; for a "
                    "generator run, detector_units is the PNAS 2020 figure of object/part/material "
                    "units per layer; runs with the label scorecard also get scorecard.png (detectors with and "
                    "without the FDR rule, median stability, mean held-out correlation per layer).",
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories to compare")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the plots and compare.csv")
    p.add_argument("--labels", nargs="+", metavar="LABEL", default=None,
                   help="a name per run for the plots (default: the folder names)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", default=None,
                   help="only these layers (e.g. the last conv layer of each model)")
    return p


def run(args) -> int:
    from netdissect.report import compare

    files = compare(args.run_dirs, args.out, labels=args.labels, layers=args.layers)
    for path in files.values():
        print(path)
    return 0
