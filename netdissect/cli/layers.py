"""``netdissect layers``: list a model's layer names, how often each runs, and its output shapes.

A module that runs more than once per forward pass (torchvision's
``BasicBlock.relu``) is listed with one line per call, ``NAME#1``,
``NAME#2``...: those are the names to dissect, since the plain name has no
single output.
"""
from __future__ import annotations

import argparse

from netdissect.cli._common import add_model_args
from netdissect.errors import ModelError, NetDissectError

MAX_SIZE = 4096


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("layers", help="list layer names, calls per forward pass and output shapes of a model",
                       description="Run one random image (a generator: one latent z) through the model and print every submodule's "
                       "dotted name, how many times it runs per forward pass, and the output shape of each "
                       "call (4-D outputs can be dissected). A module that runs more than once has no single "
                       "output: dissect one call as NAME#K, listed below it.")
    add_model_args(p)
    p.add_argument("--size", type=int, default=224,
                   help=f"side of the random input image in pixels, 1 to {MAX_SIZE} (default 224)")
    return p


def _dissectable(shape) -> str:
    return "dissectable" if isinstance(shape, tuple) and len(shape) == 4 else ""


def run(args) -> int:
    import torch

    from netdissect.hooks import layer_calls
    from netdissect.hooks.trace import _reason
    from netdissect.models import load_model

    if not 1 <= args.size <= MAX_SIZE:
        raise NetDissectError(f"--size {args.size} is not a usable image side for model {args.model}: "
                              f"give a whole number of pixels from 1 to {MAX_SIZE} (224 suits most ImageNet models)")
    model, prep = load_model(args.model, weights=args.weights or "none" if args.model.startswith("torchvision:")
                             else args.weights, normalize=args.normalize, seed=args.seed)
    from netdissect.models.loading import GeneratorIO

    if isinstance(prep, GeneratorIO):  # a generator (zoo:world-gan, proggan:PATH) takes one latent z
        try:
            calls = layer_calls(model, prep(torch.randn(1, prep.z_dim)))
        except ModelError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise ModelError(f"generator {args.model} fails on one latent z of size {prep.z_dim}: "
                             f"{_reason(cause)}") from exc
        return _print(model, calls)
    try:
        calls = layer_calls(model, prep(torch.rand(1, 3, args.size, args.size)))
    except ModelError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise ModelError(f"model {args.model} fails on one {args.size}x{args.size} image (--size {args.size}): "
                         f"{_reason(cause)}; if the image is too small for the model, pass a larger --size "
                         f"(224 suits most ImageNet models)") from exc
    return _print(model, calls)


def _print(model, calls) -> int:
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
                        f"{_dissectable(shapes[0])}".rstrip())
        else:
            multi.append(name)
            rows.append(f"{name:<{width}}  {types[name]:<{tw}}  {len(shapes):>5}  "
                        f"runs {len(shapes)}x per forward pass: no single output, dissect one call:")
            for k, shape in enumerate(shapes, 1):
                rows.append(f"{'  ' + name + '#' + str(k):<{width}}  {'':<{tw}}  {'':>5}  {str(shape):<22} "
                            f"{_dissectable(shape)}".rstrip())
    print("\n".join(rows))
    if multi:
        print(f"\n{len(multi)} module(s) run more than once per forward pass ({', '.join(multi[:4])}"
              f"{', ...' if len(multi) > 4 else ''}): dissect one call as NAME#K (e.g. {multi[0]}#2), "
              "or a module that runs once")
    return 0
