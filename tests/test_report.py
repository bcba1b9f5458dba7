"""Fast tests of the report: files, embedded data, caching of strips, errors, compare, CLI.

    $ .venv/bin/python -m pytest -q tests/test_report.py
"""
from __future__ import annotations

import base64
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
from netdissect.data.digest import files_digest
from netdissect.report.assets import edge, outline_image
from netdissect.report.build import ReportWarning, weights_text
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


def report_files(root: Path) -> dict[str, bytes]:
    img = root / "img"
    return {str(p.relative_to(img)): p.read_bytes() for p in img.rglob("*") if p.is_file()}


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
    sheets = data["sheets"]
    for rel in sheets["t"] + sheets["g"]:
        assert (run_dir / "report" / rel).is_file(), rel
    n_t, n_g = len(sheets["t"]) * sheets["per"], len(sheets["g"]) * sheets["per"]
    for u in data["units"]:
        L = data["layers"][u["layer"]]
        assert len(u["t"]) == len(u["g"]) == L["k"]
        assert all(-1 <= t < n_t for t in u["t"]) and all(g == -3 or -1 <= g < n_g for g in u["g"])
        maps = np.frombuffer(base64.b64decode(u["m"]), "<f2")
        assert maps.size == L["k"] * L["mh"] * L["mw"]
    assert any(g >= 0 for u in data["units"] for g in u["g"])   # pixel-level outlines
    assert any(g == -3 for u in data["units"] for g in u["g"])  # image-level (scene/texture) frames
    short = next(u for u in data["units"] if u["layer"] == 1 and u["unit"] == 38)  # fewer than k images
    assert short["t"][-3:] == [-1, -1, -1]
    # no temp files left behind by atomic writes
    assert not list((run_dir / "report").rglob("*.tmp"))


def test_embedded_maps_and_thresholds_are_the_runs(rendered):
    """The page thresholds exactly what topk.npz holds, with the exact float32 threshold."""
    run_dir, index = rendered
    data = embedded(index)
    with np.load(run_dir / "layer4" / "topk.npz") as z:
        maps = z["maps"]
    thr = np.load(run_dir / "layer4" / "thresholds.npy")
    for u in (u for u in data["units"] if u["layer"] == 1):
        got = np.frombuffer(base64.b64decode(u["m"]), "<f2").reshape(maps.shape[1:])
        assert np.array_equal(got, maps[u["unit"]])
        assert np.float32(u["th"]) == thr[u["unit"]]


def test_thumbnails_are_the_top_images(rendered):
    """Each unit's thumbnail cell holds its top image (the sheet tile vs the dataset file)."""
    run_dir, index = rendered
    data = embedded(index)
    summary = json.loads((run_dir / "summary.json").read_text())
    with np.load(run_dir / "layer4" / "topk.npz") as z:
        images, paths = z["images"], z["image_paths"]
    u = next(u for u in data["units"] if u["layer"] == 1 and u["unit"] == 5)
    sheets, T = data["sheets"], data["tile"]
    for j in (0, 3):
        tid = u["t"][j]
        sheet = Image.open(run_dir / "report" / sheets["t"][tid // sheets["per"]]).convert("RGB")
        c = tid % sheets["per"]
        x, y = (c % sheets["cols"]) * T, (c // sheets["cols"]) * T
        tile = np.asarray(sheet.crop((x, y, x + T, y + T)), np.float32)
        src = Image.open(Path(summary["dataset"]["path"]) / "images" / str(paths[images[5, j]])).convert("RGB")
        want = np.asarray(src.resize((T, T)), np.float32)
        assert np.abs(tile - want).mean() < 12, j  # the same picture, up to JPEG and resampling


def test_page_has_no_network_references(rendered):
    run_dir, index = rendered
    html = index.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html), "external URL in the page"
    assert "@import" not in html and "url(http" not in html
    assert "Content-Security-Policy" in html
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


def test_files_are_cached_and_stale_ones_removed(run_dir, dataset, tmp_path):
    index = write_report(run_dir)
    img = run_dir / "report" / "img"
    first = {p: p.stat().st_mtime_ns for p in img.rglob("*")}
    # an unchanged run reuses every file
    write_report(run_dir)
    assert {p: p.stat().st_mtime_ns for p in img.rglob("*")} == first
    # a new run into the same folder: other units -> the page uses only files of this render
    shutil.rmtree(run_dir / "layer3")
    shutil.rmtree(run_dir / "layer4")
    make_run(run_dir, dataset, seed=7, **SMALL)
    data = embedded(write_report(run_dir))
    used = {Path(rel).name for rel in data["sheets"]["t"] + data["sheets"]["g"]}
    files = {p.name for p in img.iterdir() if p.suffix != ".json"}
    assert files == used
    assert {p.stem for p in img.glob("*.json")} == {Path(f).stem for f in files}


def test_sheets_drawn_in_worker_processes_equal_serial_ones(dataset, tmp_path, monkeypatch):
    """Sheets drawn by 2 processes: the same files, byte for byte, and the same page data."""
    from netdissect.report import assets

    run = make_run(tmp_path / "run", dataset, layers=(("layer3", 8, 8), ("layer4", 12, 4)), topk=5)
    monkeypatch.setattr(assets, "SHEET", 4)  # many sheets from a small dataset
    serial = write_report(run, tmp_path / "serial", workers=0)
    here = []
    draw = assets._draw_sheet
    monkeypatch.setattr(assets, "_draw_sheet", lambda *a: (here.append(1), draw(*a))[1])
    pooled = write_report(run, tmp_path / "pooled", workers=2)
    assert here == []  # every sheet was drawn in a worker process
    a, b = report_files(serial.parent), report_files(pooled.parent)
    assert len([f for f in a if f.startswith("t-")]) > 2 and any(f.startswith("g-") for f in a)
    assert a == b
    assert embedded(serial)["units"] == embedded(pooled)["units"]


def test_changed_layer_set_removes_old_charts(run_dir):
    write_report(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["layers"]["layer3"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    data = embedded(write_report(run_dir))
    assert [l["name"] for l in data["layers"]] == ["layer4"]
    assert not list((run_dir / "report" / "charts").glob("layer3-*"))


def test_missing_dataset_renders_maps_without_outlines(run_dir, tmp_path):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["dataset"]["path"] = str(tmp_path / "gone")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    index = write_report(run_dir)
    html = index.read_text()
    assert "dataset folder not found" in html and "outlines are missing" in html
    data = embedded(index)
    assert all(g == -1 for u in data["units"] for g in u["g"])
    assert all(t in (-1, -2) for u in data["units"] for t in u["t"])  # the page draws the maps alone


def test_unreadable_image_is_noted_and_drawn_as_its_map(run_dir, dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["dataset"]["path"] = str(ds)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (ds / "images" / "img003.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(ReportWarning, match="images changed since the run"):
        index = write_report(run_dir, verify=False)
    assert "img003.jpg: cannot read image" in index.read_text()
    with np.load(run_dir / "layer4" / "topk.npz") as z:
        images, paths = z["images"], list(z["image_paths"])
    data = embedded(index)
    row = paths.index("img003.jpg")
    u = next(u for u in data["units"] if u["layer"] == 1 and row in images[u["unit"]])
    assert u["t"][list(images[u["unit"]]).index(row)] == -2


@pytest.mark.parametrize("victim, message", [
    ("summary.json", "summary.json: file not found"),
    ("layer3/iou.npz", "layer3/iou.npz: file not found"),
    ("layer4/topk.npz", "layer4/topk.npz: file not found"),
    ("layer3", "layer3/iou.npz: file not found"),
])
def test_missing_run_file_names_the_file(run_dir, victim, message):
    path = run_dir / victim
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(NetDissectError, match=re.escape(message)) as info:
        write_report(run_dir)
    assert str(run_dir) in str(info.value)


def test_corrupt_run_files_name_the_file(run_dir):
    (run_dir / "layer4" / "topk.npz").write_bytes(b"not a zip")
    with pytest.raises(NetDissectError, match=r"layer4/topk\.npz: "):
        write_report(run_dir)
    (run_dir / "summary.json").write_text("{")
    with pytest.raises(NetDissectError, match=r"summary\.json: .*JSON"):
        write_report(run_dir)
    (run_dir / "summary.json").write_text('{"format_version": 1}')
    with pytest.raises(NetDissectError, match=r"summary\.json: missing or malformed field"):
        write_report(run_dir)


def test_topk_that_does_not_fit_names_the_file(run_dir):
    path = run_dir / "layer3" / "topk.npz"
    with np.load(path) as z:
        arrays = dict(z)
    arrays["maps"] = arrays["maps"][:-1]  # one unit fewer than iou.npz
    np.savez(path, **arrays)
    with pytest.raises(NetDissectError, match=r"layer3/topk\.npz: shapes"):
        write_report(run_dir)


def test_outline_image_draws_the_mask_border():
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    im = np.asarray(outline_image(mask, 32))
    assert im[16, 16] == 0 and im[0, 0] == 0       # inside and outside: transparent
    assert im[8, 16] == 2                          # on the (upscaled) border: cyan
    frame = np.asarray(outline_image(None, 32))
    assert (frame[0] == 2).all() and frame[16, 16] == 0
    ring = edge(np.pad(np.ones((4, 4), bool), 2), 1)
    assert ring.sum() == 12


def test_weights_in_the_header_never_none():
    assert weights_text({"spec": "zoo:scene-cnn", "weights": None, "sha256": "1a2b3c4d5e6f7a8b9c",
                         "weights_description": "bundled zoo:scene-cnn (sha256 1a2b…)"}) == \
        "bundled zoo:scene-cnn (sha256 1a2b…)"
    text = weights_text({"spec": "zoo:scene-cnn", "weights": None, "sha256": "1a2b3c4d5e6f7a8b9c"})
    assert text == "as loaded by zoo:scene-cnn (sha256 1a2b3c4d5e6f…)"
    assert weights_text({"spec": "torchvision:resnet18", "weights": "none"}).startswith("none: random")
    assert weights_text({"spec": "x", "weights": "DEFAULT", "sha256": "ab"}) == "DEFAULT (sha256 ab…)"
    assert "None" not in weights_text({})


def test_header_shows_weights_of_a_zoo_run(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["model"] = {"spec": "zoo:scene-cnn", "weights": None, "normalize": "imagenet", "sha256": "f" * 64}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    html = write_report(run_dir).read_text()
    header = html[html.index('<dl class="meta">'):html.index("</dl>")]
    assert "None" not in header
    assert "<dt>weights</dt><dd>as loaded by zoo:scene-cnn (sha256 ffffffffffff…)</dd>" in header


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


# ---------------------------------------------------------------- inputs that changed after the run
def _copy_run(run_dir: Path, dataset: Path, tmp_path: Path) -> Path:
    """The run pointed at a private copy of its dataset (copied with its mtimes)."""
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["dataset"]["path"] = str(ds)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return ds


def test_files_digest_sees_replaced_swapped_and_missing_files(dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    img = ds / "images"
    names = sorted(p.name for p in img.glob("*.jpg"))
    d0 = files_digest(img, names)
    assert d0 == files_digest(img, names) and len(d0) == 64
    assert files_digest(img, names[::-1]) != d0                      # order counts
    a, b = img / names[0], img / names[1]
    tmp = img / "swap.tmp"
    a.rename(tmp), b.rename(a), tmp.rename(b)                         # swapped: mtimes move along
    d1 = files_digest(img, names)
    assert d1 != d0
    b.write_bytes(b.read_bytes())                                     # rewritten, same bytes: new mtime
    assert files_digest(img, names) != d1
    b.unlink()
    assert files_digest(img, names) not in (d0, d1)


def test_report_refuses_images_replaced_after_the_run(run_dir, dataset, tmp_path, capsys):
    ds = _copy_run(run_dir, dataset, tmp_path)
    write_report(run_dir)  # unchanged copy: verifies
    victim = ds / "images" / "img002.jpg"
    shutil.copy(ds / "images" / "img009.jpg", victim)  # another picture under the same name
    with pytest.raises(NetDissectError, match=r"images changed since the run .*img002\.jpg.*--no-verify") as info:
        write_report(run_dir)
    assert str(ds / "images") in str(info.value) and "rerun `netdissect dissect`" in str(info.value)
    assert main(["report", str(run_dir), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "netdissect report: error:" in err and "img002.jpg" in err
    # --no-verify draws them anyway, with a warning on the console and on the page
    assert main(["report", str(run_dir), "--quiet", "--no-verify"]) == 0
    err = capsys.readouterr().err
    assert "netdissect report: warning:" in err and "drawn anyway" in err
    assert "images changed after this run" in (run_dir / "report" / "index.html").read_text()


def test_report_refuses_shuffled_images(run_dir, dataset, tmp_path):
    ds = _copy_run(run_dir, dataset, tmp_path)
    img = ds / "images"
    names = sorted(p.name for p in img.glob("*.jpg"))
    order = names[1:] + names[:1]  # each file moved to the next name: the same files, shuffled
    for n in names:
        (img / n).rename(img / (n + ".old"))
    for src, dst in zip(names, order):
        (img / (src + ".old")).rename(img / dst)
    with pytest.raises(NetDissectError, match="images changed since the run"):
        write_report(run_dir)


def test_run_without_files_digest_gets_a_warning(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["dataset"]["files_digest"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.warns(ReportWarning, match="records no files_digest"):
        write_report(run_dir)
    assert main(["report", str(run_dir), "--quiet"]) == 0
    assert "netdissect report: warning:" in capsys.readouterr().err


# ---------------------------------------------------------------- --out that is not a folder
@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("under", [False, True])
def test_out_naming_a_file_is_a_one_line_error(run_dir, tmp_path, capsys, command, under):
    file = tmp_path / "afile"
    file.write_text("x")
    out = file / "sub" if under else file
    argv = [command, str(run_dir), "--out", str(out)] + (["--quiet"] if command == "report" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--out {out}:" in err
    assert ("lies under the file" if under else "is a file") in err and "choose a folder" in err
    assert file.read_text() == "x"


# ---------------------------------------------------------------- a run the engine wrote
def test_report_of_a_run_the_engine_wrote(broden, tmp_path):
    """netdissect.dissect writes the run; the report reads it through netdissect.load and draws it."""
    from netdissect import dissect
    from nets import ColorUnits

    out = tmp_path / "run"
    dissect(ColorUnits(), ["features"], broden, out=out, quantile=0.05, topk=4, batch_size=8,
            num_workers=0, progress=False, cache_dtype="float32")
    index = write_report(out, workers=0)
    data = embedded(index)
    result = __import__("netdissect").load(out)
    layer = result["features"]
    assert [l["name"] for l in data["layers"]] == ["features"]
    assert [u["label"] for u in data["units"]] == list(layer.units["label"])
    assert [u["det"] for u in data["units"]] == list(layer.units["detector"])
    red = data["units"][0]
    assert red["label"] == "square" and red["det"] and all(t >= 0 for t in red["t"])
    assert any(g >= 0 for g in red["g"])  # the square's outline in its top images
    assert data["units"][3]["dead"]       # unit 3 never fires
    html = index.read_text()
    assert "<dt>weights</dt>" in html and "None" not in html[html.index('<dl class="meta">'):html.index("</dl>")]
