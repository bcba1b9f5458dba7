"""``netdissect gan remove|insert``: the role of a generator's units (PNAS 2020 Fig. 4), after a dissection.

    netdissect dissect --model zoo:world-gan --layer layer4 --samples 5000 --seed 1 --segmenter zoo:world-seg \\
        --out runs/gan
    netdissect gan remove --run runs/gan --layer layer4 --concept tree --sizes 1,2,4,8,16,20,30 \\
        --samples 1000 --seed 2 --out runs/gan-remove
    netdissect gan insert --run runs/gan --layer layer4 --concept door --n 20 --value q99.5 \\
        --samples 500 --seed 3 --out runs/gan-insert

Units are ranked by IoU with the concept in the dissection run; the effects are measured on other
latent samples (--seed must differ from the dissection's).  The layer's activation is computed once
per batch and only the generator after the layer reruns per edit.  A killed run resumes (rerun the
same command).  Method, outputs and formulas: docs/gan-roles.md.
"""
from __future__ import annotations

import argparse

from netdissect.cli._common import positive_int, sizes_arg

INTERRUPTED = "interrupted; finished batches are kept in OUT/cache: rerun the same command to continue"


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 2**32-1, got {text!r}") from None
    if not 0 <= v <= 2 ** 32 - 1:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 2**32-1, got {text!r}")
    return v


def _value(text: str):
    from netdissect.roles.generator import VALUE_POLICIES

    if text in VALUE_POLICIES:
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--value must be q99.5, q99, mean-present or a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"--value must be a finite number, got {text!r}")
    return v


def _common(p) -> None:
    p.add_argument("--run", required=True, help="a generator dissection run (netdissect dissect --samples ...)")
    p.add_argument("--layer", required=True, help="the dissected layer whose units are edited (e.g. layer4)")
    p.add_argument("--concept", required=True,
                   help="the concept whose units are edited: a segmenter concept name (tree), or CATEGORY/NAME "
                   "where a name is in several categories (object/water)")
    p.add_argument("--seed", type=_seed, required=True,
                   help="latent seed of the measured samples; must differ from the dissection's (selection bias)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full-passes", action="store_true",
                   help="run the whole generator for every edit (the naive path; slower, for checking)")
    p.add_argument("--no-figures", action="store_true", help="write the tables only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gan", help="units of a generator: remove or insert a concept (PNAS 2020 Fig. 4)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="gan_command", metavar="{remove,insert}")
    r = sub.add_parser("remove", help="zero the concept's top units: share of its pixels removed, vs random units",
                       description="Zero the top n units (by IoU with the concept) for each n in --sizes and as "
                       "many random units; per image the concept's pixel fraction before and after; share "
                       "removed with a 99% interval (2.58 standard errors). Writes removal.csv, removal.json, "
                       "removal.npz, figures/removal_curve and figures/removal_grid (PNG and SVG).")
    _common(r)
    r.add_argument("--sizes", type=sizes_arg, default=[1, 2, 4, 8, 16, 20, 30],
                   help="numbers of units removed (default 1,2,4,8,16,20,30)")
    r.add_argument("--samples", type=positive_int, default=1000, help="latent samples measured (default 1000)")
    r.add_argument("--control-seed", type=_seed, default=0, help="seed of the random units (default 0)")
    r.add_argument("--grid", type=int, default=8, help="samples in the before/after grid (default 8; 0: none)")
    r.add_argument("--batch-size", type=positive_int, default=32)
    i = sub.add_parser("insert", help="set the concept's top units at one cell at a time: pixels added per context",
                       description="Set the concept's top n units to --value at one cell of the layer at a time "
                       "(every cell); count the concept pixels added, grouped by the label at the cell's centre "
                       "in the original segmentation (the context): mean, 99% interval (2.58 standard errors), "
                       "(sample, cell) counts. Writes insertion.csv, insertion.json, insertion.npz and "
                       "figures/insertion_contexts, insertion_map, insertion_examples (PNG and SVG).")
    _common(i)
    i.add_argument("--n", type=positive_int, default=20, help="number of top units set (default 20)")
    i.add_argument("--value", type=_value, default="q99.5",
                   help="q99.5: 99.5%% quantile of each unit's upsampled map (PNAS); q99: 99%% quantile of the "
                   "raw map (the paint app); mean-present: mean upsampled activation where the concept is "
                   "segmented; or a number. Quantiles/means over the measured samples, before any edit "
                   "(default q99.5)")
    i.add_argument("--samples", type=positive_int, default=500, help="latent samples measured (default 500)")
    i.add_argument("--min-samples", type=positive_int, default=100,
                   help="contexts with fewer (sample, cell) pairs are left out of insertion.csv (default 100; "
                   "PNAS kept contexts with at least 1000 of 640,000)")
    i.add_argument("--context-plane", type=int, default=0,
                   help="the segmentation plane the context is read from (default 0: zoo:world-seg's objects)")
    i.add_argument("--examples", type=int, default=6, help="samples in the example figure (default 6; 0: none)")
    i.add_argument("--batch-size", type=positive_int, default=64, help="edits per generator pass (default 64)")
    p.set_defaults(_gan_parser=p)
    return p


def _pc(v: float) -> str:
    """A share as a percentage with one decimal, never "-0.0"."""
    text = f"{100 * v:.1f}"
    return "0.0" if text == "-0.0" else text


def _warn_segmenter(s: dict) -> None:
    if not s.get("segmenter_matches_run", True):
        import sys

        print(f"netdissect gan: warning: segmenter {s['segmenter']!r} is not the one the dissection used (its "
              "identity, e.g. weights, changed): the units were ranked with other labels", file=sys.stderr)


def run(args) -> int:
    from netdissect.roles.generator import run_insertion, run_removal

    cmd = getattr(args, "gan_command", None)
    if cmd is None:
        args._gan_parser.print_help()
        return 2
    common = dict(device=args.device, fast=not args.full_passes, progress=not args.quiet,
                  figures=not args.no_figures, batch_size=args.batch_size)
    if cmd == "remove":
        s = run_removal(args.run, args.layer, args.concept, args.sizes, args.samples, args.seed, args.out,
                        control_seed=args.control_seed, grid=args.grid, **common)
        _warn_segmenter(s)
        parts = [f"n={r['n']}: {_pc(r['share_removed'])}% [{_pc(r['ci99_low'])}, {_pc(r['ci99_high'])}]"
                 f" (random {_pc(r['control_share_removed'])}%)" for r in s["rows"]]
        print(f"{s['concept']} at {s['layer']}: share of its pixels removed, 99% CI, {s['samples']} samples of seed "
              f"{s['seed']}:\n  " + "\n  ".join(parts) + f"\n{s['seconds']:.1f} s ({s['mode']} mode); wrote "
              f"{args.out}/removal.csv")
        return 0
    s = run_insertion(args.run, args.layer, args.concept, args.n, args.value, args.samples, args.seed, args.out,
                      min_samples=args.min_samples, context_plane=args.context_plane, examples=args.examples,
                      **common)
    _warn_segmenter(s)
    parts = [f"{r['context']}: {r['mean_added_pixels']:+.2f} [{r['ci99_low']:+.2f}, {r['ci99_high']:+.2f}] "
             f"(n={r['samples']})" for r in s["contexts"]]
    print(f"{s['concept']}: top {s['n']} units of {s['layer']} set to {s['value']['policy']} at each of "
          f"{s['cells'][0]}x{s['cells'][1]} cells; label pixels added per context, 99% CI:\n  "
          + ("\n  ".join(parts) or f"(no context has {s['min_samples']} (sample, cell) pairs: lower --min-samples)")
          + f"\n{s['seconds']:.1f} s ({s['mode']} mode); wrote {args.out}/insertion.csv")
    return 0
