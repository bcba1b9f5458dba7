"""Dissect every bundled model on one probe set: the CVPR 2017 comparisons on the embedded world.

    python scripts/zoo_experiments.py --out runs/zoo-experiments          # 1000 probe images, seed 2017

For zoo:scene-cnn and zoo:scene-cnn-wide untrained (same architectures, torch's default init, seed 0), its
training snapshots, the trained baseline, and the variants (batch norm, no
dropout, wide conv5 with GAP), this writes one run per model (all five conv
stages), ``experiments.md`` (unique detectors per category per layer), and
the comparison plots of ``netdissect compare`` (conv5 across models; the
baseline across layers; interpretability over training).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from netdissect import dissect
from netdissect.data.synth.export import write_world
from netdissect.models.zoo import LAYERS, ZOO, weights_path
from netdissect.report import compare

PROBE_SEED = 2017


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/zoo-experiments")
    ap.add_argument("--n", type=int, default=1000, help="probe images (default 1000)")
    ap.add_argument("--quantile", type=float, default=0.005)
    args = ap.parse_args()
    out = Path(args.out)
    probe = out / f"probe_seed{PROBE_SEED}_n{args.n}"
    if not (probe / "index.csv").exists():
        write_world(probe, n=args.n, seed=PROBE_SEED, size=112, overwrite=True)

    models = [("scene-cnn-untrained", "zoo:scene-cnn", "none"), ("scene-cnn-wide-untrained", "zoo:scene-cnn-wide", "none")]
    models += [(name, f"zoo:{name}", None) for name in ZOO if weights_path(name).exists()]
    summaries = {}
    for label, spec, weights in models:
        run = out / "runs" / label
        if not (run / "summary.json").exists():
            dissect(spec, LAYERS, probe, out=run, weights=weights, quantile=args.quantile, progress=False)
        summaries[label] = json.loads((run / "summary.json").read_text())
        print(f"dissected {label}")

    cats = summaries["scene-cnn"]["dataset"]["categories"]
    lines = [f"# Dissection of the zoo on {args.n} probe images (seed {PROBE_SEED}), q = {args.quantile}", "",
             "Unique detectors (distinct concepts labelling a unit with IoU > 0.04) per category.", ""]
    for layer in LAYERS:
        lines += [f"## {layer}", "", "| model | held-out acc | " + " | ".join(cats) + " | total | detector units |",
                  "|---" * (len(cats) + 4) + "|"]
        for label, s in summaries.items():
            ls = s["layers"][layer]
            acc = "-" if label.endswith("untrained") else f"{_accuracy(label):.3f}"
            lines.append(f"| {label} | {acc} | " + " | ".join(str(ls["unique_detectors"][c]) for c in cats)
                         + f" | {ls['n_unique_detectors']} | {ls['n_detectors']} |")
        lines.append("")
    (out / "experiments.md").write_text("\n".join(lines))
    runs = out / "runs"
    order = [m for m in ["scene-cnn-untrained", "scene-cnn-step50", "scene-cnn-step200", "scene-cnn"] if m in summaries]
    compare([runs / m for m in order], out / "compare-training", labels=order, layers=["conv5"])
    compare([runs / m for m in summaries], out / "compare-models", labels=list(summaries), layers=["conv5"])
    compare([runs / "scene-cnn"], out / "compare-layers", labels=["scene-cnn"])
    print((out / "experiments.md").read_text())


def _accuracy(name: str) -> float:
    from netdissect.models.zoo import read_meta

    return float(read_meta(weights_path(name))["accuracy"])


if __name__ == "__main__":
    main()
