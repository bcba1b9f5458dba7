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
    p = subparsers.add_parser("zoo", help="list the bundled scene classifiers (zoo:NAME)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


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
    from netdissect.models.zoo import list_zoo

    models = list_zoo()
    if args.json:
        print(json.dumps(models, indent=2))
    else:
        print(format_table(models))
        print("\nAll trained on scene labels of the synthetic world only; model cards: "
              "netdissect/models/zoo/weights/<name>.md")
        print("--model zoo:NAME --weights none: the same architecture untrained (seeded by --seed); "
              "--weights PATH: your own weights in it")
    return 0
