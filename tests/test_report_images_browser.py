"""The strips of an image-folder run and of a run that holds its images, in headless Chromium.

    $ NETDISSECT_ARTIFACTS=1 .venv/bin/python -m pytest -q tests/test_report_images_browser.py

For each kind: the page draws every visible strip from the report's sheets with no console error
or outside request, the region above threshold shows the image the model saw (the canvas pixels
against the sheet tile and against the source image), and there is no outline toggle.
Screenshots go to the pytest tmp dir, and to tests/artifacts/ when NETDISSECT_ARTIFACTS is set.
"""
from __future__ import annotations

import base64
import functools
import http.server
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.probe.folder import ImageFolder
from netdissect.report import write_report
from browser_support import launch_chromium, needs_chromium
from test_report_browser import Watch, _Quiet, canvas_pixels, images_loaded, save_shot, sync_api
from test_report_images import SIZE, as_tile, dissect_folder, generated, make_generator_run, make_photos, \
    tile_of, top_rows

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-images-browser")
    photos = make_photos(root / "photos")
    folder = dissect_folder(photos, root / "folder-run", root / "cache", size=SIZE, crop=True)
    gen = make_generator_run(folder, root / "gen-run")
    from netdissect import dissect
    from test_gan_dissect import KW, Painter

    painter = root / "painter-run"  # a real generator run (tests/test_gan_dissect.py's painters)
    dissect(Painter(), ["paint"], samples=40, seed=3, segmenter="color", out=painter, label_cache=root / "cache", **KW)
    for run in (folder, gen, painter):
        write_report(run, workers=0)
    return {"folder": folder, "gen": gen, "painter": painter, "photos": photos}


@pytest.fixture(scope="module")
def serve():
    """serve(folder) -> http://127.0.0.1:PORT of a static server of that folder (same origin: the
    canvases can be read back)."""
    servers = []

    def start(folder):
        handler = functools.partial(_Quiet, directory=str(folder))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    yield from launch_chromium(sync_api)


def _kept_region(data, u, j):
    """bool (T, T): pixels of tile j clearly above the unit's threshold, away from the contour."""
    T, L = data["tile"], data["layers"][u["layer"]]
    maps = np.frombuffer(base64.b64decode(u["m"]), "<f2").astype(np.float32).reshape(L["k"], L["mh"], L["mw"])
    up = F.interpolate(torch.from_numpy(maps[j:j + 1])[None], size=(T, T), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    region = up > u["th"]
    core = region & (up > u["th"] + 0.02)
    core[1:-1, 1:-1] &= region[:-2, 1:-1] & region[2:, 1:-1] & region[1:-1, :-2] & region[1:-1, 2:]
    return core


@pytest.mark.parametrize("kind", ["folder", "gen", "painter"])
def test_strips_show_the_images(browser, runs, serve, kind, tmp_path):
    run = runs[kind]
    report = run / "report"
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    watch = Watch(page)
    base = serve(report)
    page.goto(f"{base}/index.html", wait_until="load")
    data = page.evaluate("window.netdissectReport.data")
    assert page.locator("#outlines").is_hidden()  # no ground truth: no outline toggle
    # a detector of the deeper layer with a large kept region in its first image
    name = "paint" if kind == "painter" else "units2"
    L = next(i for i, l in enumerate(data["layers"]) if l["name"] == name)
    images, paths = top_rows(run, name)
    probe = ImageFolder(runs["photos"], size=SIZE, crop=True)
    best = None
    for u in (u for u in data["units"] if u["layer"] == L and u["t"][0] >= 0):
        core = _kept_region(data, u, 0)
        if best is None or core.sum() > best[1].sum():
            best = (u, core)
    u, core = best
    assert core.sum() > 200
    card = f"{data['layers'][L]['id']}-{u['unit']}"
    page.evaluate("([l, n]) => window.netdissectReport.jump(l, n)", [L, u["unit"]])
    page.wait_for_function("(id) => document.getElementById(id).querySelector('canvas.act').dataset.state === 'drawn'",
                           arg=card, timeout=15_000)
    images_loaded(page, 4)
    T = data["tile"]
    tile = canvas_pixels(page, card)[:T, :T, :3].astype(np.float32)
    sheet_tile = tile_of(report, data, u["t"][0])
    i = int(images[u["unit"], 0])
    if kind == "folder":
        source = as_tile(probe.load(probe.files.index(paths[i])), T)  # the crop the model saw
    else:  # the PNG in RUN/images (the synthetic run's are generated(i))
        png = np.asarray(Image.open(run / "images" / paths[i]).convert("RGB"))
        assert kind == "painter" or np.array_equal(png, generated(i))
        source = as_tile(png, T)
    assert np.abs(tile[core] - sheet_tile[core]).mean() < 8   # the kept region is the sheet's thumbnail
    assert np.abs(tile[core] - source[core]).mean() < 10      # ... which is the image the model saw
    assert np.abs(tile[~core] - sheet_tile[~core]).mean() > 10  # and the rest is dimmed
    page.evaluate("document.getElementById('units').scrollIntoView()")
    images_loaded(page, min(6, len(data["units"])))
    shot = save_shot(page, tmp_path, f"report-{kind}-run.png")
    assert shot.stat().st_size > 20_000
    watch.check()
    page.close()
