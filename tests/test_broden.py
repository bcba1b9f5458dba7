"""Reading the Broden format, and surviving what real copies of it hold."""
import shutil

import numpy as np
import pytest

from broden_fixture import make_broden
from netdissect import dissect
from netdissect.data import Broden
from netdissect.errors import DatasetError
from nets import TappedColorUnits


def _copy(broden, tmp_path):
    return shutil.copytree(broden, tmp_path / "ds")


def test_catalogue_gaps_multi_category_and_primary(broden):
    ds = Broden(broden)
    c = ds.concepts
    assert ds.concepts.categories == ["color", "object", "part", "material", "scene", "texture"]
    assert 4 not in c.numbers and 300 in c.numbers  # number gaps, numbers >= 256
    wood = c.names.index("wood")
    assert c.categories[c.primary[wood]] == "material"  # larger coverage in c_material.csv
    assert c.index_of(np.array([0, 4, 9, 999])).tolist() == [-1, -1, wood, -1]


def test_masks_decode_r_plus_256_g_and_image_level_cells(broden):
    ds = Broden(broden)
    found_lid = found_scene = found_texture = False
    for i in range(len(ds)):
        s = ds.load_labels(i)
        found_lid |= bool((s.planes == 300).any())
        found_scene |= bool(set(s.image_labels) & {11, 12})
        found_texture |= 13 in s.image_labels
        if 13 in s.image_labels:
            assert s.planes.shape[0] == 0 and s.has_category.tolist() == [False] * 5 + [True]
    assert found_lid and found_scene and found_texture


def test_bom_and_crlf(tmp_path):
    root = make_broden(tmp_path / "ds", n=6, bom=True, crlf=True)
    ds = Broden(root)
    assert len(ds) == 6 and ds.rows[0].image == "img000.jpg" and "square" in ds.concepts.names


def test_non_ascii_names(broden, tmp_path):
    root = _copy(broden, tmp_path)
    text = (root / "label.csv").read_text().replace("disc,", "disque_é,")
    (root / "label.csv").write_text(text, encoding="utf-8")
    assert "disque_é" in Broden(root).concepts.names


def test_split_and_limit(broden):
    assert all(r.split == "val" for r in Broden(broden, split="val").rows)
    assert len(Broden(broden, limit=5)) == 5
    with pytest.raises(DatasetError, match="no rows in split 'test'"):
        Broden(broden, split="test")


def test_missing_index_file_names_it(broden, tmp_path):
    root = _copy(broden, tmp_path)
    (root / "index.csv").unlink()
    with pytest.raises(DatasetError, match=r"index.csv: file not found"):
        Broden(root)


def test_missing_column(broden, tmp_path):
    root = _copy(broden, tmp_path)
    lines = (root / "index.csv").read_text().splitlines()
    (root / "index.csv").write_text("\n".join(ln.split(",", 1)[1] for ln in lines) + "\n")
    with pytest.raises(DatasetError, match="missing column.*image"):
        Broden(root)


def test_missing_image_names_file_and_row(broden, tmp_path):
    root = _copy(broden, tmp_path)
    (root / "images" / "img003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"index.csv row 5 \(img003.jpg\): image file not found"):
        dissect(TappedColorUnits(), "units", root, num_workers=0, progress=False)


def test_skip_bad_counts_and_reports(broden, tmp_path):
    root = _copy(broden, tmp_path)
    (root / "images" / "img003.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    mask = next(p for p in (root / "images").glob("img004_color_*.png"))
    mask.write_bytes(mask.read_bytes()[:40])  # truncated PNG
    result = dissect(TappedColorUnits(), "units", root, num_workers=0, progress=False, skip_bad=True,
                     quantile=0.08, out=tmp_path / "run")
    skipped = result.summary["dataset"]["skipped"]
    assert [s["row"] for s in skipped] == [3, 4]
    assert "corrupt image" in skipped[0]["error"] and "corrupt mask" in skipped[1]["error"]
    assert result.summary["dataset"]["n_used"] == 28
    assert result["units"].units["label"][0] == "square"
    # the row with a bad mask (but a good image) is left out of everything, as if its image were
    # missing too: thresholds, top images and IoU equal those of that run
    (root / "images" / "img004.jpg").unlink()
    both = dissect(TappedColorUnits(), "units", root, num_workers=0, progress=False, skip_bad=True,
                   quantile=0.08)
    assert [s["row"] for s in both.summary["dataset"]["skipped"]] == [3, 4]
    for field in ("thresholds", "iou", "top_images", "top_values", "top_maps"):
        np.testing.assert_array_equal(getattr(result["units"], field), getattr(both["units"], field))
    assert 4 not in set(result["units"].top_images.ravel())


def test_mask_of_wrong_size(broden, tmp_path):
    from PIL import Image

    root = _copy(broden, tmp_path)
    mask = next(p for p in (root / "images").glob("img001_object_*.png"))
    Image.new("RGB", (5, 5)).save(mask)
    with pytest.raises(DatasetError, match=r"row 3 .*is 5x5, index.csv says sh x sw = 16x16"):
        Broden(root).load_labels(1)


def test_label_number_absent_from_label_csv_is_counted(broden, tmp_path):
    root = _copy(broden, tmp_path)
    text = (root / "index.csv").read_text().splitlines()
    # give the first row's scene cell an unknown label number
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("scene")] = "11;77"
    text[1] = ",".join(row)
    (root / "index.csv").write_text("\n".join(text) + "\n")
    result = dissect(TappedColorUnits(), "units", root, num_workers=0, progress=False, quantile=0.08)
    assert result.summary["dataset"]["unknown_label_count"] == 1


def test_empty_category_and_rows_without_labels(broden, tmp_path):
    root = _copy(broden, tmp_path)
    lines = (root / "index.csv").read_text().splitlines()
    header = lines[0].split(",")
    out = [lines[0]]
    for ln in lines[1:]:
        cells = ln.split(",")
        cells[header.index("material")] = ""  # no material labels anywhere
        out.append(",".join(cells))
    blank = out[1].split(",")
    for c in ("scene", "object", "part", "color", "texture"):
        blank[header.index(c)] = ""  # a row with no labels at all
    out[1] = ",".join(blank)
    (root / "index.csv").write_text("\n".join(out) + "\n")
    result = dissect(TappedColorUnits(), "units", root, num_workers=0, progress=False, quantile=0.08)
    lr = result["units"]
    assert lr.unique_detectors["material"] == 0
    assert np.all(lr.iou[:, list(lr.concept_names).index("wood")] == 0)
    assert lr.units["label"][0] == "square"
