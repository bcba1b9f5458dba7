"""Per-batch cost and peak memory of the threshold statistic (TopQuantile), before and after.

"before" is the implementation of commit 16b25e8 (cat + topk of the whole buffer on every
batch), loaded from git; "after" is the working tree's.  Each (implementation, case) runs
in its own process, so that its peak RSS (getrusage) is its own; the figure reported is the
growth of the peak over the process's state just before the first add (the batch tensor
and the libraries already allocated).  Only ``add`` is timed, batches are drawn outside
the timer.

    python benchmarks/bench_quantile.py                 # all cases, ~75 s on a shared 2-core machine
    python benchmarks/bench_quantile.py --cases layer4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "16b25e8"

# name: units, positions per image, images per batch, images fed, memory (None: default), images in total
CASES = {
    "layer4": (512, 7 * 7, 64, 2000, None),  # resnet18 layer4, 2000 images
    "layer4-broden": (512, 7 * 7, 64, 12_800, None, 63_305),  # the first 200 batches of a full-Broden run
    "features0": (64, 224 * 224, 4, 48, None),  # VGG16 features.0 at small n: exact mode
    "features0-radix": (64, 224 * 224, 4, 48, 2 << 20),  # the same under a 2 MiB budget: radix passes
}


def _load(which: str):
    if which == "after":
        sys.path.insert(0, str(ROOT))
        from netdissect.stats import quantile
        return quantile
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:netdissect/stats/quantile.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("quantile_before")
    exec(compile(src, "quantile_before", "exec"), mod.__dict__)
    return mod


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(which: str, case: str, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    U, pos, bimg, nimg, memory, *whole = CASES[case]
    mod = _load(which)
    total = (whole[0] if whole else nimg) * pos
    kw = {} if memory is None or which == "before" else {"memory": memory}
    stat = mod.TopQuantile(U, 0.005, total=total, **kw)
    g = torch.Generator().manual_seed(0)
    batch = torch.empty(U, bimg * pos)
    batch.normal_(generator=g)
    base = _rss_mb()
    times, passes = [], 0
    while True:
        passes += 1
        g.manual_seed(1)  # every pass sees the same values
        for s in range(0, nimg, bimg):
            batch.normal_(generator=g)
            x = batch[:, :min(bimg, nimg - s) * pos]
            t0 = time.perf_counter()
            stat.add(x)
            times.append(time.perf_counter() - t0)
        if getattr(stat, "exact", True) or whole:  # a partial run: its thresholds are those of the values fed
            break
        stat = stat.refinement()
    t0 = time.perf_counter()
    thr = stat.threshold()
    t_thr = time.perf_counter() - t0
    peak = _rss_mb() - base
    # the same values again, for np.quantile (one unit block at a time keeps this cheap)
    g.manual_seed(1)
    vals = []
    for s in range(0, nimg, bimg):
        batch.normal_(generator=g)
        vals.append(batch[:8, :min(bimg, nimg - s) * pos].numpy().copy())
    want = np.quantile(np.concatenate(vals, 1).astype(np.float64), 1 - 0.005, axis=1)
    return {"impl": which, "case": case, "units": U, "values_per_batch": bimg * pos, "batches": len(times),
            "passes": passes, "mode": getattr(stat, "mode", "exact (buffer of all kept values)"),
            "bound_MB": round(getattr(stat, "bound", float("nan")) / 2 ** 20, 1),
            "add_ms_mean": round(1e3 * sum(times) / len(times), 2),
            "add_ms_median": round(1e3 * sorted(times)[len(times) // 2], 2),
            "add_s_total": round(sum(times), 3), "threshold_ms": round(1e3 * t_thr, 1),
            "peak_rss_growth_MB": round(peak, 1),
            "exact_first_8_units": bool((thr[:8] == want).all())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine, many small parallel ops wait for "
                        "descheduled threads and the figures swing by 10x)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest counts")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "bench_quantile.json"))
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], a.threads)))
        return
    rows = []
    for case in a.cases.split(","):
        for which in ("before", "after"):
            if which == "before" and CASES[case][4] is not None:
                continue  # the old statistic has no budget
            tries = []
            for _ in range(a.repeat):
                out = subprocess.run([sys.executable, __file__, "--one", which, case, "--threads", str(a.threads)],
                                     check=True, capture_output=True, text=True).stdout
                tries.append(json.loads(out.strip().splitlines()[-1]))
            r = min(tries, key=lambda t: t["add_s_total"])
            r["add_s_total_tries"] = [t["add_s_total"] for t in tries]
            rows.append(r)
            print(f"{r['case']:16s} {r['impl']:6s} {r['mode']:>8.8s} passes {r['passes']}  "
                  f"add {r['add_ms_mean']:8.2f} ms/batch (median {r['add_ms_median']:.2f}, "
                  f"{r['batches']} batches of {r['units']} x {r['values_per_batch']}; totals {r['add_s_total_tries']} s)"
                  f"  threshold {r['threshold_ms']:.1f} ms  peak RSS +{r['peak_rss_growth_MB']} MB  "
                  f"bound {r['bound_MB']} MB  exact {r['exact_first_8_units']}", flush=True)
    import platform
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"cpu": cpu, "threads": a.threads, "rows": rows}, indent=1))
    print(f"CPU: {cpu}, {a.threads} threads; written {a.json}")


if __name__ == "__main__":
    main()
