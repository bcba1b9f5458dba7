"""``netdissect segmenters``: the segmenters ``--segmenter`` takes, with their concepts and categories.

    netdissect segmenters               # bundled and installed segmenters, concepts per category
    netdissect segmenters --protocol    # what a file.py:factory segmenter must provide
    netdissect segmenters --json
"""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("segmenters", help="list the segmenters --segmenter takes (labels for --images)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--protocol", action="store_true", help="print the protocol of a user segmenter")
    p.add_argument("--segmenter", default=None, metavar="SPEC", help="describe this one only (e.g. hf:PATH)")
    return p


def describe_all(only: str | None = None) -> list[dict]:
    import importlib.util

    from netdissect.errors import NetDissectError
    from netdissect.segment import BUNDLED, load_segmenter

    specs = [only] if only else ["color", "zoo:world-seg"]
    out = []
    for spec in specs:
        entry = {"spec": spec, "description": BUNDLED.get(spec, "")}
        try:
            seg = load_segmenter(spec)
            cats: dict[str, list[str]] = {}
            for c, g in zip(seg.concepts, seg.categories):
                cats.setdefault(g, []).append(c)
            entry.update(available=True, n_concepts=len(seg.concepts), categories=cats)
        except NetDissectError as exc:
            entry.update(available=False, why=str(exc))
        out.append(entry)
    if not only:
        hf = importlib.util.find_spec("transformers") is not None
        out.append({"spec": "hf:PATH_OR_ID", "description": BUNDLED["hf:PATH_OR_ID"], "available": hf,
                    **({} if hf else {"why": "transformers is not installed: pip install netdissect[segment]"})})
        out.append({"spec": "file.py:factory", "description": BUNDLED["file.py:factory"], "available": True})
    return out


def run(args) -> int:
    from netdissect import segment

    if args.protocol:
        print(segment.__doc__.split("The protocol", 1)[1].split("Specs (", 1)[0].strip())
        return 0
    entries = describe_all(args.segmenter)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        state = "" if e["available"] else f"  [unavailable: {e['why']}]"
        print(f"{e['spec']:18s} {e['description']}{state}")
        for g, names in e.get("categories", {}).items():
            print(f"    {g} ({len(names)}): {', '.join(names)}")
    print("\nCombine with +, e.g. --segmenter zoo:world-seg+color; --quad-parts adds <object>-top/-bottom/-left/-right.")
    return 0
