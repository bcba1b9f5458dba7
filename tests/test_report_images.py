"""The report's strips for runs that are not over a Broden dataset: an image folder labelled by a
segmenter (images resized/cropped as the run fed them), and images held in the run folder (a
generator's outputs); the note when the images are gone; links from the roles report to unit cards.

    $ .venv/bin/python -m pytest -q tests/test_report_images.py
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.data.digest import files_digest
from netdissect.errors import NetDissectError
from netdissect.probe.folder import ImageFolder
from netdissect.report import write_report
from netdissect.report.build import ReportWarning
from netdissect.report.images import BrodenImages, FolderImages, ImageSource, RunImages, open_source
from report_fixture import make_dataset, make_run
from test_report import embedded

SIZE = 24  # the run's --size (with --crop)


def make_photos(root: Path, n: int = 12, seed: int = 5) -> Path:
    """``n`` photos 36 x 24 (w x h): a smooth random picture, a red bar at the left edge and a blue one
    at the right edge (what --crop cuts away), in two class folders."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        d = root / ("a" if k % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        base = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((36, 24), Image.BILINEAR)
        img = np.asarray(base).copy()
        img[:, :6] = (230, 20, 20)
        img[:, -6:] = (20, 20, 230)
        Image.fromarray(img).save(d / f"{k:02d}.png")
    return root


def dissect_folder(folder: Path, out: Path, cache: Path, **kw) -> Path:
    """A real segmenter-labelled run of a tiny elementwise net over an image folder."""
    from netdissect import dissect
    from nets import ElementwiseNet

    dissect(ElementwiseNet(units=6, seed=2), ["units", "units2"], images=folder, segmenter="color",
            label_cache=cache, out=out, topk=4, batch_size=6, num_workers=0, progress=False,
            normalize="none", quantile=0.05, **kw)
    return out


def tile_of(report: Path, data: dict, tid: int) -> np.ndarray:
    """float32 (T, T, 3) thumbnail ``tid`` as the page draws it (a cell of a sheet)."""
    sheets, T = data["sheets"], data["tile"]
    sheet = Image.open(report / sheets["t"][tid // sheets["per"]]).convert("RGB")
    c = tid % sheets["per"]
    x, y = (c % sheets["cols"]) * T, (c // sheets["cols"]) * T
    return np.asarray(sheet.crop((x, y, x + T, y + T)), np.float32)


def as_tile(rgb: np.ndarray, T: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((T, T), Image.LANCZOS), np.float32)


def top_rows(run: Path, layer: str) -> tuple[np.ndarray, list[str]]:
    with np.load(run / layer / "topk.npz") as z:
        return z["images"], [str(p) for p in z["image_paths"]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, photos):
    """A finished --size 24 --crop run over ``photos`` (read-only: copy it before changing it)."""
    root = tmp_path_factory.mktemp("folder-run")
    return dissect_folder(photos, root / "run", root / "cache", size=SIZE, crop=True)


@pytest.fixture(scope="module")
def folder_report(folder_run):
    return folder_run, write_report(folder_run, workers=0)


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("report"))
    return dest


# ---------------------------------------------------------------- the factory
def test_factory_picks_the_source_by_summary(folder_run, tmp_path):
    summary = json.loads((folder_run / "summary.json").read_text())
    assert summary["dataset"]["kind"] == "images" and summary["labels"]["kind"] == "segmenter"
    src = open_source(summary, folder_run)
    assert isinstance(src, FolderImages) and src.available and not src.masks and not src.run_held
    assert src.probe.size == SIZE and src.probe.crop
    (tmp_path / "images").mkdir()
    run_held = open_source({"dataset": {"kind": "latent", "images_in_run": "images"}}, tmp_path)
    assert isinstance(run_held, RunImages) and run_held.available and run_held.run_held
    assert type(open_source({"dataset": {"kind": "latent"}}, tmp_path)) is ImageSource  # nothing to draw
    broden = open_source({"dataset": {"path": str(tmp_path / "none")}}, tmp_path)
    assert isinstance(broden, BrodenImages) and broden.masks  # no labels section: the dataset's masks
    seg = open_source({"dataset": {"path": "x"}, "labels": {"kind": "segmenter"}}, tmp_path)
    assert isinstance(seg, BrodenImages) and not seg.masks


# ---------------------------------------------------------------- (a) an image folder run
def test_folder_run_strips_are_the_images_as_the_model_saw_them(folder_report, photos):
    run, index = folder_report
    data = embedded(index)
    T = data["tile"]
    probe = ImageFolder(photos, size=SIZE, crop=True)
    images, paths = top_rows(run, "units2")
    checked = 0
    for u in (u for u in data["units"] if data["layers"][u["layer"]]["name"] == "units2"):
        assert all(g == -1 for g in u["g"])  # a segmenter run: no ground-truth outlines
        for j, tid in enumerate(u["t"][:2]):
            assert tid >= 0, (u["unit"], j)
            row = paths[images[u["unit"], j]]
            tile = tile_of(run / "report", data, tid)
            fed = as_tile(probe.load(probe.files.index(row)), T)  # the 24 x 24 centre crop the model saw
            squashed = as_tile(np.asarray(Image.open(photos / row).convert("RGB")), T)  # the file, uncropped
            assert np.abs(tile - fed).mean() < 3, (u["unit"], j)   # up to the sheet's JPEG
            assert np.abs(tile - squashed).mean() > 15            # not the file as it is on disk
            red = (tile[..., 0] > 180) & (tile[..., 1] < 70) & (tile[..., 2] < 70)
            assert red[:, :10].mean() < 0.2  # the red bar at the left edge is cropped away
            checked += 1
    assert checked >= 8
    html = index.read_text()
    assert "Labels come from the segmenter" in html and "<code>color</code>" in html
    assert '<label class="check" hidden><input type="checkbox" id="outlines">' in html
    assert 'class="note"' not in html  # nothing missing, nothing changed


def test_folder_run_without_size_keeps_the_runs_image_size(tmp_path):
    """Without --size the run fed every image at the first image's size; a file added since (sorted
    first, of another size) changes neither what the report draws nor the digest check."""
    photos = make_photos(tmp_path / "photos", n=6)
    Image.open(photos / "b" / "02.png").resize((40, 32)).save(photos / "b" / "02.png")  # resized to the first's
    run = dissect_folder(photos, tmp_path / "run", tmp_path / "cache")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"]["size"] == [24, 36] and summary["dataset"]["resize"] is False
    probe = ImageFolder(photos)
    Image.new("RGB", (20, 20), (0, 255, 0)).save(photos / "a" / "00-new.png")
    assert ImageFolder(photos).shape == (20, 20)  # what a fresh scan would now take as the size
    data = embedded(write_report(run, workers=0))
    images, paths = top_rows(run, "units")
    u = next(u for u in data["units"] if data["layers"][u["layer"]]["name"] == "units" and u["t"][0] >= 0)
    for j in range(len(u["t"])):
        row = paths[images[u["unit"], j]]
        want = as_tile(probe.load(probe.files.index(row)), data["tile"])
        assert np.abs(tile_of(run / "report", data, u["t"][j]) - want).mean() < 3


def test_folder_sheets_drawn_in_worker_processes_equal_serial_ones(folder_run, tmp_path, monkeypatch):
    """The folder source (with its ImageFolder) works in the forked drawing processes too."""
    from netdissect.report import assets

    monkeypatch.setattr(assets, "SHEET", 4)  # 3 sheets of the 12 photos: drawn by a pool
    run = copy_run(folder_run, tmp_path / "run")
    here, draw = [], assets._draw_sheet
    monkeypatch.setattr(assets, "_draw_sheet", lambda *a: (here.append(1), draw(*a))[1])
    pooled = write_report(run, tmp_path / "pooled", workers=2)
    assert here == []  # every sheet was drawn in a worker process
    serial = write_report(run, tmp_path / "serial", workers=0)
    files = lambda index: {p.name: p.read_bytes() for p in (index.parent / "img").iterdir()}  # noqa: E731
    assert len(files(pooled)) == 6 and files(pooled) == files(serial)


def test_folder_gone_is_noted_and_maps_drawn(folder_run, photos, tmp_path):
    run = copy_run(folder_run, tmp_path / "run")
    moved = tmp_path / "photos"
    shutil.copytree(photos, moved)
    summary = json.loads((run / "summary.json").read_text())
    summary["dataset"]["path"] = str(moved)
    (run / "summary.json").write_text(json.dumps(summary))
    shutil.rmtree(moved)
    index = write_report(run, workers=0)
    html = index.read_text()
    assert (f"Images are missing: image folder not readable: {moved}: no such folder of images "
            "(moved or deleted since the run read it there?)") in html
    assert "ground-truth outlines are missing" not in html
    data = embedded(index)
    assert all(t in (-1, -2) for u in data["units"] for t in u["t"])  # the page draws the maps alone
    assert any(t == -2 for u in data["units"] for t in u["t"])
    assert all(g == -1 for u in data["units"] for g in u["g"])


def test_folder_changed_after_the_run_is_refused(folder_run, photos, tmp_path):
    run = copy_run(folder_run, tmp_path / "run")
    mine = tmp_path / "photos"
    shutil.copytree(photos, mine, copy_function=shutil.copy2)  # the same mtimes: the digest still holds
    summary = json.loads((run / "summary.json").read_text())
    summary["dataset"]["path"] = str(mine)
    (run / "summary.json").write_text(json.dumps(summary))
    write_report(run, workers=0)  # unchanged: drawn
    images, paths = top_rows(run, "units2")
    victim = paths[images[0, 0]]
    Image.new("RGB", (36, 24), (0, 200, 0)).save(mine / victim)
    with pytest.raises(NetDissectError, match=r"the image folder's images changed since the run .*"
                                              + victim.replace(".", r"\.") + r" \(changed after the run\)"):
        write_report(run, workers=0)
    with pytest.warns(ReportWarning, match="the image folder's images changed"):
        index = write_report(run, workers=0, verify=False)
    assert "Warning: the image folder&#39;s images changed after this run" in index.read_text()
    data = embedded(index)
    u = next(u for u in data["units"] if data["layers"][u["layer"]]["name"] == "units2" and u["unit"] == 0)
    green = tile_of(run / "report", data, u["t"][0])
    assert green[..., 1].mean() > 180 and green[..., 0].mean() < 40  # the current file, as --no-verify says


def test_broden_run_with_segmenter_labels_draws_no_dataset_masks(tmp_path):
    """A segmenter's label numbers are not the dataset's: no Broden outline may be drawn for them."""
    ds = make_dataset(tmp_path / "broden", n=8)
    run = make_run(tmp_path / "run", ds, layers=(("layer4", 6, 4),), topk=3)
    assert any(g >= 0 for u in embedded(write_report(run, workers=0))["units"] for g in u["g"])  # the control
    summary = json.loads((run / "summary.json").read_text())
    summary["labels"] = {"kind": "segmenter", "spec": "color", "iou": "pnas"}
    (run / "summary.json").write_text(json.dumps(summary))
    data = embedded(write_report(run, workers=0))
    assert all(g == -1 for u in data["units"] for g in u["g"])
    assert any(t >= 0 for u in data["units"] for t in u["t"])  # the photos are still drawn
    assert not data["sheets"]["g"]


# ---------------------------------------------------------------- (b) images held in the run
def generated(i: int) -> np.ndarray:
    """The 64 x 64 'generated' image of row ``i``: a colour per row and a diagonal gradient."""
    rng = np.random.default_rng(100 + i)
    c = rng.integers(30, 226, 3)
    ramp = np.add.outer(np.arange(64), np.arange(64))[..., None] / 126.0
    return np.clip(c * (0.5 + ramp), 0, 255).astype(np.uint8)


def make_generator_run(folder_run: Path, dest: Path) -> Path:
    """``folder_run`` made into a run to the generator contract: summary.json ``dataset`` has
    ``images_in_run: "images"`` (no path; the digest of the written images, as the engine records it)
    and topk.npz ``image_paths`` are ``seed1/NNNNNN.png`` files inside ``RUN/images``."""
    run = copy_run(folder_run, dest)
    summary = json.loads((run / "summary.json").read_text())
    n = summary["dataset"]["n_images"]
    rel = [f"seed1/{i:06d}.png" for i in range(n)]
    (run / "images" / "seed1").mkdir(parents=True)
    for i, p in enumerate(rel):
        Image.fromarray(generated(i)).save(run / "images" / p)
    dataset = {k: v for k, v in summary["dataset"].items()  # what build_summary adds (categories, ...)
               if k not in ("path", "files_digest", "rows_sha256", "size", "resize", "crop", "classes")}
    summary["dataset"] = {**dataset, "kind": "latent", "samples": n, "seed": 1, "dim": 8,
                          "images_in_run": "images", "files_digest": files_digest(run / "images", rel)}
    (run / "summary.json").write_text(json.dumps(summary))
    for layer in summary["layers"]:
        with np.load(run / layer / "topk.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays["image_paths"] = np.array(rel)
        np.savez(run / layer / "topk.npz", **arrays)
    return run


@pytest.fixture
def generator_run(folder_run, tmp_path):
    return make_generator_run(folder_run, tmp_path / "gen")


def test_run_held_images_are_drawn_from_the_run_folder(generator_run, tmp_path):
    index = write_report(generator_run, workers=0)
    data = embedded(index)
    T = data["tile"]
    images, paths = top_rows(generator_run, "units2")
    n = 0
    for u in (u for u in data["units"] if data["layers"][u["layer"]]["name"] == "units2"):
        assert all(g == -1 for g in u["g"])
        for j, tid in enumerate(u["t"]):
            i = int(images[u["unit"], j])
            assert paths[i] == f"seed1/{i:06d}.png" and tid >= 0
            assert np.abs(tile_of(generator_run / "report", data, tid) - as_tile(generated(i), T)).mean() < 3
            n += 1
    assert n >= 20
    html = index.read_text()
    assert 'class="note"' not in html  # no dataset to check, nothing missing
    assert str(generator_run.resolve()) not in html and str(tmp_path) not in html  # relocatable
    # the run moves (with its report): the page still draws, its sheets are reused as they are
    before = {p.name: p.read_bytes() for p in (generator_run / "report" / "img").iterdir()}
    moved = tmp_path / "elsewhere" / "gen"
    moved.parent.mkdir()
    shutil.move(generator_run, moved)
    again = embedded(write_report(moved, workers=0))
    assert again["sheets"] == data["sheets"] and [u["t"] for u in again["units"]] == [u["t"] for u in data["units"]]
    assert {p.name: p.read_bytes() for p in (moved / "report" / "img").iterdir()} == before


def test_run_held_images_copied_with_new_mtimes_are_drawn(generator_run, tmp_path):
    """A copy of a run (new mtimes: the recorded digest no longer holds) is still the run: its images
    are its own output, not a dataset that may have changed, so they are drawn without a warning."""
    copy = tmp_path / "copy"
    shutil.copytree(generator_run, copy, copy_function=shutil.copyfile)
    summary = json.loads((copy / "summary.json").read_text())
    with np.load(copy / "units2" / "topk.npz") as z:
        rel = [str(p) for p in z["image_paths"]]
    assert files_digest(copy / "images", rel) != summary["dataset"]["files_digest"]
    index = write_report(copy, workers=0)
    assert 'class="note"' not in index.read_text()
    assert all(t >= 0 for u in embedded(index)["units"] for t in u["t"])


def test_real_generator_run_draws_its_generated_images(tmp_path):
    """A generator dissected by the engine (the hand-built painters of tests/test_gan_dissect.py):
    every strip tile is the PNG the run wrote into RUN/images; the header names the samples."""
    from netdissect import dissect
    from test_gan_dissect import KW, Painter

    run = tmp_path / "gen"
    dissect(Painter(), ["paint"], samples=40, seed=3, segmenter="color", out=run, label_cache=tmp_path / "cache", **KW)
    index = write_report(run, workers=0)
    html = index.read_text()
    assert "<dt>dataset</dt><dd>generated · 40 samples, seed 3</dd>" in html and 'class="note"' not in html
    assert "Labels come from the segmenter <code>color</code>" in html  # labels.kind "generated"
    data = embedded(index)
    images, paths = top_rows(run, "paint")
    T = data["tile"]
    for u in data["units"]:
        assert all(g == -1 for g in u["g"])
        for j, tid in enumerate(u["t"]):
            png = np.asarray(Image.open(run / "images" / paths[images[u["unit"], j]]).convert("RGB"))
            assert tid >= 0 and np.abs(tile_of(run / "report", data, tid) - as_tile(png, T)).mean() < 3
    red = next(u for u in data["units"] if u["unit"] == 0)
    assert red["label"] == "red-c" and red["det"]


def test_run_held_images_missing_or_outside_the_run_are_noted(generator_run):
    shutil.rmtree(generator_run / "images")
    html = write_report(generator_run, workers=0).read_text()
    assert f"Images are missing: {generator_run / 'images'}: the run&#39;s images folder is missing" in html
    summary = json.loads((generator_run / "summary.json").read_text())
    summary["dataset"]["images_in_run"] = "../photos"  # a folder outside the run: refused
    (generator_run / "summary.json").write_text(json.dumps(summary))
    index = write_report(generator_run, workers=0)
    assert "images_in_run is &#39;../photos&#39;: not a folder inside the run" in index.read_text()
    assert all(t in (-1, -2) for u in embedded(index)["units"] for t in u["t"])


def test_run_held_image_paths_leaving_the_folder_are_not_read(generator_run, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), (255, 0, 255)).save(outside)
    layer = "units2"
    with np.load(generator_run / layer / "topk.npz") as z:
        arrays = {k: z[k] for k in z.files}
    i = int(arrays["images"][0, 0])
    paths = [str(p) for p in arrays["image_paths"]]
    paths[i] = os.path.relpath(outside, generator_run / "images")
    arrays["image_paths"] = np.array(paths)
    np.savez(generator_run / layer / "topk.npz", **arrays)
    index = write_report(generator_run, workers=0)
    assert "is not a file inside the run&#39;s images folder" in index.read_text()
    data = embedded(index)
    u = next(u for u in data["units"] if data["layers"][u["layer"]]["name"] == layer and u["unit"] == 0)
    assert u["t"][0] == -2


# ---------------------------------------------------------------- the roles report links unit cards
def test_roles_report_links_units_to_their_cards(tmp_path):
    from netdissect.report.build import safe_name
    from netdissect.roles.report import ablation_report

    dissection = tmp_path / "dis"
    (dissection / "report").mkdir(parents=True)
    (dissection / "report" / "index.html").write_text("<html></html>")
    out = tmp_path / "roles"
    out.mkdir()
    layer = "layer4.1/conv 2"
    summary = {"classes": ["cat", "dog"], "unit_labels": ["sky", "", "dog"], "best_iou": [0.2, 0.01, 0.3],
               "dissection": str(dissection), "layer": layer, "model": "m", "units": 3,
               "train": {"images": 10}, "val": {"images": 6}, "mode": "fast", "why_full_passes": None,
               "baseline_val": {"all_class_accuracy": 0.9, "balanced_accuracy": {"cat": 0.8, "dog": 0.9}},
               "sizes": [1], "top_k": 2}
    removal = [(y, m, 1, 0.5, 0.6) for y in range(2) for m in ("most_important", "all_but_most_important")]
    order = np.array([[2, 0, 1], [0, 2, 1]])
    uc = [(0, 2, 0.5, 0.9, 0.8), (1, 0, 0.4, 0.7, 0.6)]
    html = ablation_report(out, summary, removal, order, uc).read_text()
    anchor = safe_name(layer)
    assert anchor == "layer4.1_conv_2"
    for u in (0, 2):
        assert f'href="../dis/report/index.html#{anchor}-{u}"' in html
    assert f"#{layer}\"" not in html
    # the anchor is the dissection report's card id (report.js: L.id + "-" + u.unit, L.id = safe_name)
    js = (Path(__file__).parents[1] / "netdissect" / "report" / "templates" / "report.js").read_text()
    assert 'id="\' + esc(L.id + "-" + u.unit)' in js
