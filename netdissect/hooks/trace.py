"""Hooks on named submodules, as context managers that always clean up.

    >>> with TraceDict(model, ["layer3", "layer4"], stop=True) as ret:   # doctest: +SKIP
    ...     model(x)
    >>> ret["layer4"].output.shape                                        # doctest: +SKIP

``stop=True`` ends the forward pass right after the last traced layer has
run, so nothing past it is computed.  ``edit_output=fn`` replaces a layer's
output with ``fn(output, layer_name)`` (used for ablation and insertion).
"""
from __future__ import annotations

import contextlib
import difflib
from collections import OrderedDict
from typing import Callable, Iterable

import torch
from torch import nn

from netdissect.errors import LayerError


class StopForward(Exception):
    """Raised inside the forward pass to end it after the last traced layer.

    :class:`Trace` and :class:`TraceDict` catch it when they exit, so
    ``with TraceDict(..., stop=True): model(x)`` simply returns.
    """


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every submodule (the names :func:`resolve_layer` accepts)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted, e.g. ``layer4.1.conv2`` or ``features.28``).

    An unknown name raises :class:`LayerError` listing the closest names.
    """
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    if not close:
        close = [n for n in names if "." not in n][:12]
        hint = "top-level layers are: "
    else:
        hint = "close matches: "
    raise LayerError(
        f"model {type(model).__name__} has no layer {name!r}; {hint}{', '.join(close)} "
        f"(`netdissect layers --model ...` lists every name with its output shape)"
    )


class Trace(contextlib.AbstractContextManager):
    """Retain (and optionally edit) the output of one named layer.

    >>> with Trace(model, "layer4") as t:   # doctest: +SKIP
    ...     model(x)
    >>> t.output                            # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        retain_output: bool = True,
        detach: bool = True,
        edit_output: Callable | None = None,
        stop: bool = False,
    ):
        self.layer = layer
        self.output = None
        module = resolve_layer(model, layer)

        def hook(mod, inputs, output):
            if edit_output is not None:
                output = edit_output(output, layer)
            if retain_output:
                self.output = output.detach() if (detach and isinstance(output, torch.Tensor)) else output
            if stop:
                raise StopForward()
            return output

        self._handle = module.register_forward_hook(hook)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """Retain the outputs of several named layers at once: ``ret[name].output``.

    With ``stop=True`` the forward pass ends after every listed layer has run
    (whichever order the model runs them in).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        *,
        retain_output: bool = True,
        detach: bool = True,
        edit_output: Callable | None = None,
        stop: bool = False,
    ):
        super().__init__()
        layers = list(dict.fromkeys(layers))
        for name in layers:  # validate all names before hooking any
            resolve_layer(model, name)
        pending = set(layers)
        self._pending = pending

        def make_edit(name):
            if not stop:
                return edit_output

            def edit(output, layer):
                if edit_output is not None:
                    output = edit_output(output, layer)
                pending.discard(name)
                return output

            return edit

        try:
            for name in layers:
                self[name] = Trace(model, name, retain_output=retain_output, detach=detach,
                                   edit_output=make_edit(name))
        except Exception:
            self.close()
            raise
        self._stop = stop
        if stop:
            # A last hook (registered after the retaining ones) ends the pass once all have run.
            self._stoppers = []
            for name in layers:
                def stopper(mod, inputs, output, _n=name):
                    if not pending:
                        raise StopForward()
                self._stoppers.append(resolve_layer(model, name).register_forward_hook(stopper))

    def reset(self) -> None:
        """Arm ``stop`` again for another forward pass."""
        self._pending.update(self.keys())

    def close(self) -> None:
        for trace in self.values():
            trace.close()
        for h in getattr(self, "_stoppers", []):
            h.remove()
        self._stoppers = []

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def run_to_layers(model: nn.Module, traces: TraceDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward pass of ``x`` that stops after the traced layers; their outputs by name."""
    traces.reset()
    try:
        model(x)
    except StopForward:
        pass
    return {name: t.output for name, t in traces.items()}
