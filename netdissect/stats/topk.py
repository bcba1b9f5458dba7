"""Each unit's top images by peak activation, with the activation maps.

    >>> import torch
    >>> from netdissect.stats import TopImages
    >>> top = TopImages(units=4, k=3, map_shape=(7, 7))
    >>> acts = torch.randn(8, 4, 7, 7)             # a batch: (images, units, h, w)
    >>> top.add(acts, image_index=torch.arange(8))
    >>> top.images.shape, top.values.shape          # (units, k), best first
    ((4, 3), (4, 3))
"""
from __future__ import annotations

import numpy as np
import torch


class TopImages:
    """Streaming top-k images per unit by peak (spatial max) activation; mergeable.

    Ties are broken by the lower image index, so the result does not depend on
    the order (or sharding) in which images arrive.
    """

    def __init__(self, units: int, k: int, map_shape: tuple[int, int], keep_maps: bool = True):
        self.units, self.k = int(units), int(k)
        self.map_shape = tuple(map_shape)
        self.keep_maps = keep_maps
        self._values = torch.full((self.units, 0), -np.inf)
        self._index = torch.zeros((self.units, 0), dtype=torch.long)
        self._maps = torch.zeros((self.units, 0, *self.map_shape), dtype=torch.float16)

    def add(self, acts: torch.Tensor, image_index: torch.Tensor, peaks: torch.Tensor | None = None) -> None:
        """``acts``: (B, units, h, w); ``image_index``: (B,) dataset rows."""
        if peaks is None:
            peaks = acts.flatten(2).amax(2)
        values = peaks.T.float().cpu()  # (units, B)
        index = image_index.view(1, -1).expand(self.units, -1).cpu()
        maps = acts.permute(1, 0, 2, 3) if self.keep_maps else None
        if values.shape[1] > self.k:  # only each unit's k best of this batch can enter its top k
            order = torch.from_numpy(np.lexsort((index.numpy(), -values.numpy()), axis=1)[:, : self.k])
            values, index = values.gather(1, order), index.gather(1, order)
            if maps is not None:
                maps = maps[torch.arange(self.units, device=maps.device)[:, None], order.to(maps.device)]
        self._merge(values, index, maps.to(torch.float16).cpu() if maps is not None else None)

    def _merge(self, values, index, maps) -> None:
        v = torch.cat([self._values, values], 1)
        i = torch.cat([self._index, index], 1)
        # order: value descending, then image index ascending (deterministic ties)
        order = np.lexsort((i.numpy(), -v.numpy()), axis=1)[:, : self.k]
        order = torch.from_numpy(order)
        self._values = v.gather(1, order)
        self._index = i.gather(1, order)
        if self.keep_maps:
            m = torch.cat([self._maps, maps], 1)
            self._maps = m[torch.arange(self.units)[:, None], order]

    def merge(self, other: "TopImages") -> None:
        self._merge(other._values, other._index, other._maps if self.keep_maps else None)

    @property
    def values(self) -> np.ndarray:
        """float32 (units, k) peak activations, best first (-inf pads)."""
        return self._pad(self._values.numpy().astype(np.float32), -np.inf)

    @property
    def images(self) -> np.ndarray:
        """int64 (units, k) dataset rows of the top images (-1 pads)."""
        return self._pad(self._index.numpy().astype(np.int64), -1)

    @property
    def maps(self) -> np.ndarray:
        """float16 (units, k, h, w) activation maps of those images."""
        m = self._maps.numpy()
        if m.shape[1] < self.k:
            pad = np.zeros((self.units, self.k - m.shape[1], *self.map_shape), np.float16)
            m = np.concatenate([m, pad], 1)
        return m

    def _pad(self, a: np.ndarray, fill) -> np.ndarray:
        if a.shape[1] >= self.k:
            return a
        return np.concatenate([a, np.full((self.units, self.k - a.shape[1]), fill, a.dtype)], 1)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"values": self._values.numpy(), "index": self._index.numpy(), "maps": self._maps.numpy()}

    def load_state_dict(self, state: dict) -> "TopImages":
        self._values = torch.from_numpy(np.asarray(state["values"], np.float32))
        self._index = torch.from_numpy(np.asarray(state["index"], np.int64))
        self._maps = torch.from_numpy(np.asarray(state["maps"], np.float16))
        return self
