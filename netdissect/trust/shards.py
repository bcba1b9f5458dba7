"""The scorecard of a run merged from ``--chunk`` folders (``netdissect merge``): the same pass as one
process, over every chunk's activation cache and labels in row order, so that merged chunks give
the scorecard a single process gives (tests/test_trust_run.py)."""
from __future__ import annotations

import numpy as np

from netdissect.concepts import ConceptSource


class ChunkedLabels(ConceptSource):
    """The labels of every row from the source of the chunk that holds it."""

    def __init__(self, parts: list[tuple[tuple[int, int], ConceptSource]]):
        self.parts = sorted(parts, key=lambda p: p[0][0])
        self.concepts = self.parts[0][1].concepts

    @property
    def loads_from_memory(self) -> bool:
        return all(s.loads_from_memory for _, s in self.parts)

    def _source(self, i: int) -> ConceptSource:
        for (lo, hi), s in self.parts:
            if lo <= i < hi:
                return s
        raise IndexError(i)

    def identity(self) -> dict:
        return self.parts[0][1].identity()

    def load(self, i: int):
        return self._source(i).load(i)

    def mask_sizes(self, rows=None):
        sizes = set()
        for _, s in self.parts:
            sizes.update(tuple(v) for v in s.mask_sizes())
        return sorted(sizes)


def read_across(parts: list, layer_results: dict):
    """``read_acts(name, a, b)`` over several caches of consecutive rows: ``parts`` (lo, hi, {layer:
    ActivationCache}) in row order; a part without a layer's cache (no usable row) reads zeros."""
    def read_acts(name, a, b):
        out = []
        for lo_p, hi_p, caches in parts:
            lo, hi = max(a, lo_p), min(b, hi_p)
            if lo < hi:
                if name in caches:
                    out.append(caches[name].read(lo - lo_p, hi - lo_p))
                else:
                    out.append(np.zeros((hi - lo, *layer_results[name].shape), np.float32))
        return np.concatenate(out)
    return read_acts


def chunk_scorecard(layer_results: dict, states: list, sources: dict, n_rows: int, skipped, *, num_workers=0,
                    progress=False, batch_size=64) -> dict:
    """The scorecard over every chunk (``states``: their open :class:`RunState` in row order;
    ``sources``: RunState -> its labels); what summary.json records under ``scorecard``."""
    from netdissect.trust import TooFewImages, score_layers, scorecard_config

    cfg = scorecard_config()
    labels = ChunkedLabels([((st.lo, st.hi), sources[id(st)]) for st in states])

    read_acts = read_across([(st.lo, st.hi, st.caches) for st in states], layer_results)
    try:
        cards = score_layers(layer_results, read_acts, labels, (0, n_rows), skipped, n_rows, cfg,
                             batch_size=batch_size, num_workers=num_workers, progress=progress)
    except TooFewImages as exc:
        return {"computed": False, "why": str(exc)}
    for name, card in cards.items():
        layer_results[name].with_scorecard(card, cfg["fdr"])
    return {"computed": True, **cfg, "by": "netdissect merge"}
