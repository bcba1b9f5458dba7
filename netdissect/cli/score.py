"""``netdissect score RUN``: add the label scorecard (significance, stability, held-out
prediction; docs/label-trust.md) to a finished run from its kept activation cache.

    $ netdissect dissect ... --keep-cache --out runs/r18
    $ netdissect score runs/r18 --fdr 0.01
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "score", help="add the label scorecard to a finished run (from its kept activation cache)",
        description="Compute each unit label's scorecard (p and BH q-values under an image-permutation null, "
                    "bootstrap stability, held-out prediction) for a finished run, from the activation cache "
                    "that `dissect --keep-cache` kept in RUN/cache; without it, says what to rerun.",
    )
    p.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    add_scorecard_options(p, seed_flag="--seed")
    p.add_argument("--workers", type=int, default=0, help="loader processes for the labels (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_scorecard_options(p, seed_flag: str = "--scorecard-seed") -> None:
    p.add_argument("--fdr", type=float, default=0.05,
                   help="a detector also needs its label's BH q-value below this (default 0.05; 1: the IoU rule alone)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of probe images held out to score labels chosen on the others (default 0.2)")
    p.add_argument(seed_flag, dest="scorecard_seed", type=int, default=0, metavar="S",
                   help="seed of the holdout split and the bootstrap (default 0; recorded)")


def run(args) -> int:
    from netdissect.trust.rescore import absent_note, score_run
    from netdissect.trust.scorecard import layer_summary_line

    result = score_run(args.run_dir, fdr=args.fdr, holdout=args.holdout, seed=args.scorecard_seed,
                       num_workers=args.workers, progress=not args.quiet)
    for name, lr in result.items():
        if lr.scorecard_summary is not None:  # (an image-level layer has its own p and q, not rescored)
            print(f"{name}: {layer_summary_line(lr.scorecard_summary)}")
    for line in absent_note(result):
        print(f"netdissect score: {line}")
    print(f"results: {args.run_dir} (netdissect report {args.run_dir} shows them)")
    return 0
