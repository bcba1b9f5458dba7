"""Dissection cost against the floor: one plain forward pass over the same images.

    python benchmarks/bench_dissect.py                 # resnet18 layer4, 2000 + 500 images of 224 px
    python benchmarks/bench_dissect.py --n 300 --n-small 100 --repeat 1   # a quick look
    python benchmarks/bench_dissect.py --precision fp32,bf16   # also the bf16 fast path, and its agreement

Each measurement runs in its own process (so peak RSS is its own) and in one
benchmark run, so the ratios compare like with like:

- ``forward``: the floor. Same data loader and workers as dissection (image
  decoding included), fp32, no grad, channels_last, batch 64, the whole model.  Every
  measurement's clock starts before ``import torch`` (a command pays for it too).
- ``command``: what a user waits for: ``netdissect dissect ... --out RUN`` as a command, end to
  end (start-up, both passes, the label scorecard, results and the HTML report); ``command_no_report``
  the same with ``--no-report``, ``command_no_scorecard`` with ``--no-scorecard``, and
  ``command_bare`` with both.  The headline ratio is ``command_over_forward``.  ``--commands-only``
  measures only the floor and these four (interleaved, ``--repeat`` rounds).
- ``dissect``: ``netdissect.dissect`` end to end from Python (both passes, results written).
- ``dissect@500``: the same on the first 500 images, for memory growth.
- with ``--precision fp32,bf16``: ``forward_bf16`` and ``dissect_bf16`` (the forward pass
  under bf16 autocast), and the agreement of the bf16 run with the fp32 one: the share of
  fp32 detector units with the same best label, and the largest change of a unit's best IoU.

The dataset is a Broden-format folder written once into benchmarks/out/
(synthetic scenes from ``netdissect synth`` when available, else simple shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_dataset(n: int, size: int) -> Path:
    root = HERE / "out" / f"bench_{n}_{size}"
    if (root / "index.csv").exists():
        return root
    try:
        subprocess.run([sys.executable, "-m", "netdissect", "synth", "--out", str(root), "--n", str(n),
                        "--seed", "4242", "--size", str(size)], check=True)
    except subprocess.CalledProcessError:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from broden_fixture import make_broden

        make_broden(root, n=n, size=size, seed=1)
    return root


WORKER = r"""
import json, resource, sys, time
t0 = time.perf_counter()  # before importing torch: a user's command pays for that import too
cfg = json.loads(sys.argv[1])
if cfg["mode"] != "command":  # (the command imports torch itself, in its own process)
    import torch
    torch.manual_seed(0)
if cfg["mode"] == "forward":
    from netdissect.data import Broden
    from netdissect.dissection.config import default_workers
    from netdissect.dissection.rows import InputRows, collate_inputs, loader as make_loader
    from netdissect.probe import BrodenImages
    from netdissect.models import load_model
    import numpy as np
    model, prep = load_model(cfg["model"], weights="none")
    model = model.to(memory_format=torch.channels_last)
    amp = cfg.get("precision", "fp32") == "bf16"
    ds = Broden(cfg["dataset"], limit=cfg["n"])
    loader = make_loader(InputRows(BrodenImages(ds), 0, len(ds)), 64, default_workers(), collate_inputs)
    n = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        for batch in loader:
            x = torch.from_numpy(np.stack([img for _, img, _ in batch]))
            x = prep(x.permute(0, 3, 1, 2).float().div_(255)).contiguous(memory_format=torch.channels_last)
            model(x)
            n += len(batch)
elif cfg["mode"] == "command":
    import subprocess
    args = [sys.executable, "-m", "netdissect", "dissect", "--model", cfg["model"], "--weights", "none",
            "--layer", cfg["layer"], "--dataset", cfg["dataset"], "--limit", str(cfg["n"]), "--out", cfg["out"],
            "--quiet", "--precision", cfg.get("precision", "fp32")] + (["--no-report"] if cfg.get("no_report") else []) \
        + (["--no-scorecard"] if cfg.get("no_scorecard") else [])
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    n = cfg["n"]
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "images": n,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
    sys.exit(0)
else:
    from netdissect import dissect
    r = dissect(cfg["model"], [cfg["layer"]], cfg["dataset"], weights="none", limit=cfg["n"],
                out=cfg["out"], progress=False, precision=cfg.get("precision", "fp32"))
    n = r.summary["dataset"]["n_used"]
    extra = r.summary.get("timing_s", {})
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "images": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "timing": locals().get("extra", {})}))
"""


def measure(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(ref_dir: Path, other_dir: Path) -> dict:
    """How far a run (e.g. bf16) is from the reference (fp32) run, per layer."""
    from netdissect import load

    ref, other = load(ref_dir), load(other_dir)
    out = {}
    for layer in ref.summary["layers"]:
        a, b = ref[layer].units, other[layer].units
        det = a["detector"]
        out[layer] = {
            "detectors_fp32": int(det.sum()), "detectors_other": int(b["detector"].sum()),
            "same_label_share_of_detectors": round(float((a["label"][det] == b["label"][det]).mean()), 4)
            if det.any() else None,
            "same_label_share_of_units": round(float((a["label"] == b["label"]).mean()), 4),
            "max_abs_best_iou_diff": round(float(abs(a["iou"] - b["iou"]).max()), 5),
            "max_abs_best_iou_diff_detectors": round(float(abs(a["iou"][det] - b["iou"][det]).max()), 5)
            if det.any() else None,
            "max_rel_threshold_diff": round(float((abs(a["threshold"] - b["threshold"]) /
                                                   abs(a["threshold"]).clip(1e-6)).max()), 5),
        }
    return out


def cpu() -> dict:
    """The processor the figures were measured on."""
    import platform

    import torch

    from netdissect.dissection.config import native_bf16

    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": name, "cores": os.cpu_count(), "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16("cpu")[1] if native_bf16("cpu")[0] else "no"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--n-small", type=int, default=500)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precision", default="fp32",
                    help="comma-separated: fp32 (always measured) and bf16 (the fast path)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="measure the forward floor and the fp32 dissection this many times, alternating, "
                         "and keep the fastest of each (the machine's speed drifts; default 2)")
    ap.add_argument("--json", default=str(HERE / "out" / "bench_dissect.json"))
    ap.add_argument("--commands-only", action="store_true",
                    help="measure only the floor and the four command variants (no Python dissect, no memory run)")
    args = ap.parse_args()
    extra = [p for p in args.precision.split(",") if p and p != "fp32"] if not args.commands_only else []
    root = make_dataset(args.n, args.size)
    base = {"model": args.model, "layer": args.layer, "dataset": str(root)}
    rows = {}
    variants = {"command": {}, "command_no_report": {"no_report": True}, "command_no_scorecard": {"no_scorecard": True},
                "command_bare": {"no_report": True, "no_scorecard": True}}
    tries: dict[str, list] = {"forward": [], **{k: [] for k in variants}}
    if not args.commands_only:
        tries["dissect"] = []
    for _ in range(max(1, args.repeat)):
        tries["forward"].append(measure({**base, "mode": "forward", "n": args.n}))
        for key, flags in variants.items():
            tries[key].append(measure({**base, "mode": "command", "n": args.n, **flags,
                                       "out": str(HERE / "out" / f"run_{key}")}))
        if not args.commands_only:
            tries["dissect"].append(measure({**base, "mode": "dissect", "n": args.n,
                                             "out": str(HERE / "out" / "run_full")}))
    for key, runs in tries.items():
        rows[key] = {**min(runs, key=lambda r: r["wall_s"]), "all_wall_s": [round(r["wall_s"], 2) for r in runs]}
    # the ratio of each round (the forward floor and the commands measured one after another)
    per_round = [{k: round(tries[k][i]["wall_s"] / tries["forward"][i]["wall_s"], 3) for k in variants}
                 for i in range(len(tries["forward"]))]
    if not args.commands_only:
        rows[f"dissect@{args.n_small}"] = measure({**base, "mode": "dissect", "n": args.n_small,
                                                   "out": str(HERE / "out" / "run_small")})
    for p in extra:
        rows[f"forward_{p}"] = measure({**base, "mode": "forward", "n": args.n, "precision": p})
        rows[f"dissect_{p}"] = measure({**base, "mode": "dissect", "n": args.n, "precision": p,
                                        "out": str(HERE / "out" / f"run_full_{p}")})
    f = rows["forward"]["wall_s"]
    report = {
        "setup": {**base, "n": args.n, "size": args.size, "threads": os.cpu_count(),
                  "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu(), "loadavg_at_end": os.getloadavg()},
        "runs": rows,
        **{f"{k}_over_forward": round(rows[k]["wall_s"] / f, 3) for k in variants},
        "per_round_over_forward": per_round,
        "per_image_ms": {"forward": round(1000 * f / args.n, 2)},
    }
    if not args.commands_only:
        d = rows["dissect"]
        report["dissect_over_forward"] = round(d["wall_s"] / f, 3)
        report["rss_ratio_full_over_small"] = round(d["peak_rss_mb"] / rows[f"dissect@{args.n_small}"]["peak_rss_mb"], 3)
        report["per_image_ms"]["dissect"] = round(1000 * d["wall_s"] / args.n, 2)
    for p in extra:
        report[p] = {
            "forward_speedup": round(f / rows[f"forward_{p}"]["wall_s"], 3),
            "dissect_speedup": round(d["wall_s"] / rows[f"dissect_{p}"]["wall_s"], 3),
            "dissect_over_fp32_forward": round(rows[f"dissect_{p}"]["wall_s"] / f, 3),
            "agreement_with_fp32": agreement(HERE / "out" / "run_full", HERE / "out" / f"run_full_{p}"),
        }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
