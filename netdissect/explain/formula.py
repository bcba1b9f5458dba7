"""Formulas over concepts: left-deep chains of AND, OR and AND NOT, as in Mu & Andreas (2020).

    >>> f = Formula(3).extend("OR", 5).extend("AND NOT", 1)
    >>> f.render(["a", "b", "c", "d", "e", "f"])
    '(d OR f) AND NOT b'
    >>> Formula.parse("(d OR f) AND NOT b", ["a", "b", "c", "d", "e", "f"]) == f
    True

A formula is evaluated on concept masks of any shape (bool arrays) or on masks packed as bits
(:func:`pack`, uint64 words): AND is ``&``, OR is ``|``, AND NOT is ``& ~``.  :func:`popcount`
counts the bits of packed masks (``numpy.bitwise_count`` on numpy >= 2, a byte table before).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdissect.errors import NetDissectError

OPS = ("AND", "OR", "AND NOT")


@dataclass(frozen=True)
class Formula:
    """``first`` (a concept column), then ``rest``: ((op, column), ...) applied left to right."""

    first: int
    rest: tuple = ()

    def __len__(self) -> int:
        return 1 + len(self.rest)

    @property
    def concepts(self) -> tuple:
        return (self.first, *(c for _, c in self.rest))

    def extend(self, op: str, concept: int) -> "Formula":
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        return Formula(self.first, self.rest + ((op, int(concept)),))

    def render(self, names) -> str:
        text = str(names[self.first])
        for i, (op, c) in enumerate(self.rest):
            left = f"({text})" if i else text
            text = f"{left} {op} {names[c]}"
        return text

    @classmethod
    def parse(cls, text: str, names) -> "Formula":
        """The formula :meth:`render` wrote with these concept ``names`` (names may hold spaces)."""
        index = {str(n): i for i, n in enumerate(names)}
        s = str(text).strip()
        rest = []
        # peel the last operation off the right end: "LEFT OP NAME", LEFT parenthesised when it has an op
        while s not in index:
            for op in ("AND NOT", "AND", "OR"):
                cut = s.rfind(f" {op} ")
                if cut < 0:
                    continue
                name = s[cut + len(op) + 2:]
                left = s[:cut]
                if name not in index:
                    continue
                if left.startswith("(") and left.endswith(")") and left[1:-1] not in index:
                    left = left[1:-1]
                rest.append((op, index[name]))
                s = left
                break
            else:
                raise NetDissectError(f"formula {text!r}: cannot read it with this run's concept names")
        return cls(index[s], tuple(reversed(rest)))

    def evaluate(self, masks):
        """The formula's mask from ``masks[c]`` (bool arrays or packed uint64 words of one shape)."""
        out = masks[self.first].copy()
        for op, c in self.rest:
            if op == "AND":
                out &= masks[c]
            elif op == "OR":
                out |= masks[c]
            else:
                out &= ~masks[c]
        return out


def pack(mask: np.ndarray) -> np.ndarray:
    """Bool masks (..., n) packed as bits into uint64 words (..., ceil(n / 64)), zero padded."""
    mask = np.asarray(mask, bool)
    n = mask.shape[-1]
    pad = (-n) % 64
    if pad:
        mask = np.concatenate([mask, np.zeros(mask.shape[:-1] + (pad,), bool)], axis=-1)
    b = np.packbits(mask, axis=-1, bitorder="little")
    return np.ascontiguousarray(b).view("<u8")


_TABLE = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount(words: np.ndarray, axis=-1) -> np.ndarray:
    """Number of set bits of packed masks, summed over ``axis`` (int64)."""
    words = np.ascontiguousarray(words, np.uint64)
    if hasattr(np, "bitwise_count"):
        per_word = np.bitwise_count(words)
    else:  # numpy < 2: a byte table
        per_word = _TABLE[words.view(np.uint8)].reshape(words.shape + (8,)).sum(-1)
    return per_word.sum(axis=axis, dtype=np.int64)
