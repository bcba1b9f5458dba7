"""Time the HTML report of a run the size of the issue's benchmark: 512 units x 10 top images.

    $ .venv/bin/python benchmarks/bench_report.py                 # this checkout
    $ PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/bench_report.py   # compare

The dataset (made once, in --data, default /tmp/netdissect-bench-report) is
a Broden-format folder of 2000 images of 224 px (JPEG, shapes on textured
backgrounds) with 112 px colour/object/part masks and scene labels.  The run
is written with the engine's own writer (``LayerResult.save``): one layer of
512 units with 7x7 float16 maps (resnet18 layer4's shape) whose top images
are drawn from a skewed distribution, as the top images of a network's
units repeat across units.  It prints the number of distinct top images.

Timed: ``write_report`` into a fresh folder in this process (torch already
imported, as inside ``netdissect dissect``), serial and with 2 workers; a
second render that reuses every file; and the ``netdissect report`` command
end to end (interpreter start-up and imports included).  The machine is
named in the output; on a shared machine, run it more than once.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

N_IMAGES, SIZE, SEG = 2000, 224, 112
CATEGORIES = ["color", "object", "part", "scene"]
COLORS = [(1, "red", (200, 40, 40)), (2, "green", (50, 160, 70)), (3, "blue", (40, 80, 200)),
          (4, "yellow", (230, 200, 40)), (5, "grey", (128, 128, 128))]
OBJECTS = [(10 + i, f"object{i}") for i in range(20)]
PARTS = [(40 + i, f"part{i}") for i in range(6)]
SCENES = [(60 + i, f"scene{i}") for i in range(8)]


def _mask_png(path: Path, labels: np.ndarray) -> None:
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb).save(path)


def make_dataset(root: Path) -> Path:
    if (root / "index.csv").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    for i in range(N_IMAGES):
        bg, fg = rng.choice(len(COLORS), 2, replace=False)
        base = np.array(COLORS[bg][2], np.float32)
        img = base * (0.75 + 0.25 * np.sin(6 * xx + rng.uniform(0, 6))[..., None] * np.cos(4 * yy)[..., None])
        im = Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
        seg_obj = Image.new("L", (SEG, SEG), 0)
        seg_part = Image.new("L", (SEG, SEG), 0)
        d, do, dp = ImageDraw.Draw(im), ImageDraw.Draw(seg_obj), ImageDraw.Draw(seg_part)
        obj = int(rng.integers(len(OBJECTS)))
        cx, cy, r = (int(v) for v in rng.integers([40, 40, 20], [184, 184, 60]))
        box = [cx - r, cy - r, cx + r, cy + r]
        (d.ellipse if obj % 2 else d.rectangle)(box, fill=COLORS[fg][2])
        sbox = [v // 2 for v in box]
        (do.ellipse if obj % 2 else do.rectangle)(sbox, fill=obj + 1)
        dp.rectangle([sbox[0], sbox[1], sbox[2], (sbox[1] + sbox[3]) // 2], fill=obj % len(PARTS) + 1)
        name = f"{i:05d}"
        im.save(tmp / "images" / f"{name}.jpg", quality=90)
        o = np.asarray(seg_obj).astype(np.int32)
        p = np.asarray(seg_part).astype(np.int32) * (o > 0)
        _mask_png(tmp / "images" / f"{name}_object.png", np.where(o > 0, OBJECTS[0][0] + o - 1, 0))
        _mask_png(tmp / "images" / f"{name}_part.png", np.where(p > 0, PARTS[0][0] + p - 1, 0))
        _mask_png(tmp / "images" / f"{name}_color.png", np.where(o > 0, COLORS[fg][0], COLORS[bg][0]))
        rows.append([f"{name}.jpg", "train", SIZE, SIZE, SEG, SEG, f"{name}_color.png", f"{name}_object.png",
                     f"{name}_part.png", str(SCENES[int(rng.integers(len(SCENES)))][0])])
    with open(tmp / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "split", "ih", "iw", "sh", "sw"] + CATEGORIES] + rows)
    labels = ([(n, nm, "color") for n, nm, _ in COLORS] + [(n, nm, "object") for n, nm in OBJECTS]
              + [(n, nm, "part") for n, nm in PARTS] + [(n, nm, "scene") for n, nm in SCENES])
    with open(tmp / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows([["number", "name", "category", "frequency", "coverage", "syns"],
                                 [0, "-", "", 0, 0, ""]] + [[n, nm, f"{c}(1)", 1, 1.0, ""] for n, nm, c in labels])
    with open(tmp / "category.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "first", "last", "count", "frequency"]]
                                + [[c, 0, 0, 0, 0] for c in CATEGORIES])
    tmp.rename(root)
    return root


def make_run(out: Path, data: Path, units: int = 512, k: int = 10, h: int = 7) -> tuple[Path, int]:
    """A run folder written by the engine's writer; returns (folder, distinct top images)."""
    from netdissect.data import Broden
    from netdissect.dissection.result import LayerResult

    ds = Broden(data)
    rng = np.random.default_rng(1)
    K = len(ds.concepts)
    weights = 1.0 / (np.arange(len(ds)) + 40.0)  # a few images are the top images of many units
    weights /= weights.sum()
    perm = rng.permutation(len(ds))
    top = np.stack([perm[rng.choice(len(ds), k, replace=False, p=weights)] for _ in range(units)])
    maps = (rng.normal(0, 1, (units, k, h, h)) + np.linspace(0, 2, h)[None, None, :, None]).astype(np.float16)
    iou = (rng.random((units, K)) ** 6 * 0.12).astype(np.float32)
    lr = LayerResult(name="layer4", iou=iou, thresholds=np.full(units, 1.6, np.float32),
                     concept_names=np.array(ds.concepts.names), concept_categories=np.array(ds.concepts.primary_names),
                     concept_numbers=ds.concepts.numbers.astype(np.int32), categories=list(ds.concepts.categories),
                     iou_threshold=0.04, shape=(units, h, h), mask_size=(SEG, SEG), top_images=top.astype(np.int64),
                     top_values=np.sort(rng.random((units, k)).astype(np.float32))[:, ::-1].copy(), top_maps=maps,
                     dead=np.zeros(units, bool))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    paths = [r.image for r in ds.rows]
    lr.save(out / "layer4", paths)
    dataset = {**ds.identity(), "n_used": len(ds), "skipped": [], "categories": list(ds.concepts.categories),
               "n_concepts": K}
    try:
        from netdissect.data.digest import files_digest

        dataset["files_digest"] = files_digest(ds.image_dir, paths)
    except ImportError:  # an older checkout
        pass
    summary = {"format_version": 1, "netdissect_version": "bench", "created": "2026-01-01T00:00:00+00:00",
               "model": {"spec": "torchvision:resnet18", "weights": "none", "normalize": "imagenet", "sha256": "0" * 64},
               "dataset": dataset,
               "config": {"quantile": 0.005, "iou_threshold": 0.04, "topk": k},
               "layers": {"layer4": lr.summary()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out, len(np.unique(top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/netdissect-bench-report"))
    ap.add_argument("--repeat", type=int, default=2, help="timed renders per setting (the best is shown)")
    args = ap.parse_args()
    import torch  # noqa: F401  (imported first, as in `netdissect dissect`)

    import netdissect
    from netdissect.report import write_report

    data = make_dataset(args.data / "broden")
    run, distinct = make_run(args.data / "run", data)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"netdissect from {Path(netdissect.__file__).parent}")
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared machines vary)")
    print(f"run: 512 units x 10 top images of {N_IMAGES} images of {SIZE} px; {distinct} distinct top images")
    for workers in (0, 2):
        best = float("inf")
        for _ in range(args.repeat):
            out = args.data / f"report-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            write_report(run, out, workers=workers)
            best = min(best, time.perf_counter() - t)
        print(f"write_report, fresh folder, workers={workers}: {best:.2f} s")
    t = time.perf_counter()
    write_report(run, args.data / "report-w2", workers=2)
    print(f"write_report, every file reused: {time.perf_counter() - t:.2f} s")
    size = sum(p.stat().st_size for p in (args.data / "report-w2").rglob("*") if p.is_file())
    print(f"report folder: {size / 1e6:.1f} MB")
    out = args.data / "report-cli"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "netdissect", "report", str(run), "--out", str(out), "--quiet"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"`netdissect report` command, fresh folder (start-up and imports included): "
          f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
