"""Compositional labels: the formula of concepts (AND, OR, AND NOT) that best matches each unit.

    $ netdissect explain runs/r18 --layer layer4 --length 3
    >>> from netdissect import load
    >>> load("runs/r18")["layer4"].formulas[:3]          # doctest: +SKIP

:mod:`.formula` (formulas, bit-packed evaluation), :mod:`.search` (exact branch and bound,
beam search), :mod:`.data` (signatures: the pixels grouped by what a formula sees),
:mod:`.run` (the command: a run's masks and labels, resumable per unit).  Semantics and the
bound's proof: docs/compositional.md.
"""
from netdissect.explain.formula import OPS, Formula, pack, popcount
from netdissect.explain.search import Found, Problem, search_beam, search_exact

__all__ = ["OPS", "Formula", "Found", "Problem", "pack", "popcount", "search_beam", "search_exact", "explain"]


def __getattr__(name):
    if name == "explain":
        from netdissect.explain.run import explain

        return explain
    raise AttributeError(name)
