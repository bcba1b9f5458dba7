"""Training conditions (CVPR 2017 Sec. 3.3-3.5, Figs. 10-13): unique detectors along training
snapshots and across model variants.

    >>> from netdissect.experiments.training import training_experiment
    >>> table = training_experiment("zoo:scene-cnn@none,zoo:scene-cnn-step50,zoo:scene-cnn-step200,"
    ...                             "zoo:scene-cnn,zoo:scene-cnn-bn", "conv5", "runs/world",
    ...                             out="runs/train")               # doctest: +SKIP

Each model (``SPEC`` or ``SPEC@WEIGHTS``; ``zoo:NAME@none`` is the untrained twin, step 0) is
dissected (one forward pass each).  A zoo model's training step comes from the zoo registry
(a snapshot's ``step``; a trained model's ``steps``) and its held-out scene accuracy from its
weights' record.  ``training.csv`` (one row per model), ``training.png``/``.svg``: left, the
snapshot curve of the models trained by one run (Fig. 10: unique detectors per category vs
training step); right, unique detectors per category of every model (Figs. 11-13).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from netdissect.atomic import save_figures, write_bytes
from netdissect.experiments.probe import _parse_models

__all__ = ["training_experiment", "zoo_record"]


def zoo_record(spec: str, weights: str | None) -> dict:
    """``trainer``, ``step`` and held-out ``accuracy`` of a zoo model (empty for other specs)."""
    if not spec.startswith("zoo:"):
        return {}
    from netdissect.models.zoo import ZOO, read_meta, weights_path

    name = spec.split(":", 1)[1]
    entry = ZOO.get(name)
    if entry is None:
        return {}  # load_model raises the clear error
    if weights == "none":
        return {"trainer": entry.trainer, "step": 0, "accuracy": None}
    if weights is not None:
        return {}
    step = entry.step if entry.snapshot_of else entry.train.get("steps")
    acc = None
    if weights_path(name).exists():
        acc = read_meta(weights_path(name)).get("accuracy")
    return {"trainer": entry.trainer, "step": step, "accuracy": acc}


def training_experiment(models, layer: str, dataset, *, out=None, progress: bool = False, **kw) -> "TrainingTable":
    from netdissect.experiments.basis import ActivationRun

    specs = _parse_models(models)
    if out is not None:
        from netdissect.runfolder import check_out

        check_out(out)
    rows, cats = [], []
    for label, spec, weights in specs:
        with ActivationRun(spec, layer, dataset, weights=weights, progress=progress, **kw) as run:
            result = run.dissect_basis(None)
        cats = list(result.categories)
        rec = zoo_record(spec, weights)
        u = result.unique_detectors
        rows.append({"model": label, "trainer": rec.get("trainer", ""), "step": rec.get("step"),
                     "accuracy": rec.get("accuracy"), **u, "total": int(sum(u.values())),
                     "detector_units": int(result.units["detector"].sum())})
        if progress:
            print(f"dissected {label}")
    table = TrainingTable(rows, cats, {"layer": layer, "dataset": str(dataset)})
    if out is not None:
        out = Path(out)
        write_bytes(out / "training.csv", table.csv().encode())
        write_bytes(out / "training.json", json.dumps({**table.info, "rows": rows}, indent=2).encode())
        table.plot(out / "training")
    return table


class TrainingTable:
    def __init__(self, rows, categories, info):
        self.rows, self.categories, self.info = rows, categories, info

    @property
    def columns(self):
        return ["model", "trainer", "step", "accuracy", *self.categories, "total", "detector_units"]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(["" if r[c] is None else (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c])
                        for c in self.columns])
        return buf.getvalue()

    def table(self) -> str:
        width = max([len(r["model"]) for r in self.rows] + [5])
        lines = [f"{'model':<{width}}  {'step':>5}  {'acc':>5}  " + "  ".join(f"{c:>8}" for c in self.categories)
                 + "  total  detector units"]
        for r in self.rows:
            step = "" if r["step"] is None else str(r["step"])
            acc = "" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            lines.append(f"{r['model']:<{width}}  {step:>5}  {acc:>5}  " + "  ".join(f"{r[c]:>8}" for c in self.categories)
                         + f"  {r['total']:>5}  {r['detector_units']:>14}")
        lines.append(f"(unique detectors per category in {self.info['layer']}; step: training iterations)")
        return "\n".join(lines)

    def curve(self) -> list[dict]:
        """The snapshot curve: rows of the trainer with most models of known step, by step."""
        trainers = [r["trainer"] for r in self.rows if r["trainer"] and r["step"] is not None]
        if not trainers:
            return []
        best = max(dict.fromkeys(trainers), key=trainers.count)
        return sorted([r for r in self.rows if r["trainer"] == best and r["step"] is not None], key=lambda r: r["step"])

    def plot(self, stem) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from netdissect.report.palette import category_colors, ordered_categories

        colors = category_colors(self.categories)
        cats = ordered_categories(self.categories)
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
        curve = self.curve()
        if len(curve) >= 2:
            steps = [r["step"] for r in curve]
            x = [max(s, 1) for s in steps]  # log axis: the untrained model (step 0) drawn at 1
            for c in cats:
                ax.plot(x, [r[c] for r in curve], "o-", color=colors[c], label=c, lw=1.5, ms=4)
            ax.plot(x, [r["total"] for r in curve], "s--", color="#333333", label="total", lw=1.2, ms=4)
            ax.set_xscale("log")
            ax.set_xticks(x)
            ax.set_xticklabels([str(s) for s in steps])
            ax.set_xlabel(f"training step ({curve[-1]['trainer']})")
            ax.set_ylabel("unique detectors")
            ax.legend(frameon=False, fontsize=7, ncol=2)
        else:
            ax.text(0.5, 0.5, "fewer than two snapshots of one training run", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            ax.set_axis_off()
        ax.set_title("over training", fontsize=10)
        names = [r["model"] for r in self.rows]
        bottom = np.zeros(len(names))
        for c in cats:
            v = np.asarray([r[c] for r in self.rows], float)
            ax2.bar(names, v, bottom=bottom, color=colors[c], label=c)
            bottom += v
        ax2.set_ylabel("unique detectors")
        ax2.set_ylim(0, max(bottom.max(), 1) * 1.06)  # zero-height top segments would pin the top at the max
        ax2.set_title(f"per model ({self.info['layer']})", fontsize=10)
        ax2.tick_params(axis="x", rotation=35, labelsize=7)
        for lab in ax2.get_xticklabels():
            lab.set_horizontalalignment("right")
        for a in (ax, ax2):
            a.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        return save_figures(stem, fig, dpi=120)
