"""A hand-built generator whose units are known painters: for the paint app's tests and a demo.

    >>> import torch
    >>> g = toy_generator()
    >>> g(torch.zeros(2, g.z_dim)).shape
    torch.Size([2, 3, 64, 64])

``layer1`` has 8 units on an 8 x 8 grid (LeakyReLU-free: ReLU of a fixed random projection of
``z``, so each unit is on in a few cells per sample); ``layer2`` turns them into a 64 x 64 image
in [-1, 1]: grey, plus red where units 0-3 are on and green where units 4-7 are on
(bilinear upsampling).  The ``color`` segmenter labels those regions ``red-c`` and ``green-c``, so
a dissection of ``layer1`` with it finds units 0-3 red and 4-7 green, and painting them paints
red or green; :func:`write_toy_run` writes such a run folder by hand (the IoUs are those of the
construction, not measured).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ToyGenerator", "toy_generator", "write_toy_run", "RED_UNITS", "GREEN_UNITS"]

RED_UNITS = [0, 1, 2, 3]
GREEN_UNITS = [4, 5, 6, 7]


class ToyUnits(nn.Module):
    def __init__(self, z_dim: int, units: int = 8, grid: int = 8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        # the units of one colour share a spatial pattern (plus their own part): they fire together
        shared = torch.randn(2, z_dim, grid, grid, generator=g).repeat_interleave(units // 2, 0)
        own = torch.randn(units, z_dim, grid, grid, generator=g)
        self.weight = nn.Parameter((shared + 0.4 * own) / (1.16 * z_dim) ** 0.5, requires_grad=False)
        self.bias = nn.Parameter(torch.full((units, 1, 1), -1.1), requires_grad=False)

    def forward(self, z):
        return F.relu(torch.einsum("nz,czhw->nchw", z, self.weight) + self.bias)


class ToyRender(nn.Module):
    def __init__(self, size: int = 64):
        super().__init__()
        self.size = size
        self.register_buffer("red", torch.tensor([1.0, -0.9, -0.9]).view(1, 3, 1, 1))
        self.register_buffer("green", torch.tensor([-0.9, 0.7, -0.9]).view(1, 3, 1, 1))

    def forward(self, x):
        r = x[:, RED_UNITS].sum(1, keepdim=True).clamp(0, 1)
        gr = x[:, GREEN_UNITS].sum(1, keepdim=True).clamp(0, 1)
        img = r * self.red + gr * self.green - 0.1
        return F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False)


class ToyGenerator(nn.Module):
    """``z`` (N, 16) -> ``layer1`` (N, 8, 8, 8) -> ``layer2`` image (N, 3, 64, 64) in about [-1, 1]."""

    def __init__(self, z_dim: int = 16):
        super().__init__()
        self.z_dim = z_dim
        self.layer1 = ToyUnits(z_dim)
        self.layer2 = ToyRender()

    def forward(self, z):
        if z.dim() == 4:
            z = z.flatten(1)
        return self.layer2(self.layer1(z))


def toy_generator() -> ToyGenerator:
    """The factory (``--model netdissect.app.toy:toy_generator``)."""
    return ToyGenerator().eval()


def write_toy_run(run_dir, samples: int = 100, seed: int = 1) -> Path:
    """A run folder for ``layer1`` of the toy generator, written by the project's run writer.

    Its IoUs are set from the construction (units 0-3 red-c, 4-7 green-c; threshold 0.04),
    not measured: for tests that must not depend on a dissection.
    """
    from netdissect.dissection.output import build_summary, write_run
    from netdissect.dissection.result import LayerResult
    from netdissect.probe.latent import LatentSamples
    from netdissect.segment import ColorSegmenter

    seg = ColorSegmenter()
    names, cats = np.array(seg.concepts), np.array(seg.categories)
    iou = np.zeros((8, len(names)), np.float32)
    red, green = seg.concepts.index("red-c"), seg.concepts.index("green-c")
    iou[RED_UNITS, red] = [0.31, 0.28, 0.22, 0.19]
    iou[GREEN_UNITS, green] = [0.33, 0.27, 0.25, 0.2]
    iou[:, seg.concepts.index("grey-c")] = 0.02
    lr = LayerResult(name="layer1", iou=iou, thresholds=np.full(8, 0.5, np.float32), concept_names=names,
                     concept_categories=cats, concept_numbers=np.arange(1, len(names) + 1, dtype=np.int32),
                     categories=["color"], iou_threshold=0.04, shape=(8, 8, 8), mask_size=(64, 64),
                     mask_sizes=[(64, 64)])
    probe = LatentSamples(samples, seed=seed, dim=16)

    class _Source:
        class concepts:  # noqa: N801 - the shape build_summary reads
            categories = ["color"]

            def __len__(self):
                return len(names)
        concepts = concepts()

    identity = {"model": {"spec": "netdissect.app.toy:toy_generator", "hand_built": True},
                "dataset": {"kind": "latent", "segmenter": "color", **probe.identity()},
                "config": {"iou_threshold": 0.04, "layers": ["layer1"], "note": "IoUs set by construction"}}
    summary = build_summary(identity, probe, _Source(), "cpu", {}, 0, {}, {"layer1": lr})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run(run_dir, probe, {"layer1": lr}, summary)
    return run_dir
