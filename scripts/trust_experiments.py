"""The label scorecard on the bundled demo classifier and its untrained twin (docs/label-trust.md).

    python scripts/trust_experiments.py --out runs/trust [--n 1000]

Writes the demo's probe set (the world, seed 2017, never used in training), dissects every conv
stage of zoo:scene-cnn-wide trained and untrained (--weights none, seed 0) with the scorecard, and
prints per layer: detectors by the IoU rule and by IoU + q < 0.05, unique object/part concepts by
each rule, the median bootstrap stability of the detectors, and the mean held-out correlations
(image-level, pixel-level) and AUPRC over the labelled units; then (``--noise``) the share of each
run's detector labels that flip under Gaussian input noise.  The JSON goes to OUT/trust.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def layer_row(lr) -> dict:
    s = lr.scorecard_summary
    u, card = lr.units, lr.scorecard
    det_iou = card["detector_iou"].astype(bool)
    op = [("object", "part")]
    uniq = lambda sel: len({l for l, c in zip(u["label"][sel], u["category"][sel]) if c in op[0]})  # noqa: E731
    return {"units": int(len(u)), "detectors_iou": int(det_iou.sum()), "detectors_fdr": int(u["detector"].sum()),
            "object_part_concepts_iou": uniq(det_iou), "object_part_concepts_fdr": uniq(u["detector"]),
            "median_stability_detectors": s["median_stability_detectors"],
            "mean_r_image": s["mean_r_image"], "mean_r_pixel": s["mean_r_pixel"], "mean_auprc": s["mean_auprc"],
            "mean_r_image_detectors": s["mean_r_image_detectors"], "timing_s": s["timing_s"]}


def figure(report: dict, path: Path) -> None:
    """Detectors by the IoU rule and by IoU + q < 0.05, and the held-out correlations, per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    layers = list(report["trained"]["layers"])
    x = range(len(layers))
    ax = axes[0]
    for i, (tag, color) in enumerate((("trained", "#1f5fa8"), ("untrained", "#b05a1e"))):
        L = report[tag]["layers"]
        off = -0.2 + 0.4 * i
        ax.bar([v + off for v in x], [L[n]["detectors_iou"] for n in layers], 0.38, color=color, alpha=0.35,
               label=f"{tag}: IoU > 0.04")
        ax.bar([v + off for v in x], [L[n]["detectors_fdr"] for n in layers], 0.38, color=color,
               label=f"{tag}: and q < 0.05")
    ax.set_xticks(list(x), layers)
    ax.set_ylabel("detector units")
    ax.set_title("detectors with and without the FDR rule")
    ax.legend(fontsize=7, frameon=False)
    ax = axes[1]
    for tag, color in (("trained", "#1f5fa8"), ("untrained", "#b05a1e")):
        L = report[tag]["layers"]
        ax.plot(list(x), [L[n]["mean_r_image"] or 0 for n in layers], "o-", color=color, label=f"{tag}: image-level r")
        ax.plot(list(x), [L[n]["mean_r_pixel"] or 0 for n in layers], "s--", color=color, label=f"{tag}: pixel-level r")
    ax.axhspan(0.12, 0.20, color="#999", alpha=0.25, lw=0)
    ax.text(0.02, 0.16, "published NetDissect 0.12-0.20", fontsize=7, transform=ax.get_yaxis_transform())
    ax.set_xticks(list(x), layers)
    ax.set_ylabel("mean held-out Pearson r")
    ax.set_title("held-out prediction (labels chosen on 80%)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--layers", default="conv1,conv2,conv3,conv4,conv5")
    ap.add_argument("--figure", default=None, help="write the figure here (PNG)")
    ap.add_argument("--noise", type=float, default=0.02, help="the robustness experiment's sigma (0: skip it)")
    args = ap.parse_args(argv)
    from netdissect import dissect
    from netdissect.data.synth.export import write_world

    out = Path(args.out)
    probe = out / f"probe_seed2017_n{args.n}_112px"
    if not (probe / "index.csv").exists():
        write_world(probe, n=args.n, seed=2017, size=112, overwrite=True, progress=False)
    report = {}
    done = out / "trust.json"
    if done.exists():
        report = json.loads(done.read_text())
    for tag, weights in (("trained", None), ("untrained", "none")):
        if tag in report:
            continue
        r = dissect("zoo:scene-cnn-wide", args.layers.split(","), probe, weights=weights, out=out / tag,
                    progress=False, scorecard=True)
        report[tag] = {"timing_s": r.summary["timing_s"], "layers": {n: layer_row(lr) for n, lr in r.items()}}
        print(tag, json.dumps(report[tag], indent=1))
        done.write_text(json.dumps(report, indent=2))
    if args.noise > 0:
        from netdissect.trust.robustness import robustness

        for tag in ("trained", "untrained"):
            key = f"robustness_{tag}"
            if key not in report:
                report[key] = robustness(out / tag, args.noise, out / tag / "robustness")["layers"]
                print(key, json.dumps(report[key], indent=1))
                done.write_text(json.dumps(report, indent=2))
    if args.figure:
        figure(report, Path(args.figure))


if __name__ == "__main__":
    main()
