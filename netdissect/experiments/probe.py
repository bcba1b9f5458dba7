"""Discrimination vs interpretability (CVPR 2017 Sec. 3.6, Fig. 15).

    >>> from netdissect.experiments.probe import probe_experiment
    >>> table = probe_experiment(["zoo:scene-cnn", "zoo:scene-cnn-bn"], "conv5", "runs/world",
    ...                          task="object", out="runs/probe")     # doctest: +SKIP

For each model: one forward pass over the probe caches the layer; the ordinary dissection
counts its unique detectors, and the same activations, averaged over space (global average
pooling), are the features of a linear probe for a transfer task the models were not trained
on: the presence in each image of each concept of a category (``--task object``: which
objects an image holds).  One L2-regularised logistic regression per concept (scikit-learn,
C chosen by stratified cross-validation on the training images), features standardised on
the training images; the images are split once (seeded) into training and held-out sets,
the same split for every model.  A concept enters the task when it is present in between
10% and 90% of the images (so that accuracy is not that of always answering "no").

Reported per model: mean held-out accuracy and mean balanced accuracy over the task's
concepts, the majority-answer baseline, and the layer's unique detectors.  ``probe.csv``,
``probe.png``/``probe.svg`` (balanced accuracy against the unique detectors of the task's category,
one point per model, as the paper's Fig. 12 plots unique object detectors), and the correlations
across models in ``probe.json`` and the printed table.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from netdissect.atomic import save_figures, write_bytes
from netdissect.errors import NetDissectError

__all__ = ["probe_experiment", "presence", "fit_probe", "check_task"]

MIN_SHARE, MAX_SHARE = 0.10, 0.90
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def check_task(task: str, categories: list[str]) -> str:
    """The category a task names (``object``; a plural ``objects`` is accepted)."""
    t = str(task).strip().lower()
    for cand in (t, t[:-1] if t.endswith("s") else t):
        if cand in categories:
            return cand
    raise NetDissectError(f"--task {task!r}: not a category of the dataset (it has: {', '.join(categories)}); "
                          "the task is the presence of each concept of that category in each image")


def presence(ds, category: str) -> tuple[np.ndarray, list[str]]:
    """(N, K) bool: which of the K concepts of ``category`` each of the N rows holds (in its
    masks or image-level labels), and the K concept names."""
    cons = ds.concepts
    g = list(cons.categories).index(category)
    cols = np.flatnonzero(np.asarray(cons.primary) == g)
    where = {int(c): k for k, c in enumerate(cols)}
    out = np.zeros((len(ds), len(cols)), dtype=bool)
    for i in range(len(ds)):
        s = ds.load_labels(i)
        nums = np.unique(np.concatenate([np.unique(s.planes).astype(np.int64), s.image_labels.astype(np.int64)]))
        nums = nums[nums != 0]
        for c in cons.index_of(nums):
            k = where.get(int(c))
            if k is not None:
                out[i, k] = True
    return out, [str(cons.names[c]) for c in cols]


def fit_probe(X: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0) -> dict:
    """Per-column logistic regressions of ``Y`` on ``X``; held-out accuracy, balanced accuracy
    and the majority baseline, each averaged over the columns."""
    try:
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise NetDissectError("the linear probe needs scikit-learn: pip install scikit-learn") from None
    import warnings

    scaler = StandardScaler().fit(X[train])
    Xtr, Xte = scaler.transform(X[train]), scaler.transform(X[test])
    acc, bal, base = [], [], []
    for k in range(Y.shape[1]):
        ytr, yte = Y[train, k], Y[test, k]
        folds = int(min(3, ytr.sum(), (~ytr).sum()))
        if folds < 2 or yte.all() or (~yte).all():
            continue
        clf = LogisticRegressionCV(Cs=list(C_GRID), cv=folds, penalty="l2", max_iter=2000, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(Xtr, ytr)
        pred = clf.predict(Xte)
        acc.append(float((pred == yte).mean()))
        bal.append(float(0.5 * ((pred[yte] == 1).mean() + (pred[~yte] == 0).mean())))
        base.append(float(max(yte.mean(), 1 - yte.mean())))
    if not acc:
        raise NetDissectError("no concept of the task is both present and absent in the training and held-out "
                              "images: use a larger probe set or another --task")
    return {"accuracy": float(np.mean(acc)), "balanced_accuracy": float(np.mean(bal)),
            "majority_baseline": float(np.mean(base)), "concepts": len(acc)}


def _parse_models(models) -> list[tuple[str, str, str | None]]:
    """``SPEC`` or ``SPEC@WEIGHTS`` (e.g. ``zoo:scene-cnn@none`` the untrained twin) -> (label, spec, weights)."""
    items = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m and m.strip()]
    if not items:
        raise NetDissectError("--models is empty: name at least one model, e.g. --models zoo:scene-cnn,zoo:scene-cnn-bn")
    out = []
    for m in items:
        spec, _, weights = m.partition("@")
        label = spec.split(":", 1)[-1] + ("-untrained" if weights == "none" else (f"@{weights}" if weights else ""))
        out.append((label, spec, weights or None))
    labels = [o[0] for o in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise NetDissectError(f"--models names {dup[0]!r} twice")
    return out


def probe_experiment(models, layer: str, dataset, *, task: str = "object", test_share: float = 0.3,
                     seed: int = 0, out=None, progress: bool = False, **kw) -> "ProbeTable":
    from netdissect.data import Broden
    from netdissect.experiments.basis import ActivationRun

    specs = _parse_models(models)
    if not 0 < test_share < 1:
        raise NetDissectError(f"--test-share must be between 0 and 1, got {test_share}")
    if out is not None:
        from netdissect.runfolder import check_out

        check_out(out)
    limit = kw.pop("limit", None)
    if isinstance(dataset, Broden) and limit is not None:
        raise NetDissectError("limit= selects rows when the dataset is a path; for a Broden object pass it to it")
    ds = dataset if isinstance(dataset, Broden) else Broden(dataset, limit=limit)
    category = check_task(task, list(ds.concepts.categories))
    Y, names = presence(ds, category)
    share = Y.mean(0)
    keep = (share >= MIN_SHARE) & (share <= MAX_SHARE)
    if not keep.any():
        raise NetDissectError(f"--task {category}: no {category} concept is present in between "
                              f"{MIN_SHARE:.0%} and {MAX_SHARE:.0%} of the {len(ds)} images")
    Y, names = Y[:, keep], [n for n, k in zip(names, keep) if k]
    order = np.random.default_rng(seed).permutation(len(ds))
    n_test = max(1, int(round(test_share * len(ds))))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    rows = []
    for label, spec, weights in specs:
        with ActivationRun(spec, layer, ds, weights=weights, progress=progress, **kw) as run:
            X = np.concatenate([a.mean(axis=(2, 3)) for a in run.blocks()]).astype(np.float64)
            result = run.dissect_basis(None)
            cats = list(result.categories)
        u = result.unique_detectors
        rows.append({"model": label, **fit_probe(X, Y, train, test, seed), **u, "total": int(sum(u.values())),
                     "detector_units": int(result.units["detector"].sum())})
        if progress:
            print(f"probed {label}")
    info = {"layer": layer, "task": category, "task_concepts": names, "train_images": int(len(train)),
            "heldout_images": int(len(test)), "split_seed": seed, "C_grid": list(C_GRID),
            "dataset": str(ds.root)}
    table = ProbeTable(rows, cats, info)
    if out is not None:
        out = Path(out)
        write_bytes(out / "probe.csv", table.csv().encode())
        write_bytes(out / "probe.json", json.dumps({**info, "correlations": table.correlations()}, indent=2).encode())
        table.plot(out / "probe")
    return table


class ProbeTable:
    def __init__(self, rows, categories, info):
        self.rows, self.categories, self.info = rows, categories, info

    @property
    def columns(self):
        return ["model", "accuracy", "balanced_accuracy", "majority_baseline", "concepts", *self.categories,
                "total", "detector_units"]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow([f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in self.columns])
        return buf.getvalue()

    def correlations(self) -> dict:
        """Pearson and Spearman correlation across models of the held-out balanced accuracy with the
        unique detectors of the task's category (the paper's Fig. 12 measure) and with all of them;
        None with fewer than three models or a constant column."""
        out = {}
        acc = np.asarray([r["balanced_accuracy"] for r in self.rows], float)
        for key in (self.info["task"], "total"):
            v = np.asarray([r[key] for r in self.rows], float)
            if len(v) < 3 or v.std() == 0 or acc.std() == 0:
                out[key] = None
                continue
            from scipy.stats import rankdata

            out[key] = {"pearson": float(np.corrcoef(v, acc)[0, 1]),
                        "spearman": float(np.corrcoef(rankdata(v), rankdata(acc))[0, 1])}  # ties: mean ranks
        return out

    def table(self) -> str:
        width = max([len(r["model"]) for r in self.rows] + [5])
        task = self.info["task"]
        lines = [f"{'model':<{width}}  held-out acc  balanced  majority  unique {task} detectors  all unique"]
        for r in self.rows:
            lines.append(f"{r['model']:<{width}}  {r['accuracy']:>12.3f}  {r['balanced_accuracy']:>8.3f}  "
                         f"{r['majority_baseline']:>8.3f}  {r[task]:>{len(task) + 17}}  {r['total']:>10}")
        lines.append(f"(linear probe for the presence of {len(self.info['task_concepts'])} {self.info['task']} "
                     f"concepts on globally pooled {self.info['layer']} features; {self.info['heldout_images']} "
                     "held-out images)")
        for key, c in self.correlations().items():
            if c is not None:
                what = "all unique detectors" if key == "total" else f"unique {key} detectors"
                lines.append(f"correlation of balanced accuracy with {what} across models: "
                             f"Pearson {c['pearson']:.2f}, Spearman {c['spearman']:.2f}")
        return "\n".join(lines)

    def plot(self, stem) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.8))
        task = self.info["task"]
        ys = [r["balanced_accuracy"] for r in self.rows]
        near = 0.04 * (max(ys) - min(ys) or 1.0)  # labels of points closer than this would overlap
        placed: list[tuple[float, float, bool]] = []
        for r in sorted(self.rows, key=lambda r: (r[task], r["balanced_accuracy"])):
            x, y = r[task], r["balanced_accuracy"]
            ax.scatter(x, y, s=36, color="#4e79a7")
            clash = any(abs(x - px) <= 1 and abs(y - py) < near and up for px, py, up in placed)
            ax.annotate(r["model"], (x, y), fontsize=7, xytext=(4, -9 if clash else 3), textcoords="offset points")
            placed.append((x, y, not clash))
        ax.set_xlabel(f"unique {task} detectors ({self.info['layer']})")
        ax.set_ylabel(f"held-out balanced accuracy ({self.info['task']} presence)")
        ax.set_title("discrimination vs interpretability", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        return save_figures(stem, fig, dpi=120)
