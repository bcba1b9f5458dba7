"""``netdissect adversarial``: which units a targeted attack moves (PNAS 2020, "Applications").

    netdissect adversarial --model zoo:scene-cnn --layer conv5 --ablation runs/ablate --val data/world-val \\
        --attack cw --targets forest,office --n 200 --out runs/adv

Correctly classified val images of other classes are attacked toward each
target (Carlini-Wagner L2 or PGD L-inf); per unit the change of its peak
activation, grouped into the target's and the source's 4 most important
units (from --ablation) and the rest, with 99% intervals.
"""
from __future__ import annotations

import argparse

from netdissect.errors import NetDissectError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("adversarial", help="targeted attacks explained by the units they move",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--normalize", default=None)
    p.add_argument("--layer", required=True)
    p.add_argument("--ablation", required=True, help="a finished `netdissect ablate` run of the same layer")
    p.add_argument("--val", required=True, help="labelled images to attack")
    p.add_argument("--out", required=True)
    p.add_argument("--attack", choices=["cw", "pgd"], default="cw")
    p.add_argument("--targets", required=True, help="comma list of target classes")
    p.add_argument("--n", type=int, default=200, help="images attacked per target (default 200)")
    p.add_argument("--steps", type=int, default=None, help="iterations (default: cw 1000 per search step, pgd 40)")
    p.add_argument("--binary-steps", type=int, default=5, help="cw: binary-search steps over c (default 5)")
    p.add_argument("--initial-const", type=float, default=1e-2, help="cw: initial c (default 0.01)")
    p.add_argument("--lr", type=float, default=None, help="cw: Adam step (5e-3); pgd: step size (eps/10)")
    p.add_argument("--eps", type=float, default=16 / 255, help="pgd: L-inf budget on [0, 1] pixels (16/255)")
    p.add_argument("--classes", default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--prefix-tokens", type=int, default=None, metavar="N",
                   help="token layers: the prefix tokens before the patch tokens, where the model does not say")
    return p


def run(args) -> int:
    from netdissect.roles.adversarial import run_adversarial

    if args.n < 1:
        raise NetDissectError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise NetDissectError(f"--steps must be >= 1, got {args.steps}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    s = run_adversarial(args.model, args.layer, args.ablation, args.val, args.out, attack=args.attack,
                        targets=targets, n=args.n, weights=args.weights, normalize=args.normalize,
                        classes=args.classes, size=args.size, batch_size=args.batch_size, device=args.device,
                        eps=args.eps, steps=args.steps, binary_steps=args.binary_steps, lr=args.lr,
                        initial_const=args.initial_const, seed=args.seed, progress=not args.quiet,
                        prefix_tokens=args.prefix_tokens)
    print(f"{s['succeeded']} of {s['attacked']} attacks succeeded ({s['attack']}, median L2 {s['median_l2']:.3f}); "
          f"wrote {args.out}/adversarial.json")
    return 0
