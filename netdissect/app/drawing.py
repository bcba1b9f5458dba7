"""Which palette concepts the paint app can actually *draw*: measured once per generator and layer.

A concept is in the palette because its units *detect* it (IoU); whether switching them on draws
it is another question (PNAS 2020, insertion).  This module asks it the way the app paints:

- the **stroke**: the app's own default draw stroke (:meth:`Painter.edit_of`: the concept's units,
  all of them by default, its ``max_units`` best; strength 1; each unit set to its insertion value)
  over a fixed **region**, the centre block of the layer's grid, half its height and half its width
  (:func:`centre_region`; 4 x 4 of the 8 x 8 cells of ``zoo:world-gan``'s layer4, a quarter of the image);
- the **samples**: ``DRAW_SAMPLES`` latents of seed ``DRAW_SEED`` (not the dissection's seed: units
  chosen on a sample set overstate their effect there; if the run's seed is ``DRAW_SEED``, the next one);
- the **measure**: the run's segmenter labels every sample before and after the stroke at the run's
  label size; per sample ``g = (concept pixels in the region after - before) / region pixels``
  (:func:`netdissect.roles.generator.region_insertion` does the passes: the generator cut at the layer,
  the edit rule of :mod:`netdissect.interventions`); reported: ``gain = mean(g)``, its standard error
  ``std(g, ddof=1) / sqrt(N)`` and the 99% interval ``gain +/- 2.58 s.e.``;
- the **rule**, fixed before any result was seen: a concept *draws* when the low end of that interval
  is at least ``DRAW_MIN_GAIN`` (5% of the region): switching its units on measurably adds at least
  5 points of the region's pixels.  Otherwise it "does not measurably draw".

The result is cached (JSON, atomic) under ``$NETDISSECT_CACHE/paint`` (else the user cache folder,
``~/.cache/netdissect/paint``), keyed by everything it depends on: the generator's weights digest,
the layer, the segmenter's identity, each concept's units and insertion values, the region, the
samples, the seed, the label size and the rule.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from netdissect.errors import NetDissectError

__all__ = ["DRAW_SAMPLES", "DRAW_SEED", "DRAW_MIN_GAIN", "centre_region", "measure_drawing", "drawing_cache_dir",
           "summarize_gain", "DrawingError"]

DRAW_SAMPLES = 32
DRAW_SEED = 4
DRAW_MIN_GAIN = 0.05      # the 99% interval's low end of the mean gain, as a share of the region
RULE_VERSION = 1


class DrawingError(NetDissectError, ValueError):
    """A drawing measurement that cannot be made (a segmenter whose labels are not the run's concepts)."""


def drawing_cache_dir() -> Path:
    """``$NETDISSECT_CACHE/paint``, else the user cache folder's ``netdissect/paint``."""
    from netdissect.concepts.cache import default_cache_dir

    return default_cache_dir().parent / "paint"


def centre_region(grid) -> np.ndarray:
    """The centre block of a (h, w) grid, half its height and width (at least one cell), as bool (h, w).

    >>> centre_region((8, 8)).astype(int)[1:7, 1:7]
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 0, 0, 0, 0, 0]])
    """
    h, w = (int(v) for v in grid)
    bh, bw = max(1, h // 2), max(1, w // 2)
    r0, c0 = (h - bh) // 2, (w - bw) // 2
    out = np.zeros((h, w), bool)
    out[r0:r0 + bh, c0:c0 + bw] = True
    return out


def summarize_gain(before, after, region_pixels: int, z: float | None = None,
                   min_gain: float = DRAW_MIN_GAIN) -> dict:
    """Per-sample region shares before/after -> ``gain`` (mean), ``se``, ``ci99_low/high``, ``draws``.

    >>> r = summarize_gain([0, 0, 10, 0], [50, 60, 70, 40], 100)
    >>> r["gain"], round(r["se"], 4), r["draws"]
    (0.525, 0.0479, True)
    >>> summarize_gain([0, 0], [1, 0], 100)["draws"]
    False
    """
    from netdissect.roles.generator import CI_Z

    z = CI_Z if z is None else z
    b = np.asarray(before, np.float64) / region_pixels
    a = np.asarray(after, np.float64) / region_pixels
    g = a - b
    n = len(g)
    se = float(g.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    m = float(g.mean())
    low = m - z * se if n > 1 else float("nan")
    return {"gain": m, "se": se, "ci99_low": low, "ci99_high": m + z * se if n > 1 else float("nan"),
            "before": float(b.mean()), "after": float(a.mean()), "samples": int(n),
            "draws": bool(n > 1 and low >= min_gain)}


def _key(painter, segmenter, numbers: dict, region, samples: int, seed: int, seg_size) -> dict:
    from netdissect.concepts.segmenter import segmenter_identity
    from netdissect.models import model_identity

    return {"rule": RULE_VERSION, "weights": model_identity(painter.generator), "layer": painter.layer,
            "segmenter": segmenter_identity(segmenter), "samples": int(samples), "seed": int(seed),
            "seg_size": list(seg_size) if seg_size is not None else None,
            "region": np.asarray(region, np.uint8).tolist(), "min_gain": DRAW_MIN_GAIN, "strength": 1.0,
            "concepts": {name: {"label": int(numbers[name]), "units": c.units[:painter.max_units],
                                "values": [round(float(v), 5) for v in c.values[:painter.max_units]]}
                         for name, c in sorted(painter.palette.items()) if name in numbers}}


def measure_drawing(painter, segmenter, numbers: dict, *, samples: int = DRAW_SAMPLES, seed: int = DRAW_SEED,
                    seg_size=None, cache_dir=None, batch_size: int = 32, progress: bool = False) -> dict:
    """``{"concepts": {name: summarize_gain(...)}, "rule": words, "cached": bool, "seconds": float, ...}``.

    ``numbers``: the segmenter's label number of each palette concept to measure (concepts left out are not
    measured); ``seg_size``: the label size (default the image size); ``cache_dir``: where results are
    kept (default :func:`drawing_cache_dir`; ``False``: no cache).
    """
    import torch

    from netdissect.app.painter import Stroke
    from netdissect.atomic import write_json
    from netdissect.probe.latent import latent_z
    from netdissect.roles.generator import region_insertion

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise DrawingError(f"samples must be a whole number >= 2 (a standard error needs two), got {samples!r}")
    for name, number in numbers.items():
        ok = 1 <= int(number) <= len(segmenter.concepts) and segmenter.concepts[int(number) - 1] == name
        if not ok:
            got = segmenter.concepts[int(number) - 1] if 1 <= int(number) <= len(segmenter.concepts) else "nothing"
            raise DrawingError(f"concept {name!r} is label {number} of the run, but the segmenter calls label "
                               f"{number} {got!r}: the segmenter changed since the dissection")
    region = centre_region(painter.grid)
    seg_size = tuple(seg_size) if seg_size is not None else tuple(painter.size)
    key = _key(painter, segmenter, numbers, region, samples, seed, seg_size)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = None
    if cache_dir is not False:
        path = Path(cache_dir or drawing_cache_dir()) / f"drawing-{digest}.json"
        try:
            old = json.loads(path.read_text())
            if old.get("key") == key:
                return {**old["result"], "cached": True, "cache": str(path)}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            pass
    t0 = time.perf_counter()
    H, W = painter.size
    h, w = painter.grid
    mask = np.kron(region, np.ones((H // h, W // w), bool))
    names = [n for n in painter.palette if n in numbers]
    edits = []
    for n in names:   # the app's own default draw stroke over the region (all units, strength 1)
        alpha, value, _ = painter.edit_of([Stroke(n, "draw", mask)])
        edits.append((alpha, value))
    z = torch.from_numpy(latent_z(samples, seed, painter.z_dim))
    with painter.lock, torch.inference_mode():
        r = region_insertion(painter.generator, painter.layer, edits, segmenter, [numbers[n] for n in names], z,
                             region, seg_size=seg_size, batch_size=batch_size, to_rgb=painter.to_image,
                             progress=progress)
    rows = {n: summarize_gain(r["before"][i], r["after"][i], r["region_pixels"]) for i, n in enumerate(names)}
    (r0, c0), (r1, c1) = np.argwhere(region).min(0), np.argwhere(region).max(0)
    result = {"concepts": rows, "samples": int(samples), "seed": int(seed), "seg_size": list(r["seg_size"]),
              "region_cells": [[int(r0), int(c0)], [int(r1), int(c1)]], "region_pixels": r["region_pixels"],
              "min_gain": DRAW_MIN_GAIN, "mode": r["mode"], "seconds": round(time.perf_counter() - t0, 2),
              "rule": (f"the app's default draw stroke (all the concept's units, strength 1) over the centre "
                       f"{int(r1 - r0 + 1)}x{int(c1 - c0 + 1)} cells of the {h}x{w} layer, on {samples} latents of "
                       f"seed {seed}; the segmenter's labels at {r['seg_size'][0]}x{r['seg_size'][1]} before and "
                       f"after; draws when the 99% interval of the mean gain in the region's pixels starts at "
                       f"{DRAW_MIN_GAIN:.0%} or more")}
    if path is not None:
        try:
            write_json(path, {"key": key, "result": result})
        except OSError:
            pass   # a read-only cache folder: measured again next time
    return {**result, "cached": False, "cache": str(path) if path else None}
