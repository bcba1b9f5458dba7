"""``netdissect demo``: the main job on the embedded default, with nothing downloaded.

Generates a probe set of the synthetic world (seed 2017, never used in
training), dissects every conv stage of ``zoo:scene-cnn``, writes the run
directory and its report, and prints unique detectors per category per layer.
"""
from __future__ import annotations

import argparse
from pathlib import Path

PROBE_SEED = 2017


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="dissect the bundled scene classifier on a fresh synthetic probe set",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="folder for the probe set and the run (default runs/demo)")
    p.add_argument("--model", default="zoo:scene-cnn", help="a zoo model (default zoo:scene-cnn)")
    p.add_argument("--n", type=int, default=1000, help="probe images (default 1000)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's input size)")
    p.add_argument("--quantile", type=float, default=0.005)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> int:
    from netdissect.data.synth.export import write_world
    from netdissect.dissection import dissect
    from netdissect.models.zoo import load_zoo_model

    if not args.model.startswith("zoo:"):
        from netdissect.errors import ModelError

        raise ModelError(f"demo runs a zoo model (zoo:NAME), got {args.model!r}; use `netdissect dissect` for others")
    _, meta = load_zoo_model(args.model[4:])
    size = args.size or meta["input_size"]
    out = Path(args.out)
    probe = out / f"probe_seed{PROBE_SEED}_n{args.n}_{size}px"
    if not (probe / "index.csv").exists():
        print(f"writing probe set: {args.n} images, seed {PROBE_SEED}, {size} px -> {probe}")
        write_world(probe, n=args.n, seed=PROBE_SEED, size=size, overwrite=True, progress=not args.quiet)
    run_dir = out / "run"
    result = dissect(args.model, meta["layers"], probe, out=run_dir, quantile=args.quantile,
                     num_workers=args.workers, resume=args.resume or (run_dir / ".work").exists(),
                     progress=not args.quiet)
    print()
    print(f"{args.model}: unique detectors per category (IoU > {result.summary['config']['iou_threshold']}, "
          f"q = {args.quantile}, {result.summary['dataset']['n_used']} probe images)")
    print(result.table())
    if not args.no_report:
        from netdissect.report import write_report

        print(f"report: {write_report(run_dir)}")
    print(f"results: {run_dir}")
    return 0
