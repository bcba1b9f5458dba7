"""Hooks on named submodules, as context managers that always clean up.

    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> x = torch.rand(2, 3, 64, 64)
    >>> with TraceDict(model, ["layer3", "layer4"], stop=True) as ret:
    ...     model(x)
    >>> ret["layer4"].output.shape
    torch.Size([2, 512, 2, 2])

``stop=True`` ends the forward pass right after the last traced layer has
run, so nothing past it is computed.  ``edit_output=fn`` replaces a layer's
output with ``fn(output, layer_name)`` (used for ablation and insertion).

A retained output never changes after it is captured: when the forward pass
goes on past a layer, its output is copied, because a later in-place
operation (``ReLU(inplace=True)``, ``out += identity``) would otherwise
rewrite it.  Only the call that ends a ``stop=True`` pass is kept uncopied.

Layer names are dotted module paths (``layer4.1.conv2``).  A module that
runs more than once per forward pass (torchvision's ``BasicBlock.relu``)
has no single output: name one call as ``NAME#K``, the K-th call (from 1)
within each forward pass, and see the calls with :func:`check_layers`:

    >>> check_layers(model, ["layer4.1.relu#2"], x)["layer4.1.relu#2"]
    {'module': 'layer4.1.relu', 'call': 2, 'calls': 2, 'shape': (2, 512, 2, 2)}
"""
from __future__ import annotations

import contextlib
import difflib
import re
from collections import OrderedDict
from typing import Callable, Iterable

import torch
from torch import nn

from netdissect.errors import LayerError, ModelError, NetDissectError


class StopForward(Exception):
    """Raised inside the forward pass to end it after the last traced layer.

    :class:`Trace` and :class:`TraceDict` catch it when they exit, so
    ``with TraceDict(..., stop=True): model(x)`` simply returns.
    """


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every submodule (the names :func:`resolve_layer` accepts)."""
    return [name for name, _ in model.named_modules() if name]


_CALL = re.compile(r"[1-9][0-9]*")


def split_layer(model: nn.Module, spec: str) -> tuple[str, int | None]:
    """``'layer4.1.relu#2'`` -> ``('layer4.1.relu', 2)``; a plain module name -> ``(name, None)``.

    A name that is itself a module of ``model`` is plain even if it holds ``#``.
    The module is not looked up: :func:`resolve_layer` does that.
    """
    if not isinstance(spec, str):
        raise LayerError(f"a layer name must be a string such as 'layer4' or 'layer4.1.relu#2', "
                         f"not {type(spec).__name__} {spec!r}")
    name, sep, k = spec.rpartition("#")
    if not sep or spec in dict(model.named_modules()):
        return spec, None
    if not _CALL.fullmatch(k):
        raise LayerError(f"layer {spec!r}: the call index after '#' must be a whole number from 1 "
                         f"({name}#1 is the first call of {name!r} in a forward pass, {name}#2 the second)")
    return name, int(k)


def _resolve(model: nn.Module, spec: str) -> tuple[nn.Module, str, int | None]:
    name, call = split_layer(model, spec)
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name], name, call
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


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted, e.g. ``layer4.1.conv2`` or ``features.28``).

    ``NAME#K`` (one call of a module that runs several times) resolves to
    the module ``NAME``.  An unknown name raises :class:`LayerError` listing
    the closest names.
    """
    return _resolve(model, name)[0]


def _parent(name: str) -> str | None:
    return name.rpartition(".")[0] or None


def _retained(x, detach: bool, copy: bool):
    """``x`` (a tensor, or tuples/lists/dicts of them) detached and, if ``copy``, cloned."""
    if isinstance(x, torch.Tensor):
        if detach:
            x = x.detach()
        return x.clone() if copy else x
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(_retained(v, detach, copy) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_retained(v, detach, copy) for v in x)
    if isinstance(x, dict):
        return type(x)((k, _retained(v, detach, copy)) for k, v in x.items())
    return x


class Trace(contextlib.AbstractContextManager):
    """Retain (and optionally edit) the output of one named layer.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3))
    >>> with Trace(net, "0") as t:
    ...     y = net(torch.rand(1, 3, 8, 8))
    >>> t.output.shape, bool(t.output.min() < 0)   # copied before the in-place ReLU
    (torch.Size([1, 4, 6, 6]), True)

    ``layer`` is a dotted module name, or ``NAME#K`` for the K-th call of a
    module within one forward pass (the count restarts with each call of
    ``model`` or of any module above the layer).  A plain name whose module
    runs twice in one forward pass raises :class:`LayerError` while
    ``retain_output`` is on, since its output would be ambiguous; with
    ``retain_output=False`` an ``edit_output`` edits every call.  For
    ``NAME#K``, ``edit_output`` edits the K-th call only.

    After a forward pass, ``output`` is what the requested call returned
    (after ``edit_output``), ``ran`` says whether that call happened, and
    ``calls`` counts the module's calls so far in the pass.

    ``view=fn``: retain ``fn(output, layer)`` instead of the output itself (after
    ``edit_output``); e.g. :meth:`netdissect.hooks.tokens.Layout.to_map`, the patch
    tokens of a transformer layer as an (N, C, H, W) view.  The view, not the
    whole output, is what gets copied.
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
        view: Callable | None = None,
        _pending: set | None = None,
    ):
        module, name, call = _resolve(model, layer)
        self.layer = layer
        self.module_name = name
        self.call = call
        self.output = None
        self.ran = False
        self.calls = 0
        self._retain = retain_output
        self._detach = detach
        self._edit = edit_output
        self._stop = stop
        self._view = view
        self._type = type(module).__name__
        # layers (of this Trace or of the TraceDict holding it) that have yet to run in this forward pass
        self._pending = set() if _pending is None else _pending
        self._pending.add(layer)
        self._depth = 0  # how many modules above the layer are running now (0: between forward passes)
        self._handles = []
        try:
            self._handles.append(module.register_forward_hook(self._hook))
            self._watch_forward_starts(model, name)
        except Exception:
            self.close()
            raise

    def _watch_forward_starts(self, model: nn.Module, name: str) -> None:
        """Restart the call count whenever a forward pass reaches the layer from outside."""
        parts = name.split(".")
        above = [model] + [model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts))]

        def enter(mod, args):
            if self._depth == 0:
                self.reset()
            self._depth += 1

        def leave(mod, args, output):
            self._depth -= 1

        for m in above:
            self._handles.append(m.register_forward_pre_hook(enter))
            self._handles.append(m.register_forward_hook(leave, always_call=True))

    def reset(self) -> None:
        """Forget the last forward pass: no output, no calls, and armed to stop again."""
        self.output = None
        self.ran = False
        self.calls = 0
        self._depth = 0
        self._pending.add(self.layer)

    def _hook(self, mod, inputs, output):
        if self._depth == 0:  # the module itself was called, not a model holding it: a pass of its own
            self.reset()
        self.calls += 1
        if self.call is None:
            if self.calls > 1 and self._retain:
                parent = _parent(self.module_name)
                raise LayerError(
                    f"layer {self.module_name!r} ({self._type}) ran a second time in one forward pass, so its "
                    f"output is ambiguous: name one call as '{self.module_name}#K' ('{self.module_name}#1', "
                    f"'{self.module_name}#2', ...; `netdissect layers` or netdissect.hooks.check_layers lists "
                    f"the calls with their shapes)"
                    + (f", or trace a module that runs once, perhaps its parent {parent!r}" if parent else ""))
        elif self.calls != self.call:
            return None
        if self._edit is not None:
            output = self._edit(output, self.layer)
        self.ran = True
        self._pending.discard(self.layer)
        ends = self._stop and not self._pending
        if self._retain:
            # the pass goes on unless it ends here: copy, or a later in-place op could rewrite the output
            # (a view, e.g. a token layer's patch grid, is taken first: only what is kept is copied)
            kept = output if self._view is None else self._view(output, self.layer)
            self.output = _retained(kept, self._detach, copy=not ends)
        if ends:
            raise StopForward()
        return output

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """Retain the outputs of several named layers at once: ``ret[name].output``.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten())
    >>> with TraceDict(net, ["0", "2"], stop=True) as ret:
    ...     net(torch.rand(1, 3, 8, 8))
    >>> [tuple(t.output.shape) for t in ret.values()]
    [(1, 4, 6, 6), (1, 5, 4, 4)]

    With ``stop=True`` the forward pass ends after every listed layer has run
    (whichever order the model runs them in).  Names may be ``NAME#K`` (see
    :class:`Trace`); every name is checked before any hook is added.  ``views``:
    ``{name: fn}``, each layer's ``view`` (see :class:`Trace`).
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
        views: dict | None = None,
    ):
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        layers = list(dict.fromkeys(layers))
        for name in layers:  # validate all names before hooking any
            _resolve(model, name)
        pending: set = set()
        try:
            for name in layers:
                self[name] = Trace(model, name, retain_output=retain_output, detach=detach,
                                   edit_output=edit_output, stop=stop, view=(views or {}).get(name),
                                   _pending=pending)
        except Exception:
            self.close()
            raise

    def reset(self) -> None:
        """Forget the last forward pass (outputs, call counts) and arm ``stop`` again."""
        for trace in self.values():
            trace.reset()

    def close(self) -> None:
        for trace in self.values():
            trace.close()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def run_to_layers(model: nn.Module, traces: TraceDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward pass of ``x`` that stops after the traced layers; their outputs by name.

    Every output comes from this pass: a traced layer that did not run
    raises :class:`LayerError` naming it (never the previous pass's output).
    """
    traces.reset()
    try:
        model(x)
    except StopForward:
        pass
    for name, t in traces.items():
        if not t.ran:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            if t.call is not None and t.calls:
                why = f"module {t.module_name!r} ran only {t.calls} time(s) in it, not {t.call}"
            else:
                why = f"the model's forward did not call module {t.module_name!r}"
            raise LayerError(f"layer {name!r} did not run in the forward pass of an input of shape {shape}: "
                             f"{why}, so it has no output for these inputs")
    return {name: t.output for name, t in traces.items()}


def _describe(output):
    return tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__


def _reason(exc: BaseException) -> str:
    """An exception as one short line: ``RuntimeError: first line of its message``."""
    lines = str(exc).strip().splitlines() or [""]
    line = lines[0] if len(lines[0]) <= 300 else lines[0][:300] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _forward_failed(model: nn.Module, x, exc: Exception) -> ModelError:
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
    return ModelError(f"model {type(model).__name__} fails on an input of shape {shape}: {_reason(exc)}")


def layer_calls(model: nn.Module, example_input, names: Iterable[str] | None = None) -> dict[str, list]:
    """Each submodule's calls in one full forward pass of ``example_input``.

    ``{name: [shape of call 1, shape of call 2, ...]}`` for ``names`` (default:
    every submodule); an empty list for a module that did not run, a type
    name for an output that is not a tensor.  The pass runs under
    ``torch.inference_mode`` with the model in eval mode (its training flags
    are restored afterwards).  A forward pass that fails raises
    :class:`~netdissect.errors.ModelError` naming the input's shape.

    >>> import torch, torchvision
    >>> calls = layer_calls(torchvision.models.resnet18(weights=None), torch.rand(1, 3, 64, 64))
    >>> calls["layer4.1.relu"], calls["layer4.1"]
    ([(1, 512, 2, 2), (1, 512, 2, 2)], [(1, 512, 2, 2)])
    """
    modules = dict(model.named_modules())
    names = [n for n in modules if n] if names is None else list(dict.fromkeys(names))
    calls: dict[str, list] = {n: [] for n in names}
    handles = []
    training = {m: m.training for m in model.modules()}
    try:
        for n in names:
            def hook(mod, inputs, output, _n=n):
                calls[_n].append(_describe(output))
            handles.append(modules[n].register_forward_hook(hook))
        model.eval()
        with torch.inference_mode():
            try:
                model(example_input)
            except NetDissectError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
                raise _forward_failed(model, example_input, exc) from exc
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag
    return calls


def check_layers(model: nn.Module, layers: Iterable[str], example_input) -> dict[str, dict]:
    """Check, in one full forward pass of ``example_input``, that each layer names exactly one output.

    Returns ``{layer: {"module": NAME, "call": K, "calls": N, "shape": ...}}``:
    the call of module NAME that ``layer`` names (1 for a plain name), how
    many times NAME runs per forward pass, and that call's output shape.
    Raises :class:`LayerError` for a plain name whose module runs more than
    once per pass (listing ``NAME#1``... with their shapes and a module that
    runs once), for ``NAME#K`` beyond the module's calls, and for a layer
    that does not run at all.  Run it on one input before tracing with
    ``stop=True``, which cannot see calls after the first.

    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None)
    >>> check_layers(model, ["layer4.1.relu"], torch.rand(1, 3, 64, 64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    netdissect.errors.LayerError: layer 'layer4.1.relu' (ReLU) runs 2 times per forward pass, ...
    """
    if isinstance(layers, str):
        layers = [layers]
    specs = list(dict.fromkeys(layers))
    resolved = {spec: _resolve(model, spec) for spec in specs}
    watched = []  # each requested module and the modules above it (to suggest one that runs once)
    for _, name, _ in resolved.values():
        parts = name.split(".")
        watched += [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    calls = layer_calls(model, example_input, watched)
    shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
    found = {}
    for spec, (module, name, k) in resolved.items():
        shapes = calls[name]
        n = len(shapes)
        kind = type(module).__name__
        if n == 0:
            raise LayerError(f"layer {name!r} ({kind}) does not run in a forward pass of an input of shape "
                             f"{shape}, so it has no output to dissect (`netdissect layers` shows what runs)")
        if k is None and n > 1:
            each = ", ".join(f"{name}#{i} {s}" for i, s in enumerate(shapes, 1))
            parts = name.split(".")
            above = (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))
            once = next((a for a in above if len(calls[a]) == 1), None)
            raise LayerError(
                f"layer {name!r} ({kind}) runs {n} times per forward pass, so it has no single output "
                f"(a pass stopped after it would give the first call): name one call, {each}"
                + (f"; or a module that runs once, such as {once!r} {calls[once][0]}" if once else ""))
        if k is not None and k > n:
            raise LayerError(f"layer {spec!r}: module {name!r} ({kind}) runs only {n} time(s) per forward pass; "
                             + (f"name {name!r}" if n == 1 else f"name one of {name}#1 to {name}#{n}"))
        found[spec] = {"module": name, "call": k or 1, "calls": n, "shape": shapes[(k or 1) - 1]}
    return found
