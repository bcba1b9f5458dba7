"""Figures of the classifier experiment (as PNAS 2020 Fig. 2), each as PNG and SVG."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


DPI = 110
MIN_PT = 8   # smallest text in a figure: 8 pt at 110 dpi is 12 px at the PNG's own size


def readable(fig, min_pt: float = MIN_PT) -> None:
    """Raise every visible text of ``fig`` smaller than ``min_pt`` points to ``min_pt`` (tick labels included):
    the pages show figures at their own size, so text of 8 pt is about 12 px on screen."""
    from matplotlib.text import Text

    fig.canvas.draw()   # tick labels get their text (and so count as shown) when the figure is drawn
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            sizes = [t.get_fontsize() for t in axis.get_ticklabels(which="both") if t.get_text()]
            if sizes and min(sizes) < min_pt:
                ax.tick_params(axis=name, which="both", labelsize=min_pt)
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text() and t.get_fontsize() < min_pt:
            t.set_fontsize(min_pt)


def _save(fig, out: Path, name: str) -> list[str]:
    from netdissect.atomic import save_figures

    readable(fig)
    paths = save_figures(out / "figures" / name, fig, dpi=DPI, bbox_inches="tight")
    return [str(p.relative_to(out)) for p in paths]


def ablation_figures(out: Path, summary: dict, removal, importance, order, uc, peaks, splits) -> dict:
    plt = _plt()
    classes = summary["classes"]
    K = len(classes)
    figs = {}
    rem = {}
    for y, mode, n, ba, acc in removal:
        rem.setdefault((y, mode), []).append((n, ba, acc))
    # 1. per class: balanced accuracy and all-class accuracy as the most important units are removed
    cols = min(4, K)
    rows = (K + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.1 * rows + 0.7), squeeze=False)
    for y in range(rows * cols):
        ax = axes[y // cols][y % cols]
        if y >= K:
            ax.axis("off")
            continue
        for mode, style, lab in (("most_important", "-", "most important removed"),
                                 ("all_but_most_important", "--", "only most important kept")):
            pts = sorted(rem.get((y, mode), []))
            ns = [p[0] for p in pts]
            ax.plot(ns, [p[1] for p in pts], "C0" + style, marker="o", ms=3, label=f"this class: {lab}")
            ax.plot(ns, [p[2] for p in pts], "C1" + style, marker=".", ms=3, label=f"all classes: {lab}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_title(classes[y], fontsize=10)
        ax.set_xlabel("units (n)", fontsize=9)
        ax.set_ylabel("accuracy (val)", fontsize=9)
        ax.tick_params(labelsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{summary['layer']}: removing each class's most important units (val)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    # one legend for every panel, below them, where it hides no curve
    fig.legend(handles, [lab.replace("this class", "the panel's class (balanced accuracy)")
                         .replace("all classes", "all classes (accuracy)") for lab in labels],
               loc="lower center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.0))
    figs["removal"] = _save(fig, out, "removal")
    # 2. importance vs interpretability
    counts = np.asarray(summary["importance_count"])
    if summary.get("best_iou") is not None:
        iou = np.asarray(summary["best_iou"])
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        xs, ms, ses = [], [], []
        for c in sorted(set(counts.tolist())):
            v = iou[counts == c]
            xs.append(c)
            ms.append(v.mean())
            ses.append(v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0)
        ax.errorbar(xs, ms, yerr=ses, fmt="o-", capsize=3)
        ax.set_xticks(xs)  # counts of classes: whole numbers
        ax.margins(x=0.2)   # room for the last point's "N units" inside the frame
        for c, m in zip(xs, ms):
            ax.annotate(f"{int((counts == c).sum())} units", (c, m), xytext=(5, 4), textcoords="offset points",
                        fontsize=9)
        ax.set_xlabel(f"classes for which the unit is in the top {summary['top_k']}")
        ax.set_ylabel("best IoU (mean, s.e.)")
        ax.set_title("are units important to more classes better detectors?", fontsize=9)
        figs["importance_vs_iou"] = _save(fig, out, "importance_vs_iou")
    # 3. best single-unit classifier per class: jitter of peak activations, class vs others
    best = {}
    for y, u, t, tr, va in uc:
        best.setdefault(y, (u, t, tr, va))
    fig, ax = plt.subplots(figsize=(min(9.0, 1.0 * K + 1.2), 3.4))
    rng = np.random.default_rng(0)
    vp, vy = peaks["val"], splits["val"]["y"]
    for y in range(K):
        u, t, _, va = best[y]
        v = vp[:, u]
        pos, neg = v[vy == y], v[vy != y]
        ax.scatter(y - 0.2 + rng.uniform(-0.12, 0.12, len(neg)), neg, s=2, c="grey", alpha=0.4)
        ax.scatter(y + 0.2 + rng.uniform(-0.12, 0.12, len(pos)), pos, s=2, c="C3", alpha=0.6)
        ax.hlines(t, y - 0.4, y + 0.4, color="k", lw=1)
    ax.set_xticks(range(K))
    ax.set_xticklabels([f"{classes[y]}\nunit {best[y][0]}\n{best[y][3]:.2f}" for y in range(K)], fontsize=8)
    ax.set_xlabel("class, its best unit, that unit's val balanced accuracy", fontsize=9)
    ax.set_ylabel("peak activation (val)")
    ax.set_title("best single unit per class: class (red) vs others (grey), threshold from train", fontsize=9)
    figs["unit_classifiers"] = _save(fig, out, "unit_classifiers")
    summary["figures"] = figs
    return figs


def adversarial_figure(out: Path, summary, model, layer, prep, x_all, jobs, success, order, classes, fn, attack,
                       params, examples: int = 3, prefix_tokens=None) -> dict:
    """As PNAS Fig. 5: group changes with 99% intervals, and examples with the units' maps before and after."""
    import torch

    from netdissect.roles.adversarial import peaks_at
    from netdissect.roles.attacks import cw_l2, pgd
    plt = _plt()
    figs = {}
    names = list(summary["groups"])
    fig, ax = plt.subplots(figsize=(1.8 * len(names) + 1.5, 3.0))
    for gi, (g, col) in enumerate((("target", "C2"), ("source", "C3"), ("other", "grey"))):
        xs = np.arange(len(names)) + (gi - 1) * 0.25
        m = [summary["groups"][c][g]["mean"] or 0 for c in names]
        e = [summary["groups"][c][g]["ci"] or 0 for c in names]
        ax.bar(xs, m, 0.25, yerr=e, color=col, capsize=3, label=f"{g} class's top units" if g != "other"
               else "other units")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("change of peak activation (99% CI)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)  # off the bars
    ax.set_title(f"{attack} toward each target: {layer}", fontsize=9)
    figs["changes"] = _save(fig, out, "adversarial_changes")
    ok = [j for j, s in zip(jobs, success) if s][:examples]
    if ok:
        idx = torch.as_tensor([i for i, _ in ok])
        tgt = torch.as_tensor([t for _, t in ok])
        x = x_all[idx]
        if attack == "pgd":
            adv = pgd(fn, x, tgt, eps=params["eps"], alpha=params["eps"] / 10 if params["lr"] is None
                      else params["lr"], steps=params["steps"], seed=params["seed"])
        else:
            adv = cw_l2(fn, x, tgt, binary_steps=params["binary_steps"], steps=params["steps"],
                        lr=5e-3 if params["lr"] is None else params["lr"], initial_const=params["initial_const"])
        _, ma = peaks_at(model, layer, prep, x, maps=True, prefix_tokens=prefix_tokens)
        _, mb = peaks_at(model, layer, prep, adv, maps=True, prefix_tokens=prefix_tokens)
        fig, axes = plt.subplots(len(ok), 4, figsize=(8, 2.1 * len(ok)), squeeze=False)
        for r, (i, t) in enumerate(ok):
            u = int(order[t, 0])
            vmax = float(max(ma[r, u].max(), mb[r, u].max(), 1e-6))
            axes[r][0].imshow(x[r].permute(1, 2, 0).numpy())
            axes[r][0].set_title("original", fontsize=7)
            axes[r][1].imshow(adv[r].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r][1].set_title(f"-> {classes[t]}", fontsize=7)
            axes[r][2].imshow(ma[r, u].numpy(), vmin=0, vmax=vmax, cmap="magma")
            axes[r][2].set_title(f"unit {u} before", fontsize=7)
            axes[r][3].imshow(mb[r, u].numpy(), vmin=0, vmax=vmax, cmap="magma")
            axes[r][3].set_title(f"unit {u} after", fontsize=7)
            for a in axes[r]:
                a.axis("off")
        fig.tight_layout()
        figs["examples"] = _save(fig, out, "adversarial_examples")
    summary["figures"] = figs
    return figs
