"""Figures of the generator experiments (as PNAS 2020 Fig. 4), each as PNG and SVG (written atomically)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: Path, name: str) -> list[str]:
    from netdissect.atomic import save_figures
    from netdissect.roles.figures import DPI, readable

    readable(fig)
    paths = save_figures(Path(out) / "figures" / name, fig, dpi=DPI, bbox_inches="tight")
    return [str(p.relative_to(out)) for p in paths]


def removal_curve(out: Path, rows: list[dict], title: str, paper: tuple | None = None) -> list[str]:
    """Share of the concept's pixels removed against the number of units removed, 99% band; random control."""
    plt = _plt()
    ns = np.array([r["n"] for r in rows])
    fig, ax = plt.subplots(figsize=(4.8, 3.3))
    s = np.array([r["share_removed"] for r in rows])
    lo = np.array([r["ci99_low"] for r in rows])
    hi = np.array([r["ci99_high"] for r in rows])
    ax.fill_between(ns, lo, hi, color="C0", alpha=0.25, lw=0)
    ax.plot(ns, s, "C0o-", ms=3, label="top units by IoU removed")
    c = np.array([r["control_share_removed"] for r in rows])
    clo = np.array([r.get("control_ci99_low", np.nan) for r in rows])
    chi = np.array([r.get("control_ci99_high", np.nan) for r in rows])
    ax.fill_between(ns, clo, chi, color="grey", alpha=0.25, lw=0)
    ax.plot(ns, c, "o--", color="grey", ms=3, label="as many random units removed")
    if paper is not None:
        ax.plot([paper[0]], [paper[1]], "r*", ms=9, label=paper[2])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("units removed (n)")
    ax.set_ylabel("share of concept pixels removed\n(99% interval: 2.58 s.e.)")
    ax.set_ylim(max(-1.0, min(-0.1, float(np.nanmin(np.r_[lo, clo])) - 0.05)),
                min(1.5, max(1.05, float(np.nanmax(np.r_[hi, chi])) + 0.05)))
    # below the axes: inside, a legend would cover the rising curve or its band
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    ax.set_title(title, fontsize=10)
    return _save(fig, out, "removal_curve")


def image_grid(out: Path, name: str, rows: list[tuple[str, np.ndarray, list[str]]], title: str) -> list[str]:
    """Rows of images (``(row label, uint8 (B, H, W, 3), captions)``, optionally a fourth item: per image a box
    ``(top, left, height, width)`` in image pixels outlined on it, or None), one column per sample."""
    from matplotlib.patches import Rectangle

    plt = _plt()
    cols = max(len(r[1]) for r in rows)
    side = min(1.35, 8.4 / cols)   # the whole grid fits a 1000 px column at 110 dpi
    fig, axes = plt.subplots(len(rows), cols, figsize=(side * cols + 0.8, (side + 0.3) * len(rows) + 0.5),
                             squeeze=False)
    for i, row in enumerate(rows):
        label, imgs, caps = row[:3]
        boxes = row[3] if len(row) > 3 else None
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j], interpolation="nearest")
                ax.set_xlabel(caps[j], fontsize=9, labelpad=2)
                if boxes is not None and boxes[j] is not None:
                    t, lft, bh, bw = boxes[j]
                    ax.add_patch(Rectangle((lft - 0.5, t - 0.5), bw, bh, fill=False, ec="#ff2da0", lw=1.6))
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, name)


def insertion_contexts(out: Path, table: list[dict], title: str, unit: str) -> list[str]:
    """Mean added pixels per context with 99% intervals (2.58 s.e.) and the number of (sample, cell) pairs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.55 * max(4, len(table)) + 1.6, 3.3))
    xs = np.arange(len(table))
    m = np.array([r["mean_added"] for r in table])
    err = np.array([[r["mean_added"] - r["ci99_low"] for r in table], [r["ci99_high"] - r["mean_added"] for r in table]])
    ax.bar(xs, m, 0.7, yerr=err, capsize=2, color="C2")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{r['context']} (n={r['samples']})" for r in table], rotation=60, ha="right", fontsize=9)
    ax.set_xlabel("context: the label at the cell before the edit (n: sample-cell pairs)", fontsize=9)
    ax.set_ylabel(f"{unit} added\n(mean, 99% CI)")
    ax.set_title(title, fontsize=10)
    return _save(fig, out, "insertion_contexts")


def insertion_map(out: Path, cell_mean: np.ndarray, title: str, unit: str) -> list[str]:
    """Mean added pixels at each of the layer's cells (where insertion works)."""
    plt = _plt()
    h, w = cell_mean.shape
    fig, ax = plt.subplots(figsize=(5.0, 4.4))
    im = ax.imshow(cell_mean, cmap="viridis", interpolation="nearest")
    if h * w <= 100:
        lo, hi = float(np.nanmin(cell_mean)), float(np.nanmax(cell_mean))
        for i in range(h):
            for j in range(w):   # dark text on the light end of viridis, white on the dark end
                light = hi > lo and (cell_mean[i, j] - lo) / (hi - lo) > 0.6
                ax.text(j, i, f"{cell_mean[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="k" if light else "w")
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.tick_params(labelsize=8)
    ax.set_xlabel("cell column of the layer")
    ax.set_ylabel("cell row of the layer")
    fig.colorbar(im, ax=ax, shrink=0.8).set_label(f"{unit} added (mean)", fontsize=9)
    ax.set_title(title, fontsize=10)
    return _save(fig, out, "insertion_map")
