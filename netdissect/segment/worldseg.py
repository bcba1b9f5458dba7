"""``zoo:world-seg``: a small segmentation network trained on the synthetic world's dense labels.

    >>> from netdissect.segment.worldseg import WorldSeg, HEADS
    >>> [h for h, _ in HEADS]
    ['object', 'part', 'material']

A fully convolutional network (stride-4 features, three stages of 3 x 3
convolutions with batch norm folded in for inference, a dilated context
stage) with one head per labelled category of the world: ``object``,
``part`` (the world's two part planes, the inner part where both are set)
and ``material``; class 0 of each head is "none".  Input: RGB in [0, 1];
output logits at a quarter of the input resolution.  Trained by
``python scripts/train_worldseg.py`` (model card ``weights/world-seg.md``).
"""
from __future__ import annotations

import torch
from torch import nn

from netdissect.data.synth.catalogue import MATERIALS, OBJECTS, PARTS

HEADS = [("object", list(OBJECTS)), ("part", list(PARTS)), ("material", list(MATERIALS))]
MEAN, STD = 0.5, 0.25


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class WorldSeg(nn.Module):
    """Stride-4 FCN with object, part and material heads (logits, class 0 = none)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_block(3, w // 2, 2), _block(w // 2, w), _block(w, w, 2))
        self.body = nn.Sequential(_block(w, 2 * w), _block(2 * w, 2 * w, dilation=2),
                                  _block(2 * w, 2 * w, dilation=4), _block(2 * w, 2 * w, dilation=8),
                                  _block(2 * w, 2 * w))
        self.heads = nn.ModuleList([nn.Conv2d(3 * w, len(names) + 1, 1) for _, names in HEADS])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - MEAN) / STD
        low = self.stem(x)
        f = torch.cat([self.body(low), low], 1)
        return [h(f) for h in self.heads]
