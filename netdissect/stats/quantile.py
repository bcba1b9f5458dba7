"""Exact, streaming, mergeable upper quantiles per unit.

    >>> import torch
    >>> from netdissect.stats import TopQuantile
    >>> tq = TopQuantile(units=2, q=0.01, total=1000)
    >>> for _ in range(10):
    ...     tq.add(torch.randn(2, 100))     # (units, values)
    >>> tq.threshold().shape
    (2,)

For an upper quantile ``q`` of ``n`` values, numpy's ``quantile(a, 1 - q)``
(linear interpolation) needs only the ``ceil(q * (n - 1)) + 1`` largest
values.  ``total`` (an upper bound on ``n``, known before the pass: images
times positions) fixes how many are kept, so the estimate is *exact*, memory
is ``q * total`` floats per unit, and two halves merge exactly (the top
values of a union are among the top values of the parts).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def kept_count(q: float, total: int) -> int:
    """How many of the largest values :class:`TopQuantile` keeps per unit."""
    return min(int(total), int(math.ceil(q * max(total - 1, 0))) + 2)


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    # numpy's own formulation (numpy/lib/_function_base_impl.py::_lerp)
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


class TopQuantile:
    """The ``1 - q`` quantile of each unit's values, exactly as ``np.quantile``.

    ``add(x)`` takes a (units, n) tensor; ``threshold()`` returns float64 (units,)
    with P(value > threshold) ~= q.  ``state_dict()``/``load_state_dict()``
    round-trip through plain numpy arrays; ``merge(other)`` combines shards.
    """

    def __init__(self, units: int, q: float, total: int, device="cpu"):
        if not 0.0 <= q < 1.0:
            raise ValueError(f"quantile q must be in [0, 1), got {q}")
        self.units, self.q, self.total = int(units), float(q), int(total)
        self.keep = kept_count(q, total)
        self.top = torch.full((self.units, 0), -math.inf, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[0] != self.units:
            raise ValueError(f"expected ({self.units}, n) values, got {tuple(x.shape)}")
        if self.count + x.shape[1] > self.total:
            raise ValueError(f"more values ({self.count + x.shape[1]}) than the declared total {self.total}")
        self.count += x.shape[1]
        x = x.to(self.top.device, torch.float32)
        both = torch.cat([self.top, x], dim=1)
        k = min(self.keep, both.shape[1])
        self.top = both.topk(k, dim=1, sorted=False).values if k < both.shape[1] else both

    def merge(self, other: "TopQuantile") -> None:
        if (other.units, other.q) != (self.units, self.q):
            raise ValueError("cannot merge quantiles of different units or q")
        self.total = max(self.total, self.count + other.count)
        self.keep = max(self.keep, kept_count(self.q, self.count + other.count))
        self.count += other.count
        both = torch.cat([self.top, other.top.to(self.top.device)], dim=1)
        k = min(self.keep, both.shape[1])
        self.top = both.topk(k, dim=1, sorted=False).values

    def threshold(self) -> np.ndarray:
        """float64 (units,) thresholds; NaN for every unit when no value was added."""
        n = self.count
        if n == 0:
            return np.full(self.units, np.nan)
        desc = np.sort(self.top.cpu().numpy().astype(np.float64), axis=1)[:, ::-1]
        pos = (1.0 - self.q) * (n - 1)  # index into ascending order, as numpy computes it
        lo = int(math.floor(pos))
        t = pos - lo
        hi = min(lo + 1, n - 1)
        # ascending index j is descending index n - 1 - j
        a = desc[:, n - 1 - lo]
        b = desc[:, n - 1 - hi]
        return _lerp(a, b, t)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"top": self.top.cpu().numpy(), "count": np.int64(self.count),
                "q": np.float64(self.q), "total": np.int64(self.total)}

    def load_state_dict(self, state: dict) -> "TopQuantile":
        self.q, self.total, self.count = float(state["q"]), int(state["total"]), int(state["count"])
        self.keep = kept_count(self.q, self.total)
        self.top = torch.from_numpy(np.asarray(state["top"], dtype=np.float32)).to(self.top.device)
        self.units = self.top.shape[0]
        return self
