"""Dataset-wide IoU of unit masks with concept masks: streaming, mergeable counts.

    >>> from netdissect.stats import IoUCounts, ConceptMasks
    >>> counts = IoUCounts(units=512, concepts=1197, categories=6)        # doctest: +SKIP
    >>> labels = ConceptMasks.from_planes(planes, image_labels, has_category, concepts)  # doctest: +SKIP
    >>> counts.add(units, unit_masks, labels)                            # doctest: +SKIP
    >>> iou = counts.iou(concepts.primary)                               # (units, concepts)

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
class ConceptMasks:
    """The concept masks of one image, at its mask resolution.

    ``concepts`` (u,) column indices of the concepts with pixel masks here,
    ``masks`` float32 (u, P) their masks (union over planes), ``whole``
    column indices of image-level concepts (covering all P pixels),
    ``has_category`` bool (G,).  Only concepts whose primary category the
    image holds are kept (the others do not enter the sums).
    """

    concepts: torch.Tensor
    masks: torch.Tensor
    whole: torch.Tensor
    has_category: torch.Tensor
    pixels: int
    unknown: int = 0  # pixels or labels with numbers the catalogue does not know

    @classmethod
    def from_planes(cls, planes: np.ndarray, image_labels: np.ndarray, has_category: np.ndarray,
                    concepts, device="cpu") -> "ConceptMasks":
        """From (P, sh, sw) int label-number planes and (L,) image-level label numbers."""
        n_planes = planes.shape[0]
        pixels = int(planes.shape[1] * planes.shape[2])
        has = np.asarray(has_category, bool)
        unknown = 0
        if n_planes:
            idx = concepts.index_of(planes.reshape(n_planes, -1))  # (P, pixels), -1 = none/unknown
            unknown += int(((planes.reshape(n_planes, -1) > 0) & (idx < 0)).sum())
            present = np.unique(idx)
            present = present[present >= 0]
            present = present[has[concepts.primary[present]]]
        else:
            idx, present = None, np.zeros(0, np.int64)
        if len(present):
            t = torch.from_numpy(idx).to(device)
            cu = torch.from_numpy(present).to(device)
            masks = (t[None, :, :] == cu[:, None, None]).any(1).float()  # (u, pixels)
        else:
            masks = torch.zeros((0, pixels), device=device)
        whole = concepts.index_of(np.asarray(image_labels, np.int64))
        unknown += int((whole < 0).sum())
        whole = np.unique(whole[whole >= 0])
        whole = whole[has[concepts.primary[whole]]]
        return cls(torch.from_numpy(present).to(device), masks,
                   torch.from_numpy(whole).to(device), torch.from_numpy(has).to(device), pixels, unknown)


class IoUCounts:
    """Intersection and area counts for the IoU of every unit with every concept."""

    def __init__(self, units: int, concepts: int, categories: int, device="cpu"):
        f = dict(dtype=torch.float64, device=device)
        self.inter = torch.zeros((units, concepts), **f)
        self.unit_area = torch.zeros((units, categories), **f)
        self.label_area = torch.zeros(concepts, **f)
        self.total_area = torch.zeros(units, **f)  # mask area over all images (0 = dead unit)
        self.images = 0

    def add(self, units: torch.Tensor, unit_masks: torch.Tensor, labels: ConceptMasks) -> None:
        """One image: ``units`` (n,) indices of units whose mask is non-empty here,
        ``unit_masks`` bool/float (n, P) their masks."""
        self.images += 1
        if len(labels.concepts):
            self.label_area.index_add_(0, labels.concepts, labels.masks.sum(1).double())
        if len(labels.whole):
            self.label_area.index_add_(0, labels.whole, torch.full((len(labels.whole),), float(labels.pixels),
                                                                   dtype=torch.float64, device=self.label_area.device))
        if len(units) == 0:
            return
        m = unit_masks.float()
        area = m.sum(1).double()  # (n,)
        self.total_area.index_add_(0, units, area)
        self.unit_area.index_add_(0, units, area[:, None] * labels.has_category.double()[None, :])
        if len(labels.concepts):
            inter = (m @ labels.masks.T).double()  # (n, u) exact: counts < 2**24
            rows = units[:, None].expand(-1, len(labels.concepts))
            cols = labels.concepts[None, :].expand(len(units), -1)
            self.inter.index_put_((rows.reshape(-1), cols.reshape(-1)), inter.reshape(-1), accumulate=True)
        if len(labels.whole):
            rows = units[:, None].expand(-1, len(labels.whole))
            cols = labels.whole[None, :].expand(len(units), -1)
            vals = area[:, None].expand(-1, len(labels.whole))
            self.inter.index_put_((rows.reshape(-1), cols.reshape(-1)), vals.reshape(-1), accumulate=True)

    def iou(self, primary: np.ndarray) -> np.ndarray:
        """float64 (units, concepts) IoU; 0 where the union is empty."""
        prim = torch.as_tensor(np.asarray(primary, np.int64), device=self.inter.device)
        union = self.unit_area[:, prim] + self.label_area[None, :] - self.inter
        out = torch.where(union > 0, self.inter / union.clamp_min(1e-12), torch.zeros_like(union))
        return out.cpu().numpy()

    def merge(self, other: "IoUCounts") -> None:
        self.inter += other.inter.to(self.inter.device)
        self.unit_area += other.unit_area.to(self.inter.device)
        self.label_area += other.label_area.to(self.inter.device)
        self.total_area += other.total_area.to(self.inter.device)
        self.images += other.images

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"inter": self.inter.cpu().numpy(), "unit_area": self.unit_area.cpu().numpy(),
                "label_area": self.label_area.cpu().numpy(), "total_area": self.total_area.cpu().numpy(),
                "images": np.int64(self.images)}

    def load_state_dict(self, state: dict) -> "IoUCounts":
        dev = self.inter.device
        self.inter = torch.from_numpy(np.asarray(state["inter"], np.float64)).to(dev)
        self.unit_area = torch.from_numpy(np.asarray(state["unit_area"], np.float64)).to(dev)
        self.label_area = torch.from_numpy(np.asarray(state["label_area"], np.float64)).to(dev)
        self.total_area = torch.from_numpy(np.asarray(state["total_area"], np.float64)).to(dev)
        self.images = int(state["images"])
        return self
