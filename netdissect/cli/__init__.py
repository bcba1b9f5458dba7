"""The ``netdissect`` command line.

Every module in this package that defines ``add_parser(subparsers)`` and
``run(args)`` becomes a subcommand, so a stage adds its command by adding one
file here (``netdissect/cli/<command>.py``), without touching this one.

``add_parser`` must return the ``argparse.ArgumentParser`` it created;
``run`` returns an exit code (or None for 0).  A module may set ``INTERRUPTED``, the line
printed after Ctrl-C (e.g. how to continue the interrupted work).  :func:`main` turns every
:class:`~netdissect.errors.NetDissectError` (and any ``OSError``) into one line on stderr.
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
            p.set_defaults(_run=module.run, _interrupted=getattr(module, "INTERRUPTED", None))
    return parser


# what an interrupted command tells the user, for commands whose module sets no ``INTERRUPTED``
_INTERRUPTED = {
    "dissect": "interrupted; the run folder keeps its last checkpoint: rerun the same command with --resume "
               "to continue",
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error(exc: OSError) -> str:
    """``PATH: reason`` for an OSError that escaped the commands' own checks (disk full, permissions)."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


def run() -> None:
    """The ``netdissect`` command (``python -m netdissect``): :func:`main`, then exit as the
    interpreter would (other threads joined, atexit handlers run, output flushed) but without tearing
    down every module one by one: once torch is imported that teardown alone takes 0.5-1 s of the
    command's wall time and frees nothing the operating system does not free at exit anyway."""
    import atexit
    import os
    import threading

    code = main()
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code.

    0: done; 1: a problem with the input or the environment, printed as one line
    ``netdissect COMMAND: error: ...`` (no traceback); 2: a usage error (argparse);
    130: interrupted (Ctrl-C), with a line saying how to continue where that is possible.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    prog = f"netdissect {args.command}"
    try:
        code = args._run(args)
    except NetDissectError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # not a bug of ours: a file system that refused (full disk, permissions, ...)
        print(f"{prog}: error: {_one_line(_os_error(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = getattr(args, "_interrupted", None) or _INTERRUPTED.get(args.command, "interrupted")
        print(f"{prog}: {hint}", file=sys.stderr)
        return 130
    return int(code or 0)
