"""An in-memory torch dataset of scene images for training scene classifiers.

    >>> from netdissect.data.synth import SceneDataset
    >>> ds = SceneDataset(64, seed=1, size=112)        # renders 64 scenes in memory
    >>> x, y = ds[0]; x.shape, int(y) in range(8)
    (torch.Size([3, 112, 112]), True)

Item ``i`` is scene ``i`` of world ``seed`` (always a scene, never a texture
image: ``make_sample(seed, i, kind="scene")``), normalised with
:data:`NORMALIZE` and optionally flipped left-right at random.  Nothing is
written to disk.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from netdissect.data.synth.catalogue import SCENES
from netdissect.data.synth.generate import DEFAULT_SIZE, make_sample
from netdissect.data.synth.worlds import get_world

# Per-channel mean/std applied to images in [0, 1] (the zoo models' preprocessing).
NORMALIZE = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(NORMALIZE["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZE["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


class SceneDataset(Dataset):
    """``n`` scene images of world ``seed`` (version ``world``) at ``size`` px, held as uint8 in memory."""

    classes = list(SCENES)

    def __init__(self, n: int, seed: int, size: int = DEFAULT_SIZE, flip: bool = False,
                 progress: bool = False, world: int = 1):
        self.n, self.seed, self.size, self.flip, self.world = n, seed, size, flip, world
        if world != 1:
            self.classes = list(get_world(world).scenes)
        self.images = np.empty((n, size, size, 3), np.uint8)
        self.targets = np.empty(n, np.int64)
        for i in tqdm(range(n), desc=f"rendering seed {seed}", disable=not progress, unit="img"):
            s = make_sample(seed, i, size, kind="scene", labels=False, world=world)
            self.images[i], self.targets[i] = s.image, s.scene

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        img = self.images[i]
        if self.flip and torch.rand(()) < 0.5:
            img = img[:, ::-1]
        return to_tensor(img[None])[0], torch.tensor(self.targets[i])

    def batch(self, idx: np.ndarray, flip_rng: np.random.Generator | None = None):
        """A whole batch at once (faster than the DataLoader for in-memory data)."""
        imgs = self.images[idx]
        if flip_rng is not None:
            f = flip_rng.random(len(idx)) < 0.5
            imgs = imgs.copy()
            imgs[f] = imgs[f][:, :, ::-1]
        return to_tensor(imgs), torch.from_numpy(self.targets[idx])


def random_crops(x: torch.Tensor, rng: np.random.Generator, min_scale: float) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) replaced by a random crop resized back to H x W (bilinear).

    The crop covers a share ``s ~ U(min_scale, 1)`` of the image with aspect ratio ``r`` log-uniform in
    [3/4, 4/3] (the random-resized-crop augmentation of ImageNet training), drawn from ``rng``; with
    ``min_scale >= 1`` the batch is returned unchanged and ``rng`` is not used.

    >>> x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    >>> random_crops(x, np.random.default_rng(0), 0.5).shape
    torch.Size([2, 3, 8, 8])
    >>> torch.equal(random_crops(x, np.random.default_rng(0), 1.0), x)
    True
    """
    if min_scale >= 1:
        return x
    n, _, H, W = x.shape
    out = []
    for i in range(n):
        s = rng.uniform(min_scale, 1.0)
        r = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        h = min(H, int(round(H * math.sqrt(s / r))))
        w = min(W, int(round(W * math.sqrt(s * r))))
        t = rng.integers(0, H - h + 1)
        left = rng.integers(0, W - w + 1)
        out.append(F.interpolate(x[i:i + 1, :, t:t + h, left:left + w], size=(H, W), mode="bilinear",
                                 align_corners=False))
    return torch.cat(out)
