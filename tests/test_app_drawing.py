"""The paint app measures which palette concepts its default stroke draws (netdissect.app.drawing).

On the hand-built toy generator (units 0-3 paint red, 4-7 green; netdissect.app.toy) with the ``color``
segmenter: a concept whose units draw it (red-c: units 0-3) is marked as drawing; a concept whose units
draw something else (blue-c given the green units 4-7: detected by construction, drawn never) is not.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from netdissect.app import toy
from netdissect.app.drawing import DRAW_MIN_GAIN, DrawingError, centre_region, measure_drawing, summarize_gain
from netdissect.app.painter import Painter
from netdissect.app.palette import Concept
from netdissect.roles.generator import region_insertion, region_pixels
from netdissect.segment import ColorSegmenter


def _painter(concepts=(("red-c", toy.RED_UNITS), ("blue-c", toy.GREEN_UNITS))):
    palette = [Concept(name, "color", list(units), [0.3] * len(units), detectors=len(units)) for name, units in concepts]
    return Painter(toy.toy_generator(), "layer1", palette, value_samples=50)


@pytest.fixture(scope="module")
def seg():
    return ColorSegmenter()


def _numbers(painter, seg):
    return {n: seg.concepts.index(n) + 1 for n in painter.palette}


def test_units_that_draw_a_concept_are_marked_and_units_that_do_not_are_not(seg, tmp_path):
    painter = _painter()
    out = measure_drawing(painter, seg, _numbers(painter, seg), samples=8, seed=4, cache_dir=tmp_path)
    red, blue = out["concepts"]["red-c"], out["concepts"]["blue-c"]
    assert red["draws"] and red["ci99_low"] >= DRAW_MIN_GAIN and red["gain"] > 0.5, red
    assert not blue["draws"] and blue["gain"] == 0 and blue["after"] == 0, blue
    assert not out["cached"] and out["samples"] == 8 and out["region_cells"] == [[2, 2], [5, 5]]
    # the same settings again: read from the cache, same numbers
    again = measure_drawing(painter, seg, _numbers(painter, seg), samples=8, seed=4, cache_dir=tmp_path)
    assert again["cached"] and again["concepts"] == out["concepts"]
    # another seed is another key: measured again
    other = measure_drawing(painter, seg, _numbers(painter, seg), samples=8, seed=5, cache_dir=tmp_path)
    assert not other["cached"]


def test_gain_is_counted_in_the_region_by_a_plain_reference(seg):
    """region_insertion's counts equal a slow re-render through the painter (the app's own render) and a
    count of the concept's pixels inside the region."""
    from netdissect.app.painter import Stroke
    from netdissect.probe.latent import latent_z

    painter = _painter()
    region = centre_region(painter.grid)
    mask = np.kron(region, np.ones((8, 8), bool))
    z = torch.from_numpy(latent_z(4, 9, painter.z_dim))
    alpha, value, _ = painter.edit_of([Stroke("red-c", "draw", mask)])
    r = region_insertion(painter.generator, "layer1", [(alpha, value)], seg, [seg.concepts.index("red-c") + 1], z,
                         region, seg_size=(64, 64))
    inside = torch.from_numpy(region_pixels(region, (64, 64)))
    assert r["region_pixels"] == 16 * 16 * 4 == int(inside.sum())
    for i in range(4):
        seed_img = painter.to_image(painter.generator(z[i:i + 1]))
        from netdissect.interventions import edit
        with torch.inference_mode(), edit(painter.generator, "layer1", alpha=alpha, value=value):
            edited = painter.to_image(painter.generator(z[i:i + 1]))
        k = seg.concepts.index("red-c") + 1
        for img, got in ((seed_img, r["before"][0, i]), (edited, r["after"][0, i])):
            lab = torch.as_tensor(seg.segment(img, (64, 64)))
            lab = lab.unsqueeze(1) if lab.dim() == 3 else lab
            assert int(((lab == k).any(1)[0] & inside).sum()) == got


def test_summary_statistics_and_the_rule():
    r = summarize_gain([10, 20, 0, 30], [60, 50, 40, 90], 100)
    g = np.array([0.5, 0.3, 0.4, 0.6])
    assert r["gain"] == pytest.approx(g.mean()) and r["se"] == pytest.approx(g.std(ddof=1) / 2)
    assert r["ci99_low"] == pytest.approx(g.mean() - 2.58 * g.std(ddof=1) / 2) and r["draws"]
    assert not summarize_gain([0, 0, 0], [10, 0, 5], 100)["draws"]     # +5% on average, but not measurably


def test_a_segmenter_whose_labels_are_not_the_runs_is_refused_in_one_line(seg):
    painter = _painter()
    with pytest.raises(DrawingError, match="label 1 of the run, but the segmenter calls label 1"):
        measure_drawing(painter, seg, {"red-c": 1, "blue-c": seg.concepts.index("blue-c") + 1}, samples=4,
                        cache_dir=False)
    with pytest.raises(DrawingError, match="samples must be a whole number >= 2"):
        measure_drawing(painter, seg, _numbers(painter, seg), samples=1, cache_dir=False)


def test_the_cli_and_the_api_carry_the_measurement(tmp_path, monkeypatch, capsys):
    """`netdissect paint` measures at start with the run's segmenter, and /api/concepts and /api/info say it."""
    import fastapi.testclient as fastapi_testclient

    from netdissect.cli import build_parser
    from netdissect.cli.paint import build

    monkeypatch.setenv("NETDISSECT_CACHE", str(tmp_path / "cache"))
    run = toy.write_toy_run(tmp_path / "run")
    s = json.loads((run / "summary.json").read_text())
    s["labels"] = {"spec": "color", "seg_size": [32, 32]}
    (run / "summary.json").write_text(json.dumps(s))
    args = build_parser().parse_args(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(run)])
    app, painter, _ = build(args)
    err = capsys.readouterr().err
    assert "measuring which of the 2 concepts" in err and "2 of 2 concepts measurably draw" in err
    client = fastapi_testclient.TestClient(app, base_url="http://127.0.0.1")
    got = {c["name"]: c["drawing"] for c in client.get("/api/concepts").json()}
    assert got["red-c"]["draws"] and got["green-c"]["draws"] and got["red-c"]["gain"] > 0.5
    info = client.get("/api/info").json()["drawing"]
    assert info["samples"] == 32 and info["seg_size"] == [32, 32] and "concepts" not in info
    build(args)                                        # a second start reads the cache
    assert "from the cache" in capsys.readouterr().err
    args = build_parser().parse_args(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(run),
                                      "--drawing", "skip"])
    app, painter, _ = build(args)
    client = fastapi_testclient.TestClient(app, base_url="http://127.0.0.1")
    assert all(c.get("drawing") is None for c in client.get("/api/concepts").json())
    assert client.get("/api/info").json()["drawing"] is None
