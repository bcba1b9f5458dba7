"""``netdissect layers``: list a model's layer names, how often each runs, and its output shapes.

A module that runs more than once per forward pass (torchvision's
``BasicBlock.relu``) is listed with one line per call, ``NAME#1``,
``NAME#2``...: those are the names to dissect, since the plain name has no
single output.
"""
from __future__ import annotations

import argparse

from netdissect.cli._common import add_model_args, add_token_args
from netdissect.errors import ModelError, NetDissectError

MAX_SIZE = 4096


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("layers", help="list layer names, calls per forward pass and output shapes of a model",
                       description="Run one random image (a generator: one latent z) through the model and print every submodule's "
                       "dotted name, how many times it runs per forward pass, and the output shape of each "
                       "call (4-D outputs can be dissected). A module that runs more than once has no single "
                       "output: dissect one call as NAME#K, listed below it.")
    add_model_args(p)
    p.add_argument("--size", type=int, default=None,
                   help=f"side of the random input image in pixels, 1 to {MAX_SIZE} (default: the model's own input "
                   "size where its library records one, else 224)")
    add_token_args(p)
    return p


def _dissectable(name, shape, tokens) -> str:
    """``dissectable``, or for a token layer / channels-last map its layout and why (hooks.tokens)."""
    if isinstance(shape, tuple) and (len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))):
        return "dissectable: image-level (one vector per image)"
    if not isinstance(shape, tuple) or len(shape) not in (3, 4):
        return ""
    if tokens is None:
        return "dissectable" if len(shape) == 4 else ""
    import torch

    from netdissect.errors import LayerError
    from netdissect.hooks.tokens import find_layout

    info, hw, prefix, force = tokens
    try:
        lay = find_layout(name, torch.empty(shape, device="meta"), 1, hw, info, prefix, force.get(name))
    except LayerError as exc:
        return "" if len(shape) == 3 and "prefix tokens" not in str(exc) else f"not dissectable: {exc}"
    _WHY.setdefault(lay.why, name) if lay.why else None
    if lay.kind == "nchw":
        return "dissectable" + (" (see note)" if lay.why else "")
    if lay.kind == "nhwc":
        return f"dissectable: channels-last map, {shape[1]}x{shape[2]} grid, {shape[3]} units"
    h, w = lay.grid
    order = "batch-first" if lay.kind == "tokens" else "sequence-first"
    return (f"dissectable: tokens (tokens, dim) = ({lay.tokens}, {shape[-1]}) = {lay.prefix} prefix + {h}x{w} "
            f"patch grid, {order}")


_WHY: dict = {}  # each distinct reason a layout was found, with the first layer it explains


def run(args) -> int:
    import torch

    from netdissect.hooks import layer_calls
    from netdissect.hooks.trace import _reason
    from netdissect.models import load_model

    from netdissect.hooks.tokens import model_tokens

    if args.size is not None and not 1 <= args.size <= MAX_SIZE:
        raise NetDissectError(f"--size {args.size} is not a usable image side for model {args.model}: "
                              f"give a whole number of pixels from 1 to {MAX_SIZE} (224 suits most ImageNet models)")
    # the architecture is what is listed: library models default to random weights (no download)
    library = args.model.partition(":")[0] in ("torchvision", "timm", "hf", "open_clip")
    model, prep = load_model(args.model, weights=args.weights or "none" if library else args.weights,
                             normalize=args.normalize, seed=args.seed)
    from netdissect.models.loading import GeneratorIO

    if isinstance(prep, GeneratorIO):  # a generator (zoo:world-gan, proggan:PATH) takes one latent z
        try:
            calls = layer_calls(model, prep(torch.randn(1, prep.z_dim)))
        except ModelError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise ModelError(f"generator {args.model} fails on one latent z of size {prep.z_dim}: "
                             f"{_reason(cause)}") from exc
        return _print(model, calls)
    if args.size is None:
        own = getattr(prep, "size", None)
        args.size = int(own[0]) if own else 224
    tokens = (model_tokens(model), (args.size, args.size), args.prefix_tokens, dict(args.layout or []))
    try:
        calls = layer_calls(model, prep(torch.rand(1, 3, args.size, args.size)))
    except ModelError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        own = getattr(prep, "size", None)
        fix = (f"the model is built for {own[0]}x{own[1]} images: pass --size {own[0]}" if own else
               "if the image is too small for the model, pass a larger --size (224 suits most ImageNet models)")
        raise ModelError(f"model {args.model} fails on one {args.size}x{args.size} image (--size {args.size}): "
                         f"{_reason(cause)}; {fix}") from exc
    return _print(model, calls, tokens)


def _print(model, calls, tokens=None) -> int:
    names = list(calls)
    types = {name: type(mod).__name__ for name, mod in model.named_modules() if name}
    width = max([len(n) + 4 for n in names] + [len("name")])
    tw = max([len(t) for t in types.values()] + [len("type")])
    rows = [f"{'name':<{width}}  {'type':<{tw}}  {'calls':>5}  output shape"]
    multi = []
    for name in names:
        shapes = calls[name]
        if not shapes:
            rows.append(f"{name:<{width}}  {types[name]:<{tw}}  {0:>5}  (not run)")
        elif len(shapes) == 1:
            rows.append(f"{name:<{width}}  {types[name]:<{tw}}  {1:>5}  {str(shapes[0]):<22} "
                        f"{_dissectable(name, shapes[0], tokens)}".rstrip())
        else:
            multi.append(name)
            rows.append(f"{name:<{width}}  {types[name]:<{tw}}  {len(shapes):>5}  "
                        f"runs {len(shapes)}x per forward pass: no single output, dissect one call:")
            for k, shape in enumerate(shapes, 1):
                rows.append(f"{'  ' + name + '#' + str(k):<{width}}  {'':<{tw}}  {'':>5}  {str(shape):<22} "
                            f"{_dissectable(name, shape, tokens)}".rstrip())
    print("\n".join(rows))
    if _WHY:
        print("\nlayouts found (docs/transformers.md): " + "; ".join(f"{n}: {why}" for why, n in _WHY.items()))
        _WHY.clear()
    if multi:
        print(f"\n{len(multi)} module(s) run more than once per forward pass ({', '.join(multi[:4])}"
              f"{', ...' if len(multi) > 4 else ''}): dissect one call as NAME#K (e.g. {multi[0]}#2), "
              "or a module that runs once")
    return 0
