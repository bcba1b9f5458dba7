"""`netdissect explain` speed: exact branch and bound against the published beam search (width 10).

    python benchmarks/bench_explain.py                          # the issue's target: 2000 images, all 512 units
    python benchmarks/bench_explain.py --n 500 --units 64       # a reduced size on a shared machine

resnet18 (random weights, seed 0), layer4, world images of 224 px (``netdissect synth``, seed 4242),
every concept of the world's pixel categories (color, object, part, material), formulas of length
3.  Steps, each timed on its own:

- ``dissect``: the run itself (not part of explain's cost; done once, kept in benchmarks/out/).
- ``activations``: explain's pass 1 again (a finished run keeps no activation cache).
- ``counts``: one sweep over labels and activations, every unit's mask counted per signature.
- ``exact`` / ``beam``: the searches of ``--units`` units spread over the layer (every
  512/units-th unit), the same units for both, alternating unit by unit (on a shared machine
  both see the same load), each unit's time the smallest of ``--repeat`` tries (wall and CPU);
  then the share of units whose beam formula has a lower IoU than the certified optimum.

The projection to all units multiplies the mean search time per unit by the layer's units; the
counts are paid once per layer whatever the number of units.  Results: benchmarks/out/bench_explain.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--units", type=int, default=512, help="units searched (spread over the layer)")
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--categories", default="color,object,part,material")
    ap.add_argument("--repeat", type=int, default=3, help="tries per unit and search (the smallest counts)")
    ap.add_argument("--json", default=str(HERE / "out" / "bench_explain.json"))
    ap.add_argument("--reuse", action="store_true",
                    help="keep RUN/.explain from an earlier call: time the searches again on the same counts "
                         "(activations and counts are then only read back)")
    args = ap.parse_args()

    import numpy as np

    from netdissect import dissect, load
    from netdissect.explain import Problem, search_beam, search_exact
    from netdissect.explain import run as xr

    data = HERE / "out" / f"world_{args.n}_{args.size}"
    if not (data / "index.csv").exists():
        from netdissect.data.synth.export import write_world

        write_world(data, args.n, 4242, args.size, progress=False)
    run_dir = HERE / "out" / f"explain_r18_{args.n}_{args.size}"
    t = time.perf_counter()
    if not (run_dir / "summary.json").exists():
        dissect("torchvision:resnet18", ["layer4"], data, weights="none", out=run_dir, progress=False)
    t_dissect = time.perf_counter() - t
    res = load(run_dir)
    lr = res["layer4"]
    if not args.reuse:
        shutil.rmtree(run_dir / xr.WORK, ignore_errors=True)  # explain from scratch: activations, counts
    (run_dir / xr.WORK).mkdir(exist_ok=True)
    t = time.perf_counter()
    st, _ = xr._activations(run_dir, res.summary, "layer4", progress=False)  # pass 1 again, exact thresholds
    st.close()
    t_acts = time.perf_counter() - t
    t = time.perf_counter()
    member, n, pattern, H, _ = xr._counts(run_dir, res.summary, "layer4", lr, False, 64, 0)
    t_counts = time.perf_counter() - t
    cols = xr._candidates(lr, args.categories)
    cats = {g: i for i, g in enumerate(lr.categories)}
    primary = np.array([cats[str(c)] for c in lr.concept_categories])
    t = time.perf_counter()
    problem = Problem(member[cols], n, pattern, primary[cols])
    t_problem = time.perf_counter() - t
    C = H.shape[0]
    units = np.unique(np.linspace(0, C - 1, min(args.units, C)).round().astype(int))
    units = [int(k) for k in units if H[k].sum() > 0]
    # exact and beam alternate unit by unit (the machine is shared: both see the same load), each
    # unit's time the smallest of --repeat tries; wall and CPU seconds both kept
    ex, bm = [], []
    t_exact = t_beam = cpu_exact = cpu_beam = 0.0
    for k in units:
        best = {"exact": (np.inf, np.inf), "beam": (np.inf, np.inf)}
        for _ in range(args.repeat):
            for name in ("exact", "beam"):
                t1, c1 = time.perf_counter(), time.process_time()
                f = (search_exact(problem, H[k], args.length) if name == "exact"
                     else search_beam(problem, H[k], args.length, args.beam))
                w, c = time.perf_counter() - t1, time.process_time() - c1
                best[name] = (min(best[name][0], w), min(best[name][1], c))
                if name == "exact":
                    fe = f
                else:
                    fb = f
        ex.append((k, fe.iou, fe.iou_single, fe.nodes, best["exact"][0], fe.certified))
        bm.append((k, fb.iou, fb.nodes, best["beam"][0]))
        t_exact += best["exact"][0]
        t_beam += best["beam"][0]
        cpu_exact += best["exact"][1]
        cpu_beam += best["beam"][1]
    worse = [e[0] for e, b in zip(ex, bm) if b[1] < e[1] * (1 - 1e-12)]
    gap = [e[1] - b[1] for e, b in zip(ex, bm)]
    out = {
        "images": args.n, "size": args.size, "reused_counts": args.reuse, "units_searched": len(units), "layer_units": C,
        "concepts": int(len(cols)), "signatures": int(member.shape[1]), "length": args.length, "beam": args.beam,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "repeat": args.repeat,
        "seconds": {"dissect_run": round(t_dissect, 2), "activations": round(t_acts, 2), "counts": round(t_counts, 2),
                    "problem": round(t_problem, 3), "exact": round(t_exact, 2), "beam": round(t_beam, 2),
                    "exact_per_unit": round(t_exact / len(units), 4), "beam_per_unit": round(t_beam / len(units), 4)},
        "projected_all_units_s": {"exact": round(t_exact / len(units) * C, 1), "beam": round(t_beam / len(units) * C, 1),
                                  "explain_exact_total": round(t_acts + t_counts + t_exact / len(units) * C, 1),
                                  "explain_beam_total": round(t_acts + t_counts + t_beam / len(units) * C, 1)},
        "exact_over_beam_search": round(t_exact / t_beam, 2),
        "cpu_seconds": {"exact": round(cpu_exact, 2), "beam": round(cpu_beam, 2),
                        "exact_over_beam": round(cpu_exact / cpu_beam, 2)},
        "certified": sum(e[5] for e in ex),
        "nodes_mean": {"exact": float(np.mean([e[3] for e in ex])), "beam": float(np.mean([b[2] for b in bm])),
                       "all_formulas": xr.formula_count(len(cols), args.length)},
        "beam_suboptimal_share": round(len(worse) / len(units), 4), "beam_suboptimal_units": worse,
        "beam_gap_max": float(max(gap)), "beam_gap_mean_where_worse": float(np.mean([g for g in gap if g > 0]) if worse else 0),
        "better_than_single_share": round(float(np.mean([e[1] > e[2] for e in ex])), 4),
        "iou_mean": {"single": float(np.mean([e[2] for e in ex])), "exact": float(np.mean([e[1] for e in ex])),
                     "beam": float(np.mean([b[1] for b in bm]))},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
