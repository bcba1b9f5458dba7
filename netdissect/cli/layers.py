"""``netdissect layers``: list a model's layer names with their output shapes."""
from __future__ import annotations

import argparse

from netdissect.cli._common import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("layers", help="list layer names and output shapes of a model",
                       description="Run one dummy image through the model and print every submodule's "
                       "dotted name with its output shape (4-D outputs can be dissected).")
    add_model_args(p)
    p.add_argument("--size", type=int, default=224, help="side of the dummy input image (default 224)")
    return p


def run(args) -> int:
    import torch

    from netdissect.models import load_model

    model, prep = load_model(args.model, weights=args.weights or "none" if args.model.startswith("torchvision:")
                             else args.weights, normalize=args.normalize)
    shapes = {}
    hooks = []
    for name, mod in model.named_modules():
        if not name:
            continue
        def hook(m, i, o, _n=name):
            shapes.setdefault(_n, tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__)
        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(prep(torch.rand(1, 3, args.size, args.size)))
    finally:
        for h in hooks:
            h.remove()
    width = max(len(n) for n, _ in model.named_modules())
    for name, mod in model.named_modules():
        if not name:
            continue
        s = shapes.get(name, "(not run)")
        mark = "  dissectable" if isinstance(s, tuple) and len(s) == 4 else ""
        print(f"{name:<{width}}  {type(mod).__name__:<18} {str(s):<22}{mark}")
    return 0
