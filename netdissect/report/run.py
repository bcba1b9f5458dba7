"""A run directory as the report sees it, read through :func:`netdissect.load`.

    >>> from netdissect.report.run import load_run
    >>> run = load_run("runs/demo")                       # doctest: +SKIP
    >>> run.layers[0].name, run.layers[0].units["label"][0]  # doctest: +SKIP

There is one reader of the run format (``netdissect/dissection/result.py``);
this module only checks that a loaded run holds what the report draws from
(top images and their maps, with consistent shapes) and reads the one array
``load`` does not keep yet: ``topk.npz``'s ``image_paths``.  Every problem
raises :class:`RunError` naming the file at fault.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdissect.errors import NetDissectError


class RunError(NetDissectError, ValueError):
    """A run directory file is missing, corrupt, or inconsistent (names the file)."""


@dataclass
class Run:
    """A loaded run: its summary and its layers (:class:`LayerResult`), in summary order."""

    root: Path
    summary: dict
    layers: list = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return list((self.summary.get("dataset") or {}).get("categories") or [])

    @property
    def iou_threshold(self) -> float:
        return float((self.summary.get("config") or {}).get("iou_threshold", 0.04))


def _check_summary(root: Path) -> None:
    """What ``load`` would trip over with a raw exception: name the file instead."""
    if not root.is_dir():
        raise RunError(f"{root}: run directory not found")


def load_summary(root: str | Path):
    """The run's :class:`DissectionResult` (all layers), with load errors as :class:`RunError`."""
    from netdissect import load

    root = Path(root)
    _check_summary(root)
    path = root / "summary.json"
    try:
        return load(root)
    except RunError:
        raise
    except NetDissectError as exc:
        raise RunError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise RunError(f"{path}: not UTF-8 text ({exc})") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise RunError(f"{path}: missing or malformed field {exc} (is this a finished netdissect run?)") from None


def _image_paths(folder: Path, layer) -> list[str]:
    paths = getattr(layer, "image_paths", None)  # once result.py keeps them (see docs/report.md)
    if paths is not None:
        return [str(s) for s in paths]
    path = folder / "topk.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            if "image_paths" not in z.files:
                raise RunError(f"{path}: missing array image_paths")
            return [str(s) for s in z["image_paths"]]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise RunError(f"{path}: corrupt npz file ({exc})") from None


def _check_layer(root: Path, name: str, layer) -> None:
    folder = root / name
    topk = folder / "topk.npz"
    if layer.top_images is None or layer.top_maps is None or layer.top_values is None:
        if not topk.exists():
            raise RunError(f"{topk}: file not found (the report draws each unit's top images from it; "
                           "rerun `netdissect dissect`)")
        raise RunError(f"{topk}: missing array(s) images, values or maps")
    n = len(layer.thresholds)
    if layer.iou.ndim != 2 or layer.iou.shape[0] != n:
        raise RunError(f"{folder / 'iou.npz'}: 'iou' has shape {layer.iou.shape} but "
                       f"'thresholds' has {n} units")
    images, maps = layer.top_images, layer.top_maps
    if images.ndim != 2 or images.shape[0] != n or maps.ndim != 4 or maps.shape[:2] != images.shape:
        raise RunError(f"{topk}: shapes images {images.shape}, maps {maps.shape} do not fit {n} units")
    layer.image_paths = _image_paths(folder, layer)
    if images.size and images.max() >= len(layer.image_paths):
        raise RunError(f"{topk}: image index {int(images.max())} is beyond image_paths "
                       f"({len(layer.image_paths)} rows)")


def load_run(root: str | Path, layers: list[str] | None = None) -> Run:
    """Read a run for the report; ``layers`` keeps only those layers (default: all, summary order)."""
    root = Path(root)
    result = load_summary(root)
    names = list(result)
    if not names:
        raise RunError(f"{root / 'summary.json'}: no layers (the run dissected no layer, or it has not finished)")
    if layers is not None:
        unknown = [n for n in layers if n not in result]
        if unknown:
            raise RunError(f"{root / 'summary.json'}: no layer {', '.join(map(repr, unknown))} "
                           f"(layers: {', '.join(names)})")
        names = list(layers)
    run = Run(root=root, summary=result.summary)
    for name in names:
        layer = result[name]
        _check_layer(root, name, layer)
        layer.summary_info = result.summary["layers"].get(name) or {}
        run.layers.append(layer)
    return run
