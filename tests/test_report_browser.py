"""The report in a real browser: headless Debian Chromium driven by Playwright.

    $ make browser          # apt-get install chromium (once)
    $ NETDISSECT_ARTIFACTS=1 .venv/bin/python -m pytest -q tests/test_report_browser.py

Serves the report folder from 127.0.0.1 and checks that cards and images
render, that sorting, filtering, layer toggles, outlines and jump-to-unit
work, that no request leaves the machine and no console error appears; also
opens it from file://.  Screenshots go to the pytest tmp dir, and to
tests/artifacts/ when NETDISSECT_ARTIFACTS is set.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from playwright import sync_api  # a declared test dependency: missing is a failure, not a skip

from netdissect.report import write_report
from browser_support import PageWatch, launch_chromium, needs_chromium
from report_fixture import make_dataset, make_run

pytestmark = needs_chromium
ARTIFACTS = Path(__file__).parent / "artifacts"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-browser")
    run = make_run(root / "run", make_dataset(root / "broden"))
    return write_report(run).parent


@pytest.fixture(scope="module")
def server(report):
    handler = functools.partial(_Quiet, directory=str(report))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    yield from launch_chromium(sync_api)


class Watch(PageWatch):
    """The report is offline: local files and 127.0.0.1 only."""


def save_shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("NETDISSECT_ARTIFACTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(path, ARTIFACTS / name)
    return path


def visible_units(page, layer: int) -> list[dict]:
    return page.evaluate("""(layer) => Array.from(
        document.querySelectorAll(`.column[data-layer="${layer}"] .card:not([hidden])`)).map(c => ({
            id: c.id, unit: +c.querySelector('.unit-no').textContent.slice(1),
            iou: +c.querySelector('.iou').textContent.replace('IoU', ''),
            cat: (c.querySelector('.chip') || {}).textContent || '',
            label: c.querySelector('.unit-label').textContent, det: c.classList.contains('det')}))""", layer)


def images_loaded(page, n: int = 4) -> None:
    """The first n visible cards (of the layer shown) have drawn their strips (canvases, lazily, from the sheets)."""
    page.wait_for_function("""(n) => {
        const c = Array.from(document.querySelectorAll('.column:not([hidden]) .card:not([hidden]) canvas.act'))
            .slice(0, n);
        return c.length === n && c.every(x => x.dataset.state === 'drawn');
    }""", arg=n, timeout=15_000)


def settled(page, card_id: str) -> None:
    """The page has scrolled to the card and stopped moving it (report.js marks it data-settled)."""
    page.wait_for_function("(id) => document.getElementById(id).dataset.settled", arg=card_id, timeout=15_000)


def canvas_pixels(page, card_id: str, which: str = "act") -> np.ndarray:
    """uint8 (H, W, 4) pixels of a card's canvas (same-origin page: the canvas is readable)."""
    flat = page.evaluate("""([id, which]) => {
        const c = document.getElementById(id).querySelector('canvas.' + which);
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""", [card_id, which])
    size = page.evaluate("""([id, which]) => { const c = document.getElementById(id).querySelector('canvas.' + which);
        return [c.height, c.width]; }""", [card_id, which])
    return np.asarray(flat, np.uint8).reshape(size[0], size[1], 4)


def test_report_in_chromium(browser, server, report, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    watch = Watch(page)
    page.goto(f"{server}/index.html", wait_until="load")
    data = page.evaluate("window.netdissectReport.data")
    total = len(data["units"])
    assert page.locator(".card").count() == total
    n1 = sum(1 for u in data["units"] if u["layer"] == 1)
    n0 = total - n1
    # one layer at a time: the first tab is shown
    assert page.locator("#count").inner_text() == f"Showing {n0} of {n0} units of {data['layers'][0]['name']}"
    assert page.locator('.column[data-layer="1"]').is_hidden()
    page.click(".layer-tab >> nth=1")
    assert page.locator('.column[data-layer="0"]').is_hidden() and page.locator('.column[data-layer="1"]').is_visible()
    assert page.get_attribute(".layer-tab >> nth=1", "aria-selected") == "true"
    assert page.evaluate("location.hash") == f"#{data['layers'][1]['id']}"
    # summary charts render
    assert page.evaluate("Array.from(document.querySelectorAll('#summary img'))"
                         ".every(i => i.complete && i.naturalWidth > 0)")
    save_shot(page, tmp_path, "report-summary.png")

    # unit cards render with their strips (lazy: scroll them into view first)
    page.locator("#units").scroll_into_view_if_needed()
    page.evaluate("document.getElementById('units').scrollIntoView()")
    images_loaded(page)
    # lazily: cards far below the screen have not drawn yet
    assert page.evaluate("document.querySelectorAll('canvas.act[data-state=drawn]').length") < total

    # sorting: IoU (default) is descending; unit number reorders; label sorts A-Z
    by_iou = visible_units(page, 1)
    assert [u["iou"] for u in by_iou] == sorted((u["iou"] for u in by_iou), reverse=True)
    page.select_option("#sort", "unit")
    by_unit = visible_units(page, 1)
    assert [u["unit"] for u in by_unit] == list(range(len(by_unit)))
    assert [u["unit"] for u in by_unit] != [u["unit"] for u in by_iou]
    page.select_option("#sort", "label")
    labels = [u["label"] for u in visible_units(page, 1) if u["label"] not in ("dead unit", "no concept")]
    assert labels == sorted(labels, key=str.lower)
    page.select_option("#sort", "iou")
    assert [u["id"] for u in visible_units(page, 1)] == [u["id"] for u in by_iou]

    # filtering: by category, detector flag and label text hides cards
    page.select_option("#category", "color")
    shown = visible_units(page, 1)
    assert 0 < len(shown) < n1 and {u["cat"] for u in shown} == {"color"}
    assert page.locator('.column[data-layer="1"] .card[hidden]').count() == n1 - len(shown)
    page.select_option("#category", "")
    page.select_option("#detector", "0")
    shown = visible_units(page, 1)
    assert shown and not any(u["det"] for u in shown)
    page.select_option("#detector", "")
    page.fill("#search", "dis")
    shown = visible_units(page, 1)
    assert shown and all("dis" in u["label"] for u in shown)
    assert page.locator("#count").inner_text() == f"Showing {len(shown)} of {n1} units of {data['layers'][1]['name']}"
    page.fill("#search", "")
    page.click(".layer-tab >> nth=0")

    # jump to a unit that the current filter hides: filters are cleared, the card is shown
    target = next(u for u in data["units"] if u["layer"] == 1 and u["cat"] != "color" and u["unit"] > 20)
    page.select_option("#category", "color")
    page.select_option("#jump-layer", "1")
    page.fill("#jump-unit", str(target["unit"]))
    page.click("#jump-go")
    card = page.locator(f"#{data['layers'][1]['id']}-{target['unit']}")
    assert card.is_visible()
    settled(page, card.get_attribute("id"))
    assert "flash" in card.get_attribute("class")
    assert page.evaluate("""(id) => { const r = document.getElementById(id).getBoundingClientRect();
        return r.top >= 0 && r.bottom <= innerHeight; }""", f"{data['layers'][1]['id']}-{target['unit']}")
    assert page.input_value("#category") == ""

    # ground-truth outlines: toggled for all cards
    page.check("#outlines")
    assert page.evaluate("document.body.classList.contains('outlines')")
    gt = page.locator(".card:not([hidden]) canvas.gt").first
    assert gt.evaluate("e => getComputedStyle(e).opacity") == "1"
    page.evaluate("window.scrollTo(0, document.getElementById('units').offsetTop - 10)")
    images_loaded(page)
    save_shot(page, tmp_path, "report-units.png")
    watch.check()
    assert all(urlparse(u).hostname == "127.0.0.1" for u in watch.requests if u.startswith("http"))
    page.close()


def test_report_from_file_url(browser, report, tmp_path):
    """The page also works opened straight from the file system (no server)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    page.goto((report / "index.html").as_uri(), wait_until="load")
    page.evaluate("document.getElementById('units').scrollIntoView()")
    images_loaded(page)
    page.fill("#jump-unit", "3")
    page.click("#jump-go")
    card = page.locator(f"#{page.evaluate('window.netdissectReport.data.layers[0].id')}-3")
    assert card.is_visible()
    page.wait_for_function("(id) => document.getElementById(id).querySelector('canvas.act').dataset.state === 'drawn'",
                           arg=card.get_attribute("id"), timeout=15_000)
    # from file:// the canvas cannot be read back (tainted): compare the screenshot's pixels instead
    shot = np.asarray(Image.open(__import__("io").BytesIO(card.locator("canvas.act").screenshot())).convert("L"))
    assert shot.std() > 10  # the photos are drawn, not a blank canvas
    save_shot(page, tmp_path, "report-file-url.png")
    watch.check()
    page.close()


def test_strip_shows_the_units_region(browser, server, report, tmp_path):
    """The canvas keeps the photo where the upsampled map is above threshold and dims it elsewhere;
    the outline canvas draws the label concept's mask border; JS upsampling matches torch."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    watch = Watch(page)
    page.goto(f"{server}/index.html", wait_until="load")
    data = page.evaluate("window.netdissectReport.data")
    T, L = data["tile"], data["layers"][1]
    u = next(u for u in data["units"] if u["layer"] == 1 and u["det"] and u["t"][0] >= 0
             and u["cat"] in ("object", "color"))
    card = f"{L['id']}-{u['unit']}"
    page.evaluate("(id) => window.netdissectReport.drawStrip(id)", card)
    page.wait_for_function("(id) => document.getElementById(id).querySelector('canvas.act').dataset.state === 'drawn'",
                           arg=card, timeout=15_000)
    maps = np.frombuffer(__import__("base64").b64decode(u["m"]), "<f2").astype(np.float32)
    maps = maps.reshape(L["k"], L["mh"], L["mw"])
    up = F.interpolate(torch.from_numpy(maps[:1])[None], size=(T, T), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    js = np.asarray(page.evaluate("([m, h, w]) => Array.from(window.netdissectReport.upsample(m, 0, h, w))",
                                  [maps[0].ravel().tolist(), L["mh"], L["mw"]]), np.float32).reshape(T, T)
    assert np.abs(js - up).max() < 1e-4  # the same bilinear resize as torch (align_corners=False)
    region = up > u["th"]
    assert region.any() and (~region).any()
    # away from the region's edge (the light contour) and from threshold ties
    core = region & (up > u["th"] + 0.05)
    core[1:-1, 1:-1] &= region[:-2, 1:-1] & region[2:, 1:-1] & region[1:-1, :-2] & region[1:-1, 2:]
    out = ~region & (up < u["th"] - 0.05)
    assert core.any() and out.any()
    px = canvas_pixels(page, card)[:T, :T, :3].astype(np.float32)
    sheets = data["sheets"]
    sheet = Image.open(report / sheets["t"][u["t"][0] // sheets["per"]]).convert("RGB")
    c = u["t"][0] % sheets["per"]
    x, y = (c % sheets["cols"]) * T, (c // sheets["cols"]) * T
    photo = np.asarray(sheet.crop((x, y, x + T, y + T)), np.float32)
    inside, outside = px[core], px[out]
    assert np.abs(inside - photo[core]).mean() < 4                       # kept: the photo itself
    assert np.abs(outside - (0.28 * photo[out] + 14)).mean() < 4         # dimmed: 0.28 x + 14
    assert inside.mean() > outside.mean() + 20
    # the outline canvas: opaque pixels only where an outline is drawn, in cyan
    g = canvas_pixels(page, card, "gt")
    tiles = [j for j, gi in enumerate(u["g"]) if gi >= 0]
    assert tiles, "no outline in the strip of a detector"
    cols = min(L["k"], 5)
    j = tiles[0]
    gx, gy = (j % cols) * (T + 2), (j // cols) * (T + 2)
    tile = g[gy:gy + T, gx:gx + T]
    cyan = (tile[..., 3] == 255) & (tile[..., 0] < 40) & (tile[..., 1] > 200) & (tile[..., 2] > 200)
    assert 0 < cyan.sum() < 0.5 * T * T
    save_shot(page, tmp_path, "report-strip.png")
    watch.check()
    page.close()


def test_report_of_a_big_layer_draws_only_what_is_on_screen(browser, tmp_path):
    """512 units: the page opens fast and draws the cards near the screen only."""
    root = tmp_path
    run = make_run(root / "run", make_dataset(root / "broden", n=24), layers=(("layer4", 512, 7),))
    report = write_report(run).parent
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    watch = Watch(page)
    page.goto((report / "index.html").as_uri(), wait_until="load")
    assert page.locator(".card").count() == 512
    page.evaluate("document.getElementById('units').scrollIntoView()")
    images_loaded(page, 8)
    drawn = page.evaluate("document.querySelectorAll('canvas.act[data-state=drawn]').length")
    assert 8 <= drawn < 100
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.card')).slice(-3)"
                           ".every(c => c.querySelector('canvas.act').dataset.state === 'drawn')", timeout=15_000)
    save_shot(page, tmp_path, "report-big-bottom.png")
    watch.check()
    page.close()


READER_SIZES = [(1366, 768), (1920, 1080)]


def in_view_below_toolbar(page, card_id: str) -> dict:
    return page.evaluate("""(id) => { const r = document.getElementById(id).getBoundingClientRect();
        const bar = document.getElementById('toolbar').getBoundingClientRect();
        return {top: r.top, bottom: r.bottom, bar: bar.bottom, h: innerHeight,
                ok: r.top >= bar.bottom - 0.5 && r.bottom <= innerHeight + 0.5}; }""", card_id)


@pytest.mark.parametrize("size", READER_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_reader_at_laptop_and_desktop_sizes(browser, report, size, tmp_path):
    """What a reader needs at 1366x768 and 1920x1080: a deep link opens its unit's layer with the card in view,
    below the sticky toolbar, with no horizontal scrolling; "Jump to" lands there on the first press; a strip
    and a chart open enlarged."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    watch = Watch(page)
    page.goto((report / "index.html").as_uri(), wait_until="load")
    data = page.evaluate("window.netdissectReport.data")
    L1 = data["layers"][1]
    # a deep link to a unit far down the second layer (default sort: by IoU), in the #LAYER/UNIT form
    order = sorted((u for u in data["units"] if u["layer"] == 1), key=lambda u: (-u["iou"], u["unit"]))
    deep = order[-3]["unit"]
    page.goto((report / "index.html").as_uri() + f"#{L1['id']}/{deep}", wait_until="load")
    page.reload(wait_until="load")  # a fresh load with the hash (goto to the same file with a hash only scrolls)
    card_id = f"{L1['id']}-{deep}"
    settled(page, card_id)
    assert page.evaluate("window.netdissectReport.current()") == 1
    pos = in_view_below_toolbar(page, card_id)
    assert pos["ok"], pos
    # no horizontal scroll: the page is no wider than the window and every card of the layer fits in it
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert page.evaluate("""() => Array.from(document.querySelectorAll('.column:not([hidden]) .card'))
        .every(c => c.getBoundingClientRect().right <= document.documentElement.clientWidth)""")
    # "Jump to": another unit of the first layer, in view below the toolbar after the first press
    page.evaluate("window.scrollTo(0, 0)")
    target = next(u["unit"] for u in sorted((u for u in data["units"] if u["layer"] == 0),
                                            key=lambda u: (-u["iou"], u["unit"]))[-5:])
    page.select_option("#jump-layer", "0")
    page.fill("#jump-unit", str(target))
    page.click("#jump-go")
    tid = f"{data['layers'][0]['id']}-{target}"
    settled(page, tid)
    pos = in_view_below_toolbar(page, tid)
    assert pos["ok"], pos
    assert "flash" in page.get_attribute(f"#{tid}", "class")
    page.wait_for_function("(id) => document.getElementById(id).querySelector('canvas.act').dataset.state === 'drawn'",
                           arg=tid, timeout=15_000)
    save_shot(page, tmp_path, f"report-{size[0]}.png")
    # a strip opens enlarged: each tile at least its full size (the tile's pixels, not the card's shrunk copy)
    shown = page.evaluate("(id) => document.getElementById(id).querySelector('canvas.act')"
                          ".getBoundingClientRect().width", tid)
    page.click(f"#{tid} .strip")
    page.wait_for_selector("#zoom[open]")
    z = page.evaluate("""() => { const c = document.querySelector('#zoom-body canvas');
        return {w: c.getBoundingClientRect().width, natural: c.width}; }""")
    assert z["w"] >= z["natural"] - 1 and z["w"] > shown * 1.3, (z, shown)
    page.keyboard.press("Escape")
    page.wait_for_selector("#zoom:not([open])", state="attached")
    # a chart opens at its full size
    page.evaluate("window.scrollTo(0, 0)")
    page.click(".layer-panel:not([hidden]) a.zoomable >> nth=0")
    page.wait_for_function("() => { const i = document.querySelector('#zoom-body img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    z = page.evaluate("""() => { const i = document.querySelector('#zoom-body img');
        return {w: i.getBoundingClientRect().width, natural: i.naturalWidth}; }""")
    assert abs(z["w"] - z["natural"]) <= 1, z
    watch.check()
    page.close()
