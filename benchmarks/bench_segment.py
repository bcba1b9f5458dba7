"""Segmenter-labelled dissection against its floors (issue 10).

    python benchmarks/bench_segment.py                    # zoo:scene-cnn conv5, 1000 world images, zoo:world-seg+color
    python benchmarks/bench_segment.py --n 300
    python benchmarks/bench_segment.py --model torchvision:resnet18 --weights none --layer layer4 --size 224 --n 500

- ``forward``: the model's plain forward pass over the image folder (same loader, workers, batch 64).
- ``forward_seg``: the same plus the segmenter on every batch (the floor of a first run).
- ``first``: ``dissect(images=..., segmenter=...)`` with an empty label cache (both passes, results
  written); target: at most 1.15 x ``forward_seg``.
- ``second``: the same run again on another layer's worth of work (conv5 again, a new --out), the
  labels all from the cache; target: at most 1.15 x ``forward``.
- ``thresholds``: seconds of the PNAS threshold selection inside each run (``pnas_thresholds``,
  timed by wrapping it; part of ``timing_*.activations``).
Wall-clock seconds, one process, the fastest of ``--repeat`` tries each; ``spread`` gives every
try (min, median, max), as the machine is noisy.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--model", default="zoo:scene-cnn")
    p.add_argument("--weights", default=None, help="e.g. none for torchvision:resnet18 with random weights")
    p.add_argument("--size", type=int, default=112, help="image size of the generated folder (default 112)")
    p.add_argument("--layer", default="conv5")
    p.add_argument("--segmenter", default="zoo:world-seg+color")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    import torch
    from PIL import Image

    from netdissect import dissect
    from netdissect.data.synth.generate import make_sample
    from netdissect.dissection.rows import InputRows, collate_inputs, loader
    from netdissect.hooks import TraceDict, run_to_layers
    from netdissect.models import load_model
    from netdissect.probe.folder import ImageFolder
    from netdissect.segment import checked_segment, load_segmenter

    root = HERE / "out" / (f"seg_images_{a.n}" if a.size == 112 else f"seg_images_{a.n}_{a.size}px")
    if not root.exists():
        (root / "x").mkdir(parents=True)
        for i in range(a.n):
            Image.fromarray(make_sample(2017, i, a.size).image).save(root / "x" / f"{i:05d}.jpg", quality=92)
    probe = ImageFolder(root)
    model, prep = load_model(a.model, a.weights)
    model.eval()
    seg = load_segmenter(a.segmenter)
    size = (probe.shape[0] // 4, probe.shape[1] // 4)

    def floor(with_seg: bool) -> float:
        t = time.perf_counter()
        with TraceDict(model, [a.layer], stop=True) as tr, torch.inference_mode():
            for batch in loader(InputRows(probe, 0, len(probe)), 64, a.workers, collate_inputs):
                x = probe.batch([pl for _, pl, _ in batch], "cpu")
                if with_seg:
                    checked_segment(seg, x, size)
                run_to_layers(model, tr, prep(x).contiguous(memory_format=torch.channels_last))
        return time.perf_counter() - t

    from netdissect.dissection import engine

    thr_times: list[float] = []
    plain = engine.pnas_thresholds

    def timed(*args, **kw):
        t = time.perf_counter()
        try:
            return plain(*args, **kw)
        finally:
            thr_times.append(time.perf_counter() - t)

    engine.pnas_thresholds = timed
    out = {"n": a.n, "model": a.model, "weights": a.weights, "size": a.size, "layer": a.layer,
           "segmenter": a.segmenter, "threads": torch.get_num_threads()}
    spread: dict[str, list] = {}

    def best_of(key, f):
        tries = sorted(f() for _ in range(a.repeat))
        spread[key] = [round(tries[0], 3), round(tries[len(tries) // 2], 3), round(tries[-1], 3)]
        return tries[0]

    out["forward"] = best_of("forward", lambda: floor(False))
    out["forward_seg"] = best_of("forward_seg", lambda: floor(True))
    work = Path(tempfile.mkdtemp(prefix="bench-seg-"))

    def run(fresh: bool) -> float:
        if fresh:
            shutil.rmtree(work / "cache", ignore_errors=True)
        shutil.rmtree(work / "run", ignore_errors=True)
        t = time.perf_counter()
        r = dissect(a.model, [a.layer], images=root, weights=a.weights, segmenter=a.segmenter,
                    label_cache=work / "cache", out=work / "run", num_workers=a.workers, progress=False)
        out.setdefault("timing_first" if fresh else "timing_second", r.summary["timing_s"])
        return time.perf_counter() - t

    thr_times.clear()
    out["first"] = best_of("first", lambda: run(True))
    spread["thresholds_first"] = sorted(round(t, 3) for t in thr_times)
    thr_times.clear()
    out["second"] = best_of("second", lambda: run(False))
    spread["thresholds_second"] = sorted(round(t, 3) for t in thr_times)
    out["thresholds"] = min(spread["thresholds_first"] + spread["thresholds_second"])
    out["first_over_forward_seg"] = out["first"] / out["forward_seg"]
    out["second_over_forward"] = out["second"] / out["forward"]
    out["spread"] = spread  # every try: [min, median, max] seconds
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    (HERE / "out").mkdir(exist_ok=True)
    name = "bench_segment" if a.model == "zoo:scene-cnn" else f"bench_segment_{a.model.split(':')[-1]}"
    (HERE / "out" / f"{name}.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
