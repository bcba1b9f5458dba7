"""One-line errors for a model whose forward pass fails on the dataset's images.

    >>> import torch
    >>> from netdissect.models import explain_forward
    >>> gray = torch.nn.Conv2d(1, 4, 3)            # expects 1 channel
    >>> x = torch.rand(2, 3, 32, 32)
    >>> try:
    ...     with explain_forward("python:Conv2d", x.shape):
    ...         gray(x)
    ... except Exception as e:
    ...     print(type(e).__name__, str(e).split(", RGB")[0])
    ModelError model python:Conv2d fails on the dataset's images: it was given (N, C, H, W) = (2, 3, 32, 32)
"""
from __future__ import annotations

import contextlib

import torch

from netdissect.errors import ModelError, NetDissectError
from netdissect.models.loading import spec_name


def _torch_says(exc: BaseException) -> str:
    """torch's message in one line: its last line (an out-of-memory error: its first, which says how much)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0] if _is_oom(exc) else lines[-1]}"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def _hint(msg: str, exc: BaseException) -> str:
    low = msg.lower()
    if _is_oom(exc):
        return "lower --batch-size (batch_size=), or use a device with more memory"
    if any(k in low for k in ("too small", "kernel size can't be greater", "output size", "input size",
                              "spatial", "padding")):
        return "the dataset's images are too small for this model: use a dataset of larger images (e.g. broden1_227/384)"
    if "channel" in low:
        return ("netdissect gives every model 3-channel RGB images: make its first layer take 3 channels, "
                "or wrap the model (e.g. average the channels for a greyscale model)")
    if any(k in low for k in ("expected scalar type", "dtype", "should be the same", "not implemented for")):
        return "run it in fp32 on a device where the model's parameters are (--precision fp32, --device)"
    return "the model must accept float batches of shape (N, 3, H, W) and run without other inputs"


def forward_error(spec, x_shape, exc: BaseException, *, normalize: str | None = None) -> ModelError:
    """A one-line :class:`~netdissect.errors.ModelError` for ``exc``, raised by the forward pass of model
    ``spec`` (a spec string or the module) on a batch of shape ``x_shape``.

    It names the model, the input it was given (RGB in [0, 1], after the normalisation
    ``normalize`` when named, e.g. ``Preprocess.describe()``), torch's own message (its last line)
    and what to change.  Raise it ``from exc`` to keep torch's traceback in ``__cause__``.
    """
    shape = tuple(int(v) for v in x_shape)
    norm = f"normalised ({normalize})" if normalize and normalize != "none" else "not normalised"
    what = (f"(N, C, H, W) = {shape}" if len(shape) == 4 else f"shape {shape}")
    torch_says = _torch_says(exc)
    return ModelError(f"model {spec_name(spec)} fails on the dataset's images: it was given {what}, "
                      f"RGB in [0, 1] {norm}, and torch says {torch_says!r}: {_hint(torch_says, exc)}")


@contextlib.contextmanager
def explain_forward(spec, x_shape, *, normalize: str | None = None, passthrough: tuple = ()):
    """Turn an exception from the block (the model's first forward pass) into :func:`forward_error`'s
    one-line ModelError.  netdissect's own errors, ``StopForward`` (a trace ending the pass early),
    ``passthrough`` types, ``KeyboardInterrupt`` and other non-``Exception`` exits pass unchanged."""
    from netdissect.hooks.trace import StopForward

    try:
        yield
    except (NetDissectError, StopForward, *passthrough):
        raise
    except Exception as exc:
        raise forward_error(spec, x_shape, exc, normalize=normalize) from exc


__all__ = ["forward_error", "explain_forward"]
