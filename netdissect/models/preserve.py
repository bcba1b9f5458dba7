"""Leave a user's module as it was found: :func:`preserved`.

    >>> import torch
    >>> from netdissect.models import preserved
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    >>> w = net[0].weight
    >>> with preserved(net):
    ...     _ = net.eval().to(torch.float64).to(memory_format=torch.channels_last)
    >>> net.training, net[0].weight is w, w.dtype, w.is_contiguous()
    (True, True, torch.float32, True)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class _Slot:
    owner: nn.Module
    kind: str                     # "_parameters" or "_buffers"
    name: str
    tensor: torch.Tensor          # the Parameter (or buffer) object found there
    data: torch.Tensor            # its storage as found: device, dtype, strides (memory format), values
    requires_grad: bool
    grad: torch.Tensor | None
    grad_data: torch.Tensor | None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` still is ``b``'s storage with ``b``'s layout (then nothing needs restoring)."""
    return (a.device == b.device and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset()
            and (a.numel() == 0 or a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()))


class _Saved:
    def __init__(self, module: nn.Module):
        self.training = [(m, m.training) for m in module.modules()]
        self.slots: list[_Slot] = []
        for m in module.modules():
            for kind in ("_parameters", "_buffers"):
                for name, t in getattr(m, kind).items():
                    if t is None:
                        continue
                    g = t.grad if kind == "_parameters" else None
                    self.slots.append(_Slot(m, kind, name, t, t.data, t.requires_grad, g,
                                            None if g is None else g.data))

    def restore(self) -> None:
        with torch.no_grad():
            for s in self.slots:
                table = getattr(s.owner, s.kind)
                if table.get(s.name) is not s.tensor:
                    table[s.name] = s.tensor  # put the very object back (optimizers hold references)
                if not _same(s.tensor.data, s.data):
                    s.tensor.data = s.data
                if s.kind == "_parameters":
                    if s.tensor.requires_grad != s.requires_grad:
                        s.tensor.requires_grad_(s.requires_grad)
                    if s.tensor.grad is not s.grad:
                        s.tensor.grad = s.grad
                    if s.grad is not None and not _same(s.grad.data, s.grad_data):
                        s.grad.data = s.grad_data
        for m, flag in self.training:
            m.training = flag  # each submodule's own flag (not .train(), which recurses)


@contextlib.contextmanager
def preserved(module):
    """Give ``module`` back as it was found when the block ends, normally or by an exception.

    Restores every submodule's ``training`` flag and, for every parameter and buffer, the
    object itself (a Parameter replaced inside the block is put back, so optimizers' references
    stay valid), its data as found (device, dtype, memory format such as channels_last and values:
    the original storage is kept alive during the block, so nothing is converted back lossily),
    ``requires_grad`` and ``.grad``.  Submodules, hooks and attributes added inside the block are
    not tracked.  Anything that is not an ``nn.Module`` (a model spec string) passes through
    untouched, so ``with preserved(model_or_spec):`` suits both.

    Cost: while the block runs after moving the model to another device or dtype, the original
    tensors stay in memory too (one copy of the weights on their original device).
    """
    if not isinstance(module, nn.Module):
        yield module
        return
    saved = _Saved(module)
    try:
        yield module
    finally:
        saved.restore()
