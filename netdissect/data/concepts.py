"""The catalogue of concepts a dataset labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ConceptSet:
    """Concepts in a fixed order (K of them), each with a primary category.

    ``numbers`` are the dataset's global label numbers (Broden's ``number``
    column, which may have gaps); ``lookup`` maps a label number to the
    concept's column index (or -1 for numbers the catalogue does not know).
    """

    numbers: np.ndarray   # int32 (K,)
    names: list[str]      # (K,)
    categories: list[str] # (G,)
    primary: np.ndarray   # int32 (K,) index into categories

    def __post_init__(self):
        top = int(self.numbers.max()) if len(self.numbers) else 0
        self.lookup = np.full(top + 1, -1, dtype=np.int64)
        self.lookup[self.numbers] = np.arange(len(self.numbers))

    def __len__(self) -> int:
        return len(self.numbers)

    def index_of(self, numbers: np.ndarray) -> np.ndarray:
        """Column index of each label number; -1 for unknown numbers (and 0, "no label")."""
        numbers = np.asarray(numbers, dtype=np.int64)
        out = np.full(numbers.shape, -1, dtype=np.int64)
        ok = (numbers > 0) & (numbers < len(self.lookup))
        out[ok] = self.lookup[numbers[ok]]
        return out

    @property
    def primary_names(self) -> list[str]:
        return [self.categories[g] for g in self.primary]
