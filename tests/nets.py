"""Hand-built networks whose units are known detectors (and factories for the CLI tests)."""
from __future__ import annotations

import torch
from torch import nn


class ColorUnits(nn.Module):
    """Input RGB in [0, 1] -> ``features`` (6 units at half resolution):

    0: red (the 'square' object), 1: green (the 'disc' object), 2: blue (the
    'wood' material band), 3: dead (always 0), 4: grey (the 'grey' colour),
    5: white stripes (the 'striped' texture images).  A pooled linear head
    follows so the network is a classifier like any other.
    """

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.features = nn.Conv2d(3, 6, 1)
        w = torch.tensor([
            [1.0, -1.0, -1.0],    # red
            [-1.0, 1.0, -1.0],    # green
            [-1.0, -1.0, 1.0],    # blue
            [0.0, 0.0, 0.0],      # dead
            [0.0, 0.0, 0.0],      # grey: handled below
            [1.0, 1.0, 1.0],      # white
        ])
        with torch.no_grad():
            self.features.weight.copy_(w[:, :, None, None])
            self.features.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -1.5]))
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        p = self.pool(x)
        f = self.features(p)
        grey = 1.0 - (p - 0.5).abs().sum(1, keepdim=True) * 4  # peaks at (0.5, 0.5, 0.5)
        f = torch.cat([f[:, :4], grey, f[:, 5:]], 1)
        self.features_out = f
        f = self.relu(f)
        return self.head(f.mean((2, 3)))


class Tap(nn.Identity):
    pass


class TappedColorUnits(ColorUnits):
    """ColorUnits with the 6-unit map exposed as a named submodule ``units``."""

    def __init__(self):
        super().__init__()
        self.units = Tap()

    def forward(self, x):
        p = self.pool(x)
        f = self.features(p)
        grey = 1.0 - (p - 0.5).abs().sum(1, keepdim=True) * 4
        ramp = torch.linspace(0, 0.01, f.shape[-1])  # breaks ties so a top quantile can split them
        f = self.units(torch.cat([f[:, :4], grey, f[:, 5:] + ramp], 1))
        return self.head(self.relu(f).mean((2, 3)))


class SmallRandomCNN(nn.Module):
    """A random conv net with two dissectable layers and a vector head."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x * torch.nan)


def color_units():
    return TappedColorUnits()


def small_random_cnn():
    return SmallRandomCNN(0)


def nan_net():
    return NaNNet()


class ElementwiseNet(nn.Module):
    """Random units built from elementwise ops only (no conv), so its outputs are
    bit-identical whatever the batch size or memory layout: the reference
    implementation can recompute them exactly.

    ``units`` has C units at half resolution, ``units2`` C units at quarter resolution.

    The test images are flat colours, so most units' maps tie at their top quantile and their masks
    are empty.  ``ramp`` > 0 adds ``ramp`` times a fixed ramp over the positions (0 at the top left,
    1 at the bottom right) to every unit: ties split by position, every unit is live, and its mask
    reaches images of every kind (texture-only ones too, which hold no object or colour labels).
    """

    def __init__(self, units: int = 10, seed: int = 0, ramp: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("coef", torch.randn(units, 4, generator=g))
        self.ramp = float(ramp)
        self.units = Tap()
        self.units2 = Tap()

    def forward(self, x):
        p = (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) * 0.25
        c = self.coef
        maps = [torch.relu(p[:, 0] * c[k, 0] + p[:, 1] * c[k, 1] + p[:, 2] * c[k, 2] + c[k, 3]) for k in range(len(c))]
        u = torch.stack(maps, 1)
        if self.ramp:
            h, w = u.shape[-2:]
            u = u + self.ramp * (torch.arange(h * w, dtype=u.dtype).reshape(h, w) / (h * w - 1))
        u = self.units(u)
        q = (u[:, :, 0::2, 0::2] + u[:, :, 1::2, 0::2]) * 0.5 - (u[:, :, 0::2, 1::2] * 0.25)
        v = self.units2(q)
        return v.mean((2, 3))


def elementwise_net():
    return ElementwiseNet()


class SlowElementwiseNet(ElementwiseNet):
    """ElementwiseNet that sleeps in every forward pass (to kill a run midway)."""

    def forward(self, x):
        import time

        time.sleep(0.15)
        return super().forward(x)


def slow_elementwise_net():
    return SlowElementwiseNet()
