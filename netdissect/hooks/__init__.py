"""Activations: hooks on any named submodule of a PyTorch model.

Public entry points: :class:`TraceDict` (and :class:`Trace` for one layer),
:func:`run_to_layers` for one stopped forward pass, and :func:`check_layers`
to check once, before tracing, that each layer name means one output.
"""
from netdissect.hooks.trace import (
    StopForward,
    Trace,
    TraceDict,
    check_layers,
    layer_calls,
    layer_names,
    resolve_layer,
    run_to_layers,
    split_layer,
)

__all__ = ["Trace", "TraceDict", "StopForward", "check_layers", "layer_calls", "layer_names", "resolve_layer",
           "run_to_layers", "split_layer"]
