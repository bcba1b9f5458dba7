"""Dissection: label every unit of a layer with the concept its top activations segment.

Public entry points: :func:`dissect` (run) and :func:`load` (read a run directory back).
``load`` does not import the engine (nor torch), so reading runs back stays quick.
"""
from netdissect.dissection.result import DissectionResult, LayerResult, load

__all__ = ["dissect", "load", "DissectConfig", "DissectionResult", "LayerResult"]


def __getattr__(name):
    if name == "dissect":
        from netdissect.dissection.engine import dissect

        return dissect
    if name == "DissectConfig":
        from netdissect.dissection.config import DissectConfig

        return DissectConfig
    raise AttributeError(name)
