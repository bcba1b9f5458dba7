"""Dataset-wide IoU of unit masks with concept masks: streaming, mergeable counts.

    >>> import torch
    >>> from netdissect.data import Broden
    >>> from netdissect.dissection.masks import UnitMasks
    >>> from netdissect.stats import IoUCounts, LabelBatch
    >>> ds = Broden(world)                                           # 6 images, masks of 16 x 16
    >>> concepts, samples = ds.concepts, [ds.load_labels(i) for i in range(len(ds))]
    >>> acts = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))   # 3 units of 4 x 4
    >>> thresholds = torch.full((3,), 0.5, dtype=torch.float64)
    >>> def counted(rows):
    ...     labels = LabelBatch.from_samples([samples[i] for i in rows], concepts)
    ...     counts = IoUCounts(units=3, concepts=len(concepts), categories=len(concepts.categories))
    ...     counts.add(labels, *UnitMasks(4, 4, 16, 16).count(acts[rows], thresholds, labels))  # area, inter
    ...     return counts
    >>> iou = counted([0, 1, 2, 3, 4, 5]).iou(concepts.primary)      # (units, concepts)
    >>> iou.shape, bool(0 <= iou.min() and iou.max() <= 1)
    ((3, 79), True)
    >>> part = counted([0, 1, 2]); part.merge(counted([3, 4, 5]))     # two ranks' or chunks' counts
    >>> bool((part.iou(concepts.primary) == iou).all())
    True

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

    ``planes`` (P, B * sh * sw) int16 (int32 beyond 32,766 concepts): the concept column
    of each pixel (column b * sh * sw + pixel) in each plane, K (the number of concepts)
    for none.  A concept repeated at one pixel in several planes is kept once (L_c is the
    union of the planes), and concepts whose primary category the image does not hold are
    dropped (they do not enter the sums).  ``whole_image``/``whole_concept``: image-level labels (cover every pixel).
    """

    planes: torch.Tensor
    whole_image: torch.Tensor
    whole_concept: torch.Tensor
    has_category: torch.Tensor  # bool (B, G)
    pixels: int
    label_area: torch.Tensor  # float64 (K,) pixels of each concept in this batch (model independent)
    unknown: int = 0  # label occurrences whose number the catalogue does not know

    @classmethod
    def from_samples(cls, samples, concepts, device="cpu", tables: dict | None = None) -> "LabelBatch":
        """From :class:`netdissect.data.LabelSample` objects of one mask size.

        ``tables``: a dict to keep the number -> column tables in between calls (one per
        pattern of categories held); pass the same dict for every batch of a dataset.
        """
        B = len(samples)
        if not B:
            raise ValueError("LabelBatch.from_samples needs at least one sample")
        sh, sw = samples[0].planes.shape[1:]
        sizes = {tuple(s.planes.shape[1:]) for s in samples}
        if len(sizes) > 1:  # a reshape would mix pixels of different images
            raise ValueError(f"LabelBatch.from_samples: samples of one batch must share one mask size, "
                             f"got {sorted(sizes)} (rows {[s.index for s in samples]}); group them by size")
        S = sh * sw
        P = max(s.planes.shape[0] for s in samples)
        K = len(concepts)
        tables = {} if tables is None else tables
        dtype = _column_dtype(K)
        idx = np.full((P, B * S), K, dtype)  # plane-major: each image's plane is one contiguous write
        has = np.stack([np.asarray(s.has_category, bool) for s in samples])
        unknown = 0
        for b, s in enumerate(samples):
            n = s.planes.shape[0]
            if not n:
                continue
            table = _column_table(concepts, has[b], tables)
            numbers = s.planes.reshape(n, S)
            if numbers.dtype != np.uint16:
                numbers = np.minimum(numbers, len(table) - 1)  # numbers past the table: unknown
            cols = table[numbers]  # (n, pixels): column, K none or not held, K + 1 unknown
            if cols.max() > K:
                bad = cols > K
                unknown += int(np.count_nonzero(bad))
                cols[bad] = K
            for j in range(1, n):  # union over planes: count a concept once per pixel
                for i in range(j):
                    cols[j][cols[j] == cols[i]] = K
            idx[:n, b * S:(b + 1) * S] = cols
        wi, wc = [], []
        for b, s in enumerate(samples):
            cols = concepts.index_of(np.asarray(s.image_labels, np.int64))
            unknown += int((cols < 0).sum())
            cols = np.unique(cols[cols >= 0])
            cols = cols[has[b, concepts.primary[cols]]]
            wi += [b] * len(cols)
            wc += cols.tolist()
        planes = torch.from_numpy(idx)
        # numpy's bincount (one thread): torch's parallel one took 13 ms against 0.2 ms for a batch of
        # 64 x 2 x 28 x 28 labels while the other core was busy (measured; loader workers keep it busy)
        area = torch.from_numpy(np.bincount(idx.ravel(), minlength=K + 1)[:K].astype(np.float64))
        area.index_add_(0, torch.as_tensor(wc, dtype=torch.long),
                        torch.full((len(wc),), float(S), dtype=torch.float64))  # image-level labels
        t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        return cls(planes.to(device), t(wi), t(wc), torch.from_numpy(has).to(device), S, area.to(device), unknown)

    def to(self, device) -> "LabelBatch":
        """The same labels on ``device``."""
        move = lambda t: t.to(device)  # noqa: E731
        return LabelBatch(move(self.planes), move(self.whole_image), move(self.whole_concept),
                          move(self.has_category), self.pixels, move(self.label_area), self.unknown)


def _column_dtype(concepts: int):
    """The smallest integer type for concept columns 0..K + 1 (K + 1: unknown number)."""
    return np.int16 if concepts + 1 <= np.iinfo(np.int16).max else np.int32


def _column_table(concepts, held_categories: np.ndarray, tables: dict) -> np.ndarray:
    """Table: global label number -> concept column; K for 0 (no label) and for concepts
    whose primary category the image does not hold; K + 1 for numbers the catalogue lacks."""
    key = (id(concepts), held_categories.tobytes())  # the caller keeps ``concepts`` alive
    table = tables.get(key)
    if table is None:
        K = len(concepts)
        lookup = np.asarray(concepts.lookup)
        size = max(len(lookup), 65536) + 1  # every uint16 number has an entry; the last is unknown
        ext = np.full(size, -1, np.int64)
        ext[:len(lookup)] = lookup
        held = np.append(held_categories[concepts.primary], False)  # column -> its primary category held
        table = np.where(ext >= 0, np.where(held[ext], ext, K), K + 1).astype(_column_dtype(K))
        table[0] = K
        tables[key] = table
    return table


class IoUCounts:
    """Intersection and area counts for the IoU of every unit with every concept."""

    def __init__(self, units: int, concepts: int, categories: int, device="cpu"):
        f = dict(dtype=torch.float64, device=device)
        self.inter = torch.zeros((units, concepts), **f)
        self.unit_area = torch.zeros((units, categories), **f)
        self.label_area = torch.zeros(concepts, **f)
        self.total_area = torch.zeros(units, **f)  # mask area over all images (0 = dead unit)
        self.images = 0

    def add(self, labels: LabelBatch, area: torch.Tensor, inter: torch.Tensor) -> None:
        """One batch: ``area`` (B, C) mask area of each unit on each image, ``inter`` (C, K) the
        masks' pixels on each concept's pixel labels (image-level labels are added here)."""
        self.images += labels.has_category.shape[0]
        self.label_area += labels.label_area
        self.total_area += area.sum(0)
        self.unit_area += area.T @ labels.has_category.double()
        if len(labels.whole_concept):
            self.inter.index_add_(1, labels.whole_concept, area[labels.whole_image].T)
        self.inter += inter

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
