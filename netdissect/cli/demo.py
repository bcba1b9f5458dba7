"""``netdissect demo``: the whole story on the embedded default, with nothing downloaded.

1. **What units learned** (CVPR 2017): generates a probe set of the synthetic world
   (seed 2017, never used in training), dissects every conv stage of ``zoo:scene-cnn-wide`` and
   prints unique detectors per category per layer (``run/``).
2. **What units do in a classifier** (PNAS 2020): ranks conv5's units by how much removing each
   one costs each scene class on a second world set (seed 2018), then removes the most important
   units on the probe set (``netdissect ablate``; ``roles/``).
3. **Units in a generator** (PNAS 2020): dissects ``zoo:world-gan`` at layer4 and layer6 on
   latent samples of seed 1 labelled by ``zoo:world-seg`` (``gan/``), then switches off the units
   of the object concept with the most detectors on other samples (seed 2; ``gan-remove/``) and
   switches them on one cell at a time (seed 3; ``gan-insert/``).

``index.html`` in ``--out`` links the reports and figures of every step and prints the command line
of every step as the demo ran it (each step runs through the CLI, so each printed command is one that
ran).  ``--parts`` runs a subset; ``--resume`` continues an interrupted demo and skips finished steps.
"""
from __future__ import annotations

import argparse
from pathlib import Path

PROBE_SEED = 2017


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="dissect the bundled scene classifier on a fresh synthetic probe set",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="folder for the probe set and the run (default runs/demo)")
    p.add_argument("--model", default="zoo:scene-cnn-wide", help="a zoo model (default zoo:scene-cnn-wide)")
    p.add_argument("--n", type=int, default=1000, help="probe images (default 1000)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's input size)")
    p.add_argument("--quantile", type=float, default=0.005)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    p.add_argument("--parts", default="dissect,roles,gan",
                   help="which steps to run: a comma list of dissect, roles, gan (default all three)")
    p.add_argument("--gan-samples", type=int, default=1000, help="latent samples of the generator dissection")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


PARTS = ("dissect", "roles", "gan")
ROLES_SEED = 2018


def _parts(value: str) -> list[str]:
    from netdissect.errors import NetDissectError

    parts = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise NetDissectError(f"--parts {value!r}: expected a comma list of {', '.join(PARTS)}")
    return parts


def _cli(argv: list[str], commands: list | None = None, what: str = "", skip: bool = False) -> None:
    """Run ``netdissect ARGV`` (unless ``skip``: a step --resume finds done); record it for the story page
    (without --quiet, --resume and --no-report, which change how it runs, not what it computes)."""
    from netdissect.cli import main
    from netdissect.errors import NetDissectError

    if commands is not None:
        commands.append([what, [a for a in argv if a not in ("--quiet", "--resume", "--no-report")]])
    if skip:
        return
    code = main(argv)
    if code:
        raise NetDissectError(f"demo step `netdissect {' '.join(argv)}` failed (exit {code})")


def top_concept(units_csv: Path, category: str = "object") -> tuple[str, int]:
    """The ``category`` concept with the most detector units in a run's units.csv (ties: larger summed
    IoU), and that number of units."""
    import csv

    count: dict[str, list[float]] = {}
    with open(units_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["detector"] == "1" and row["category"] == category:
                count.setdefault(row["label"], []).append(float(row["iou"]))
    if not count:
        from netdissect.errors import NetDissectError

        raise NetDissectError(f"{units_csv}: no {category} detectors to edit")
    name = max(count, key=lambda k: (len(count[k]), sum(count[k])))
    return name, len(count[name])


def run(args) -> int:
    parts = _parts(args.parts)
    out = Path(args.out)
    story: dict = {"commands": []}
    if not args.no_report:
        from netdissect.report.story import write_story

        # a first page now, so that the reports written below find it and link back to it
        write_story(out, {}, running=True)
    if "dissect" in parts:
        story["dissect"] = _dissect(args, out, story["commands"])
    if "roles" in parts:
        story["roles"] = _roles(args, out, story["commands"])
    if "gan" in parts:
        story["gan"] = _gan(args, out, story["commands"])
    if not args.no_report:
        print(f"the whole story: {write_story(out, story)}")
    return 0


def _dissect(args, out: Path, commands: list) -> dict:
    from netdissect.dissection import load
    from netdissect.models.zoo import load_zoo_model

    if not args.model.startswith("zoo:"):
        from netdissect.errors import ModelError

        raise ModelError(f"demo runs a zoo model (zoo:NAME), got {args.model!r}; use `netdissect dissect` for others")
    _, meta = load_zoo_model(args.model[4:])
    size = args.size or meta["input_size"]
    quiet = ["--quiet"] if args.quiet else []
    probe = _world(out, PROBE_SEED, args.n, size, args.quiet, commands,
                   "the probe set: a synthetic world never used in training")
    run_dir = out / "run"
    argv = ["dissect", "--model", args.model, *[a for layer in meta["layers"] for a in ("--layer", layer)],
            "--dataset", str(probe), "--out", str(run_dir), "--quantile", str(args.quantile)]
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    resume = ["--resume"] if (args.resume or (run_dir / ".work").exists()) else []
    _cli(argv + resume + (["--no-report"] if args.no_report else []) + quiet, commands,
         "Network Dissection of every conv stage", skip=args.resume and (run_dir / "summary.json").exists())
    result = load(run_dir)
    print()
    print(f"{args.model}: unique detectors per category (IoU > {result.summary['config']['iou_threshold']}, "
          f"q = {args.quantile}, {result.summary['dataset']['n_used']} probe images)")
    print(result.table())
    print(f"results: {run_dir}")
    return {"run": "run", "model": args.model, "table": result.table(), "probe": probe.name,
            "n": result.summary["dataset"]["n_used"]}


def _world(out: Path, seed: int, n: int, size: int, quiet: bool, commands: list | None = None,
           what: str = "") -> Path:
    folder = out / f"probe_seed{seed}_n{n}_{size}px"
    argv = ["synth", "--out", str(folder), "--n", str(n), "--seed", str(seed), "--size", str(size), "--overwrite"]
    if not (folder / "index.csv").exists():
        print(f"writing world set: {n} images, seed {seed}, {size} px -> {folder}")
        _cli(argv + (["--quiet"] if quiet else []), commands, what)
    elif commands is not None:
        commands.append([what, argv])
    return folder


def _roles(args, out: Path, commands: list) -> dict:
    from netdissect.models.zoo import load_zoo_model

    _, meta = load_zoo_model(args.model[4:])
    size = args.size or meta["input_size"]
    train = _world(out, ROLES_SEED, args.n, size, args.quiet, commands, "the set the units are ranked on")
    val = _world(out, PROBE_SEED, args.n, size, args.quiet)
    layer = meta["layers"][-1]
    roles = out / "roles"
    argv = ["ablate", "--model", args.model, "--layer", layer, "--train", str(train), "--val", str(val),
            "--out", str(roles), "--sizes", "1,2,4,8,16,20,32,64"]
    if (out / "run" / "summary.json").exists():
        argv += ["--dissection", str(out / "run")]
    _cli(argv + (["--quiet"] if args.quiet else []), commands, "the role of conv5's units (PNAS 2020)",
         skip=args.resume and (roles / "roles.json").exists())
    return {"dir": "roles", "layer": layer}


def _gan(args, out: Path, commands: list) -> dict:
    quiet = ["--quiet"] if args.quiet else []
    gan = out / "gan"
    _cli(["dissect", "--model", "zoo:world-gan", "--layer", "layer4", "--layer", "layer6",
          "--samples", str(args.gan_samples), "--seed", "1", "--segmenter", "zoo:world-seg", "--out", str(gan),
          *(["--resume"] if args.resume and (gan / ".work").exists() else []),
          *(["--no-report"] if args.no_report else []), *quiet], commands,
         "Network Dissection of a generator, labelled by a segmenter",
         skip=args.resume and (gan / "summary.json").exists())
    concept, n_units = top_concept(gan / "layer4" / "units.csv")
    print(f"zoo:world-gan layer4: {concept!r} has the most object detectors ({n_units}); editing its units")
    _cli(["gan", "remove", "--run", str(gan), "--layer", "layer4", "--concept", concept,
          "--sizes", "1,2,4,8,16,20,30", "--samples", "200", "--seed", "2", "--out", str(out / "gan-remove"),
          *quiet], commands, f"switching off the {concept} units",
         skip=args.resume and (out / "gan-remove" / "removal.csv").exists())
    _cli(["gan", "insert", "--run", str(gan), "--layer", "layer4", "--concept", concept, "--n", "20",
          "--samples", "60", "--seed", "3", "--min-samples", "20", "--out", str(out / "gan-insert"), *quiet],
         commands, f"switching on the {concept} units",
         skip=args.resume and (out / "gan-insert" / "insertion.csv").exists())
    commands.append(["paint with the units of layer4 yourself (then open the address it prints)",
                     ["paint", "--model", "zoo:world-gan", "--run", str(gan), "--layer", "layer4"]])
    return {"dir": "gan", "concept": concept, "detectors": n_units}
