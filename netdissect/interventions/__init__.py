"""Interventions at a layer: one edit rule, ``x <- x * (1 - a) + v * a``.

    >>> import torch, torchvision
    >>> from netdissect.interventions import ablate, edit
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> x = torch.rand(1, 3, 64, 64)
    >>> with ablate(model, "layer4.1", units=[3, 17, 200]):     # those units forced to 0 everywhere
    ...     y = model(x)
    >>> with edit(model, "layer4.1", alpha=mask, value=5.0):     # doctest: +SKIP
    ...     y = model(x)                                         # a spatial mask (H, W) at value 5

``alpha`` (``a``) and ``value`` (``v``) broadcast against the layer's output
``(N, C, H, W)`` (or ``(N, C)``, or ``(N, T, C)`` for tokens with
``channels_last=True``): a number, a per-unit vector ``(C,)``, a spatial map
``(H, W)``, a per-unit spatial ``(C, H, W)``, or a full ``(N, C, H, W)``.
``a = 1`` replaces the unit by ``v``, ``a = 0`` leaves it; ablation is
``a = 1, v = 0`` on the chosen units.

Token layers (a transformer block's (N, T, C) or (T, N, C) output, a channels-last map): pass
``layout=`` (a :class:`netdissect.hooks.tokens.Layout`, e.g. from
:func:`~netdissect.hooks.tokens.probe_layout`) and the rule applies to the layer's (N, C, H, W)
view, the patch tokens on their grid, in the same forms (a unit is one feature dimension on
every patch token; a spatial (H, W) map picks patch tokens by grid position).  The prefix tokens
(class, distillation, register) are left as they were unless ``prefix=True``, which applies a
number or per-unit ``(C,)`` alpha and value to them as well.  The rule is applied to a new tensor,
never in place, so the hooks' captured outputs and the caller's tensors stay
as they were.  The hook is removed when the block ends, whatever happens in
it, and works under ``torch.inference_mode`` and on nested names
(``layer4.1.conv2``, ``NAME#K`` for one call of a module that runs twice).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
from torch import nn

from netdissect.errors import LayerError, NetDissectError
from netdissect.hooks.trace import Trace

__all__ = ["edit", "ablate", "apply_edit", "unit_alpha", "EditError"]


class EditError(NetDissectError, ValueError):
    """An edit whose units, alpha or value do not fit the layer's output."""


def _as_tensor(x, like: torch.Tensor, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=like.device, dtype=like.dtype)
    try:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise EditError(f"{what} must be a number or an array of numbers, got {type(x).__name__}") from None


def _shape_for(t: torch.Tensor, out: torch.Tensor, channels_last: bool, what: str) -> torch.Tensor:
    """Lay ``t`` out so that it broadcasts against ``out`` per the documented forms."""
    nd, c = out.dim(), (out.shape[-1] if channels_last else (out.shape[1] if out.dim() > 1 else None))
    if t.dim() == 0 or t.dim() == nd:
        res = t
    elif channels_last:
        # (C,) per unit, or (T, C), (N, T, C) already aligned right
        res = t
    elif t.dim() == 1 and c is not None and t.shape[0] == c:  # per unit
        res = t.view(1, c, *([1] * (nd - 2)))
    elif t.dim() == nd - 2 and nd > 2:                          # spatial (H, W): every unit
        res = t.view(1, 1, *t.shape)
    elif t.dim() == nd - 1:                                     # per unit spatial (C, H, W)
        res = t.unsqueeze(0)
    else:
        raise EditError(f"{what} of shape {tuple(t.shape)} does not fit a layer output of shape "
                        f"{tuple(out.shape)}: give a number, ({c},) per unit, (H, W) spatial, "
                        f"(C, H, W), or the output's full shape")
    try:
        torch.broadcast_shapes(res.shape, out.shape)
    except RuntimeError:
        raise EditError(f"{what} of shape {tuple(t.shape)} does not broadcast against the layer output "
                        f"of shape {tuple(out.shape)}") from None
    return res


def apply_edit(x: torch.Tensor, alpha, value=0.0, *, channels_last: bool = False) -> torch.Tensor:
    """``x * (1 - alpha) + value * alpha`` as a new tensor (``x`` is not changed).

    Where ``alpha`` is exactly 1 the result is exactly ``value`` (no
    ``x * 0`` term, so an ``inf`` or ``nan`` in ``x`` does not leak through);
    where it is 0 it is exactly ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise EditError(f"the layer's output is a {type(x).__name__}, not a tensor: only tensor outputs "
                        "can be edited (trace a submodule that returns a tensor)")
    a = _shape_for(_as_tensor(alpha, x, "alpha"), x, channels_last, "alpha")
    v = _shape_for(_as_tensor(value, x, "value"), x, channels_last, "value")
    mixed = x * (1 - a) + v * a
    full = torch.broadcast_to(a == 1, mixed.shape)
    zero = torch.broadcast_to(a == 0, mixed.shape)
    return torch.where(full, torch.broadcast_to(v, mixed.shape).to(mixed.dtype),
                       torch.where(zero, x.expand_as(mixed), mixed))


def unit_alpha(units: Iterable[int], n_units: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(n_units,)`` with 1 at ``units`` and 0 elsewhere (the ``alpha`` of ablating those units)."""
    units = _check_units(units, n_units)
    a = torch.zeros(n_units, dtype=dtype, device=device)
    if len(units):
        a[torch.as_tensor(units, dtype=torch.long, device=device)] = 1
    return a


def _check_units(units, n_units: int) -> list[int]:
    if isinstance(units, torch.Tensor):
        units = units.tolist()
    if isinstance(units, (int,)) and not isinstance(units, bool):
        units = [units]
    try:
        out = [int(u) for u in units]
    except (TypeError, ValueError):
        raise EditError(f"units must be whole unit numbers, got {units!r}") from None
    if any(isinstance(u, bool) for u in units) or any(float(u) != int(u) for u in units):
        raise EditError(f"units must be whole unit numbers, got {units!r}")
    bad = [u for u in out if not 0 <= u < n_units]
    if bad:
        raise EditError(f"unit(s) {bad[:5]} out of range: the layer has {n_units} units (0..{n_units - 1})")
    return out


def _edit_view(output, rule, layout, prefix: bool, alpha, value, units, name):
    """``output`` with ``rule`` applied to its (N, C, H, W) view (``layout``), as a new tensor; the
    prefix tokens edited too (per unit) only with ``prefix``."""
    if layout.item and isinstance(output, (tuple, list)) and len(output) == 1:  # (hidden,): edit the tensor
        return type(output)([_edit_view(output[0], rule, layout, prefix, alpha, value, units, name)])
    out = output.clone()
    view = layout.to_map(out, name)
    view.copy_(rule(view))
    if prefix and layout.prefix:
        pv = layout.prefix_view(out)  # (N, P, C)
        C = pv.shape[-1]
        forms = []
        for what, v in (("alpha", alpha), ("value", value)):
            t = _as_tensor(v, pv, what)
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != C):
                raise EditError(f"prefix=True edits the prefix tokens with a number or a per-unit ({C},) {what}, "
                                f"not a {tuple(t.shape)} one (a spatial map has no prefix tokens)")
            forms.append(t)
        a = forms[0] if units is None else forms[0] * unit_alpha(units, C, device=pv.device, dtype=pv.dtype)
        pv.copy_(apply_edit(pv, a, forms[1], channels_last=True))
    return out


@contextlib.contextmanager
def edit(model: nn.Module, layer: str, alpha=1.0, value=0.0, *, units: Sequence[int] | None = None,
         channels_last: bool = False, layout=None, prefix: bool = False):
    """Within the block, the output of ``layer`` becomes ``x * (1 - alpha) + value * alpha``.

    ``units``: restrict the edit to these units (``alpha`` is multiplied by
    their indicator), so ``edit(m, L, units=[3], value=v)`` sets unit 3 to
    ``v``.  The layer name is checked at once (an unknown name raises
    :class:`~netdissect.errors.LayerError` listing close names); a shape
    mismatch raises :class:`EditError` at the first forward pass.  ``layout``/``prefix``: a
    token layer or channels-last map (see the module's docstring).
    """
    if layout is not None and layout.kind == "nchw" and not layout.item:
        layout = None
    if prefix and (layout is None or not layout.is_tokens):
        raise EditError("prefix=True edits the prefix tokens of a token layer: give its layout= (a token layout)")
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and not 0 <= alpha <= 1:
        raise EditError(f"alpha must be in [0, 1] (1 replaces the unit by value, 0 leaves it), got {alpha}")

    def fn(output, name):
        if layout is not None:
            return _edit_view(output, lambda v: rule(v, name), layout, prefix, alpha, value, units, name)
        return rule(output, name)

    def rule(output, name):
        if not isinstance(output, torch.Tensor):
            raise EditError(f"layer {name!r} returns a {type(output).__name__}, not a tensor: only tensor "
                            "outputs can be edited (trace a submodule that returns a tensor)")
        a = alpha
        if units is not None:
            c = output.shape[-1] if channels_last else (output.shape[1] if output.dim() > 1 else None)
            if c is None:
                raise EditError(f"layer {name!r} has a 1-d output {tuple(output.shape)}: it has no units to pick")
            ind = unit_alpha(units, c, device=output.device, dtype=output.dtype)
            ind = ind if channels_last else ind.view(1, c, *([1] * (output.dim() - 2)))
            a_t = _shape_for(_as_tensor(alpha, output, "alpha"), output, channels_last, "alpha")
            a = a_t * ind
        return apply_edit(output, a, value, channels_last=channels_last)

    trace = Trace(model, layer, retain_output=False, edit_output=fn)
    try:
        yield trace
    finally:
        trace.close()


def ablate(model: nn.Module, layer: str, units: Sequence[int] | None = None, *, channels_last: bool = False,
           layout=None, prefix: bool = False):
    """Context manager: ``units`` of ``layer`` forced to 0 at every position (all units if None); a token
    layer (``layout``): on every patch token, and on the prefix tokens too with ``prefix=True``."""
    if units is not None and not isinstance(units, torch.Tensor) and not isinstance(units, int):
        units = list(units)
    return edit(model, layer, alpha=1.0, value=0.0, units=units, channels_last=channels_last, layout=layout,
                prefix=prefix)
