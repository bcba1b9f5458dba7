"""The paint app in a real browser: headless Debian Chromium driven by Playwright.

    $ .venv/bin/python -m pytest -q tests/test_app_browser.py
    $ NETDISSECT_DOCS_IMG=1 .venv/bin/python -m pytest -q tests/test_app_browser.py   # also docs/img/paint-*.png

Serves the app (uvicorn, in a thread, on a free port of 127.0.0.1) around a generator and a run:
the bundled ``zoo:world-gan`` with a dissection by ``zoo:world-seg`` when ``PAINT_RUN`` names one
(``netdissect dissect --model zoo:world-gan ... --segmenter zoo:world-seg``), else the hand-built
toy generator (``netdissect.app.toy``), dissected by the fixture with the ``color`` segmenter.
The page is driven with the mouse and the keyboard; the returned images are segmented by the run's segmenter (``zoo:world-seg`` or
``color``) to check that drawing adds the concept inside the stroke and erasing removes it; undo
must give back the previous image bit for bit; no console error, no request off 127.0.0.1, and
every request body the page sends fits the served OpenAPI schema.
"""
from __future__ import annotations

import base64
import io
import json
import re
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image
from playwright import sync_api  # a declared test dependency: missing is a failure, not a skip

from browser_support import PageWatch, launch_chromium, needs_chromium

pytestmark = needs_chromium
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def _setup(root: Path):
    """(painter, segmenter, model spec, run): the world GAN's when PAINT_RUN is set, else the toy's."""
    from netdissect.app import toy
    from netdissect.app.painter import Painter
    from netdissect.app.palette import load_palette
    from netdissect.models import load_model
    from netdissect.segment import load_segmenter

    run = os.environ.get("PAINT_RUN")
    if run:
        spec = os.environ.get("PAINT_MODEL", "zoo:world-gan")
        seg = os.environ.get("PAINT_SEGMENTER", "zoo:world-seg")
    else:   # the hand-built generator, dissected for real with the color segmenter (about 5 s)
        from netdissect.dissection.engine import dissect

        spec, seg, run = "netdissect.app.toy:toy_generator", "color", root / "run"
        dissect(spec, "layer1", samples=200, latent_seed=1, segmenter=seg, out=run, progress=False)
    # the toy's layer has 8 units, four painters per colour: its concepts' units are their 4 best
    # (the next best are the other colour's, at IoU 0.001); a real layer keeps the PNAS app's 20
    layer, palette, _ = load_palette(run, os.environ.get("PAINT_LAYER"), 2, 20 if os.environ.get("PAINT_RUN") else 4)
    model, gen_io = load_model(spec, os.environ.get("PAINT_WEIGHTS") if os.environ.get("PAINT_RUN") else None,
                               generator=True)
    if not os.environ.get("PAINT_RUN"):   # a concept its units detect (by hand) but never draw: the green units
        from netdissect.app.palette import Concept

        palette.append(Concept("blue-c", "color", list(toy.GREEN_UNITS), [0.3] * 4, "#8a929c", 4))
    painter = Painter(model, layer, palette, z_dim=gen_io.z_dim, to_image=gen_io.to_image)
    seg = load_segmenter(seg)
    # which concepts the default stroke draws, as `netdissect paint` measures at start (cached per weights)
    from netdissect.app.drawing import measure_drawing

    numbers = {c: seg.concepts.index(c) + 1 for c in painter.palette if c in seg.concepts}
    painter.drawing = measure_drawing(painter, seg, numbers, seg_size=(32, 32),
                                      cache_dir=None if os.environ.get("PAINT_RUN") else False)
    for name, row in painter.drawing["concepts"].items():
        painter.palette[name].drawing = row
    return painter, seg, spec, run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from netdissect.app.server import create_app

    painter, seg, spec, run = _setup(tmp_path_factory.mktemp("paint-browser"))
    app = create_app(painter, run=str(run), model=spec, allowed_hosts=["127.0.0.1"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", painter, seg
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    yield from launch_chromium(sync_api)


class Watch(PageWatch):
    """The app: its own server on 127.0.0.1 and data URLs only; records the bodies the page POSTs."""

    where = "127.0.0.1"

    def __init__(self, page):
        self.bodies = []
        super().__init__(page)

    def allowed(self, u) -> bool:
        return u.scheme == "data" or (u.scheme == "http" and u.hostname == "127.0.0.1")

    def seen(self, route, u) -> None:
        if route.request.method == "POST":
            self.bodies.append((u.path, json.loads(route.request.post_data)))


def decode(url: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def share(seg, img: np.ndarray, name: str, region: np.ndarray) -> float:
    """Fraction of the region's pixels that the segmenter labels ``name`` (any plane)."""
    from netdissect.segment import checked_segment

    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    lab = checked_segment(seg, x, img.shape[:2])[0].numpy()
    k = seg.concepts.index(name) + 1
    return float((lab == k).any(0)[region].mean())


def wait_render(page, n: int):
    page.wait_for_selector(f'body[data-renders="{n}"]:not([data-busy])', state="attached", timeout=20_000)
    return decode(page.get_attribute("#result", "src"))


def drag_over(page, frac_box, step=0.04):
    """Drag the mouse to and fro over a box of the canvas given in fractions (x0, y0, x1, y1)."""
    b = page.locator("#overlay").bounding_box()
    x0, y0, x1, y1 = frac_box
    pts = []
    y, flip = y0, False
    while y <= y1 + 1e-9:
        row = [(x0, y), (x1, y)]
        pts += row[::-1] if flip else row
        y, flip = y + step, not flip
    page.mouse.move(b["x"] + pts[0][0] * b["width"], b["y"] + pts[0][1] * b["height"])
    page.mouse.down()
    for px, py in pts[1:]:
        page.mouse.move(b["x"] + px * b["width"], b["y"] + py * b["height"], steps=4)
    page.mouse.up()


def shot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("NETDISSECT_DOCS_IMG"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / name)
    return path


def most_frequent(painter, seg, seeds) -> str:
    """The palette concept that covers most pixels of these samples (by the segmenter)."""
    imgs = painter.samples(list(seeds))
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    from netdissect.segment import checked_segment
    lab = checked_segment(seg, x, imgs.shape[1:3]).numpy()
    counts = {c: int((lab == seg.concepts.index(c) + 1).sum()) for c in painter.palette if c in seg.concepts}
    return max(counts, key=counts.get)


def test_paint_in_chromium(browser, served, tmp_path):
    url, painter, seg = served
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    watch = Watch(page)
    page.goto(url + "/", wait_until="load")
    wait_render(page, 1)                                   # seed 0 opens by itself
    assert page.locator(".sample").count() == 12
    assert page.locator(".concept").count() == len(painter.palette)

    # the most frequent palette concept of the shown samples, and the first sample that shows it (5% of
    # the image or more) but not over most of the region: a GAN paints a concept where the scene allows
    # it (PNAS 2020: doors go on buildings, not in the sky)
    concept = most_frequent(painter, seg, range(12))
    h, w = painter.size
    fx0, fy0, fx1, fy1 = 0.22, 0.22, 0.62, 0.62
    region = np.zeros((h, w), bool)
    region[int(fy0 * h):int(fy1 * h), int(fx0 * w):int(fx1 * w)] = True
    plain = painter.samples(list(range(12)))
    whole = np.ones((h, w), bool)
    seed = next((s for s in range(1, 12) if share(seg, plain[s], concept, whole) >= 0.05
                 and share(seg, plain[s], concept, region) < 0.5), 1)

    # pick that sample: its image, bit for bit the generator's
    page.click(f'.sample[data-seed="{seed}"]')
    before = wait_render(page, 2)
    # (against a render of that seed alone: in a batch of 12 a conv's float sums may round one pixel value
    # the other way)
    assert np.array_equal(before, painter.samples([seed])[0])
    assert page.get_attribute(f'.sample[data-seed="{seed}"]', "aria-selected") == "true"
    shot(page, tmp_path, "paint-pick.png")

    page.click(f'.concept[data-name="{concept}"]')
    assert page.get_attribute(f'.concept[data-name="{concept}"]', "aria-checked") == "true"
    page.fill("#brush", "10")
    page.dispatch_event("#brush", "input")
    if os.environ.get("PAINT_N_UNITS"):          # e.g. 20 for a GAN concept with few detectors
        page.fill("#n-units", os.environ["PAINT_N_UNITS"])
        page.dispatch_event("#n-units", "input")
    drag_over(page, (fx0, fy0, fx1, fy1))
    drawn = wait_render(page, 3)
    s0, s1 = share(seg, before, concept, region), share(seg, drawn, concept, region)
    assert s1 > s0 + 0.1, (concept, s0, s1)
    edits = page.locator("#edits .edit")
    assert edits.count() == 1 and concept in edits.first.inner_text()
    page.check("#show-edits")
    shot(page, tmp_path, "paint-draw.png")
    page.uncheck("#show-edits")

    # erase it again (the E key), over the same region
    page.keyboard.press("e")
    assert page.is_checked('input[name=mode][value=erase]')
    drag_over(page, (fx0, fy0, fx1, fy1))
    erased = wait_render(page, 4)
    s2 = share(seg, erased, concept, region)
    assert s2 < s1 - 0.1, (concept, s1, s2)
    assert page.locator("#edits .edit").count() == 2
    shot(page, tmp_path, "paint-erase.png")

    # undo (Ctrl+Z) gives back the drawn image bit for bit; redo (Ctrl+Y) the erased one
    page.keyboard.press("Control+z")
    assert np.array_equal(wait_render(page, 5), drawn)
    page.keyboard.press("Control+y")
    assert np.array_equal(wait_render(page, 6), erased)
    page.click("#undo")
    wait_render(page, 7)
    page.click("#undo")
    assert np.array_equal(wait_render(page, 8), before)      # no stroke left: the plain sample
    assert page.is_disabled("#undo") and page.locator("#edits .edit").count() == 0
    page.click("#redo")
    assert np.array_equal(wait_render(page, 9), drawn)
    assert page.locator("#edits .edit").count() == 1

    # the download link carries the shown image
    assert page.get_attribute("#download", "href") == page.get_attribute("#result", "src")

    # keyboard only: focus the canvas, move the cursor, paint a dab with Space
    page.keyboard.press("d")
    n = int(page.get_attribute("body", "data-renders"))
    page.focus("#overlay")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    page.keyboard.press("Space")
    wait_render(page, n + 1)
    last = page.locator("#edits .edit").first.inner_text()
    assert "draw" in last and page.locator("#edits .edit").count() == 2

    # a new batch of samples
    page.keyboard.press("n")
    page.wait_for_selector('.sample[data-seed="12"]', state="attached")

    # every body the page sent fits the served schema's properties
    spec = json.loads(page.evaluate("fetch('/openapi.json').then(r => r.text())"))
    schemas = spec["components"]["schemas"]
    req, stroke = schemas["RenderRequest"], schemas["StrokeIn"]
    posts = [b for p, b in watch.bodies if p == "/api/render"]
    assert posts and all(p == "/api/render" for p, _ in watch.bodies)
    for body in posts:
        assert set(body) <= set(req["properties"]) and set(req["required"]) <= set(body)
        for s in body["strokes"]:
            assert set(s) <= set(stroke["properties"]) and set(stroke["required"]) <= set(s)
    watch.check()
    page.close()


def test_a_refused_render_shows_the_message_in_the_page(browser, served):
    """The server's 422 (a stroke rewritten on the way to name an unknown concept) is shown, not thrown."""
    url, painter, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    page.goto(url + "/", wait_until="load")
    plain = wait_render(page, 1)

    def rewrite(route):
        body = json.loads(route.request.post_data)
        for st in body["strokes"]:
            st["concept"] = "unicorn"
        route.continue_(post_data=json.dumps(body))
    page.route("**/api/render", rewrite)
    drag_over(page, (0.3, 0.3, 0.5, 0.5))
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    text = page.inner_text("#message")
    assert "unknown concept 'unicorn'" in text, text
    assert np.array_equal(decode(page.get_attribute("#result", "src")), plain)
    assert "removed" in text and page.is_disabled("#undo")   # the refused stroke left the stack
    page.unroute("**/api/render", rewrite)
    drag_over(page, (0.3, 0.3, 0.5, 0.5))                  # the page goes on working
    wait_render(page, 2)
    assert page.is_hidden("#message")
    assert page.locator("#edits .edit").count() == 1
    # the browser reports the 422 itself ("Failed to load resource"); nothing else may be logged
    watch.errors[:] = [e for e in watch.errors if "422" not in e]
    watch.bad[:] = [b for b in watch.bad if not b.startswith("422 ")]
    watch.check()
    page.close()


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_painter_at_laptop_and_desktop_sizes(browser, served, size, tmp_path):
    """At 1366x768 and 1920x1080: a stroke with the default brush covers at least one whole cell of the layer
    and changes the image there; the brush shows its size under the pointer; the palette says when it scrolls;
    the counts and sliders are explained on screen; concepts with a colour of their own stroke in it; the image
    is drawn smooth unless "sharp pixels" is ticked; and when the server does not answer, the message shows
    beside the canvas and the failed stroke is gone."""
    url, painter, _ = served
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    watch = Watch(page)
    page.goto(url + "/", wait_until="load")
    before = wait_render(page, 1)
    info = page.evaluate("fetch('/api/info').then(r => r.json())")
    (h, w), (gh, gw) = info["image_size"], info["grid"]
    ch, cw = h // gh, w // gw
    brush = int(page.input_value("#brush"))
    assert brush >= 2 * max(ch, cw) - 1, (brush, ch, cw)
    # the brush's outline follows the pointer
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    ring = page.evaluate("""() => { const o = document.getElementById('overlay');
        const d = o.getContext('2d').getImageData(0, 0, o.width, o.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert ring > 0
    # one short stroke with the default brush, across the middle
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=6)
    page.mouse.up()
    after = wait_render(page, 2)
    mask = decode(watch.bodies[-1][1]["strokes"][-1]["mask"]).max(axis=2) > 0
    full = mask.reshape(gh, ch, gw, cw).all(axis=(1, 3))
    assert full.any(), "the default brush covered no whole cell"
    r, c = np.argwhere(full)[0]
    cell = (slice(r * ch, (r + 1) * ch), slice(c * cw, (c + 1) * cw))
    assert np.abs(after[cell].astype(int) - before[cell].astype(int)).max() > 0
    # explained on screen, and visible
    for sel in ("#help-sliders", "#help-palette"):
        assert page.is_visible(sel) and len(page.inner_text(sel)) > 60
    b = page.locator("#help-sliders").bounding_box()
    assert b["y"] + b["height"] <= size[1], b               # on screen without scrolling
    # the palette says when it scrolls, and the sign is on screen
    over = page.evaluate("(() => { const p = document.getElementById('palette');"
                         " return p.scrollHeight > p.clientHeight + 2; })()")
    more = page.locator("#palette-more")
    assert more.is_visible() == over
    if over:
        b = more.bounding_box()
        assert b["y"] + b["height"] <= size[1]
    # concepts with a colour of their own stroke in it
    own = {"red-c": "rgb(224, 32, 27)", "green-c": "rgb(31, 174, 58)", "blue-c": "rgb(31, 95, 224)",
           "water": "rgb(45, 95, 165)", "sand": "rgb(220, 200, 150)", "sky": "rgb(120, 174, 230)"}
    names = [n for n in painter.palette if n.split("/")[-1] in own]
    assert names
    for n in names:
        got = page.evaluate("(n) => getComputedStyle(document.querySelector(`.concept[data-name='${n}'] .swatch`))"
                            ".backgroundColor", n)
        assert got == own[n.split("/")[-1]], (n, got)
    # smooth by default, sharp pixels on request
    assert page.evaluate("getComputedStyle(document.getElementById('result')).imageRendering") == "auto"
    page.check("#pixelated")
    assert page.evaluate("getComputedStyle(document.getElementById('result')).imageRendering") == "pixelated"
    page.uncheck("#pixelated")
    if os.environ.get("NETDISSECT_DOCS_IMG"):
        shot(page, tmp_path, f"paint-{size[0]}.png")
    # the server does not answer: the message shows beside the canvas and the stroke is taken back
    page.route("**/api/render", lambda route: route.abort())
    n_before = page.locator("#edits .edit").count()
    drag_over(page, (0.2, 0.2, 0.4, 0.3))
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    m = page.locator("#message").bounding_box()
    assert m["y"] >= 0 and m["y"] + m["height"] <= size[1], m
    assert "did not answer" in page.inner_text("#message") and "removed" in page.inner_text("#message")
    page.unroute("**/api/render")
    assert page.evaluate("state.strokes.length") == 1      # the default-brush stroke only
    assert page.locator("#edits .edit").count() == n_before
    page.mouse.move(1, 1)                                  # off the canvas: no brush ring; the stroke's tint gone
    assert page.evaluate("""() => { const o = document.getElementById('overlay');
        return o.getContext('2d').getImageData(0, 0, o.width, o.height).data.every(v => v === 0); }""")
    # chromium logs the aborted request; nothing else may be logged
    watch.errors[:] = [e for e in watch.errors if "ERR_FAILED" not in e]
    watch.bad[:] = [b for b in watch.bad if "/api/render" not in b]
    watch.check()
    page.close()


def test_the_palette_marks_the_concepts_that_do_not_draw(browser, served):
    """Each concept says whether the default stroke measurably draws it; those that do not are marked (faded,
    "does not measurably draw") and "hide" takes them out of the list and out of the arrow keys' way."""
    url, painter, _ = served
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    watch = Watch(page)
    page.goto(url + "/", wait_until="load")
    wait_render(page, 1)
    rows = {n: c.drawing for n, c in painter.palette.items()}
    assert any(d["draws"] for d in rows.values())
    if not os.environ.get("PAINT_RUN"):
        assert rows["red-c"]["draws"] and not rows["blue-c"]["draws"]
    for name, d in rows.items():
        row = page.locator(f'.concept[data-name="{name}"]')
        text = row.locator(".drawn").inner_text()
        cls = row.get_attribute("class")
        if d["draws"]:
            m = re.fullmatch(r"draws \+(\d+)% of the region", text)
            assert m and abs(int(m.group(1)) - 100 * d["gain"]) <= 0.5 + 1e-9 and "nodraw" not in cls, (name, text)
        else:
            assert text == "does not measurably draw" and "nodraw" in cls, (name, text)
            assert float(row.evaluate("e => getComputedStyle(e).opacity")) < 0.8
    assert "Faded: does not measurably draw" in page.inner_text("#help-palette")
    nodraw = [n for n, d in rows.items() if not d["draws"]]
    assert page.is_visible("#hide-nodraw-box") == bool(nodraw)
    if nodraw:
        first = next(n for n, d in rows.items() if d["draws"])
        page.click(f'.concept[data-name="{first}"]')
        page.check("#hide-nodraw")
        shown = page.evaluate("Array.from(document.querySelectorAll('.concept')).filter(e => e.offsetParent)"
                              ".map(e => e.dataset.name)")
        assert set(shown) == {n for n, d in rows.items() if d["draws"]}
        page.focus(".concept.on")
        for _ in range(len(shown) + 1):                      # the arrow keys stay on the concepts shown
            page.keyboard.press("ArrowDown")
            assert page.evaluate("state.concept.drawing.draws")
        page.uncheck("#hide-nodraw")
        assert page.locator(".concept:visible").count() == len(rows)
    watch.check()
    page.close()
