"""SceneCNN: a small five-stage AlexNet-like scene classifier.

    >>> import torch
    >>> from netdissect.models.zoo.arch import SceneCNN
    >>> net = SceneCNN(num_classes=8).eval()
    >>> net(torch.zeros(1, 3, 112, 112)).shape
    torch.Size([1, 8])
    >>> type(net.conv5).__name__         # a stage: conv (+ BN) + ReLU; hook "conv5"
    'Sequential'

Stages ``conv1`` .. ``conv5`` are submodules (``Sequential(conv, [bn], relu)``)
so hooking ``conv5`` gives the stage output after its ReLU, as in the
CVPR 2017 paper's AlexNet layers.  At 112 px the stage outputs are 56, 28,
14, 14 and 14 px wide.  Head ``"fc"`` is AlexNet's (pool, two hidden fully
connected layers with dropout); head ``"gap"`` is global average pooling and
one linear layer (the CAM/"GAP" variant of the paper).
"""
from __future__ import annotations

import torch
from torch import nn

from netdissect.errors import ModelError

DEFAULT_WIDTHS = (32, 64, 96, 96, 128)


def _stage(cin: int, cout: int, k: int, stride: int, batchnorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class SceneCNN(nn.Module):
    """Five conv stages and a classifier head.

    Parameters
    ----------
    num_classes : number of scene classes.
    widths : channels of conv1..conv5.
    batchnorm : BatchNorm after every conv.
    dropout : dropout probability in the fc head (0 disables it).
    head : ``"fc"`` (AlexNet-like) or ``"gap"`` (global average pooling + linear).
    hidden : width of the fc head's hidden layers.
    """

    def __init__(self, num_classes: int = 8, widths=DEFAULT_WIDTHS, batchnorm: bool = False,
                 dropout: float = 0.5, head: str = "fc", hidden: int = 256):
        super().__init__()
        if len(widths) != 5:
            raise ModelError(f"SceneCNN needs 5 widths (conv1..conv5), got {list(widths)}")
        if head not in ("fc", "gap"):
            raise ModelError(f"SceneCNN head must be 'fc' or 'gap', got {head!r}")
        w1, w2, w3, w4, w5 = widths
        self.conv1 = _stage(3, w1, 5, 2, batchnorm)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(w1, w2, 3, 1, batchnorm)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv3 = _stage(w2, w3, 3, 1, batchnorm)
        self.conv4 = _stage(w3, w4, 3, 1, batchnorm)
        self.conv5 = _stage(w4, w5, 3, 1, batchnorm)
        if head == "fc":
            self.classifier = nn.Sequential(
                nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                nn.Dropout(dropout), nn.Linear(w5 * 9, hidden), nn.ReLU(),
                nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        else:
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w5, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.conv5(self.conv4(self.conv3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
