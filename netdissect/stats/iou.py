"""Dataset-wide IoU of unit masks with concept masks: streaming, mergeable counts.

    >>> from netdissect.stats import IoUCounts, LabelBatch
    >>> labels = LabelBatch.from_samples(samples, concepts)         # doctest: +SKIP
    >>> counts = IoUCounts(units=512, concepts=len(concepts), categories=6)
    >>> counts.add(labels, hits)       # hits: netdissect.dissection.masks.Hits  # doctest: +SKIP
    >>> iou = counts.iou(concepts.primary)                          # (units, concepts)

IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|, where both sums
run over the images that hold a label of c's primary category.  With
``inter``, ``unit_area[k, g]`` (mask area of unit k summed over images holding
category g) and ``label_area[c]`` the union is
``unit_area[k, primary(c)] + label_area[c] - inter[k, c]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LabelBatch:
    """The concept labels of a batch of images that share one mask size (sh, sw).

    ``planes`` int32 (B * sh * sw, P): concept column per pixel (row b * sh * sw
    + pixel) and plane, K (the number of concepts) for none.  A concept repeated at one pixel in several planes is kept once
    (L_c is the union of the planes), and concepts whose primary category the
    image does not hold are dropped (they do not enter the sums).
    ``whole_image``/``whole_concept``: image-level labels (cover every pixel).
    """

    planes: torch.Tensor
    whole_image: torch.Tensor
    whole_concept: torch.Tensor
    has_category: torch.Tensor  # bool (B, G)
    pixels: int
    label_area: torch.Tensor  # float64 (K,) pixels of each concept in this batch (model independent)
    unknown: int = 0  # label occurrences whose number the catalogue does not know

    @classmethod
    def from_samples(cls, samples, concepts, device="cpu") -> "LabelBatch":
        """From :class:`netdissect.data.LabelSample` objects of one mask size."""
        B = len(samples)
        sh, sw = samples[0].planes.shape[1:]
        P = max(s.planes.shape[0] for s in samples)
        K = len(concepts)
        # ext[number] -> concept column; -1 for "no label" (0) and for numbers the catalogue lacks
        ext = np.append(concepts.lookup, -1)
        known = ext >= 0
        top = len(ext) - 1
        idx = np.full((B, sh * sw, P), K, np.int32)  # pixel-major: a hit gathers its planes at once
        has = np.stack([np.asarray(s.has_category, bool) for s in samples])
        unknown = 0
        for b, s in enumerate(samples):
            n = s.planes.shape[0]
            if not n:
                continue
            numbers = np.minimum(s.planes.reshape(n, sh * sw), top)
            unknown += int(np.count_nonzero(numbers) - np.count_nonzero(np.take(known, numbers)))
            # concepts whose primary category this image does not hold do not enter the sums
            held = known & np.append(has[b][concepts.primary], False)[ext]
            cols = np.take(np.where(held, ext, K).astype(np.int32), numbers)  # (n, pixels)
            for j in range(1, n):  # union over planes: count a concept once per pixel
                for i in range(j):
                    cols[j][cols[j] == cols[i]] = K
            idx[b, :, :n] = cols.T
        wi, wc = [], []
        for b, s in enumerate(samples):
            cols = concepts.index_of(np.asarray(s.image_labels, np.int64))
            unknown += int((cols < 0).sum())
            cols = np.unique(cols[cols >= 0])
            cols = cols[has[b, concepts.primary[cols]]]
            wi += [b] * len(cols)
            wc += cols.tolist()
        area = np.bincount(idx.reshape(-1), minlength=K + 1)[:K].astype(np.float64)
        idx = idx.reshape(B * sh * sw, P)
        np.add.at(area, np.asarray(wc, np.int64), float(sh * sw))
        t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        return cls(torch.from_numpy(idx).to(device), t(wi), t(wc), torch.from_numpy(has).to(device),
                   sh * sw, torch.from_numpy(area).to(device), unknown)


    def to(self, device) -> "LabelBatch":
        """The same labels on ``device``."""
        move = lambda t: t.to(device)  # noqa: E731
        return LabelBatch(move(self.planes), move(self.whole_image), move(self.whole_concept),
                          move(self.has_category), self.pixels, move(self.label_area), self.unknown)


class IoUCounts:
    """Intersection and area counts for the IoU of every unit with every concept."""

    def __init__(self, units: int, concepts: int, categories: int, device="cpu"):
        f = dict(dtype=torch.float64, device=device)
        self.inter = torch.zeros((units, concepts), **f)
        self.unit_area = torch.zeros((units, categories), **f)
        self.label_area = torch.zeros(concepts, **f)
        self.total_area = torch.zeros(units, **f)  # mask area over all images (0 = dead unit)
        self.images = 0

    def add(self, labels: LabelBatch, hits) -> None:
        """One batch: ``hits`` (``area`` (B, C), and one (image, unit, pixel) per mask pixel)."""
        C, K = self.inter.shape
        self.images += labels.has_category.shape[0]
        self.label_area += labels.label_area
        area = hits.area  # (B, C)
        self.total_area += area.sum(0)
        self.unit_area += area.T @ labels.has_category.double()
        if len(labels.whole_concept):
            self.inter.index_add_(1, labels.whole_concept, area[labels.whole_image].T)
        if len(hits.pixel) and labels.planes.shape[1]:
            cols = labels.planes.index_select(0, hits.image * labels.pixels + hits.pixel)  # (n, planes)
            # column K of each unit's row collects "no concept here" and is dropped
            keys = (hits.unit * (K + 1)).unsqueeze(1) + cols
            self.inter += torch.bincount(keys.view(-1), minlength=C * (K + 1)).view(C, K + 1)[:, :K].double()

    def iou(self, primary: np.ndarray) -> np.ndarray:
        """float64 (units, concepts) IoU; 0 where the union is empty."""
        prim = torch.as_tensor(np.asarray(primary, np.int64), device=self.inter.device)
        union = self.unit_area[:, prim] + self.label_area[None, :] - self.inter
        out = torch.where(union > 0, self.inter / union.clamp_min(1e-12), torch.zeros_like(union))
        return out.cpu().numpy()

    def merge(self, other: "IoUCounts") -> None:
        for name in ("inter", "unit_area", "label_area", "total_area"):
            getattr(self, name).add_(getattr(other, name).to(self.inter.device))
        self.images += other.images

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"inter": self.inter.cpu().numpy(), "unit_area": self.unit_area.cpu().numpy(),
                "label_area": self.label_area.cpu().numpy(), "total_area": self.total_area.cpu().numpy(),
                "images": np.int64(self.images)}

    def load_state_dict(self, state: dict) -> "IoUCounts":
        dev = self.inter.device
        for name in ("inter", "unit_area", "label_area", "total_area"):
            setattr(self, name, torch.from_numpy(np.asarray(state[name], np.float64)).to(dev))
        self.images = int(state["images"])
        return self
