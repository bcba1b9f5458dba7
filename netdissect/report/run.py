"""Read a run directory (docs/run-format.md) for the report.

    >>> from netdissect.report.run import load_run
    >>> run = load_run("runs/demo")                       # doctest: +SKIP
    >>> run.layers[0].name, run.layers[0].units[0]["label"]  # doctest: +SKIP

Only what the report needs is read: ``summary.json`` and, per layer,
``units.csv``, ``iou.npz`` and ``topk.npz``.  Every problem raises
:class:`RunError` naming the file at fault.
"""
from __future__ import annotations

import csv
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdissect.errors import NetDissectError

SUPPORTED_FORMAT = 1
UNIT_COLUMNS = ("unit", "label", "category", "iou", "threshold", "detector")


class RunError(NetDissectError, ValueError):
    """A run directory file is missing, corrupt, or inconsistent (names the file)."""


@dataclass
class Layer:
    """One dissected layer: the rows of units.csv plus the arrays the report draws from."""

    name: str
    folder: Path
    summary: dict
    units: list[dict]              # rows of units.csv, typed
    iou: np.ndarray                # float32 (C, K)
    concept_names: list[str]       # (K,)
    concept_categories: list[str]  # (K,)
    concept_numbers: np.ndarray    # int32 (K,)
    thresholds: np.ndarray         # float32 (C,)
    top_images: np.ndarray         # int64 (C, k), -1 = none
    top_values: np.ndarray         # float32 (C, k)
    top_maps: np.ndarray           # float16 (C, k, h, w)
    image_paths: list[str]         # (N,)
    dead: np.ndarray | None = None # bool (C,) from iou.npz where the engine wrote it

    @property
    def n_units(self) -> int:
        return len(self.units)


@dataclass
class Run:
    """A run directory: its summary and its layers, in summary order."""

    root: Path
    summary: dict
    layers: list[Layer] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return list(self.summary.get("dataset", {}).get("categories") or [])

    @property
    def iou_threshold(self) -> float:
        return float(self.summary.get("config", {}).get("iou_threshold", 0.04))


def read_summary(root: str | Path) -> dict:
    """The parsed ``summary.json`` of a run, checked for the fields the report uses."""
    root = Path(root)
    path = root / "summary.json"
    if not root.is_dir():
        raise RunError(f"{root}: run directory not found")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: file not found (is {root} a finished dissection run?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise RunError(f"{path}: expected a JSON object")
    version = summary.get("format_version")
    if version != SUPPORTED_FORMAT:
        raise RunError(f"{path}: format_version {version!r} is not supported (expected {SUPPORTED_FORMAT})")
    if not isinstance(summary.get("layers"), dict) or not summary["layers"]:
        raise RunError(f"{path}: no 'layers' (the run dissected no layer, or it has not finished)")
    return summary


def load_run(root: str | Path, layers: list[str] | None = None) -> Run:
    """Read a run directory; ``layers`` keeps only those layers (default: all, summary order)."""
    root = Path(root)
    summary = read_summary(root)
    names = list(summary["layers"])
    if layers is not None:
        unknown = [n for n in layers if n not in summary["layers"]]
        if unknown:
            raise RunError(f"{root / 'summary.json'}: no layer {', '.join(map(repr, unknown))} "
                           f"(layers: {', '.join(names)})")
        names = list(layers)
    run = Run(root=root, summary=summary)
    for name in names:
        run.layers.append(_load_layer(root, name, summary["layers"][name]))
    return run


def _load_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise RunError(f"{path}: missing array(s) {', '.join(missing)}")
            return {k: z[k] for k in keys + tuple(k for k in optional if k in z.files)}
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, RunError):
            raise
        raise RunError(f"{path}: corrupt npz file ({exc})") from None


def _read_units(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in UNIT_COLUMNS if c not in header]
            if missing:
                raise RunError(f"{path}: missing column(s) {', '.join(missing)}")
            raw = list(reader)
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: unreadable CSV ({exc})") from None
    cats = [c[: -len("_label")] for c in header if c.endswith("_label") and f"{c[:-6]}_iou" in header]
    units = []
    for i, r in enumerate(raw, start=2):
        try:
            unit = {
                "unit": int(r["unit"]),
                "label": r["label"] or "",
                "category": r["category"] or "",
                "iou": float(r["iou"] or 0.0),
                "threshold": float(r["threshold"]) if r["threshold"] else float("nan"),
                "detector": int(r["detector"] or 0) == 1,
                "best": {c: (r[f"{c}_label"] or "", float(r[f"{c}_iou"] or 0.0)) for c in cats},
            }
        except (TypeError, ValueError) as exc:
            raise RunError(f"{path} row {i}: bad value ({exc})") from None
        if unit["unit"] != len(units):
            raise RunError(f"{path} row {i}: expected unit {len(units)}, found {unit['unit']} "
                           "(rows must be in unit order)")
        units.append(unit)
    return units


def _load_layer(root: Path, name: str, summary: dict) -> Layer:
    folder = root / name
    if not folder.is_dir():
        raise RunError(f"{folder}: layer folder not found (summary.json lists layer {name!r})")
    units = _read_units(folder / "units.csv")
    iou = _load_npz(folder / "iou.npz", ("iou", "concept_names", "concept_categories", "concept_numbers"),
                    optional=("dead",))
    topk = _load_npz(folder / "topk.npz", ("images", "values", "maps", "image_paths"))
    n = len(units)
    if iou["iou"].ndim != 2 or iou["iou"].shape[0] != n:
        raise RunError(f"{folder / 'iou.npz'}: 'iou' has shape {iou['iou'].shape}, "
                       f"units.csv has {n} units")
    if iou["iou"].shape[1] != len(iou["concept_names"]):
        raise RunError(f"{folder / 'iou.npz'}: 'iou' has {iou['iou'].shape[1]} columns but "
                       f"{len(iou['concept_names'])} concept_names")
    images, maps = topk["images"], topk["maps"]
    if images.ndim != 2 or images.shape[0] != n or maps.ndim != 4 or maps.shape[:2] != images.shape:
        raise RunError(f"{folder / 'topk.npz'}: shapes images {images.shape}, maps {maps.shape} "
                       f"do not fit {n} units")
    if images.size and images.max() >= len(topk["image_paths"]):
        raise RunError(f"{folder / 'topk.npz'}: image index {int(images.max())} is beyond "
                       f"image_paths ({len(topk['image_paths'])} rows)")
    thresholds = np.array([u["threshold"] for u in units], dtype=np.float32)
    tpath = folder / "thresholds.npy"
    if tpath.exists():
        try:
            thresholds = np.load(tpath, allow_pickle=False).astype(np.float32).reshape(-1)
        except (OSError, ValueError) as exc:
            raise RunError(f"{tpath}: corrupt ({exc})") from None
        if thresholds.shape != (n,):
            raise RunError(f"{tpath}: has {thresholds.size} thresholds, units.csv has {n} units")
    dead = iou["dead"].astype(bool) if iou.get("dead") is not None and iou["dead"].shape == (n,) else None
    return Layer(
        name=name, folder=folder, summary=summary, units=units, dead=dead,
        iou=iou["iou"].astype(np.float32),
        concept_names=[str(s) for s in iou["concept_names"]],
        concept_categories=[str(s) for s in iou["concept_categories"]],
        concept_numbers=iou["concept_numbers"].astype(np.int64),
        thresholds=thresholds,
        top_images=images.astype(np.int64), top_values=topk["values"].astype(np.float32),
        top_maps=maps, image_paths=[str(s) for s in topk["image_paths"]],
    )
