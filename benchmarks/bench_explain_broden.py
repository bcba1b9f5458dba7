"""`netdissect explain` at full-Broden scale, projected from measured runs of the same code.

    python benchmarks/bench_explain_broden.py                       # images 1000,2000,4000; 8 units each
    python benchmarks/bench_explain_broden.py --images 1000,2000 --units 4 --torch   # also the torch path

Broden (broden1_224: 63,305 images, 1,197 concepts, masks of 112 x 112) is not on this machine, so
the labels are synthetic with Broden's shape (the model below), and the search is the package's
own (:func:`netdissect.explain.search_exact`, :func:`search_beam`) on them.

**Label model** (one image = regions with areas, no pixel arrays: a signature depends only on
which concepts and categories a pixel carries).  Each image comes from one of four sources with
Broden's category sets: ADE-like 35 % (scene, object, part, color), Pascal-like 25 % (object,
part, color), OpenSurfaces-like 30 % (material, color), DTD-like 10 % (texture, color).  Concepts:
11 colors, 584 objects, 234 parts, 32 materials, 289 scenes, 47 textures (1,197), each drawn
Zipf-like (p ~ 1/rank); 1 + Poisson(6) objects, 1 + Poisson(3) materials; an object carries one of
its own 3 parts on 40 % of its area; every region is split into 1 + Poisson(1) colours; region
areas Dirichlet(1) over 12,544 pixels.

**Units** (512 per layer as resnet18 layer4): a unit's mask covers 0.5 % of the pixels (the
top-quantile rule), a share ``alpha`` of it on one or two target concepts (OR), the rest
spread over every signature in proportion to its pixels; alpha ~ U(0.2, 0.8).

**Projection** (stated model, fitted on the measured points): signatures S grow as a power of the
images, ``S = a N^b`` (fit over the image counts measured); search seconds per unit grow as a
power of S, ``t = c S^d`` (fit over the same points; t in CPU seconds of one process, as the
machine is shared); all 512 units cost 512 t; counting masks per
signature is linear in images (the 2000-image run's measured seconds per image, given with
``--count-seconds-per-image``).  Results: benchmarks/out/bench_explain_broden.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SIZES = {"color": 11, "object": 584, "part": 234, "material": 32, "scene": 289, "texture": 47}
CATS = list(SIZES)
SOURCES = [(0.35, ("scene", "object", "part", "color")), (0.25, ("object", "part", "color")),
           (0.30, ("material", "color")), (0.10, ("texture", "color"))]
PIXELS = 112 * 112
BRODEN_IMAGES = 63305


def _zipf(rng, n, size):
    p = 1.0 / np.arange(1, n + 1)
    return rng.choice(n, size=size, p=p / p.sum())


def synth_broden(images: int, seed: int = 0):
    """(member csr (K, S), n (S,), held (S, G) bool, primary (K,)) of ``images`` synthetic Broden images."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    offset = np.cumsum([0] + [SIZES[c] for c in CATS])[:-1]
    off = dict(zip(CATS, offset))
    primary = np.concatenate([np.full(SIZES[c], i) for i, c in enumerate(CATS)])
    rows = []   # (pattern, scene, texture, object, part, material, color, area)
    for _ in range(images):
        src = SOURCES[rng.choice(len(SOURCES), p=[s[0] for s in SOURCES])][1]
        pattern = sum(1 << CATS.index(c) for c in src)
        scene = off["scene"] + _zipf(rng, SIZES["scene"], 1)[0] if "scene" in src else -1
        texture = off["texture"] + _zipf(rng, SIZES["texture"], 1)[0] if "texture" in src else -1
        if "object" in src:
            objs = off["object"] + _zipf(rng, SIZES["object"], 1 + rng.poisson(6))
            regions = [(o, -1) for o in objs]
        elif "material" in src:
            regions = [(-1, off["material"] + m) for m in _zipf(rng, SIZES["material"], 1 + rng.poisson(3))]
        else:
            regions = [(-1, -1)]
        areas = rng.dirichlet(np.ones(len(regions))) * PIXELS
        for (o, m), a in zip(regions, areas):
            pieces = [(o, -1, m, a)]
            if o >= 0 and "part" in src:
                part = off["part"] + ((o - off["object"]) * 3 + rng.integers(3)) % SIZES["part"]
                pieces = [(o, part, m, 0.4 * a), (o, -1, m, 0.6 * a)]
            for (oo, pp, mm, aa) in pieces:
                k = 1 + rng.poisson(1)
                for col, ca in zip(off["color"] + _zipf(rng, SIZES["color"], k), rng.dirichlet(np.ones(k)) * aa):
                    rows.append((pattern, scene, texture, oo, pp, mm, col, ca))
    arr = np.array([r[:7] for r in rows], np.int64)
    area = np.array([r[7] for r in rows])
    uniq, inv = np.unique(arr, axis=0, return_inverse=True)
    inv = inv.ravel()
    n = np.maximum(1, np.round(np.bincount(inv, weights=area))).astype(np.int64)
    S = len(uniq)
    r_idx, c_idx = [], []
    for j in range(1, 7):
        ok = uniq[:, j] >= 0
        r_idx.append(uniq[ok, j])
        c_idx.append(np.flatnonzero(ok))
    K = len(primary)
    member = sparse.csr_matrix((np.ones(sum(len(r) for r in r_idx)), (np.concatenate(r_idx), np.concatenate(c_idx))),
                               shape=(K, S))
    held = np.stack([(uniq[:, 0] >> g) & 1 for g in range(len(CATS))], 1).astype(bool)
    return member, n, held, primary


def synth_units(member, n, count: int, seed: int = 1) -> np.ndarray:
    """H (count, S): unit masks per signature (0.5 % of the pixels, a share alpha on 1-2 concepts)."""
    rng = np.random.default_rng(seed)
    total = n.sum()
    A = np.asarray(member @ n).ravel()
    common = np.flatnonzero(A > 0.0005 * total)
    H = np.zeros((count, len(n)))
    for u in range(count):
        area = 0.005 * total
        alpha = rng.uniform(0.2, 0.8)
        targets = rng.choice(common, 1 + rng.integers(2), replace=False)
        inside = np.asarray(member[targets].sum(0)).ravel() > 0
        p = np.where(inside, alpha * area / max(1.0, n[inside].sum()), (1 - alpha) * area / max(1.0, n[~inside].sum()))
        H[u] = rng.binomial(n, np.minimum(1.0, p))
    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="1000,2000,4000")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--layer-units", type=int, default=512)
    ap.add_argument("--count-seconds-per-image", type=float, default=None,
                    help="measured seconds per image of the per-signature mask count (bench_explain.py)")
    ap.add_argument("--torch", action="store_true", help="also time the torch products (device: --device)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=str(HERE / "out" / "bench_explain_broden.json"))
    args = ap.parse_args()

    from netdissect.explain import Problem, search_beam, search_exact

    points = []
    for N in [int(x) for x in args.images.split(",")]:
        t = time.perf_counter()
        member, n, held, primary = synth_broden(N, seed=N)
        t_synth = time.perf_counter() - t
        H = synth_units(member, n, args.units)
        t = time.perf_counter()
        problem = Problem(member, n, held, primary)
        t_problem = time.perf_counter() - t
        row = {"images": N, "concepts": int(member.shape[0]), "signatures": int(member.shape[1]),
               "nnz": int(member.nnz), "synth_s": round(t_synth, 2), "problem_s": round(t_problem, 3)}
        for name, fn in (("exact", lambda h: search_exact(problem, h, args.length)),
                         ("beam", lambda h: search_beam(problem, h, args.length, args.beam))):
            times, ious, nodes, cpu0 = [], [], [], time.process_time()
            for k in range(len(H)):  # exact and beam alternate per point, interleaved in one run
                t = time.perf_counter()
                f = fn(H[k])
                times.append(time.perf_counter() - t)
                ious.append(f.iou)
                nodes.append(f.nodes)
            row[name] = {"s_per_unit": float(np.mean(times)), "cpu_s_per_unit": (time.process_time() - cpu0) / len(H),
                         "iou_mean": float(np.mean(ious)), "nodes_mean": float(np.mean(nodes))}
            if name == "exact":
                exact_iou = ious
        row["beam_suboptimal"] = int(sum(b < e * (1 - 1e-12) for b, e in zip(ious, exact_iou)))
        if args.torch:
            torch_problem = Problem(member, n, held, primary, device=args.device)
            times, cpu0 = [], time.process_time()
            for k in range(len(H)):
                t = time.perf_counter()
                f = search_exact(torch_problem, H[k], args.length)
                times.append(time.perf_counter() - t)
                assert abs(f.iou - exact_iou[k]) < 1e-9, "the torch path must find the same optimum"
            row["exact_torch"] = {"device": args.device, "s_per_unit": float(np.mean(times)),
                                  "cpu_s_per_unit": (time.process_time() - cpu0) / len(H)}
        points.append(row)
        print(json.dumps(row), flush=True)

    Ns = np.array([p["images"] for p in points], float)
    Ss = np.array([p["signatures"] for p in points], float)
    b, loga = np.polyfit(np.log(Ns), np.log(Ss), 1) if len(points) > 1 else (1.0, np.log(Ss[0] / Ns[0]))
    S_full = float(np.exp(loga) * BRODEN_IMAGES ** b)
    proj = {"model": "S = a N^b over the measured image counts; t_unit = c S^d; all units = layer_units * t_unit",
            "S_exponent_b": round(float(b), 3), "signatures_at_63305": round(S_full)}
    for name in ("exact", "beam", "exact_torch"):
        if name not in points[0]:
            continue
        ts = np.array([p[name]["cpu_s_per_unit"] for p in points])  # CPU seconds: the machine is shared
        d, logc = np.polyfit(np.log(Ss), np.log(ts), 1) if len(points) > 1 else (1.0, np.log(ts[0] / Ss[0]))
        t_unit = float(np.exp(logc) * S_full ** d)
        proj[name] = {"time_exponent_d": round(float(d), 3), "cpu_s_per_unit": round(t_unit, 2),
                      "all_units_cpu_hours": round(t_unit * args.layer_units / 3600, 2)}
    if args.count_seconds_per_image:
        proj["count_hours"] = round(args.count_seconds_per_image * BRODEN_IMAGES / 3600, 2)
    out = {"points": points, "projection_full_broden": proj, "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(proj, indent=2))


if __name__ == "__main__":
    main()
