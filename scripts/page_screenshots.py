"""Screenshots of the pages a reader sees, at 1366x768 and 1920x1080, for docs/img/pages/.

    $ netdissect demo --out runs/demo
    $ .venv/bin/python scripts/page_screenshots.py runs/demo            # -> docs/img/pages/*.png

The story page, the dissection report opened at a deep link to a conv5 unit, the unit-roles page, the
generator's report and the paint app (served on a free port of 127.0.0.1 from the demo's generator run).
Each PNG is reduced to 256 colours to keep the folder small.  Needs chromium (``make browser``).
"""
from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

from PIL import Image

SIZES = [(1366, 768), (1920, 1080)]
OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "pages"


def _small_png(path: Path) -> None:
    im = Image.open(path).convert("RGB")
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def _serve_paint(demo: Path):
    import uvicorn

    from netdissect.cli import build_parser
    from netdissect.cli.paint import build

    args = build_parser().parse_args(["paint", "--model", "zoo:world-gan", "--run", str(demo / "gan"),
                                      "--layer", "layer4"])
    app, _, _ = build(args)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/", server


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo", type=Path, help="the folder of `netdissect demo --out`")
    ap.add_argument("--unit", default="conv5-12", help="the report's deep link (default conv5-12)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    paint, server = _serve_paint(a.demo)
    pages = [("story", (a.demo / "index.html").as_uri()),
             ("report", (a.demo / "run" / "report" / "index.html").as_uri() + "#" + a.unit),
             ("roles", (a.demo / "roles" / "index.html").as_uri()),
             ("gan-report", (a.demo / "gan" / "report" / "index.html").as_uri()),
             ("paint", paint)]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-background-networking"])
        for w, h in SIZES:
            for name, url in pages:
                page = b.new_page(viewport={"width": w, "height": h})
                page.goto(url, wait_until="load")
                if name == "report":
                    page.wait_for_function("() => document.querySelector('.card[data-settled]')", timeout=30_000)
                if name == "paint":
                    page.wait_for_selector('body[data-renders="1"]:not([data-busy])', state="attached", timeout=60_000)
                    box = page.locator("#overlay").bounding_box()
                    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6)
                time.sleep(1.5)
                path = a.out / f"{name}-{w}x{h}.png"
                page.screenshot(path=str(path))
                _small_png(path)
                print(path, path.stat().st_size // 1024, "KiB")
                page.close()
        b.close()
    server.should_exit = True


if __name__ == "__main__":
    main()
