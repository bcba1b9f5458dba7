"""``netdissect experiment``: the CVPR 2017 experiments, one command each.

    netdissect experiment rotation --model zoo:scene-cnn --layer conv5 --dataset D --alphas 0,0.5,1 --seed 1,2,3 --out runs/rot
    netdissect experiment basis    --model zoo:scene-cnn --layer conv5 --dataset D --basis pca --out runs/pca
    netdissect experiment probe    --models zoo:scene-cnn,zoo:scene-cnn-bn --layer conv5 --dataset D --task object --out runs/probe
    netdissect experiment robustness RUN --noise 0.02
    netdissect experiment training --models zoo:scene-cnn@none,zoo:scene-cnn-step50,zoo:scene-cnn --layer conv5 --dataset D --out runs/train
"""
from __future__ import annotations

import argparse


def _common(p, models: bool = False) -> None:
    if models:
        p.add_argument("--models", required=True, metavar="SPEC,...",
                       help="comma-separated model specs; SPEC@WEIGHTS for other weights "
                       "(zoo:scene-cnn@none: the untrained twin)")
    else:
        p.add_argument("--model", required=True, help="torchvision:NAME | zoo:NAME | path/to/file.py:factory")
        p.add_argument("--weights", default=None, help="as for `netdissect dissect`")
        p.add_argument("--normalize", default=None, help="imagenet | none | MEAN,STD (default: the weights' own)")
    p.add_argument("--layer", required=True, help="the layer to dissect (one)")
    p.add_argument("--dataset", required=True, help="Broden-format dataset folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--quantile", type=float, default=0.005)
    p.add_argument("--iou-threshold", type=float, default=0.04)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="resize the images to N x N before the model (a ViT built for 224 px: --size 224), with "
                   "the model's recorded interpolation; masks keep their size")
    p.add_argument("--prefix-tokens", type=int, default=None, metavar="N",
                   help="a token layer's prefix tokens (class, distillation, register) where the model does not say")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("experiment", help="the CVPR 2017 experiments (rotation, basis, probe, training)",
                       description="Reproduce the experiments of Network Dissection (CVPR 2017); "
                       "docs/experiments.md has the measured results.")
    s = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    s.required = True
    r = s.add_parser("rotation", help="unique detectors in the rotated bases Q^alpha (Sec. 3.2, Fig. 4)")
    _common(r)
    r.add_argument("--alphas", default="0,0.2,0.4,0.6,0.8,1", help="degrees of rotation in [0, 1] (comma-separated)")
    r.add_argument("--seed", default="1", help="seeds of the random rotations, comma-separated (e.g. 1,2,3)")
    b = s.add_parser("basis", help="dissect the layer in another basis (random, pca, ica or a matrix file): a normal run")
    _common(b)
    b.add_argument("--basis", required=True, metavar="random|pca|ica|FILE",
                   help="random (a uniformly random rotation), pca (principal directions over the probe), "
                   "ica (FastICA), or a (K, C) matrix: FILE.npy, FILE.safetensors or FILE.safetensors:KEY")
    b.add_argument("--seed", type=int, default=1, help="seed of the random rotation / ICA / position sample")
    b.add_argument("--topk", type=int, default=10)
    b.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    q = s.add_parser("probe", help="linear-probe accuracy vs unique detectors across models (Sec. 3.6, Fig. 12)")
    _common(q, models=True)
    q.add_argument("--task", default="object", help="category whose concepts' presence per image is the task")
    q.add_argument("--test-share", type=float, default=0.3, help="share of images held out (default 0.3)")
    q.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split")
    t = s.add_parser("training", help="unique detectors over training snapshots and variants (Sec. 3.3-3.5)")
    _common(t, models=True)
    n = s.add_parser("robustness", help="share of a run's detector labels that flip under Gaussian input noise "
                     "(docs/label-trust.md)")
    n.add_argument("run_dir", metavar="RUN", help="a finished run (of a model spec on a Broden dataset)")
    n.add_argument("--noise", type=float, default=0.02, help="standard deviation of the noise, images in [0, 1] "
                   "(default 0.02, as published)")
    n.add_argument("--seed", type=int, default=0, help="seed of the noise")
    n.add_argument("--out", default=None, help="folder for robustness.json/.csv (default: RUN/robustness)")
    n.add_argument("--workers", type=int, default=None)
    n.add_argument("--device", default="cpu")
    n.add_argument("--quiet", action="store_true")
    return p


def _kw(args) -> dict:
    return {"quantile": args.quantile, "iou_threshold": args.iou_threshold, "batch_size": args.batch_size,
            "num_workers": args.workers, "device": args.device, "limit": args.limit, "size": args.size,
            "prefix_tokens": args.prefix_tokens}


def run(args) -> int:
    return {"rotation": _rotation, "basis": _basis, "probe": _probe, "training": _training,
            "robustness": _robustness}[args.experiment](args)


def _robustness(args) -> int:
    from pathlib import Path

    from netdissect.trust.robustness import robustness, table

    out = args.out or str(Path(args.run_dir) / "robustness")
    report = robustness(args.run_dir, args.noise, out, seed=args.seed, num_workers=args.workers,
                        progress=not args.quiet, device=args.device)
    print(table(report))
    print(f"results: {out}/robustness.json, {out}/robustness.csv")
    return 0


def _claim(args, marker: str):
    """``--out`` claimed for this experiment (netdissect.runout): locked, apart from --dataset, empty or
    a run of the same experiment; the results are moved in whole, ``marker`` last."""
    from netdissect.runout import claim_output

    if args.batch_size is not None and args.batch_size < 1:
        from netdissect.errors import NetDissectError

        raise NetDissectError(f"--batch-size must be a whole number >= 1, got {args.batch_size}")
    return claim_output(args.out, f"experiment {args.experiment}", marker, inputs=[("--dataset", args.dataset)])


def _rotation(args) -> int:
    from netdissect.experiments.sweep import rotation_sweep

    with _claim(args, "rotation.json") as o:
        table = rotation_sweep(args.model, args.layer, args.dataset, alphas=args.alphas, seeds=args.seed,
                               out=o.stage, progress=not args.quiet, weights=args.weights, normalize=args.normalize,
                               **_kw(args))
        o.commit()
    print(table.table())
    print(f"results: {args.out}/rotation.csv, {args.out}/rotation.png")
    return 0


def _basis(args) -> int:
    from netdissect.experiments.basis import ActivationRun, ica_basis, load_basis, pca_basis
    from netdissect.experiments.rotation import random_rotation
    from netdissect.runfolder import RunLock, check_out

    from netdissect.runout import check_apart

    if str(args.out).strip():
        check_apart(args.out, [("--dataset", args.dataset)])
    check_out(args.out)
    with RunLock(args.out):
        with ActivationRun(args.model, args.layer, args.dataset, weights=args.weights, normalize=args.normalize,
                           topk=args.topk, progress=not args.quiet, **_kw(args)) as act:
            kind = args.basis
            if kind == "random":
                M, info = random_rotation(act.channels, args.seed), {"kind": "random", "seed": args.seed}
            elif kind == "pca":
                M, info = pca_basis(act, seed=args.seed)
            elif kind == "ica":
                M, info = ica_basis(act, seed=args.seed)
            else:
                M, info = load_basis(kind, act.channels), {"kind": "file", "path": str(kind)}
            info["directions"] = int(M.shape[0])
            result = act.dissect_basis(M)
            summary = act.write_run(args.out, result, info)
        from netdissect.dissection.result import load

        print(load(args.out).table())
        del summary
        if not args.no_report:
            from netdissect.cli.report import one_line_warnings
            from netdissect.report import write_report

            with one_line_warnings("experiment"):
                path = write_report(args.out)
            print(f"report: {path}")
    print(f"results: {args.out} (units are the {info['directions']} directions of the {info['kind']} basis)")
    return 0


def _probe(args) -> int:
    from netdissect.experiments.probe import probe_experiment

    with _claim(args, "probe.json") as o:
        table = probe_experiment(args.models, args.layer, args.dataset, task=args.task, test_share=args.test_share,
                                 seed=args.seed, out=o.stage, progress=not args.quiet, **_kw(args))
        o.commit()
    print(table.table())
    print(f"results: {args.out}/probe.csv, {args.out}/probe.png")
    return 0


def _training(args) -> int:
    from netdissect.experiments.training import training_experiment

    with _claim(args, "training.json") as o:
        table = training_experiment(args.models, args.layer, args.dataset, out=o.stage, progress=not args.quiet,
                                    **_kw(args))
        o.commit()
    print(table.table())
    print(f"results: {args.out}/training.csv, {args.out}/training.png")
    return 0
