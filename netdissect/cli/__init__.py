"""The ``netdissect`` command line.

Every module in this package that defines ``add_parser(subparsers)`` and
``run(args)`` becomes a subcommand, so a stage adds its command by adding one
file here (``netdissect/cli/<command>.py``), without touching this one.

``add_parser`` must return the ``argparse.ArgumentParser`` it created;
``run`` returns an exit code (or None for 0).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from netdissect.errors import NetDissectError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdissect",
        description="Network Dissection: what the hidden units of vision networks detect.",
    )
    from netdissect import __version__

    parser.add_argument("--version", action="version", version=f"netdissect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser") and hasattr(module, "run"):
            p = module.add_parser(sub)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except NetDissectError as exc:
        print(f"netdissect {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"netdissect {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return int(code or 0)
