"""Matplotlib charts (Agg backend): layer summaries, IoU histograms, the paper's comparison bars.

    >>> from netdissect.report.charts import category_bars, save
    >>> fig = category_bars([("conv1", {"color": 9}), ("conv5", {"object": 40, "color": 2})],
    ...                     ["object", "color"], ylabel="unique detectors")
    >>> save(fig, [Path("out/unique.png"), Path("out/unique.svg")])   # doctest: +SKIP

``category_bars`` draws Fig. 5 / Fig. 7 of the CVPR 2017 paper: one stacked
bar per layer or model, a segment per category.  Figures are saved
atomically and closed.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from netdissect.atomic import save_figure  # noqa: E402
from netdissect.report.palette import NONE_COLOR, category_colors  # noqa: E402

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9aa1ab",
    "axes.labelcolor": "#30353c",
    "xtick.color": "#4a5059",
    "ytick.color": "#4a5059",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "svg.fonttype": "path",
    "svg.hashsalt": "netdissect",
    "figure.dpi": 100,
}


@contextmanager
def _style():
    with plt.rc_context(STYLE):
        yield


def save(fig, paths) -> list[Path]:
    """Save ``fig`` to every path (format from the suffix), atomically; close it."""
    out = []
    for p in paths:
        out.append(save_figure(Path(p), fig, dpi=150, bbox_inches="tight"))
    plt.close(fig)
    return out


def layer_summary(stats: dict, categories: list[str]):
    """Two panels sharing the category axis: unique detectors, and detector units (own scales)."""
    colors = category_colors(categories)
    cats = list(colors)[::-1]  # the first category on top
    y = np.arange(len(cats))
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(4.6, 0.28 * len(cats) + 0.9), sharey=True)
        for ax, key, title in zip(axes, ("unique_detectors", "detector_units"),
                                  ("Unique detectors", "Detector units")):
            v = [stats[key].get(c, 0) for c in cats]
            ax.barh(y, v, 0.68, color=[colors[c] for c in cats])
            top = max([1] + v)
            for yi, n in zip(y, v):
                ax.annotate(f"{n}", (n, yi), xytext=(3, 0), textcoords="offset points", va="center",
                            fontsize=7.5, color="#30353c" if n else "#9aa1ab")
            ax.set_xlim(0, top * 1.22)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="y", length=0)
            ax.spines["left"].set_visible(False)
        axes[0].set_yticks(y, cats)
        fig.subplots_adjust(wspace=0.12)
    return fig


def iou_histogram(records: list[dict], categories: list[str], iou_threshold: float, metric: str = "IoU",
                  rule: str = ">"):
    """Histogram of each unit's best IoU (``metric``: "AUROC" for an image-level layer, whose
    detectors need AUROC ``rule`` the threshold), detectors stacked by category, the rest grey."""
    colors = category_colors(categories)
    with _style():
        fig, ax = plt.subplots(figsize=(4.0, 2.5))
        ious = np.array([r["iou"] for r in records], dtype=float)
        top = max(0.1, float(ious.max()) if len(ious) else 0.1)
        bins = np.linspace(0, top * 1.02, 31)
        is_det = np.array([r["det"] for r in records], dtype=bool)
        groups, cols, labels = [ious[~is_det]], [NONE_COLOR], ["not a detector"]
        for c in colors:
            sel = is_det & np.array([r["cat"] == c for r in records], dtype=bool)
            if sel.any():
                groups.append(ious[sel])
                cols.append(colors[c])
                labels.append(c)
        counts = [np.histogram(g, bins=bins)[0] for g in groups]
        bottom = np.zeros(len(bins) - 1)
        for n, col, lab in zip(counts, cols, labels):
            ax.bar(bins[:-1], n, np.diff(bins), bottom=bottom, align="edge", color=col, label=lab,
                   edgecolor="white", linewidth=0.4)
            bottom += n
        ax.axvline(iou_threshold, color="#30353c", linestyle="--", linewidth=0.9)
        ax.annotate(f"detector: {metric} {rule} {iou_threshold:g}", (iou_threshold, 1), xycoords=("data", "axes fraction"),
                    xytext=(4, -2), textcoords="offset points", fontsize=7, va="top", color="#30353c")
        ax.set_xlabel(f"best {metric}")
        ax.set_ylabel("units")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"Best {metric} per unit")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), handlelength=1.2)
    return fig


def category_bars(bars: list[tuple[str, dict]], categories, ylabel: str = "unique detectors",
                  title: str | None = None):
    """Fig. 5 / Fig. 7: one stacked bar per (label, {category: count}), totals on top."""
    colors = category_colors(categories)
    n = len(bars)
    with _style():
        fig, ax = plt.subplots(figsize=(max(3.6, 0.62 * n + 1.9), 3.0))
        x = np.arange(n)
        bottom = np.zeros(n)
        for c in colors:
            v = np.array([b[1].get(c, 0) for b in bars], dtype=float)
            if not v.any():
                continue
            ax.bar(x, v, 0.66, bottom=bottom, color=colors[c], label=c, edgecolor="white", linewidth=0.4)
            bottom += v
        for xi, t in zip(x, bottom):
            ax.annotate(f"{int(t)}", (xi, t), ha="center", va="bottom", fontsize=7.5, color="#30353c",
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(x, [b[0] for b in bars], rotation=30 if n > 4 else 0,
                      ha="right" if n > 4 else "center")
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(0, max(1.0, float(bottom.max()) if n else 1.0) * 1.15)
        ax.set_ylabel(ylabel)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if title:
            ax.set_title(title)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], frameon=False, fontsize=7.5,
                  loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


RUN_COLORS = ("#2f6db3", "#c0622b", "#4f8f3a", "#8a5aa8", "#b8962e", "#3c8f8f", "#a6476b", "#6b6f76")


def scorecard_summaries(bars: list[tuple[str, str, dict | None]], fdr: float | None = None):
    """The label scorecard's layer summaries (docs/label-trust.md), one group of marks per
    (bar label, run label, ``summary.json`` layer ``scorecard`` dict or None): detectors by the IoU
    rule (light) and with the FDR rule (dark), the detectors' median stability, and the mean
    held-out correlation (image- and pixel-level).  A layer without a scorecard is marked "none";
    ``fdr``: the runs' common ``--fdr`` (None: they differ)."""
    runs = list(dict.fromkeys(r for _, r, _ in bars))
    color = {r: RUN_COLORS[i % len(RUN_COLORS)] for i, r in enumerate(runs)}
    n = len(bars)
    x = np.arange(n)
    multiline = any("\n" in b[0] for b in bars)
    rotate = n > 3 and not multiline

    def none_mark(ax, xi):
        ax.annotate("none", (xi, 0), ha="center", va="bottom", fontsize=7, color="#9aa1ab",
                    xytext=(0, 2), textcoords="offset points")

    with _style():
        fig, axes = plt.subplots(1, 3, figsize=(max(9.6, 3 * ((0.95 if multiline else 0.7) * n + 1.3)), 3.3))
        ax = axes[0]
        for xi, (_, run, s) in zip(x, bars):
            if s is None:
                none_mark(ax, xi)
                continue
            n_iou, n_fdr = s["detectors_iou_rule"], s["detectors_fdr_rule"]
            ax.bar(xi, n_iou, 0.66, color=color[run], alpha=0.32, edgecolor="white", linewidth=0.4)
            ax.bar(xi, n_fdr, 0.66, color=color[run], edgecolor="white", linewidth=0.4)
            ax.annotate(f"{n_fdr}/{n_iou}", (xi, n_iou), ha="center", va="bottom", fontsize=7, color="#30353c",
                        xytext=(0, 2), textcoords="offset points")
        top = max([1] + [s["detectors_iou_rule"] for _, _, s in bars if s is not None])
        ax.set_ylim(0, top * 1.45)
        ax.set_ylabel("detector units")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title("Detectors")
        rules = [plt.Rectangle((0, 0), 1, 1, color="#6b6f76", alpha=0.32), plt.Rectangle((0, 0), 1, 1, color="#6b6f76")]
        rule = f"and q < {fdr:g}" if fdr is not None else "and q < --fdr"
        ax.legend(rules, ["IoU rule", rule], frameon=False, fontsize=7,
                  loc="upper left", ncol=2, handlelength=1.0, columnspacing=1.0)
        ax = axes[1]
        for xi, (_, run, s) in zip(x, bars):
            v = None if s is None else s.get("median_stability_detectors")
            if v is None:
                none_mark(ax, xi)
                continue
            ax.bar(xi, v, 0.66, color=color[run], edgecolor="white", linewidth=0.4)
            ax.annotate(f"{v:.2f}", (xi, v), ha="center", va="bottom", fontsize=7, color="#30353c",
                        xytext=(0, 2), textcoords="offset points")
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("median stability of detectors")
        ax.set_title("Stability (bootstrap)")
        ax = axes[2]
        for key, marker, dash, tag in (("mean_r_image", "o", "-", "image-level r"),
                                       ("mean_r_pixel", "s", "--", "pixel-level r")):
            for run in runs:
                idx = [i for i, (_, r, _) in enumerate(bars) if r == run]
                ys = [np.nan if bars[i][2] is None or bars[i][2].get(key) is None else bars[i][2][key] for i in idx]
                ax.plot(x[idx], ys, marker=marker, linestyle=dash, color=color[run], markersize=4,
                        label=tag if len(runs) == 1 else f"{run}: {tag}")
        ax.axhspan(0.12, 0.20, color="#9aa1ab", alpha=0.22, lw=0)
        ax.annotate("published NetDissect 0.12-0.20", (0.01, 0.20), xycoords=("axes fraction", "data"),
                    xytext=(0, 2), textcoords="offset points", fontsize=6.5, color="#4a5059")
        vals = [s[k] for _, _, s in bars if s is not None for k in ("mean_r_image", "mean_r_pixel")
                if s.get(k) is not None]
        ax.set_ylim(min([0.0] + vals) - 0.02, max([0.4] + vals) * 1.12)
        ax.set_ylabel("mean held-out Pearson r")
        ax.set_title("Held-out prediction")
        ax.legend(frameon=False, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        for ax in axes:
            ax.set_xticks(x, [b[0] for b in bars], rotation=30 if rotate else 0, ha="right" if rotate else "center",
                          fontsize=7 if multiline else None)
            ax.set_xlim(-0.6, n - 0.4)
        fig.subplots_adjust(wspace=0.34)
    return fig
