"""The paper's comparison plots for several layers or models at once.

    >>> from netdissect.report import compare
    >>> files = compare(["runs/alexnet", "runs/resnet18"], "runs/compare",  # doctest: +SKIP
    ...                 labels=["AlexNet", "ResNet-18"])
    >>> sorted(files)     # unique_detectors.png/.svg, detector_units.png/.svg, compare.csv  # doctest: +SKIP

One stacked bar per (run, layer): unique detectors per category (CVPR 2017
Fig. 5 for the layers of one model, Fig. 7 for the last layer of several
models) and detector units per category.  Runs with the label scorecard (docs/label-trust.md)
also get ``scorecard.png``/``.svg``: each layer's detectors with and without the FDR rule,
median stability and mean held-out correlation, and these figures as columns of ``compare.csv``.
Only ``summary.json`` of each run is used (runs are read through :func:`netdissect.load`), so
this works for runs whose dataset is gone.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from netdissect.report import charts
from netdissect.atomic import write_text
from netdissect.report.palette import ordered_categories
from netdissect.report.assets import check_out_dir
from netdissect.report.run import RunError, load_summary


# compare.csv columns from each layer's scorecard summary (empty for a layer without one)
SCORECARD_CSV = {"fdr": "fdr", "detectors_iou_rule": "detectors_iou_rule", "detectors_fdr_rule": "detectors_fdr_rule",
                 "median_stability": "median_stability_detectors", "mean_r_image": "mean_r_image",
                 "mean_r_pixel": "mean_r_pixel", "mean_auprc": "mean_auprc"}


def _bar_label(run_label: str, layer: str, n_runs: int, n_layers: int) -> str:
    if n_runs == 1:
        return layer
    if n_layers == 1:
        return run_label
    return f"{run_label}\n{layer}"


def compare(run_dirs, out, labels=None, layers=None) -> dict[str, Path]:
    """Write comparison charts of ``run_dirs`` into ``out``; return ``{name: path}``.

    ``labels`` names the runs in the plots (default: the run folder names);
    ``layers`` keeps only these layer names (each run must have at least one).
    """
    run_dirs = [Path(r) for r in run_dirs]
    check_out_dir(Path(out))
    if not run_dirs:
        raise RunError("compare: no run directory given")
    if labels is not None and len(labels) != len(run_dirs):
        raise RunError(f"compare: {len(labels)} labels for {len(run_dirs)} run directories")
    labels = list(labels) if labels is not None else [r.resolve().name for r in run_dirs]
    rows, cats = [], []
    for run_dir, label in zip(run_dirs, labels):
        summary = load_summary(run_dir).summary
        names = [n for n in summary["layers"] if layers is None or n in layers]
        if not names:
            raise RunError(f"{run_dir / 'summary.json'}: none of the layers {', '.join(layers)} "
                           f"(layers: {', '.join(summary['layers'])})")
        cats += list((summary.get("dataset") or {}).get("categories") or [])
        for name in names:
            s = summary["layers"][name]
            for key in ("unique_detectors", "detector_units"):
                if not isinstance(s.get(key), dict):
                    raise RunError(f"{run_dir / 'summary.json'}: layer {name!r} has no {key!r}")
            cats += list(s["unique_detectors"]) + list(s["detector_units"])
            rows.append((label, name, s))
    categories = ordered_categories(cats)
    n_runs = len(run_dirs)
    n_layers = max(sum(1 for r in rows if r[0] == label) for label in labels)
    bars = [(_bar_label(label, name, n_runs, n_layers), s) for label, name, s in rows]
    by = "layer" if n_runs == 1 else ("model" if n_layers == 1 else "model and layer")
    out = Path(out)
    files = {}
    for key, stem, ylabel in (("unique_detectors", "unique_detectors", "unique detectors"),
                              ("detector_units", "detector_units", "detector units")):
        fig = charts.category_bars([(b, s[key]) for b, s in bars], categories, ylabel,
                                   f"{ylabel.capitalize()} per category, by {by}")
        png, svg = charts.save(fig, [out / f"{stem}.png", out / f"{stem}.svg"])
        files[f"{stem}.png"], files[f"{stem}.svg"] = png, svg
    cards = [(b, label, s.get("scorecard")) for (b, _), (label, _, s) in zip(bars, rows)]
    if any(c is not None for _, _, c in cards):  # the label scorecard's layer summaries (docs/label-trust.md)
        fdrs = {c["fdr"] for _, _, c in cards if c is not None}
        fig = charts.scorecard_summaries(cards, fdrs.pop() if len(fdrs) == 1 else None)
        png, svg = charts.save(fig, [out / "scorecard.png", out / "scorecard.svg"])
        files["scorecard.png"], files["scorecard.svg"] = png, svg
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "layer", "n_units", "n_detectors"]
               + [f"unique_{c}" for c in categories] + [f"units_{c}" for c in categories] + list(SCORECARD_CSV))
    for label, name, s in rows:
        card = s.get("scorecard") or {}
        w.writerow([label, name, s.get("n_units", ""), s.get("n_detectors", "")]
                   + [s["unique_detectors"].get(c, 0) for c in categories]
                   + [s["detector_units"].get(c, 0) for c in categories]
                   + ["" if card.get(k) is None else card[k] for k in SCORECARD_CSV.values()])
    files["compare.csv"] = write_text(out / "compare.csv", buf.getvalue())
    return files
