"""Fast tests of the report: files, embedded data, caching of strips, errors, compare, CLI.

    $ .venv/bin/python -m pytest -q tests/test_report.py
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.cli import main
from netdissect.errors import NetDissectError
from netdissect.report import compare, write_report
from netdissect.report.strips import edge, highlight_tile, upsample
from report_fixture import make_dataset, make_run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("report-data") / "broden")


SMALL = dict(layers=(("layer3", 8, 8), ("layer4", 12, 4)), topk=5)


@pytest.fixture
def run_dir(tmp_path, dataset):
    """A small run (20 units) for the tests that change it."""
    return make_run(tmp_path / "run", dataset, **SMALL)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, dataset):
    """(run_dir, index.html) of one report shared by the read-only tests."""
    run = make_run(tmp_path_factory.mktemp("report-run") / "run", dataset)
    return run, write_report(run)


def embedded(index: Path) -> dict:
    html = index.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert m, "no embedded unit data"
    return json.loads(m.group(1))


def read_units(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_report_files_exist(rendered):
    run_dir, index = rendered
    assert index == run_dir / "report" / "index.html"
    html = index.read_text(encoding="utf-8")
    assert "<html" in html and "layer3" in html and "layer4" in html
    for name in ("layer3-summary", "layer3-iou", "layer4-summary", "layer4-iou",
                 "layers-unique", "layers-units"):
        found = list((run_dir / "report" / "charts").glob(f"{name}-*.svg"))
        assert len(found) == 1 and found[0].stat().st_size > 1000, name
    data = embedded(index)
    for u in data["units"]:
        strip = run_dir / "report" / u["img"]
        assert strip.is_file(), u["img"]
        if u["gt"]:
            assert (run_dir / "report" / u["gt"]).is_file()
    # no temp files left behind by atomic writes
    assert not list((run_dir / "report").rglob("*.tmp"))


def test_page_has_no_network_references(rendered):
    run_dir, index = rendered
    html = index.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html), "external URL in the page"
    assert "@import" not in html and "url(http" not in html
    assert 'loading="lazy"' in html  # the strips are lazy-loaded
    svg = next((run_dir / "report" / "charts").glob("layer4-summary-*.svg")).read_text()
    assert "<image" not in svg and "@font-face" not in svg


def test_embedded_json_matches_units_csv(rendered):
    run_dir, index = rendered
    data = embedded(index)
    names = [l["name"] for l in data["layers"]]
    assert names == ["layer3", "layer4"]
    for li, name in enumerate(names):
        rows = read_units(run_dir / name / "units.csv")
        units = [u for u in data["units"] if u["layer"] == li]
        assert len(units) == len(rows)
        for u, r in zip(units, rows):
            assert u["unit"] == int(r["unit"])
            assert u["label"] == r["label"]
            assert u["cat"] == r["category"]
            assert u["iou"] == pytest.approx(float(r["iou"]), abs=1e-4)
            assert u["det"] == (r["detector"] == "1")
    # runner-ups come from iou.npz, best first, without the label itself
    with np.load(run_dir / "layer4" / "iou.npz") as z:
        iou, cn = z["iou"], list(z["concept_names"])
    u = next(u for u in data["units"] if u["layer"] == 1 and u["det"])
    alts = [a[2] for a in u["alt"]]
    assert alts == sorted(alts, reverse=True) and u["label"] not in [a[0] for a in u["alt"]]
    assert alts[0] == pytest.approx(float(iou[u["unit"], cn.index(u["alt"][0][0])]), abs=1e-4)


def test_strips_are_cached_and_stale_images_replaced(run_dir, dataset, tmp_path):
    index = write_report(run_dir)
    first = {p: p.stat().st_mtime_ns for p in (run_dir / "report" / "img").rglob("*")}
    data1 = embedded(index)
    # an unchanged run reuses every strip
    write_report(run_dir)
    again = {p: p.stat().st_mtime_ns for p in (run_dir / "report" / "img").rglob("*")}
    assert again == first
    # a new run into the same folder: different units -> new strips, none of the old ones left
    shutil.rmtree(run_dir / "layer3")
    shutil.rmtree(run_dir / "layer4")
    make_run(run_dir, dataset, seed=7, **SMALL)
    data2 = embedded(write_report(run_dir))
    files = {str(p.relative_to(run_dir / "report")) for p in (run_dir / "report" / "img").rglob("*") if p.is_file()}
    used = {u["img"] for u in data2["units"]} | {u["gt"] for u in data2["units"] if u["gt"]}
    assert used <= files
    stale = {u["img"] for u in data1["units"]} - used
    assert stale and not (stale & files), "images of the previous run were left behind"
    assert {f for f in files if not f.endswith("-nogt")} == used


def test_strips_drawn_in_worker_processes_equal_serial_ones(run_dir, tmp_path, monkeypatch):
    """20 strips drawn by 2 processes: the same files, byte for byte, and the same page data."""
    from netdissect.report import strips

    serial = write_report(run_dir, tmp_path / "serial", workers=0)
    here = []
    draw = strips._draw
    monkeypatch.setattr(strips, "_draw", lambda *a: (here.append(1), draw(*a)))
    pooled = write_report(run_dir, tmp_path / "pooled", workers=2)
    assert here == []  # every strip was drawn in a worker process

    def files(index):
        root = index.parent / "img"
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    a, b = files(serial), files(pooled)
    assert len([f for f in a if f.endswith(".jpg")]) == 20
    assert any(f.endswith("-gt.png") for f in a)  # outlines drawn too
    assert a == b
    assert embedded(serial)["units"] == embedded(pooled)["units"]


def test_changed_layer_set_removes_old_layer_images(run_dir):
    write_report(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["layers"]["layer3"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    data = embedded(write_report(run_dir))
    assert [l["name"] for l in data["layers"]] == ["layer4"]
    assert not (run_dir / "report" / "img" / "layer3").exists()
    assert not list((run_dir / "report" / "charts").glob("layer3-*"))


def test_missing_dataset_renders_without_outlines(run_dir, tmp_path):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["dataset"]["path"] = str(tmp_path / "gone")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    index = write_report(run_dir)
    html = index.read_text()
    assert "dataset folder not found" in html and "outlines are missing" in html
    data = embedded(index)
    assert all(u["gt"] is None for u in data["units"])
    assert all((run_dir / "report" / u["img"]).is_file() for u in data["units"])


@pytest.mark.parametrize("victim, message", [
    ("summary.json", "summary.json: file not found"),
    ("layer4/units.csv", "units.csv: file not found"),
    ("layer3/iou.npz", "iou.npz: file not found"),
    ("layer4/topk.npz", "topk.npz: file not found"),
    ("layer3", "layer3: layer folder not found"),
])
def test_missing_run_file_names_the_file(run_dir, victim, message):
    path = run_dir / victim
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(NetDissectError, match=re.escape(message)) as info:
        write_report(run_dir)
    assert str(run_dir) in str(info.value)


def test_corrupt_run_files_name_the_file(run_dir):
    (run_dir / "layer4" / "topk.npz").write_bytes(b"not a zip")
    with pytest.raises(NetDissectError, match=r"layer4/topk\.npz: corrupt"):
        write_report(run_dir)
    (run_dir / "summary.json").write_text("{")
    with pytest.raises(NetDissectError, match=r"summary\.json: not valid JSON"):
        write_report(run_dir)


def test_units_csv_mismatch_names_the_file(run_dir):
    path = run_dir / "layer3" / "units.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # one unit fewer than iou.npz
    with pytest.raises(NetDissectError, match=r"layer3/iou\.npz: 'iou' has shape"):
        write_report(run_dir)


def test_highlight_keeps_region_above_threshold():
    amap = np.zeros((4, 4), np.float32)
    amap[1:3, 1:3] = 1.0
    up = upsample(amap, (32, 32))
    assert up.shape == (32, 32) and up[16, 16] == pytest.approx(1.0)
    image = np.full((32, 32, 3), 200, np.uint8)
    tile = highlight_tile(image, amap, 0.5, 32)
    assert tile[16, 16].tolist() == [200, 200, 200]      # inside: kept
    assert tile[1, 1].max() < 80                          # outside: dimmed
    ring = edge(np.pad(np.ones((4, 4), bool), 2), 1)
    assert ring.sum() == 12


def test_compare_writes_png_svg_and_csv(run_dir, dataset, tmp_path):
    other = make_run(tmp_path / "other", dataset, seed=3, **SMALL)
    files = compare([run_dir, other], tmp_path / "cmp", labels=["A", "B"])
    for name in ("unique_detectors.png", "unique_detectors.svg", "detector_units.png",
                 "detector_units.svg", "compare.csv"):
        assert files[name].is_file() and files[name].stat().st_size > 100
    with Image.open(files["unique_detectors.png"]) as im:
        assert im.size[0] > 300
    rows = read_units(files["compare.csv"])
    assert [(r["run"], r["layer"]) for r in rows] == [("A", "layer3"), ("A", "layer4"),
                                                       ("B", "layer3"), ("B", "layer4")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert int(rows[1]["unique_object"]) == summary["layers"]["layer4"]["unique_detectors"]["object"]
    with pytest.raises(NetDissectError, match="2 labels for 1 run"):
        compare([run_dir], tmp_path / "x", labels=["A", "B"])
    with pytest.raises(NetDissectError, match="none of the layers"):
        compare([run_dir], tmp_path / "x", layers=["conv5"])


def test_cli_report_and_compare(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "cmp"), "--layers", "layer4"]) == 0
    assert (tmp_path / "cmp" / "unique_detectors.svg").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "nope: run directory not found" in capsys.readouterr().err
