"""``netdissect zoo``: list the bundled models (``--model zoo:NAME``).

    netdissect zoo            # name, parameters, held-out accuracy, layers
    netdissect zoo --json     # the same as JSON (list_zoo())

``--model zoo:NAME`` loads the bundled weights; ``--weights none`` gives the same
architecture untrained (seeded by ``--seed``); ``--weights PATH`` loads your own
file (safetensors or torch checkpoint) into it.
"""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("zoo", help="list the bundled models: scene classifiers and the world's generator (zoo:NAME)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def format_generators(models: list[dict]) -> str:
    """The zoo's generators as a plain-text table."""
    head = ("name", "params", "output", "z", "layers", "weights")
    rows = []
    for m in models:
        where = f"{m['size_bytes'] / 1e6:.1f} MB" if m["available"] else f"not bundled: {m['train_command']}"
        layers = f"{m['layers'][0]}..{m['layers'][-1]}" if m["layers"] else "-"
        rows.append((f"zoo:{m['name']}", f"{m['params']:,}", f"{m['resolution']} px", str(m["z_dim"]), layers, where))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(models: list[dict]) -> str:
    """The zoo as a plain-text table."""
    head = ("name", "params", "held-out acc", "layers", "weights")
    rows = []
    for m in models:
        acc = f"{m['accuracy']:.3f}" if m["accuracy"] is not None else "-"
        where = f"{m['size_bytes'] / 1e6:.1f} MB" if m["available"] else f"not bundled: {m['train_command']}"
        rows.append((f"zoo:{m['name']}", f"{m['params']:,}", acc, ",".join(m["layers"]), where))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    from netdissect.models.zoo import list_generators, list_zoo

    models = list_zoo()
    generators = list_generators()
    if args.json:
        print(json.dumps([{"kind": "classifier", **m} for m in models] + generators, indent=2))
    else:
        print(format_table(models))
        print("\nGenerators (dissect them on latent samples: --samples N --seed S --segmenter SPEC):")
        print(format_generators(generators))
        print("\nAll trained on the synthetic world only (classifiers on its scene labels); model cards: "
              "netdissect/models/zoo/weights/<name>.md")
        print("--model zoo:NAME --weights none: the same architecture untrained (seeded by --seed); "
              "--weights PATH: your own weights in it")
    return 0
