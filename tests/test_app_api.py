"""The paint app's JSON API (``netdissect.app.server``) on the hand-built toy generator.

The toy's units 0-3 paint red and 4-7 green (``netdissect.app.toy``), so what a stroke must do is
known: the tests recompute each render by hand (the edit rule on ``layer1``, then ``layer2``) and
compare bit for bit, check the colour inside and outside the mask with the ``color`` segmenter, and
send every kind of bad request.
"""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import fastapi.testclient as fastapi_testclient  # needs httpx (the `test` extra): missing fails, never skips
import torch
from PIL import Image

from netdissect.app import toy
from netdissect.app.painter import MAX_MASK_BYTES, MAX_STROKES, Painter
from netdissect.app.palette import load_palette
from netdissect.app.server import MAX_BODY_BYTES, STATIC_DIR, create_app
from netdissect.segment import ColorSegmenter

APP_JS = STATIC_DIR / "app.js"
SIZE = 64


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    run = toy.write_toy_run(tmp_path_factory.mktemp("paint") / "run")
    layer, palette, _ = load_palette(run)
    return Painter(toy.toy_generator(), layer, palette)


@pytest.fixture(scope="module")
def client(painter):
    app = create_app(painter, run="toy", model="toy", allowed_hosts=["127.0.0.1", "localhost"])
    with fastapi_testclient.TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def png_url(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mask_url(mask: np.ndarray) -> str:
    """A mask as the page's canvas makes it: RGBA, transparent black where not painted."""
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[mask] = 255
    return png_url(rgba)


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def box(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    m[r0:r1, c0:c1] = True
    return m


def z_of(seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(16).astype(np.float32))[None]


def as_uint8(x: torch.Tensor) -> np.ndarray:
    img = ((x[0].permute(1, 2, 0).numpy().astype(np.float32) + 1) / 2).clip(0, 1)
    return np.floor(img * 255 + 0.5).astype(np.uint8)


def by_hand(seed: int, edits) -> np.ndarray:
    """The toy's image with ``edits`` [(units, cells bool (8, 8), value per unit)] set one after another."""
    g = toy.toy_generator()
    with torch.no_grad():
        x = g.layer1(z_of(seed)).clone()
        for units, cells, values in edits:
            for u, v in zip(units, values):
                x[0, u][torch.from_numpy(cells)] = v
        return as_uint8(g.layer2(x))


def cells_of(mask: np.ndarray) -> np.ndarray:
    return mask.reshape(8, 8, 8, 8).any(axis=(1, 3))


def label_share(img: np.ndarray, name: str, where: np.ndarray) -> float:
    seg = ColorSegmenter()
    lab = seg.segment(torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255, (SIZE, SIZE))[0, 0].numpy()
    return float((lab[where] == seg.concepts.index(name) + 1).mean())


def render(client, seed, strokes, status=200):
    r = client.post("/api/render", json={"seed": seed, "strokes": strokes})
    assert r.status_code == status, r.text
    return r.json()


# ----------------------------------------------------------------------------- palette and values
def test_concepts_palette_from_the_run(client, painter):
    items = client.get("/api/concepts").json()
    by = {c["name"]: c for c in items}
    assert set(by) == {"red-c", "green-c"}         # grey-c's 0.02 is below the threshold 0.04
    # units: best IoU first (all four are detectors, IoU > 0.04; grey-c's 0.02 is not)
    assert [u["unit"] for u in by["red-c"]["units"]] == toy.RED_UNITS
    assert [u["detector"] for u in by["red-c"]["units"]] == [True] * 4 and by["red-c"]["detectors"] == 4
    assert [u["unit"] for u in by["green-c"]["units"]] == toy.GREEN_UNITS
    assert all(set(c) >= {"name", "category", "units"} for c in items)
    # insertion value: the 99% quantile of each unit's raw 8 x 8 map over 200 latents of seed 1
    z = torch.from_numpy(np.random.RandomState(1).standard_normal((200, 16)).astype(np.float32))
    with torch.no_grad():
        maps = toy.toy_generator().layer1(z)
    q = np.quantile(maps.permute(1, 0, 2, 3).reshape(8, -1).numpy().astype(np.float64), 0.99, axis=1)
    for u in by["red-c"]["units"] + by["green-c"]["units"]:   # unit 4 twice: one value per unit
        assert u["value"] == pytest.approx(q[u["unit"]], rel=1e-4)
    info = client.get("/api/info").json()
    assert info["grid"] == [8, 8] and info["image_size"] == [SIZE, SIZE] and info["layer"] == "layer1"
    assert "99% quantile" in info["value_policy"] and "seed 1" in info["value_policy"]


# ----------------------------------------------------------------------------- renders
@pytest.mark.parametrize("seed", [0, 7, 2 ** 32 - 1])
def test_no_strokes_is_the_plain_generator_bit_for_bit(client, seed):
    img = decode(render(client, seed, [])["image"])
    assert np.array_equal(img, by_hand(seed, []))
    sample = client.get("/api/samples", params={"first": seed, "count": 1}).json()["samples"][0]
    assert sample["seed"] == seed and np.array_equal(decode(sample["image"]), img)


def test_draw_raises_the_concept_inside_the_mask_and_leaves_the_rest(client, painter):
    seed, m = 3, box(16, 40, 8, 32)
    before = decode(render(client, seed, [])["image"])
    out = render(client, seed, [{"concept": "red-c", "mode": "draw", "mask": mask_url(m)}])
    after = decode(out["image"])
    assert label_share(after, "red-c", m) > label_share(before, "red-c", m) + 0.5
    assert label_share(after, "red-c", m) > 0.9
    # exactly the edit rule at layer1: a = 1 on the painted cells of units 0-3, v = their q99 value
    values = [float(painter.values[u]) for u in toy.RED_UNITS]
    assert np.array_equal(after, by_hand(seed, [(toy.RED_UNITS, cells_of(m), values)]))
    # far from the painted cells (beyond the bilinear upsampling's reach) nothing changed
    far = np.ones((SIZE, SIZE), bool)
    far[16 - 8:40 + 8, 8 - 8:32 + 8] = False
    assert np.array_equal(after[far], before[far]) and not np.array_equal(after, before)
    e = out["edits"][0]
    assert e["units"] == toy.RED_UNITS and e["mode"] == "draw"
    assert sorted(map(tuple, e["cells"])) == sorted(map(tuple, np.argwhere(cells_of(m)).tolist()))


def test_erase_removes_it_and_strokes_apply_in_order(client, painter):
    seed, m = 2, box(0, 64, 0, 64)
    before = decode(render(client, seed, [])["image"])
    assert label_share(before, "green-c", m) > 0.1
    erased = decode(render(client, seed, [{"concept": "green-c", "mode": "erase", "mask": mask_url(m)}])["image"])
    assert label_share(erased, "green-c", m) == 0.0
    assert np.array_equal(erased, by_hand(seed, [(toy.GREEN_UNITS, cells_of(m), [0.0] * 4)]))
    small = box(8, 24, 8, 24)
    draw = {"concept": "green-c", "mode": "draw", "mask": mask_url(small)}
    erase = {"concept": "green-c", "mode": "erase", "mask": mask_url(m)}
    values = [float(painter.values[u]) for u in toy.GREEN_UNITS]
    a = decode(render(client, seed, [erase, draw])["image"])
    b = decode(render(client, seed, [draw, erase])["image"])
    assert np.array_equal(a, by_hand(seed, [(toy.GREEN_UNITS, cells_of(m), [0.0] * 4),
                                            (toy.GREEN_UNITS, cells_of(small), values)]))
    assert np.array_equal(b, erased)        # the later erase wins everywhere
    assert label_share(a, "green-c", small) > 0.9


def test_units_and_strength(client, painter):
    seed, m = 5, box(24, 48, 24, 48)
    default = render(client, seed, [{"concept": "red-c", "mode": "draw", "mask": mask_url(m)}])
    assert default["edits"][0]["units"] == toy.RED_UNITS              # by default: all its units
    many = render(client, seed, [{"concept": "red-c", "mode": "draw", "mask": mask_url(m), "n_units": 50}])
    assert many["edits"][0]["units"] == toy.RED_UNITS                  # at most the concept's units
    one = render(client, seed, [{"concept": "red-c", "mode": "draw", "mask": mask_url(m), "n_units": 1}])
    assert one["edits"][0]["units"] == [0]
    v0 = float(painter.values[0])
    assert np.array_equal(decode(one["image"]), by_hand(seed, [([0], cells_of(m), [v0])]))
    half = render(client, seed, [{"concept": "red-c", "mode": "draw", "mask": mask_url(m), "strength": 0.5}])
    assert half["edits"][0]["values"] == pytest.approx([0.5 * float(painter.values[u]) for u in toy.RED_UNITS],
                                                       abs=1e-4)
    zero = render(client, seed, [{"concept": "red-c", "mode": "draw", "mask": mask_url(m), "strength": 0}])
    erase = render(client, seed, [{"concept": "red-c", "mode": "erase", "mask": mask_url(m)}])
    assert zero["image"] == erase["image"]


def test_one_forward_pass_per_request(client, painter):
    calls = []
    handle = painter.generator.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    try:
        strokes = [{"concept": c, "mode": m, "mask": mask_url(box(8 * k, 8 * k + 8, 0, 64))}
                   for k, (c, m) in enumerate([("red-c", "draw"), ("green-c", "draw"), ("red-c", "erase")] * 2)]
        render(client, 4, strokes)
        assert calls == [(1, 16)]
        calls.clear()
        assert len(client.get("/api/samples", params={"first": 5, "count": 12}).json()["samples"]) == 12
        assert calls == [(12, 16)]
    finally:
        handle.remove()


def test_a_grey_or_palette_png_mask_counts_nonzero_pixels(client):
    m = box(0, 8, 0, 8)
    grey = np.where(m, 1, 0).astype(np.uint8)           # value 1 of 255 is still painted
    out = render(client, 1, [{"concept": "red-c", "mode": "draw", "mask": png_url(grey)}])
    assert out["edits"][0]["cells"] == [[0, 0]]
    empty = render(client, 1, [{"concept": "red-c", "mode": "draw", "mask": png_url(np.zeros((64, 64), np.uint8))}])
    assert empty["edits"][0]["cells"] == [] and empty["image"] == render(client, 1, [])["image"]


# ----------------------------------------------------------------------------- bad requests
def _png_of_bytes(nbytes: int) -> str:
    """A valid 64 x 64 PNG of exactly ``nbytes`` bytes (padded with a text chunk)."""
    from PIL import PngImagePlugin

    def make(pad):
        info = PngImagePlugin.PngInfo()
        info.add_text("pad", "x" * pad)
        buf = io.BytesIO()
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()
    base = len(make(0))
    raw = make(nbytes - base)
    assert len(raw) == nbytes
    return "data:image/png;base64," + base64.b64encode(raw).decode()


GOOD_MASK = mask_url(box(0, 16, 0, 16))


def _stroke(**kw):
    return {"concept": "red-c", "mode": "draw", "mask": GOOD_MASK, **kw}


def _gif() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="GIF")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _truncated() -> str:
    raw = base64.b64decode(GOOD_MASK.split(",", 1)[1])
    return "data:image/png;base64," + base64.b64encode(raw[:len(raw) // 2]).decode()


BAD = {
    "unknown top-level field": ({"seed": 1, "strokes": [], "ablations": []}, "ablations"),
    "unknown stroke field": ({"seed": 1, "strokes": [_stroke(units=[1, 2])]}, "units"),
    "seed as a string": ({"seed": "1", "strokes": []}, "seed"),
    "seed as a float": ({"seed": 1.5, "strokes": []}, "seed"),
    "seed as a bool": ({"seed": True, "strokes": []}, "seed"),
    "negative seed": ({"seed": -1, "strokes": []}, "seed"),
    "seed past 2**32-1": ({"seed": 2 ** 32, "strokes": []}, "seed"),
    "missing seed": ({"strokes": []}, "seed"),
    "strokes not a list": ({"seed": 1, "strokes": {"concept": "red-c"}}, "strokes"),
    "unknown mode": ({"seed": 1, "strokes": [_stroke(mode="paint")]}, "mode"),
    "mask not a data URL": ({"seed": 1, "strokes": [_stroke(mask="http://example.com/m.png")]}, "mask"),
    "bad base64": ({"seed": 1, "strokes": [_stroke(mask="data:image/png;base64,@@not*base64@@")]}, "base64"),
    "not a PNG": ({"seed": 1, "strokes": [_stroke(mask=_gif())]}, "not a PNG"),
    "truncated PNG": ({"seed": 1, "strokes": [_stroke(mask=_truncated())]}, "readable PNG"),
    "mask of the wrong size": ({"seed": 1, "strokes": [_stroke(mask=mask_url(np.ones((32, 48), bool)))]}, "48 x 32"),
    "mask over the byte limit": ({"seed": 1, "strokes": [_stroke(mask=_png_of_bytes(MAX_MASK_BYTES + 1))]},
                                 f"larger than the limit of {MAX_MASK_BYTES} bytes"),
    "mask string over the schema's length": (
        {"seed": 1, "strokes": [_stroke(mask=_png_of_bytes(2 * MAX_MASK_BYTES))]}, "mask: string should have at most"),
    "too many strokes": ({"seed": 1, "strokes": [_stroke()] * (MAX_STROKES + 1)}, "strokes"),
    "unknown concept": ({"seed": 1, "strokes": [_stroke(concept="unicorn")]}, "unicorn"),
    "n_units 0": ({"seed": 1, "strokes": [_stroke(n_units=0)]}, "n_units"),
    "strength on an erase": ({"seed": 1, "strokes": [_stroke(mode="erase", strength=2)]}, "strength"),
    "strength out of range": ({"seed": 1, "strokes": [_stroke(strength=100)]}, "strength"),
    "body not an object": ([1, 2, 3], "body"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_render_request_is_a_4xx_with_a_message(client, name):
    body, needle = BAD[name]
    r = client.post("/api/render", json=body)
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and needle.lower() in detail.lower(), (name, detail)


def test_malformed_json_and_oversized_bodies(client):
    r = client.post("/api/render", content=b'{"seed": 1, "strokes": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.json()["detail"].lower()
    r = client.post("/api/render", content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    def chunks():
        yield b'{"seed": 1, '
        yield b'"strokes": []}'
    r = client.post("/api/render", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 411 and "Content-Length" in r.json()["detail"]
    for params in ({"first": -1}, {"count": 0}, {"count": 1000}, {"first": "abc"}):
        r = client.get("/api/samples", params=params)
        assert r.status_code == 422 and r.json()["detail"], params


def test_a_failed_render_does_not_kill_the_server(client, painter, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(painter.generator.layer2, "forward", broken)
    r = client.post("/api/render", json={"seed": 1, "strokes": []})
    assert r.status_code == 500 and "boom" in r.json()["detail"]
    monkeypatch.undo()
    assert client.post("/api/render", json={"seed": 1, "strokes": []}).status_code == 200
    assert not painter.lock.locked()


# ----------------------------------------------------------------------------- static files, hosts
@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py",
                                  "/static/%2e%2e%2fpainter.py", "/static/..%5cserver.py",
                                  "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/index.html%00.py",
                                  "/static/", "/static/style.css/../../server.py", "/../netdissect/app/server.py"])
def test_path_traversal_is_refused(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "import" not in r.text and "root:" not in r.text


def test_static_files_and_headers(client):
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("index.html", "text/html")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert r.content == (STATIC_DIR / name).read_bytes()
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert client.get("/docs").status_code == 404       # Swagger UI would load a CDN: not served
    # nothing the page loads comes from elsewhere
    for f in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", f.read_text()), f.name


def test_other_host_headers_are_refused(client):
    r = client.get("/api/info", headers={"host": "attacker.example:8000"})
    assert r.status_code == 421 and "host" in r.json()["detail"]
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200


# ----------------------------------------------------------------------------- client and schema in step
def _schema(client):
    return client.get("/openapi.json").json()


def _resolve(spec, node):
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_every_route_the_page_calls_exists_in_the_schema(client):
    spec = _schema(client)
    text = APP_JS.read_text()
    api = re.search(r"const API = \{(.*?)\n\};", text, re.S).group(1)
    routes = re.findall(r'(\w+): \{ method: "(GET|POST)", path: "([^"]+)" \}', api)
    assert {r[0] for r in routes} >= {"info", "concepts", "samples", "render"}
    for _, method, path in routes:
        assert path in spec["paths"] and method.lower() in spec["paths"][path], (method, path)
    # the page fetches only through API (no other URL literal in a fetch)
    assert re.findall(r"fetch\(([^)]*)\)", text) == ["url, init"]
    assert not re.findall(r'["\']/api/', text.replace(api, ""))
    # GET /api/samples's query parameters are the page's
    params = {p["name"] for p in spec["paths"]["/api/samples"]["get"]["parameters"]}
    sent = set(re.search(r'call\("samples", \{ query: \{([^}]*)\}', text).group(1).replace(" ", "").split(","))
    assert {s.split(":")[0] for s in sent} == params


def test_the_body_the_page_builds_matches_the_schema(client):
    """app.js's renderBody, run by node on strokes as the page keeps them, against /openapi.json."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the browser test checks the bodies the page sends)")
    text = APP_JS.read_text()
    fn = re.search(r"\nfunction renderBody\(.*?\n\}\n", text, re.S).group(0)
    strokes = [{"concept": "red-c", "mode": "draw", "mask": GOOD_MASK, "n_units": 3, "strength": 1.5},
               {"concept": "green-c", "mode": "erase", "mask": GOOD_MASK, "n_units": 4, "strength": 2}]
    js = fn + f"\nprocess.stdout.write(JSON.stringify(renderBody(9, {json.dumps(strokes)})));"
    body = json.loads(subprocess.run([node, "-e", js], capture_output=True, text=True, check=True,
                                     timeout=30).stdout)
    spec = _schema(client)
    req = _resolve(spec, spec["paths"]["/api/render"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    stroke = _resolve(spec, req["properties"]["strokes"]["items"])
    assert set(body) <= set(req["properties"]) and set(req["required"]) <= set(body)
    for s in body["strokes"]:
        assert set(s) <= set(stroke["properties"]) and set(stroke["required"]) <= set(s)
        assert s["mode"] in stroke["properties"]["mode"]["enum"]
    assert req["additionalProperties"] is False and stroke["additionalProperties"] is False
    out = render(client, body["seed"], body["strokes"])     # and the server takes it
    assert [e["units"] for e in out["edits"]] == [[0, 1, 2], [4, 5, 6, 7]]
    red = {u["unit"]: u["value"] for c in client.get("/api/concepts").json() if c["name"] == "red-c"
           for u in c["units"]}
    assert out["edits"][0]["values"] == pytest.approx([1.5 * red[u] for u in (0, 1, 2)], abs=1e-3)
    assert out["edits"][1]["values"] == [0, 0, 0, 0]
    # the keys the page reads from answers are in the answers' schemas
    def props(path, method, status):
        content = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        return set(_resolve(spec, content)["properties"])
    known = (props("/api/render", "post", "200") | props("/api/samples", "get", "200")
             | props("/api/render", "post", "422"))
    assert props("/api/render", "post", "422") == {"detail", "errors"}
    for key in set(re.findall(r"data\.(\w+)", text)):
        assert key in known, key


# ----------------------------------------------------------------------------- the command
def test_cli_serves_loopback_and_warns_elsewhere(tmp_path, monkeypatch, capsys):
    import uvicorn

    from netdissect.cli import main
    run = toy.write_toy_run(tmp_path / "run")
    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.append((app, host, port)))
    argv = ["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(run), "--port", "8123"]
    assert main(argv) == 0
    app, host, port = seen[-1]
    assert (host, port) == ("127.0.0.1", 8123)
    out = capsys.readouterr()
    assert "http://127.0.0.1:8123/" in out.out and "warning" not in out.err
    with fastapi_testclient.TestClient(app, base_url="http://127.0.0.1:8123") as c:
        assert [x["name"] for x in c.get("/api/concepts").json()] == ["green-c", "red-c"]
        assert c.get("/api/info", headers={"host": "evil.example"}).status_code == 421
    assert main(argv + ["--host", "0.0.0.0"]) == 0
    assert seen[-1][1] == "0.0.0.0" and "warning: binding 0.0.0.0" in capsys.readouterr().err
    other = ["paint", "--model", "netdissect.app.toy:ToyGenerator", "--run", str(run)]
    assert main(other) == 0
    assert "dissected netdissect.app.toy:toy_generator, not netdissect.app.toy:ToyGenerator" in capsys.readouterr().err
    # problems are one line each, exit 1
    assert main(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(run), "--layer", "layer9"]) == 1
    assert "no layer 'layer9'" in capsys.readouterr().err
    assert main(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(run), "--min-units", "5"]) == 1
    assert "no concept has 5 or more units" in capsys.readouterr().err
    assert main(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(tmp_path / "nope")]) == 1
    assert "summary.json" in capsys.readouterr().err
