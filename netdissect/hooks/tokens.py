"""Token layers: a transformer's (N, T, C) or (T, N, C) output, or a channels-last (N, H, W, C) map,
read as the (N, C, H, W) feature map the rest of netdissect dissects.

    >>> import torch
    >>> info = TokenInfo(prefix=1, patch=(16, 16), why="1 class token")
    >>> lay = find_layout("blocks.3", torch.zeros(2, 197, 8), 2, (224, 224), info)
    >>> lay.kind, lay.prefix, lay.grid
    ('tokens', 1, (14, 14))
    >>> lay.to_map(torch.zeros(2, 197, 8)).shape
    torch.Size([2, 8, 14, 14])

The prefix tokens (class, distillation, register tokens) are dropped and the
patch tokens are laid out on the patch grid in row-major order (token
``P + r * w + c`` is the patch at row r, column c, as every ViT flattens its
patch embedding).  :meth:`Layout.to_map` is a view (a slice, ``unflatten``
and ``permute``): no copy is made beyond the one the hooks already make.

The prefix count is read from the model (:func:`model_tokens`: timm's
``num_prefix_tokens``, torchvision's class token, a Hugging Face model's
class/distillation tokens plus ``config.num_register_tokens``, open_clip's
class embedding), never guessed; where it cannot be read, a token layer is an
error asking for ``--prefix-tokens N``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from netdissect.errors import LayerError

KINDS = ("nchw", "nhwc", "tokens", "tokens-seq")
KIND_TEXT = {"nchw": "(N, C, H, W) map", "nhwc": "channels-last (N, H, W, C) map",
             "tokens": "batch-first tokens (N, T, C)", "tokens-seq": "sequence-first tokens (T, N, C)"}


@dataclass(frozen=True)
class TokenInfo:
    """What a model says about its tokens: ``prefix`` tokens before the patch tokens (None: unknown),
    its ``patch`` size (h, w) in pixels (None: unknown), and where both were read (``why``)."""

    prefix: int | None = None
    patch: tuple[int, int] | None = None
    why: str = "the model does not say how many prefix tokens it has"


@dataclass(frozen=True)
class Layout:
    """How a layer's raw output becomes (N, C, H, W): ``kind`` (one of :data:`KINDS`), the ``prefix``
    tokens dropped, the patch ``grid`` (h, w) of a token layer, ``tokens`` T and ``why`` in words."""

    kind: str = "nchw"
    prefix: int = 0
    grid: tuple[int, int] | None = None
    tokens: int | None = None
    why: str = ""
    item: bool = False  # the output is a 1-tuple holding the tensor (older Hugging Face layers return (hidden,))

    @property
    def is_tokens(self) -> bool:
        return self.kind in ("tokens", "tokens-seq")

    def to_map(self, x: torch.Tensor, name: str = "") -> torch.Tensor:
        """The (N, C, H, W) view of output ``x`` (no copy)."""
        if self.item and isinstance(x, (tuple, list)) and len(x) == 1:
            x = x[0]
        if self.kind == "nchw":
            return x
        if not isinstance(x, torch.Tensor):
            raise LayerError(f"layer {name!r} returned {type(x).__name__}, not the {KIND_TEXT[self.kind]} "
                             "found on the first image")
        want = 4 if self.kind == "nhwc" else 3
        if x.dim() != want:
            raise LayerError(f"layer {name!r} output {tuple(x.shape)} is not the {KIND_TEXT[self.kind]} found "
                             "on the first image")
        if self.kind == "nhwc":
            return x.permute(0, 3, 1, 2)
        axis = 1 if self.kind == "tokens" else 0
        if x.shape[axis] != self.tokens:
            raise LayerError(f"layer {name!r} output {tuple(x.shape)} has {x.shape[axis]} tokens, not the "
                             f"{self.tokens} ({self.prefix} prefix + {self.grid[0]}x{self.grid[1]} patches) found on "
                             "the first image: every image must have the same size (--size)")
        h, w = self.grid
        if self.kind == "tokens":
            return x[:, self.prefix:].unflatten(1, (h, w)).permute(0, 3, 1, 2)
        return x[self.prefix:].unflatten(0, (h, w)).permute(2, 3, 0, 1)

    def prefix_view(self, x: torch.Tensor) -> torch.Tensor | None:
        """The prefix tokens of output ``x`` as (N, P, C) (a view; None for a map or no prefix)."""
        if not self.is_tokens or not self.prefix:
            return None
        if self.item and isinstance(x, (tuple, list)) and len(x) == 1:  # as to_map: a layer's 1-tuple
            x = x[0]
        return x[:, :self.prefix] if self.kind == "tokens" else x[:self.prefix].permute(1, 0, 2)

    def describe(self) -> str:
        if self.kind == "nchw":
            return f"map (N, C, H, W){': ' + self.why if self.why else ''}"
        if self.kind == "nhwc":
            return f"channels-last map (N, H, W, C): {self.why}"
        h, w = self.grid
        order = "batch-first (N, T, C)" if self.kind == "tokens" else "sequence-first (T, N, C)"
        return f"tokens {order}, T={self.tokens} = {self.prefix} prefix + {h}x{w} patch grid: {self.why}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "prefix": self.prefix, "grid": list(self.grid) if self.grid else None,
                "tokens": self.tokens, "why": self.why, **({"item": True} if self.item else {})}


NCHW = Layout()

# parameter names of prefix tokens in timm, torchvision, Hugging Face and open_clip vision models
_PREFIX_PARAMS = ("cls_token", "class_token", "class_embedding", "dist_token", "distillation_token",
                  "reg_token", "register_tokens")


def _pair(v) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    try:
        a, b = (int(t) for t in v)
        return (a, b)
    except (TypeError, ValueError):
        return None


def _hf_tokens(model: nn.Module, config) -> TokenInfo:
    found = {}
    for name, p in model.named_parameters():
        last = name.rsplit(".", 1)[-1]
        if last in ("cls_token", "class_embedding", "distillation_token", "register_tokens"):
            found.setdefault(last, 1 if p.dim() == 1 else int(math.prod(p.shape[:-1])))
    regs = int(getattr(config, "num_register_tokens", 0) or 0)
    n = found.get("cls_token", 0) + found.get("class_embedding", 0) + found.get("distillation_token", 0)
    parts = [f"{k} ({v})" for k, v in found.items() if k != "register_tokens"]
    if regs:
        parts.append(f"config.num_register_tokens ({regs})")
    elif "register_tokens" in found:
        regs = found["register_tokens"]
        parts.append(f"register_tokens ({regs})")
    why = (f"Hugging Face {type(model).__name__}: " + (" + ".join(parts) if parts else
                                                     "no class, distillation or register tokens"))
    return TokenInfo(n + regs, _pair(getattr(config, "patch_size", None)), why)


def model_tokens(model: nn.Module) -> TokenInfo:
    """How many prefix tokens ``model``'s token layers have, and its patch size, read from the model.

    In order: an explicit ``num_prefix_tokens`` attribute (timm's VisionTransformer, DeiT, EVA; any
    module may set one) on the model or its first submodule having it; a torchvision
    ``VisionTransformer`` (one class token); a Hugging Face model (its class/distillation token
    parameters plus ``config.num_register_tokens``); an open_clip ``VisionTransformer`` (its class
    embedding).  Anything else: ``prefix=None`` (unknown)."""
    mods = [model] + [m for _, m in model.named_modules() if m is not model]
    holder = next((m for m in mods if isinstance(getattr(m, "num_prefix_tokens", None), int)), None)
    patch = None
    for m in mods:
        pe = getattr(m, "patch_embed", None)
        patch = _pair(getattr(pe, "patch_size", None)) if pe is not None else None
        patch = patch or _pair(getattr(m, "patch_size", None))
        if patch is None and getattr(m, "config", None) is not None:
            patch = _pair(getattr(m.config, "patch_size", None))
        if patch:
            break
    if holder is not None:
        where = "" if holder is model else f" of {type(holder).__name__}"
        return TokenInfo(int(holder.num_prefix_tokens), patch, f"num_prefix_tokens{where} = {holder.num_prefix_tokens}")
    try:
        from torchvision.models import VisionTransformer as TVViT
    except ImportError:  # pragma: no cover
        TVViT = ()
    for m in mods:
        if TVViT and isinstance(m, TVViT):
            return TokenInfo(1, _pair(m.patch_size), "torchvision VisionTransformer: 1 class token")
    for m in mods:
        config = getattr(m, "config", None)
        if config is not None and type(m).__module__.startswith("transformers."):
            return _hf_tokens(m, config)
    for m in mods:
        if type(m).__module__.startswith("open_clip") and hasattr(m, "class_embedding"):
            return TokenInfo(1, _pair(getattr(m, "patch_size", None)), "open_clip VisionTransformer: 1 class embedding")
    return TokenInfo(None, patch)


def _grids(H: int, W: int, n: int) -> list[tuple[int, int, int]]:
    """Every patch grid (h, w, stride) with h * w == n that an H x W input makes at some integer stride
    (floor or ceil division: patch embeddings without and with padding)."""
    found = {}
    for s in range(1, max(H, W) + 1):
        for h, w in ((H // s, W // s), (-(-H // s), -(-W // s))):
            if h * w == n and h > 0 and w > 0:
                found.setdefault((h, w), s)
    return [(h, w, s) for (h, w), s in found.items()]


def _fits(H: int, W: int, h: int, w: int) -> bool:
    return any((a, b) == (h, w) for a, b, _ in _grids(H, W, h * w))


def _tuple_error(name: str, output) -> LayerError:
    parts = []
    for i, v in enumerate(output if isinstance(output, (tuple, list)) else []):
        parts.append(f"[{i}] {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    what = f"a {type(output).__name__} ({', '.join(parts)})" if parts else f"a {type(output).__name__}"
    parent = name.rpartition(".")[0]
    return LayerError(
        f"layer {name!r} outputs {what}, not a feature map or a token sequence (an attention module returns "
        f"its output with its weights): dissect the block that holds it"
        + (f", e.g. {parent!r}," if parent else "")
        + " or a submodule that returns the tokens as one tensor (its output projection or MLP); "
        "`netdissect layers` shows every module's output")


def find_layout(name: str, output, batch: int, input_hw: tuple[int, int], info: TokenInfo,
                prefix_tokens: int | None = None, force: str | None = None) -> Layout:
    """The :class:`Layout` of layer ``name`` whose raw ``output`` came from a batch of ``batch`` images of
    size ``input_hw``; ``info`` from :func:`model_tokens`, ``prefix_tokens`` (``--prefix-tokens``)
    overrides it, ``force`` (one of :data:`KINDS`) names the layout outright.  Raises
    :class:`LayerError` for an output that is not a map or token sequence, or that cannot be laid
    out without a guess (saying what to pass)."""
    H, W = (int(v) for v in input_hw)
    if isinstance(output, (tuple, list)) and len(output) == 1 and isinstance(output[0], torch.Tensor):
        import dataclasses

        # a 1-tuple (a Hugging Face layer of transformers < 5 returns (hidden_states,)): its one tensor
        lay = find_layout(name, output[0], batch, input_hw, info, prefix_tokens, force)
        return dataclasses.replace(lay, item=True, why=(lay.why + "; " if lay.why else "") + "the tensor in a 1-tuple")
    if isinstance(output, (tuple, list, dict)) or not isinstance(output, torch.Tensor):
        raise _tuple_error(name, output)
    shape = tuple(output.shape)
    if force is not None and force not in KINDS:
        raise LayerError(f"--layout {name}={force}: the layout must be one of {', '.join(KINDS)}")
    if output.dim() == 4:
        a, b, c = shape[1:]
        if force in ("nchw", "nhwc"):
            return Layout(force, why="as --layout says") if force == "nhwc" else Layout(why="as --layout says")
        if force is not None:
            raise LayerError(f"--layout {name}={force}: the layer outputs a 4-d {shape}; use nchw or nhwc")
        cf, hf = _fits(H, W, b, c), _fits(H, W, a, b)
        if hf and not cf:
            return Layout("nhwc", why=f"{a}x{b} is the grid of the {H}x{W} input at stride "
                          f"{next(s for h, w, s in _grids(H, W, a * b) if (h, w) == (a, b))}, {b}x{c} is not; "
                          f"{c} channels last")
        if hf and cf:
            return Layout(why=f"{b}x{c} and {a}x{b} both fit the {H}x{W} input: taken as torch's (N, C, H, W); "
                          f"pass --layout {name}=nhwc if its {c} channels are last")
        return NCHW
    if output.dim() != 3:
        hint = (" (one vector per image: a pooled or class-token output has no spatial map)"
                if output.dim() == 2 else "")
        raise LayerError(f"layer {name!r} outputs {shape}; dissection needs 4-D (N, C, H, W) feature maps or "
                         f"(N, T, C) / (T, N, C) token sequences{hint}: `netdissect layers` shows output shapes")
    if force in ("nchw", "nhwc"):
        raise LayerError(f"--layout {name}={force}: the layer outputs a 3-d {shape}; use tokens or tokens-seq")
    if force is not None:
        kind = force
    elif shape[0] == batch and shape[1] != batch:
        kind = "tokens"
    elif shape[1] == batch and shape[0] != batch:
        kind = "tokens-seq"
    else:
        raise LayerError(f"layer {name!r} outputs {shape} for a batch of {batch}: neither axis 0 nor axis 1 alone "
                         f"is the batch, so the token order is unclear: pass --layout {name}=tokens (N, T, C) "
                         "or tokens-seq (T, N, C)")
    T = shape[1] if kind == "tokens" else shape[0]
    order = "axis 0 is the batch" if kind == "tokens" else "axis 1 is the batch"
    if force is not None:
        order = "as --layout says"
    if prefix_tokens is not None:
        prefix, pwhy, fallback = int(prefix_tokens), f"--prefix-tokens {prefix_tokens}", False
    else:
        prefix, pwhy, fallback = info.prefix, info.why, True
    if info.patch is not None:
        ph, pw = info.patch
        h, w = H // ph, W // pw
        if prefix is not None and T == prefix + h * w:
            return Layout(kind, prefix, (h, w), T, f"{order}; {pwhy}; {H}x{W} input / {ph}x{pw} patches")
        if fallback and T == h * w:
            return Layout(kind, 0, (h, w), T, f"{order}; T = the {h}x{w} patch grid ({H}x{W} / {ph}x{pw}), "
                          "no prefix tokens yet at this layer")
    if prefix is None:
        raise LayerError(f"layer {name!r} outputs {shape}, a token sequence ({order}), but the model does not say "
                         f"how many prefix tokens (class, distillation, register) come before its patch tokens: "
                         f"pass --prefix-tokens N (prefix_tokens=N), e.g. 1 for one class token, 0 for none")
    n = T - prefix
    grids = _grids(H, W, n) if n > 0 else []
    if len(grids) == 1:
        h, w, s = grids[0]
        return Layout(kind, prefix, (h, w), T, f"{order}; {pwhy}; {n} patch tokens = the {h}x{w} grid of the "
                      f"{H}x{W} input at stride {s}")
    if not grids:
        raise LayerError(f"layer {name!r} outputs {shape} ({order}): {T} tokens less {prefix} prefix ({pwhy}) "
                         f"leave {n}, which is no patch grid of the {H}x{W} input: pass --prefix-tokens N with "
                         "the model's true count, or use images of the size the model was built for (--size)")
    raise LayerError(f"layer {name!r} outputs {shape}: {n} patch tokens fit several grids of the {H}x{W} input "
                     f"({', '.join(f'{h}x{w}' for h, w, _ in grids)}): the model's patch size is unknown, "
                     "give the model a patch_size attribute")


def probe_layout(model: nn.Module, layer: str, x: torch.Tensor, prefix_tokens: int | None = None,
                 force: str | None = None) -> Layout:
    """The :class:`Layout` of ``layer`` from one forward pass of ``x`` that stops after it."""
    from netdissect.hooks.trace import TraceDict, run_to_layers

    with TraceDict(model, [layer], stop=True) as tr, torch.inference_mode():
        raw = run_to_layers(model, tr, x)[layer]
    return find_layout(layer, raw, x.shape[0], tuple(x.shape[-2:]), model_tokens(model), prefix_tokens, force)


__all__ = ["Layout", "TokenInfo", "KINDS", "NCHW", "find_layout", "model_tokens", "probe_layout"]
