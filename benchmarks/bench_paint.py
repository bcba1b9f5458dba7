"""Cost of one paint-app render at the bundled generator's size (the issue's target: <= 150 ms on 2 cores).

    python benchmarks/bench_paint.py                 # zoo:world-gan if its weights are bundled, else the
                                                     # same architecture with random weights (same cost)
    python benchmarks/bench_paint.py --threads 2 --repeat 30

The generator is ``ProgressiveGenerator(64, [256, 128, 64, 32, 16], z_dim=128)`` painted at ``layer4``
(128 units, 8 x 8), a palette concept of 20 units.  Timed, median and 90th percentile of ``--repeat``:

- ``forward``: the plain generator, one sample;
- ``render_K``: :meth:`Painter.render` with K strokes (composite of the masks, the edited forward pass,
  uint8 conversion);
- ``http_K``: ``POST /api/render`` through the ASGI app (JSON parsing, schema validation, base64 and
  PNG decoding of K masks, the render, PNG encoding of the answer), via starlette's TestClient.

Results go to stdout as JSON (with the load average: other work on the cores makes every figure worse).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time


def _stats(ts: list[float]) -> dict:
    ts = sorted(ts)
    return {"median_ms": round(statistics.median(ts) * 1000, 2),
            "p90_ms": round(ts[int(0.9 * (len(ts) - 1))] * 1000, 2), "min_ms": round(ts[0] * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of a render (the app's --threads; default 1, as the app)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--strokes", default="0,1,8,64", help="stroke counts to time (comma separated)")
    args = ap.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from netdissect.app.painter import Painter, Stroke
    from netdissect.app.palette import Concept
    from netdissect.app.server import create_app
    from netdissect.models.proggan import ProgressiveGenerator

    torch.set_num_threads(args.threads)   # the painter sets it again in the thread that renders
    source = "zoo:world-gan"
    try:
        from netdissect.models import load_model
        g, _ = load_model("zoo:world-gan")
    except Exception as exc:  # noqa: BLE001 - not bundled yet: the same architecture, random weights
        source = f"ProgressiveGenerator(64, [256, 128, 64, 32, 16], z_dim=128), random weights ({exc})"
        torch.manual_seed(0)
        g = ProgressiveGenerator(64, [256, 128, 64, 32, 16], z_dim=128).eval()
    layer = "layer4"
    concept = Concept("thing", "object", list(range(20)), [0.1] * 20)
    t0 = time.perf_counter()
    painter = Painter(g, layer, [concept], threads=args.threads)
    startup = time.perf_counter() - t0
    h, w = painter.size
    rng = np.random.default_rng(0)

    def mask():
        m = np.zeros((h, w), bool)
        r, c = rng.integers(0, h - 16, 2)
        m[r:r + 16, c:c + 16] = True
        return m

    out = {"generator": source, "layer": layer, "grid": list(painter.grid), "image": [h, w],
           "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
           "painter_startup_s": round(startup, 2), "repeat": args.repeat}
    z = torch.from_numpy(np.random.RandomState(0).standard_normal((1, painter.z_dim)).astype(np.float32))
    ts = []
    with torch.inference_mode():
        for _ in range(args.repeat):
            t = time.perf_counter()
            g(z)
            ts.append(time.perf_counter() - t)
    out["forward"] = _stats(ts)

    from fastapi.testclient import TestClient
    client = TestClient(create_app(painter), base_url="http://127.0.0.1")
    for k in [int(s) for s in args.strokes.split(",")]:
        strokes = [Stroke("thing", "draw" if i % 2 == 0 else "erase", mask()) for i in range(k)]
        ts = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            painter.render(1, strokes)
            ts.append(time.perf_counter() - t)
        out[f"render_{k}"] = _stats(ts)
        body = []
        for s in strokes:
            buf = io.BytesIO()
            rgba = np.zeros((h, w, 4), np.uint8)
            rgba[s.mask] = 255
            Image.fromarray(rgba).save(buf, format="PNG")
            body.append({"concept": "thing", "mode": s.mode,
                         "mask": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()})
        ts = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            r = client.post("/api/render", json={"seed": 1, "strokes": body})
            ts.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        out[f"http_{k}"] = _stats(ts)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
