"""Dissection: label every unit of a layer with the concept its top activations segment.

Public entry points: :func:`dissect` (run) and :func:`load` (read a run directory back).
"""
from netdissect.dissection.engine import DissectConfig, dissect
from netdissect.dissection.result import DissectionResult, LayerResult, load

__all__ = ["dissect", "load", "DissectConfig", "DissectionResult", "LayerResult"]
