"""``netdissect experiment robustness RUN --noise 0.02``: how many detector labels flip when the probe
images get Gaussian noise (the Corrupting Neuron Explanations test, ICCV 2023: up to 28% of
deep-layer labels flip at sigma 0.02 in published tools).

One more dissection of the run's model, layers and dataset with the same settings, every input
image x in [0, 1] replaced by x + N(0, sigma^2) per pixel and channel (before the model's
normalisation; seeded), and per layer the share of the run's detector units whose best concept is
another one under noise.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch

from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.errors import NetDissectError

PUBLISHED_FLIP = 0.28  # Corrupting Neuron Explanations (ICCV 2023), deep layers at sigma 0.02, as quoted in issue 29


class _Noise:
    """A forward pre-hook adding N(0, sigma^2) in image space ([0, 1] RGB) to the model's normalised
    input: sigma / std per channel (the normalisation is affine)."""

    def __init__(self, sigma: float, std, seed: int):
        self.sigma = float(sigma)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.gen = torch.Generator().manual_seed(int(seed))

    def __call__(self, module, args):
        x = args[0]
        noise = torch.randn(x.shape, generator=self.gen, dtype=torch.float32)
        if self.std is not None:
            noise = noise / self.std
        return (x + (self.sigma * noise).to(x.device, x.dtype), *args[1:])


def robustness(run_dir, noise: float, out, *, seed: int = 0, num_workers=None, progress: bool = False,
               device: str = "cpu") -> dict:
    from netdissect import dissect
    from netdissect.dissection.result import load
    from netdissect.models import load_model

    if not noise > 0:
        raise NetDissectError(f"--noise must be a positive standard deviation (images in [0, 1]), got {noise}")
    run = load(run_dir)
    ident = run.summary.get("identity", {})
    model_id, cfg, ds = ident.get("model", {}), ident.get("config", {}), ident.get("dataset", {})
    spec = model_id.get("spec")
    if (ds.get("kind") is not None or "path" not in ds or not isinstance(spec, str) or spec.startswith("python:")
            or model_id.get("generator")):  # python:NAME: a module object, which summary.json cannot rebuild
        raise NetDissectError(f"{run_dir}: the robustness experiment re-dissects runs of a model spec on a Broden "
                              "dataset; this run's model or probe cannot be rebuilt from its summary.json")
    model, prep = load_model(spec, weights=model_id.get("weights"), normalize=model_id.get("normalize"),
                             seed=model_id.get("seed", 0))
    model.register_forward_pre_hook(_Noise(noise, prep.std if prep.mean is not None else None, seed))
    noisy = dissect(model, list(run), ds["path"], out=None, normalize=model_id.get("normalize"),
                    model_spec=f"{spec} + noise {noise:g}", quantile=cfg.get("quantile"),
                    iou_threshold=cfg.get("iou_threshold", 0.04), topk=cfg.get("topk", 10),
                    split=cfg.get("split"), limit=cfg.get("limit"), num_workers=num_workers, progress=progress,
                    device=device, scorecard=False, seed=model_id.get("seed", 0))
    layers = {}
    for name, lr in run.items():
        det = lr.units["detector"]
        before, after = lr.units["label"], noisy[name].units["label"]
        flipped = det & (before != after)
        row = {"detectors": int(det.sum()), "flipped": int(flipped.sum()),
               "share_flipped": round(float(flipped.sum() / det.sum()), 4) if det.sum() else None,
               "still_detectors": int((det & noisy[name].units["detector"]).sum()),
               "mean_iou_detectors": round(float(lr.units["iou"][det].mean()), 4) if det.any() else None,
               "mean_iou_detectors_noisy": round(float(noisy[name].units["iou"][det].mean()), 4) if det.any() else None}
        if lr.scorecard is not None:  # the IoU rule's detectors too, when the FDR rule decided the run's
            d2 = np.asarray(lr.scorecard["detector_iou"], bool)
            f2 = d2 & (before != after)
            row["iou_rule"] = {"detectors": int(d2.sum()), "flipped": int(f2.sum()),
                               "share_flipped": round(float(f2.sum() / d2.sum()), 4) if d2.sum() else None}
        layers[name] = row
    report = {"run": str(run_dir), "noise": noise, "seed": seed, "published_share": PUBLISHED_FLIP,
              "layers": layers}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "robustness.json", json.dumps(report, indent=2).encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "detectors", "flipped", "share_flipped", "published_share"])
    for name, row in layers.items():
        w.writerow([name, row["detectors"], row["flipped"], "" if row["share_flipped"] is None else row["share_flipped"],
                    PUBLISHED_FLIP])
    atomic_write_bytes(out / "robustness.csv", buf.getvalue().encode())
    return report


def table(report: dict) -> str:
    lines = [f"labels under Gaussian input noise sigma {report['noise']:g} (published: up to "
             f"{report['published_share']:.0%} of deep-layer labels flip)",
             f"{'layer':<12} detectors  flipped  share"]
    for name, r in report["layers"].items():
        share = "-" if r["share_flipped"] is None else f"{r['share_flipped']:.1%}"
        lines.append(f"{name:<12} {r['detectors']:>9}  {r['flipped']:>7}  {share:>5}")
    return "\n".join(lines)
