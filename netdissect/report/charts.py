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
