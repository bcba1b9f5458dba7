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


class ChunkCaches:
    """``read_acts(name, a, b)`` over the chunks' activation caches (``parts``: (lo, hi, {layer: cache
    file}) in row order), opening only the cache files of the chunk being read, one chunk at a
    time (no chunk's checkpoint is loaded: the scorecard needs only the cached activations)."""

    def __init__(self, parts: list, layer_results: dict, dtype: str):
        self.parts, self.results, self.dtype = parts, layer_results, dtype
        self._open = (None, {})

    def _caches(self, i: int) -> dict:
        from netdissect.dissection.cache import ActivationCache

        if self._open[0] != i:
            self.close()
            lo, hi, files = self.parts[i]
            self._open = (i, {name: ActivationCache(path, hi - lo, tuple(self.results[name].shape), self.dtype,
                                                    existing=True)
                              for name, path in files.items() if path.exists()})
        return self._open[1]

    def __call__(self, name, a, b):
        out = []
        for i, (lo_p, hi_p, _) in enumerate(self.parts):
            lo, hi = max(a, lo_p), min(b, hi_p)
            if lo < hi:
                caches = self._caches(i)
                if name in caches:
                    out.append(caches[name].read(lo - lo_p, hi - lo_p))
                else:
                    out.append(np.zeros((hi - lo, *self.results[name].shape), np.float32))
        return np.concatenate(out)

    def close(self):
        for c in self._open[1].values():
            c.close()
        self._open = (None, {})


def chunk_scorecard(layer_results: dict, parts: list, n_rows: int, skipped, *, dtype="float32", num_workers=0,
                    progress=False, batch_size=64, spill_dir=None) -> dict:
    """The scorecard over every chunk (``parts``: (lo, hi, {layer: cache file}, labels) in row order);
    what summary.json records under ``scorecard``."""
    from netdissect.trust import TooFewImages, score_layers, scorecard_config

    cfg = scorecard_config()
    parts = sorted(parts, key=lambda p: p[0])
    labels = ChunkedLabels([((lo, hi), src) for lo, hi, _, src in parts])
    read_acts = ChunkCaches([(lo, hi, files) for lo, hi, files, _ in parts], layer_results, dtype)
    try:
        cards = score_layers(layer_results, read_acts, labels, (0, n_rows), skipped, n_rows, cfg,
                             batch_size=batch_size, num_workers=num_workers, progress=progress, spill_dir=spill_dir)
    except TooFewImages as exc:
        return {"computed": False, "why": str(exc)}
    finally:
        read_acts.close()
    for name, card in cards.items():
        layer_results[name].with_scorecard(card, cfg["fdr"])
    return {"computed": True, **cfg, "by": "netdissect merge"}
