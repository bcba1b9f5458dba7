"""The CVPR 2017 experiments on the embedded world: the figures and tables of docs/experiments.md.

    python scripts/cvpr_experiments.py --out runs/cvpr-experiments       # 1000 probe images, seed 2017

Writes, under --out: the probe set (``probe_seed2017_n1000``), ``rot/`` (``netdissect experiment
rotation``: the demo's zoo:scene-cnn-wide conv5, alphas 0..1 by 0.2, seeds 1-3), ``rot-scene-cnn/``
(the same for the older zoo:scene-cnn), ``train/`` (``experiment training``: the untrained twins,
the snapshots, the baseline, its second seed and its variants, and zoo:scene-cnn-wide, at conv5) and
``probe/`` (``experiment probe``: object presence from pooled conv5 features across the same
models).  An experiment whose CSV is already there is not run again (delete it to redo).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from netdissect.data.synth.export import write_world
from netdissect.experiments.probe import probe_experiment
from netdissect.experiments.sweep import rotation_sweep
from netdissect.experiments.training import training_experiment
from netdissect.models.zoo import ZOO, weights_path

PROBE_SEED = 2017


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/cvpr-experiments")
    ap.add_argument("--n", type=int, default=1000, help="probe images (default 1000)")
    ap.add_argument("--layer", default="conv5")
    args = ap.parse_args()
    out = Path(args.out)
    probe = out / f"probe_seed{PROBE_SEED}_n{args.n}"
    if not (probe / "index.csv").exists():
        write_world(probe, n=args.n, seed=PROBE_SEED, size=112, overwrite=True)
    order = ["scene-cnn-step50", "scene-cnn-step200", "scene-cnn", "scene-cnn-seed1", "scene-cnn-bn",
             "scene-cnn-nodrop", "scene-cnn-gap", "scene-cnn-wide@none", "scene-cnn-wide"]
    models = ["zoo:scene-cnn@none"] + [f"zoo:{m}" for m in order
                                       if m.split("@")[0] in ZOO and weights_path(m.split("@")[0]).exists()]
    for name, folder in (("zoo:scene-cnn-wide", "rot"), ("zoo:scene-cnn", "rot-scene-cnn")):
        if not (out / folder / "rotation.csv").exists():
            t = rotation_sweep(name, args.layer, probe, alphas=[0, 0.2, 0.4, 0.6, 0.8, 1], seeds=[1, 2, 3],
                               out=out / folder)
            print(t.table())
    if not (out / "train" / "training.csv").exists():
        print(training_experiment(models, args.layer, probe, out=out / "train").table())
    if not (out / "probe" / "probe.csv").exists():
        print(probe_experiment(models, args.layer, probe, task="object", out=out / "probe").table())
    for f in ("rot/rotation.csv", "rot-scene-cnn/rotation.csv", "train/training.csv", "probe/probe.csv"):
        print(f"== {f}\n{(out / f).read_text()}")


if __name__ == "__main__":
    main()
