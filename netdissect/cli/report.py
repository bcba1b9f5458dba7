"""``netdissect report RUN_DIR [--out DIR]``: write the run's HTML report.

    $ netdissect report runs/demo
    runs/demo/report/index.html

Open the printed file in a browser; it needs no network access.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="write a run's HTML report (RUN_DIR/report/index.html)",
        description="Write an offline HTML report of a dissection run: per-layer summaries, "
                    "and per unit its label, IoU, runner-up concepts and top images.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `netdissect dissect`")
    p.add_argument("--out", metavar="DIR", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--tile", type=int, default=112, help="size in pixels of each image in a strip (default 112)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that draw the image strips (default: one per core, at most 8; 0: none)")
    p.add_argument("--no-verify", action="store_true",
                   help="draw the dataset's images even when they changed since the run "
                        "(default: refuse, as the top images would show other pictures)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from netdissect.errors import NetDissectError
    from netdissect.report import write_report

    if args.tile < 16 or args.tile > 512:
        raise NetDissectError(f"--tile {args.tile}: choose a size between 16 and 512 pixels")
    if args.workers is not None and args.workers < 0:
        raise NetDissectError(f"--workers {args.workers}: give 0 (draw in this process) or more")
    with one_line_warnings("report"):
        index = write_report(args.run_dir, args.out, tile=args.tile, progress=not args.quiet,
                             workers=args.workers, verify=not args.no_verify)
    print(index)
    return 0


@contextlib.contextmanager
def one_line_warnings(command: str):
    """Show the report's warnings as ``netdissect COMMAND: warning: ...`` lines (no source line)."""
    from netdissect.report.build import ReportWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", ReportWarning)
        old = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ReportWarning):
                print(f"netdissect {command}: warning: {message}", file=sys.stderr)
            else:
                old(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = old
