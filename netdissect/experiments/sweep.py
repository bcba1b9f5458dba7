"""The basis-rotation experiment (CVPR 2017 Sec. 3.2, Fig. 4): unique detectors vs alpha.

    >>> from netdissect.experiments.sweep import rotation_sweep
    >>> table = rotation_sweep("zoo:scene-cnn", "conv5", "runs/world", alphas=[0, 0.5, 1],
    ...                        seeds=[1, 2], out="runs/rot")             # doctest: +SKIP

One forward pass caches the layer; for every seed s a rotation Q_s is drawn uniformly from
SO(C) and for every alpha the layer is dissected in the basis Q_s^alpha (its rows are the
"units"), each an IoU pass over the cache.  alpha = 0 is the unit basis for every seed (one
dissection, reported once per seed).  Writes ``rotation.csv`` (one row per (alpha, seed):
``alpha,seed``, unique detectors of each category, ``total``, ``detector_units``),
``rotation.json`` (the settings and timing) and ``rotation.png``/``rotation.svg``.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from netdissect.atomic import save_figures, write_bytes
from netdissect.errors import NetDissectError
from netdissect.experiments.basis import ActivationRun
from netdissect.experiments.rotation import check_alphas, random_rotation, rotation_power

__all__ = ["rotation_sweep", "check_seeds", "RotationTable", "plot_rotation"]


def check_seeds(seeds) -> list[int]:
    """``"1,2,3"``, an int or a list -> distinct non-negative ints, in the order given."""
    if isinstance(seeds, str):
        try:
            seeds = [int(p) for p in seeds.replace(" ", "").split(",") if p]
        except ValueError:
            raise NetDissectError(f"--seed must be whole numbers separated by commas (e.g. 1,2,3), got {seeds!r}") from None
    elif isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds)]
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise NetDissectError("no seeds given: name at least one, e.g. --seed 1")
    if any(s < 0 for s in seeds):
        raise NetDissectError(f"seeds must be >= 0, got {min(seeds)}")
    return seeds


class RotationTable:
    """The sweep's rows (dicts with ``alpha, seed``, one key per category, ``total``,
    ``detector_units``) and categories."""

    def __init__(self, rows: list[dict], categories: list[str], info: dict):
        self.rows, self.categories, self.info = rows, categories, info

    @property
    def columns(self) -> list[str]:
        return ["alpha", "seed", *self.categories, "total", "detector_units"]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow([f"{r['alpha']:g}", r["seed"], *(r[c] for c in self.categories), r["total"],
                        r["detector_units"]])
        return buf.getvalue()

    def mean_by_alpha(self) -> dict[float, dict]:
        out = {}
        for a in sorted({r["alpha"] for r in self.rows}):
            rs = [r for r in self.rows if r["alpha"] == a]
            out[a] = {k: float(np.mean([r[k] for r in rs])) for k in [*self.categories, "total", "detector_units"]}
            out[a]["min_total"] = min(r["total"] for r in rs)
            out[a]["max_total"] = max(r["total"] for r in rs)
        return out

    def table(self) -> str:
        """What the command prints: the mean over seeds per alpha, with the total's range."""
        head = f"{'alpha':>5}  " + "  ".join(f"{c:>8}" for c in self.categories) + "     total (min-max)  detector units"
        lines = [head]
        for a, m in self.mean_by_alpha().items():
            lines.append(f"{a:>5g}  " + "  ".join(f"{m[c]:>8.1f}" for c in self.categories)
                         + f"  {m['total']:>8.1f} ({m['min_total']}-{m['max_total']})  {m['detector_units']:>14.1f}")
        n = len({r['seed'] for r in self.rows})
        lines.append(f"(unique detectors per category, mean over {n} seed(s) of the random rotation)")
        return "\n".join(lines)


def _row(alpha: float, seed: int, result) -> dict:
    u = result.unique_detectors
    return {"alpha": float(alpha), "seed": int(seed), **u, "total": int(sum(u.values())),
            "detector_units": int(result.units["detector"].sum())}


def rotation_sweep(model, layer: str, dataset, *, alphas=(0, 0.2, 0.4, 0.6, 0.8, 1), seeds=(1,), out=None,
                   progress: bool = False, **kw) -> RotationTable:
    """Unique detectors of ``layer`` in the bases Q_s^alpha; ``kw``: :class:`ActivationRun`'s
    options (weights, normalize, quantile, batch_size, device, limit, ...)."""
    alphas, seeds = check_alphas(alphas), check_seeds(seeds)
    if out is not None:
        from netdissect.runfolder import check_out

        check_out(out)
    t0 = time.monotonic()
    rows, iou_s = [], []
    with ActivationRun(model, layer, dataset, progress=progress, **kw) as run:
        C = run.channels
        cats = list(run.source.concepts.categories)
        for seed in seeds:
            Q = random_rotation(C, seed)
            for a in alphas:
                if a == 0 and rows and rows[0]["alpha"] == 0:  # the unit basis: the same for every seed
                    rows.append({**next(r for r in rows if r["alpha"] == 0), "seed": seed})
                    continue
                t = time.monotonic()
                result = run.dissect_basis(None if a == 0 else rotation_power(Q, a))
                iou_s.append(time.monotonic() - t)
                rows.append(_row(a, seed, result))
        info = {"model": run.identity["model"], "layer": layer, "units": C, "dataset": run.identity["dataset"],
                "alphas": alphas, "seeds": seeds, "quantile": run.cfg.quantile,
                "iou_threshold": run.cfg.iou_threshold,
                "timing_s": {"activations": round(run.timing["activations"], 3),
                             "per_basis": [round(v, 3) for v in iou_s],
                             "total": round(time.monotonic() - t0, 3)}}
    rows.sort(key=lambda r: (r["alpha"], seeds.index(r["seed"])))
    table = RotationTable(rows, cats, info)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / "rotation.csv", table.csv().encode())
        write_bytes(out / "rotation.json", json.dumps(info, indent=2).encode())
        plot_rotation(table, out / "rotation")
    return table


def plot_rotation(table: RotationTable, stem) -> list[Path]:
    """Fig. 4 of the paper: unique detectors per category (and in all) vs alpha; lines are the
    mean over seeds, bands their range.  ``stem``.png and ``stem``.svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from netdissect.report.palette import category_colors, ordered_categories

    means = table.mean_by_alpha()
    alphas = list(means)
    colors = category_colors(table.categories)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for c in ordered_categories(table.categories):
        lo = [min(r[c] for r in table.rows if r["alpha"] == a) for a in alphas]
        hi = [max(r[c] for r in table.rows if r["alpha"] == a) for a in alphas]
        ax.plot(alphas, [means[a][c] for a in alphas], "o-", color=colors[c], label=c, lw=1.6, ms=4)
        ax.fill_between(alphas, lo, hi, color=colors[c], alpha=0.15, lw=0)
    ax.set_xlabel("alpha (degree of rotation)")
    ax.set_ylabel("unique detectors")
    ax.set_title("per category")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    tot = [means[a]["total"] for a in alphas]
    ax2.plot(alphas, tot, "o-", color="#333333", lw=1.8, ms=4)
    ax2.fill_between(alphas, [means[a]["min_total"] for a in alphas], [means[a]["max_total"] for a in alphas],
                     color="#333333", alpha=0.15, lw=0)
    ax2.set_xlabel("alpha (degree of rotation)")
    ax2.set_title("all categories")
    ax2.set_ylim(bottom=0)
    for a_ in (ax, ax2):
        a_.spines[["top", "right"]].set_visible(False)
    info = table.info
    fig.suptitle(f"{info['model']['spec']} {info['layer']}: interpretability under rotation Q^alpha "
                 f"({len(info['seeds'])} seed(s))", fontsize=10)
    fig.tight_layout()
    return save_figures(stem, fig, dpi=120)
