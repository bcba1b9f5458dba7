"""Dissection results: labels per unit, counts per layer, saved as plain files.

    >>> import torch
    >>> from netdissect import dissect, load
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> made = dissect(net, ["1"], world, out="runs/tiny", normalize="none", progress=False)
    >>> result = load("runs/tiny")                   # e.g. load("runs/r18")["layer4"]
    >>> layer = result["1"]
    >>> layer.units["label"].shape, sorted(layer.unique_detectors)
    ((8,), ['color', 'material', 'object', 'part', 'scene', 'texture'])
    >>> bool((layer.units["label"] == made["1"].units["label"]).all() and (layer.iou == made["1"].iou).all())
    True

The files are described in ``docs/run-format.md``.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdissect.atomic import savez as atomic_savez
from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.errors import NetDissectError

FORMAT_VERSION = 1
# units.csv columns of the label scorecard (netdissect.trust; docs/run-format.md), after the per-category ones
SCORECARD_COLUMNS = ["p", "q", "detector_iou", "stability", "iou_lo", "iou_hi", "holdout_label", "holdout_iou",
                     "r_image", "r_pixel", "auprc"]


def _cell(v) -> str:
    """A scorecard value as units.csv writes it: empty for NaN, 0/1 for booleans."""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (str, np.str_)):
        return str(v)
    v = float(v)
    return "" if np.isnan(v) else f"{v:.6g}"


def unit_dtype(names, categories) -> list:
    """The units table's fields; label and category wide enough for the longest name (never cut)."""
    w = max([1] + [len(str(n)) for n in names])
    c = max([1] + [len(str(n)) for n in categories])
    return [("unit", "i4"), ("label", f"U{w}"), ("category", f"U{c}"), ("iou", "f8"),
            ("threshold", "f8"), ("detector", "?")]


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise NetDissectError(f"{path}: file not found (is this a finished netdissect run?)") from None
    except Exception as exc:
        raise NetDissectError(f"{path}: cannot read ({exc})") from None


@dataclass
class LayerResult:
    """What dissection found in one layer.

    ``units`` is a numpy structured array, one row per unit in unit order, with
    fields ``unit, label, category, iou, threshold, detector``;
    ``category_best[g]`` holds each unit's best concept and IoU within category g.
    """

    name: str
    iou: np.ndarray                 # float32 (C, K)
    thresholds: np.ndarray          # float32 (C,)
    concept_names: np.ndarray       # str (K,)
    concept_categories: np.ndarray  # str (K,)
    concept_numbers: np.ndarray     # int32 (K,)
    categories: list[str]
    iou_threshold: float
    shape: tuple[int, ...] = ()
    mask_size: tuple[int, ...] = ()  # (sh, sw) when every row has one size, else ()
    mask_sizes: list = field(default_factory=list)  # every (sh, sw) of the rows used
    top_images: np.ndarray | None = None  # int64 (C, k)
    top_values: np.ndarray | None = None  # float32 (C, k)
    top_maps: np.ndarray | None = None    # float16 (C, k, h, w)
    dead: np.ndarray | None = None        # bool (C,) mask empty on every image
    image_paths: np.ndarray | None = None  # str (N,) every row's image path (topk.npz), when read back
    folder: Path | None = None            # the layer's folder, when read back from a run
    # the label scorecard (netdissect.trust, docs/label-trust.md): unit columns, layer summary, p/q matrices;
    # with it a detector also needs the label's q-value below ``fdr``
    scorecard: dict | None = None
    fdr: float = 1.0
    scorecard_summary: dict | None = None
    scorecard_matrices: dict | None = None
    units: np.ndarray = field(init=False)
    category_best: dict = field(init=False)

    def __post_init__(self):
        C, K = self.iou.shape
        best = self.iou.argmax(1) if K else np.zeros(C, int)
        best_iou = self.iou[np.arange(C), best] if K else np.zeros(C)
        units = np.zeros(C, dtype=unit_dtype(self.concept_names, self.concept_categories))
        units["unit"] = np.arange(C)
        has = best_iou > 0
        units["label"] = np.where(has, self.concept_names[best] if K else "", "")
        units["category"] = np.where(has, self.concept_categories[best] if K else "", "")
        units["iou"] = best_iou
        units["threshold"] = self.thresholds
        units["detector"] = best_iou > self.iou_threshold
        if self.scorecard is not None and "q" in self.scorecard and self.fdr < 1:  # fdr 1: the IoU rule alone
            with np.errstate(invalid="ignore"):
                units["detector"] &= np.asarray(self.scorecard["q"], np.float64) < self.fdr
        self.units = units
        self.category_best = {}
        for g in self.categories:
            cols = np.flatnonzero(self.concept_categories == g)
            if len(cols) == 0:
                self.category_best[g] = (np.full(C, "", dtype=self.concept_names.dtype), np.zeros(C))
                continue
            sub = self.iou[:, cols]
            b = sub.argmax(1)
            v = sub[np.arange(C), b]
            self.category_best[g] = (np.where(v > 0, self.concept_names[cols[b]], ""), v)

    @property
    def formulas(self):
        """``LAYER/formulas.csv`` of ``netdissect explain`` (structured array: unit, formula, iou,
        iou_single_best, length, certified, nodes_searched, method), None when not explained;
        :class:`netdissect.explain.run.StaleFormulas` when they were made before the layer was
        dissected again (formulas.json records a digest of its thresholds and labels)."""
        if self.folder is None:
            return None
        from netdissect.explain.run import layer_digest, read_formulas

        return read_formulas(Path(self.folder) / "formulas.csv", layer_digest(self))

    # ------------------------------------------------------------ summaries
    @property
    def unique_detectors(self) -> dict[str, int]:
        """Distinct concepts that label at least one detector unit, per category."""
        det = self.units[self.units["detector"]]
        return {g: len(set(det["label"][det["category"] == g])) for g in self.categories}

    @property
    def detector_units(self) -> dict[str, int]:
        """Number of detector units per category."""
        det = self.units[self.units["detector"]]
        return {g: int((det["category"] == g).sum()) for g in self.categories}

    def summary(self) -> dict:
        return {
            "shape": list(self.shape), "mask_size": list(self.mask_size),
            "mask_sizes": [list(s) for s in self.mask_sizes], "n_units": int(len(self.units)),
            "n_detectors": int(self.units["detector"].sum()),
            "n_unique_detectors": int(sum(self.unique_detectors.values())),
            "unique_detectors": self.unique_detectors, "detector_units": self.detector_units,
            "dead_units": int(self.dead.sum()) if self.dead is not None else 0,
            **({"scorecard": self.scorecard_summary} if self.scorecard_summary is not None else {}),
        }

    def with_scorecard(self, card: dict, fdr: float) -> "LayerResult":
        """This layer with ``card`` (:func:`netdissect.trust.score_layers`'s entry) attached: the
        detector rule then also asks q < ``fdr``."""
        self.scorecard, self.fdr = card["units"], float(fdr)
        self.scorecard_summary, self.scorecard_matrices = card["summary"], card.get("matrices")
        self.__post_init__()
        return self

    # ------------------------------------------------------------ files
    def units_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        header = ["unit", "label", "category", "iou", "threshold", "detector"]
        for g in self.categories:
            header += [f"{g}_label", f"{g}_iou"]
        card = self.scorecard or {}
        extra = [c for c in SCORECARD_COLUMNS if c in card]
        header += extra
        w.writerow(header)
        for k, u in enumerate(self.units):
            row = [int(u["unit"]), u["label"], u["category"], f"{u['iou']:.6f}", f"{u['threshold']:.6g}",
                   int(u["detector"])]
            for g in self.categories:
                names, vals = self.category_best[g]
                row += [names[k], f"{vals[k]:.6f}"]
            for c in extra:
                row.append(_cell(card[c][k]))
            w.writerow(row)
        return buf.getvalue()

    def save(self, folder: str | os.PathLike, image_paths: list[str] | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_savez(folder / "iou.npz", iou=self.iou.astype(np.float32),
                     concept_names=self.concept_names.astype(str),
                     concept_categories=self.concept_categories.astype(str),
                     concept_numbers=self.concept_numbers.astype(np.int32),
                     thresholds=self.thresholds.astype(np.float32),
                     dead=(self.dead if self.dead is not None else np.zeros(len(self.thresholds), bool)))
        buf = io.BytesIO()
        np.save(buf, self.thresholds.astype(np.float32))
        atomic_write_bytes(folder / "thresholds.npy", buf.getvalue())
        if self.top_images is not None:
            atomic_savez(folder / "topk.npz", images=self.top_images, values=self.top_values,
                         maps=self.top_maps, image_paths=np.asarray(image_paths or [], dtype=str))
        if self.scorecard is not None:
            arrays = {f"unit/{k}": np.asarray(v) for k, v in self.scorecard.items()}
            arrays.update({f"pair/{k}": np.asarray(v) for k, v in (self.scorecard_matrices or {}).items()})
            atomic_savez(folder / "scorecard.npz", **arrays)
        atomic_write_bytes(folder / "units.csv", self.units_csv().encode())

    @classmethod
    def load(cls, folder: str | os.PathLike, name: str, categories: list[str], iou_threshold: float,
             info: dict | None = None) -> "LayerResult":
        folder = Path(folder)
        z = _load_npz(folder / "iou.npz")
        top = _load_npz(folder / "topk.npz") if (folder / "topk.npz").exists() else {}
        info = info or {}
        card = _load_npz(folder / "scorecard.npz") if (folder / "scorecard.npz").exists() else None
        sc_summary = info.get("scorecard")
        return cls(name=name, iou=z["iou"], thresholds=z["thresholds"], concept_names=z["concept_names"],
                   concept_categories=z["concept_categories"], concept_numbers=z["concept_numbers"],
                   categories=categories, iou_threshold=iou_threshold,
                   shape=tuple(info.get("shape", ())), mask_size=tuple(info.get("mask_size", ())),
                   mask_sizes=[tuple(s) for s in info.get("mask_sizes", [])],
                   top_images=top.get("images"), top_values=top.get("values"), top_maps=top.get("maps"),
                   dead=z.get("dead"), image_paths=top.get("image_paths"), folder=folder,
                   scorecard=None if card is None else {k[5:]: v for k, v in card.items() if k.startswith("unit/")},
                   scorecard_matrices=None if card is None else {k[5:]: v for k, v in card.items()
                                                                 if k.startswith("pair/")},
                   scorecard_summary=sc_summary,
                   fdr=float(sc_summary["fdr"]) if card is not None and sc_summary else 1.0)


class DissectionResult(dict):
    """Layer name -> :class:`LayerResult`, plus ``summary`` (the summary.json dict)."""

    def __init__(self, layers: dict, summary: dict, run_dir: Path | None = None):
        super().__init__(layers)
        self.summary = summary
        self.run_dir = run_dir

    def table(self) -> str:
        """Unique detectors per category, one line per layer (what the CLI prints)."""
        cats = self.summary["dataset"]["categories"]
        width = max([len(n) for n in self] + [5])
        lines = [f"{'layer':<{width}}  units  detectors  " + "  ".join(f"{c:>8}" for c in cats)]
        for name, layer in self.items():
            s = layer.summary()
            lines.append(f"{name:<{width}}  {s['n_units']:>5}  {s['n_detectors']:>9}  "
                         + "  ".join(f"{s['unique_detectors'][c]:>8}" for c in cats))
        card = self.summary.get("scorecard") or {}
        fdr = f" and label q-value < {card['fdr']:g}" if card.get("computed") and card.get("fdr", 1) < 1 else ""
        lines.append("(columns per category: unique detectors = distinct concepts labelling a unit with IoU > "
                     f"{self.summary['config']['iou_threshold']}{fdr})")
        image = [n for n, layer in self.items() if getattr(layer, "method", None) == "image-level"]
        if image:  # layers without a spatial map (dissection.imagelevel)
            il = self.summary["layers"][image[0]].get("image_level", {})
            lines.append(f"(image-level layers {', '.join(image)}: a unit labelled with AUROC >= "
                         f"{il.get('auroc_threshold')} and q < {il.get('fdr')})")
        return "\n".join(lines)


def layer_folder(run_dir: Path, layer: str) -> Path:
    return Path(run_dir) / layer


def load(run_dir: str | os.PathLike) -> DissectionResult:
    """Read a finished run directory back (``netdissect.load("runs/r18")``)."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise NetDissectError(f"{path}: file not found (is {run_dir} a finished netdissect run?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NetDissectError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(summary, dict) or summary.get("format_version") != FORMAT_VERSION:
        got = summary.get("format_version") if isinstance(summary, dict) else type(summary).__name__
        raise NetDissectError(f"{path}: format version {got} is not {FORMAT_VERSION}")
    try:
        cats = list(summary["dataset"]["categories"])
        thr = float(summary["config"]["iou_threshold"])
        infos = dict(summary["layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise NetDissectError(f"{path}: missing or malformed field {exc}; the run did not finish writing, or "
                              "the file was edited: rerun the dissection") from None
    layers = {}
    for name, info in infos.items():
        reader = LayerResult
        if isinstance(info, dict) and info.get("method") == "image-level":  # units without a spatial map
            from netdissect.dissection.imagelevel import ImageLevelResult as reader
        layers[name] = reader.load(layer_folder(run_dir, name), name, cats, thr, info)
    return DissectionResult(layers, summary, run_dir)
