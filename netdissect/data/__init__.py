"""Concept sources: datasets whose images carry dense concept labels.

Public entry point: :class:`Broden` (any dataset in the Broden format,
real or synthetic) and :class:`ConceptSet` (the catalogue of concepts).
"""
from netdissect.data.broden import Broden, LabelSample
from netdissect.data.concepts import ConceptSet

__all__ = ["Broden", "ConceptSet", "LabelSample"]
