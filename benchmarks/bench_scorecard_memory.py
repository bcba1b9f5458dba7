"""Peak memory of the label scorecard as the probe grows (docs/label-trust.md, "Memory").

    python benchmarks/bench_scorecard_memory.py [--n 500 1000 2000] [--units 512] [--size 64]

A synthetic case: the world (``netdissect synth``, ``--size`` px images, half-size masks) and a
fixed random network of ``--units`` units on 7 x 7 maps (one strided convolution, seed 0).  For
each N: ``dissect --no-scorecard --keep-cache`` on the first N images (a child process), then
``netdissect score`` of that run in a fresh child process, which reports its resident memory
before scoring and its peak (``ru_maxrss``) after; the difference is what the scorecard held.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def random_units(units: int = 512):
    """(B, units, 7, 7) for 64 px inputs: one fixed random strided convolution."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, units, 10, stride=9), torch.nn.ReLU())


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child_score(run_dir: str) -> None:
    import resource

    from netdissect.trust.rescore import score_run

    import netdissect.trust.scorecard  # noqa: F401  (imports paid before the baseline)
    import scipy.special  # noqa: F401

    base = _rss_mb()
    r = score_run(run_dir, num_workers=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name = next(iter(r))
    s = r[name].scorecard_summary
    print(json.dumps({"rss_before_mb": round(base, 1), "peak_mb": round(peak, 1),
                      "scorecard_mb": round(peak - base, 1), "timing_s": s["timing_s"],
                      "detectors_iou_fdr": [s["detectors_iou_rule"], s["detectors_fdr_rule"]],
                      "mean_r_image": s["mean_r_image"], "mean_auprc": s["mean_auprc"]}))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[500, 1000, 2000])
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dataset", default=None, help="a world of at least max(--n) images (default: synthesised)")
    ap.add_argument("--work", default=None, help="folder for the dataset and runs (default: a temp folder)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scorecard-mem-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ds = args.dataset
    if ds is None:
        ds = str(work / "world")
        if not Path(ds, "index.csv").exists():
            subprocess.run([sys.executable, "-m", "netdissect", "synth", "--out", ds, "--n", str(max(args.n)),
                            "--size", str(args.size), "--seed", "3", "--quiet"], check=True, env=env)
    rows = []
    for n in args.n:
        run = work / f"run{n}"
        if not (run / "cache" / "cache.json").exists():
            subprocess.run([sys.executable, "-m", "netdissect", "dissect", "--model", f"{HERE}:random_units",
                            "--layer", "1", "--dataset", ds, "--limit", str(n), "--out", str(run), "--no-scorecard",
                            "--keep-cache", "--quiet", "--no-report", "--workers", "0", "--normalize", "none"],
                           check=True, env=env)
        out = subprocess.run([sys.executable, str(HERE), "--child-score", str(run)], check=True, env=env,
                             capture_output=True, text=True).stdout
        rep = json.loads(out.strip().splitlines()[-1])
        rows.append({"n": n, **rep})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child-score":
        _child_score(sys.argv[2])
    else:
        main()
