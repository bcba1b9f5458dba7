"""Cost of a rotation sweep: one forward pass plus one IoU pass per (alpha, seed).

    $ .venv/bin/python benchmarks/bench_rotation.py                       # zoo:scene-cnn conv5, 1000 world images
    $ .venv/bin/python benchmarks/bench_rotation.py --n 300 --alphas 0,0.5,1 --seeds 1

Timed in this process, on a probe of the embedded world (made once in --data):

- ``dissect``: the ordinary dissection of the layer (``netdissect.dissect``): pass 1 + pass 2;
- ``sweep``: ``rotation_sweep`` over every alpha and seed: its pass 1 (the only forward pass) and
  each rotated basis (the rotated statistics from the cache, then pass 2 on it).

It prints the sweep's wall time against what k separate dissections of rotated models would cost
(k forward passes: k x the dissection's time), and the cost of one basis against the engine's
own pass 2.  The JSON goes to benchmarks/out/bench_rotation.json (or --json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:scene-cnn")
    ap.add_argument("--layer", default="conv5")
    ap.add_argument("--n", type=int, default=1000, help="probe images (world seed 2017)")
    ap.add_argument("--alphas", default="0,0.2,0.4,0.6,0.8,1")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--data", default="/tmp/netdissect-bench-rotation")
    ap.add_argument("--json", default=str(Path(__file__).parent / "out" / "bench_rotation.json"))
    args = ap.parse_args()

    from netdissect import dissect
    from netdissect.data.synth.export import write_world
    from netdissect.experiments.sweep import rotation_sweep

    probe = Path(args.data) / f"world_n{args.n}"
    if not (probe / "index.csv").exists():
        write_world(probe, n=args.n, seed=2017, size=112, progress=False, overwrite=True)

    t = time.monotonic()
    res = dissect(args.model, [args.layer], probe, progress=False)
    plain = time.monotonic() - t
    plain_timing = res.summary["timing_s"]

    t = time.monotonic()
    table = rotation_sweep(args.model, args.layer, probe, alphas=args.alphas, seeds=args.seeds)
    sweep = time.monotonic() - t
    timing = table.info["timing_s"]
    k = len(timing["per_basis"])  # bases dissected (alpha 0 once for all seeds)
    per_basis = sum(timing["per_basis"]) / max(k, 1)
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "model": args.model, "layer": args.layer, "images": args.n, "alphas": table.info["alphas"],
        "seeds": table.info["seeds"], "bases": k,
        "dissect_s": round(plain, 3), "dissect_pass1_s": plain_timing.get("activations"),
        "dissect_pass2_s": plain_timing.get("iou"),
        "sweep_s": round(sweep, 3), "sweep_pass1_s": timing["activations"], "sweep_per_basis_s": round(per_basis, 3),
        "k_dissections_s": round(k * plain, 3),
        "speedup_vs_k_dissections": round(k * plain / sweep, 2),
        "per_basis_over_engine_pass2": round(per_basis / max(plain_timing.get("iou") or 1e-9, 1e-9), 2),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"sweep of {k} bases: {sweep:.1f} s = pass 1 {timing['activations']:.1f} s + {k} x {per_basis:.2f} s; "
          f"{k} separate dissections: {k * plain:.1f} s ({report['speedup_vs_k_dissections']}x)")


if __name__ == "__main__":
    main()
