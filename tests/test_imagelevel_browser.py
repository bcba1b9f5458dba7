"""The report of an image-level layer in Chromium: its top images are drawn as they are (no region
dimmed or outlined), while the run's map layer keeps its regions (issue 29)."""
from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest
from PIL import Image
from playwright import sync_api  # a declared test dependency: missing is a failure, not a skip

from browser_support import PageWatch, launch_chromium, needs_chromium
from netdissect import dissect
from netdissect.report import write_report
from test_imagelevel import KW, Planted

pytestmark = needs_chromium


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from broden_fixture import make_broden

    root = tmp_path_factory.mktemp("ilb")
    world = make_broden(root / "ds", n=40, size=32, seed=4)
    dissect(Planted(), ["conv", "fc"], str(world), out=root / "run", **KW)
    report = write_report(root / "run").parent
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(report)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", report
    httpd.shutdown()
    httpd.server_close()


def _tile(page, data, report, layer_name, unit):
    """(canvas pixels of the card's first tile, the photo of that tile from the sheet), float (T, T, 3)."""
    T = data["tile"]
    li = [lay["name"] for lay in data["layers"]].index(layer_name)
    L = data["layers"][li]
    u = next(u for u in data["units"] if u["layer"] == li and u["unit"] == unit)
    card = f"{L['id']}-{unit}"
    page.evaluate("(id) => window.netdissectReport.drawStrip(id)", card)
    page.wait_for_function("(id) => document.getElementById(id).querySelector('canvas.act').dataset.state === 'drawn'",
                           arg=card, timeout=15_000)
    flat = page.evaluate("""([id, T]) => { const c = document.getElementById(id).querySelector('canvas.act');
        return Array.from(c.getContext('2d').getImageData(0, 0, T, T).data); }""", [card, T])  # the first tile
    px = np.asarray(flat, np.uint8).reshape(T, T, 4)[..., :3].astype(np.float32)
    sheets = data["sheets"]
    sheet = Image.open(report / sheets["t"][u["t"][0] // sheets["per"]]).convert("RGB")
    c = u["t"][0] % sheets["per"]
    x, y = (c % sheets["cols"]) * T, (c // sheets["cols"]) * T
    return px, np.asarray(sheet.crop((x, y, x + T, y + T)), np.float32), u


@pytest.fixture(scope="module")
def browser():
    yield from launch_chromium(sync_api)


def test_image_level_cards_draw_their_top_images_without_regions(served, browser):
    url, report = served
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    watch = PageWatch(page)
    page.goto(f"{url}/index.html", wait_until="load")
    data = page.evaluate("window.netdissectReport.data")
    px, photo, u = _tile(page, data, report, "fc", 0)
    assert u["sc"] == "AUROC" and u["label"] == "square"
    assert np.abs(px - photo).mean() < 2  # the photo itself, nowhere dimmed or outlined
    text = page.evaluate("document.getElementById('fc-0').textContent")
    assert "AUROC" in text and "image-level (no region)" in text
    # the map layer's strip still dims what lies outside its region
    px, photo, _ = _tile(page, data, report, "conv", 0)
    assert np.abs(px - photo).mean() > 10
    watch.check()
    page.close()
