"""``netdissect report RUN_DIR [--out DIR]``: write the run's HTML report.

    $ netdissect report runs/demo
    runs/demo/report/index.html

Open the printed file in a browser; it needs no network access.
"""
from __future__ import annotations

import argparse


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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from netdissect.errors import NetDissectError
    from netdissect.report import write_report

    if args.tile < 16 or args.tile > 512:
        raise NetDissectError(f"--tile {args.tile}: choose a size between 16 and 512 pixels")
    if args.workers is not None and args.workers < 0:
        raise NetDissectError(f"--workers {args.workers}: give 0 (draw in this process) or more")
    index = write_report(args.run_dir, args.out, tile=args.tile, progress=not args.quiet, workers=args.workers)
    print(index)
    return 0
