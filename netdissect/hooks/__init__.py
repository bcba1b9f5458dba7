"""Activations: hooks on any named submodule of a PyTorch model.

Public entry point: :class:`TraceDict` (and :class:`Trace` for one layer).
"""
from netdissect.hooks.trace import (
    StopForward,
    Trace,
    TraceDict,
    layer_names,
    resolve_layer,
    run_to_layers,
)

__all__ = ["Trace", "TraceDict", "StopForward", "layer_names", "resolve_layer", "run_to_layers"]
