"""``netdissect explain RUN``: label units with formulas of concepts (AND, OR, AND NOT), certified optimal.

    netdissect explain runs/r18 --layer layer4 --length 3                     # exact: LAYER/formulas.csv
    netdissect explain runs/r18 --layer layer4 --length 3 --search beam --beam 10   # Mu & Andreas's search

Semantics, the bound and its proof: docs/compositional.md.
"""
from __future__ import annotations

import argparse

from netdissect.cli._common import positive_int

INTERRUPTED = ("interrupted; finished units are kept in RUN/.explain: run the same command again to continue "
               "from there")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("explain", help="label each unit with its best formula of concepts (AND/OR/AND NOT)",
                              description="Label every unit of a dissected layer with the formula of concepts "
                                          "(AND, OR, AND NOT) whose IoU with the unit's mask is highest, certified "
                                          "optimal by branch and bound (docs/compositional.md).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `netdissect dissect`")
    p.add_argument("--layer", action="append", default=None,
                   help="layer to explain (repeat for several; default: the run's only layer)")
    p.add_argument("--length", type=positive_int, default=3, help="at most this many concepts per formula (default 3)")
    p.add_argument("--search", choices=["exact", "beam"], default="exact",
                   help="exact: branch and bound, the best formula with a proof (default); beam: Mu & Andreas's beam "
                        "search, for comparison (writes LAYER/formulas-beamW.csv)")
    p.add_argument("--beam", type=positive_int, default=10, help="beam width of --search beam (default 10)")
    p.add_argument("--categories", default=None,
                   help="comma list: consider only concepts of these primary categories (default: all)")
    p.add_argument("--out", default=None, help="folder to write LAYER/formulas.csv into (default: RUN_DIR)")
    p.add_argument("--max-nodes", type=positive_int, default=None,
                   help="stop a unit's exact search after this many formulas (then certified=0 where the bound "
                        "had not closed it)")
    p.add_argument("--workers", type=int, default=0, help="label loader processes (default 0)")
    p.add_argument("--device", default=None,
                   help="torch device (e.g. cuda) for counting the masks and the search's products (default: cpu)")
    p.add_argument("--no-scorecard", dest="scorecard", action="store_false",
                   help="skip the formulas' significance (p, q: one more sweep over labels and activations)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from netdissect.errors import NetDissectError
    from netdissect.explain.run import csv_name, explain

    if args.workers < 0:
        raise NetDissectError(f"--workers {args.workers}: give 0 or more")
    out = explain(args.run_dir, layers=args.layer, length=args.length, search=args.search, beam=args.beam,
                  categories=args.categories, out=args.out, progress=not args.quiet, workers=args.workers,
                  max_nodes=args.max_nodes, device=args.device, scorecard=args.scorecard)
    for layer, rows in out.items():
        better = sum(r["iou"] > r["iou_single_best"] for r in rows)
        cert = sum(r["certified"] for r in rows)
        sig = sum(bool(r.get("significant")) for r in rows)
        tested = sum(bool(r["formula"]) for r in rows)
        print(f"{layer}: {len(rows)} units, {better} with a formula better than their best single concept, "
              f"{cert} certified optimal"
              + (f", {sig} of {tested} formulas significant (q < the run's fdr)" if args.scorecard else "") + " -> "
              f"{args.out or args.run_dir}/{layer}/{csv_name(args.search, args.beam)}")
    return 0
