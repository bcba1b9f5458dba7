"""Progressive-GAN generators: the published PNAS 2020 ones (``proggan:PATH``) and ``zoo:world-gan``.

    >>> import torch
    >>> from netdissect.models.proggan import ProgressiveGenerator
    >>> g = ProgressiveGenerator(resolution=16, sizes=[8, 8, 4], z_dim=6).eval()
    >>> [name for name, _ in g.named_children()]
    ['layer1', 'layer2', 'layer3', 'layer4', 'layer5', 'layer6', 'output_16x16']
    >>> g(torch.randn(2, 6)).shape       # z as (N, z_dim) or (N, z_dim, 1, 1)
    torch.Size([2, 3, 16, 16])
    >>> tuple(g.layer4(g.layer3(g.layer2(g.layer1(torch.randn(1, 6, 1, 1))))).shape)
    (1, 8, 8, 8)

The architecture is the one the PNAS authors published (``docs/gan.md``;
``../shared/reference/real-world-assets.md``): blocks ``layer1 .. layer{2k}``,
two per resolution from 4 x 4, then ``output_{R}x{R}``.  Every block is pixel
norm -> [nearest 2x upsampling on layer3, 5, 7, ...] -> conv without bias
(layer1: 4 x 4 kernel with padding 3 on z as a 1 x 1 map; the others 3 x 3) ->
weight scale (``x * gain / sqrt(in_channels) + b``, ``gain = sqrt(2) / kernel``)
-> LeakyReLU(0.2).  The output block is pixel norm -> 1 x 1 conv to RGB ->
weight scale with gain 1, no clamp: images in about [-1, 1].  Hooking
``layerK`` gives the block's output after its LeakyReLU.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
from torch import nn

from netdissect.errors import ModelError

__all__ = ["ProgressiveGenerator", "from_state_dict", "sizes_from_state_dict", "to_image"]


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class WScale(nn.Module):
    """Equalised learning rate: ``x * scale + b`` with ``scale = gain / sqrt(in_channels)``."""

    def __init__(self, channels: int, in_channels: int, gain: float):
        super().__init__()
        self.scale = gain / math.sqrt(in_channels)
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)


class NormConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, padding: int, upsample: bool):
        super().__init__()
        self.norm = PixelNorm()
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, padding, bias=False)
        nn.init.normal_(self.conv.weight)
        self.wscale = WScale(cout, cin, gain=math.sqrt(2) / kernel)
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.wscale(self.conv(self.up(self.norm(x)))))


class OutputBlock(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.norm = PixelNorm()
        self.conv = nn.Conv2d(cin, 3, 1, bias=False)
        nn.init.normal_(self.conv.weight)
        self.wscale = WScale(3, cin, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wscale(self.conv(self.norm(x)))


class ProgressiveGenerator(nn.Module):
    """A progressive-GAN generator.

    Parameters
    ----------
    resolution : output size (a power of two, at least 8).
    sizes : channels per resolution, 4 x 4 first: ``log2(resolution) - 1`` numbers
        (LSUN 256 px: ``[512, 512, 512, 512, 256, 128, 64]``); two blocks per size.
    z_dim : the latent size (default: ``sizes[0]``, as the published generators have).
    """

    def __init__(self, resolution: int = 256, sizes=None, z_dim: int | None = None):
        super().__init__()
        steps = int(round(math.log2(resolution))) - 1
        if resolution < 8 or 2 ** (steps + 1) != resolution:
            raise ModelError(f"ProgressiveGenerator resolution must be a power of two >= 8, got {resolution}")
        if sizes is None:
            sizes = [512, 512, 512, 512, 256, 128, 64, 32, 16][:steps]
        sizes = [int(s) for s in sizes]
        if len(sizes) != steps:
            raise ModelError(f"ProgressiveGenerator({resolution} px) needs {steps} channel sizes (4x4 first), "
                             f"got {len(sizes)}: {sizes}")
        self.resolution, self.sizes = resolution, sizes
        self.z_dim = int(z_dim if z_dim is not None else sizes[0])
        blocks: list[tuple[str, nn.Module]] = []
        cin = self.z_dim
        for k, c in enumerate(sizes):
            if k == 0:
                first = NormConvBlock(cin, c, 4, 3, upsample=False)
            else:
                first = NormConvBlock(cin, c, 3, 1, upsample=True)
            blocks.append((f"layer{2 * k + 1}", first))
            blocks.append((f"layer{2 * k + 2}", NormConvBlock(c, c, 3, 1, upsample=False)))
            cin = c
        blocks.append((f"output_{resolution}x{resolution}", OutputBlock(cin)))
        for name, block in blocks:
            self.add_module(name, block)

    @property
    def layer_names(self) -> list[str]:
        return [n for n, _ in self.named_children() if n.startswith("layer")]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.shape[1] != self.z_dim or z.shape[2:] != (1, 1):
            raise ModelError(f"the generator takes z of shape (N, {self.z_dim}) or (N, {self.z_dim}, 1, 1), "
                             f"got {tuple(z.shape)}")
        x = z
        for block in self.children():
            x = block(x)
        return x


def to_image(x: torch.Tensor) -> torch.Tensor:
    """A generator's output in about [-1, 1] as RGB in [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp_(0, 1)


_OLD = re.compile(r"^features\.(\d+)\.(.*)$")


def _normalise_keys(sd: dict) -> dict:
    """The older layout (``features.{i-1}``, ``output``) renamed to ``layer{i}`` / ``output_RxR``."""
    if not any(k.startswith("features.") for k in sd):
        return dict(sd)
    out = {}
    odd = [k for k in sd if k.startswith("features.") and not _OLD.match(k)]
    if odd:
        raise ModelError(f"not a progressive-GAN generator state dict: key {odd[0]!r} is not features.N.NAME "
                         "(the older layout numbers its blocks)")
    n_layers = 1 + max(int(m.group(1)) for k in sd if (m := _OLD.match(k)))
    res = 4 * 2 ** (n_layers // 2 - 1)
    for k, v in sd.items():
        m = _OLD.match(k)
        if m:
            out[f"layer{int(m.group(1)) + 1}.{m.group(2)}"] = v
        elif k.startswith("output."):
            out[f"output_{res}x{res}." + k[len("output."):]] = v
        else:
            out[k] = v
    return out


def sizes_from_state_dict(sd: dict) -> tuple[int, list[int], int]:
    """``(resolution, sizes, z_dim)`` read from a state dict in either published layout."""
    sd = _normalise_keys(sd)
    convs = {}
    for k, v in sd.items():
        m = re.match(r"^layer(\d+)\.conv\.weight$", k)
        if m:
            convs[int(m.group(1))] = v
    if not convs or sorted(convs) != list(range(1, len(convs) + 1)) or len(convs) % 2:
        raise ModelError("not a progressive-GAN generator state dict: expected keys layer1.conv.weight .. "
                         f"layer2k.conv.weight (or features.0 ..), got {sorted(sd)[:6]} ...")
    for i, w in sorted(convs.items()):
        shape = tuple(getattr(w, "shape", ()))
        if len(shape) != 4 or min(shape) < 1:
            raise ModelError(f"not a progressive-GAN generator state dict: layer{i}.conv.weight has shape {shape}, "
                             "not (out channels, in channels, k, k) with every size >= 1")
    outs = [k for k in sd if re.match(r"^output_\d+x\d+\.conv\.weight$", k)]
    if len(outs) != 1:
        raise ModelError(f"not a progressive-GAN generator state dict: expected one output_RxR.conv.weight, "
                         f"got {outs or 'none'}")
    ow = tuple(getattr(sd[outs[0]], "shape", ()))
    if len(ow) != 4 or min(ow) < 1:
        raise ModelError(f"not a progressive-GAN generator state dict: {outs[0]} has shape {ow}, not "
                         "(3, channels, 1, 1)")
    z_dim = int(convs[1].shape[1])
    sizes = [int(convs[i].shape[0]) for i in range(1, len(convs) + 1, 2)]
    resolution = 4 * 2 ** (len(sizes) - 1)
    return resolution, sizes, z_dim


def from_state_dict(sd: dict, source: str = "the state dict") -> ProgressiveGenerator:
    """A :class:`ProgressiveGenerator` with the sizes and weights of ``sd`` (either layout)."""
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = _normalise_keys(sd)
    resolution, sizes, z_dim = sizes_from_state_dict(sd)
    g = ProgressiveGenerator(resolution, sizes, z_dim)
    missing, unexpected = g.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelError(f"{source}: does not match a {resolution} px progressive GAN with sizes {sizes}: "
                         f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    return g
