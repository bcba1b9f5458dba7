"""Bad or unusual Broden inputs: each is read correctly or refused with a one-line error
naming the file, the row and the fix (never a silent wrong number)."""
from __future__ import annotations

import csv
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from broden_fixture import make_broden
from netdissect import dissect
from netdissect.data import Broden
from netdissect.errors import NetDissectError, DatasetError
from netdissect.stats import LabelBatch
from nets import ElementwiseNet, TappedColorUnits

RUN = dict(num_workers=0, progress=False, quantile=0.08, cache_dtype="float32")


def _copy(broden, tmp_path, name="ds"):
    return shutil.copytree(broden, tmp_path / name)


def _read_index(root):
    with open(root / "index.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _write_index(root, header, rows):
    with open(root / "index.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _set_cell(root, row, column, value):
    header, rows = _read_index(root)
    rows[row][column] = value
    _write_index(root, header, rows)


def _png16_rgb(w, h, value=(0, 5, 0, 0, 0, 0)):
    """A 16-bit-per-channel RGB PNG (Pillow would read it as 8-bit RGB, keeping the high bytes)."""
    raw = b"".join(b"\0" + bytes(value * w) for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- numbers and names
def test_long_label_and_category_names_are_kept_whole(broden, tmp_path):
    root = _copy(broden, tmp_path)
    long = "a_very_long_concept_name_" * 6  # 150 characters
    text = (root / "label.csv").read_text().replace(",disc,", f",{long},")
    (root / "label.csv").write_text(text)
    ds = Broden(root)
    assert long in ds.concepts.names and len(long) > 64


@pytest.mark.parametrize("column,value", [("ih", "3.7"), ("sw", "16.0"), ("sh", "1e1"), ("iw", ""),
                                          ("sh", "0"), ("iw", "-32")])
def test_index_sizes_must_be_whole_positive_numbers(broden, tmp_path, column, value):
    root = _copy(broden, tmp_path)
    _set_cell(root, 2, column, value)
    with pytest.raises(DatasetError, match=rf"index.csv row 4: column '{column}' must be"):
        Broden(root)


def test_label_numbers_must_be_whole(broden, tmp_path):
    root = _copy(broden, tmp_path)
    text = (root / "label.csv").read_text().replace("\n7,disc,", "\n7.5,disc,")
    (root / "label.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"label.csv row 6: column 'number' must be a whole number, got '7.5'"):
        Broden(root)
    root = _copy(broden, tmp_path, "c")
    text = (root / "c_object.csv").read_text().replace(",7,disc,", ",7.2,disc,")
    (root / "c_object.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"c_object.csv row 3: column 'number' must be a whole number"):
        Broden(root)


def test_image_level_cell_with_a_fractional_number(broden, tmp_path):
    root = _copy(broden, tmp_path)
    _set_cell(root, 0, "scene", "11;3.7")
    with pytest.raises(DatasetError, match=r"index.csv row 2: column 'scene' holds '3.7'"):
        Broden(root)


# ---------------------------------------------------------------- catalogue
def test_label_csv_with_only_a_header(broden, tmp_path):
    root = _copy(broden, tmp_path)
    (root / "label.csv").write_text("number,name,category,frequency,coverage,syns\n")
    with pytest.raises(DatasetError, match=r"label.csv: no labels"):
        Broden(root)
    (root / "label.csv").write_text("number,name,category,frequency,coverage,syns\n0,-,,0,0,\n")
    with pytest.raises(DatasetError, match=r"label.csv: no labels"):
        Broden(root)


def test_category_without_concepts_is_kept(broden, tmp_path):
    root = _copy(broden, tmp_path)
    with open(root / "category.csv", "a") as f:
        f.write("extra,0,0,0,0\n")
    ds = Broden(root)
    assert ds.concepts.categories[-1] == "extra" and len(ds.concepts) == len(Broden(broden).concepts)


# ---------------------------------------------------------------- paths
@pytest.mark.parametrize("column,value", [("image", "../outside.jpg"), ("image", "/etc/passwd"),
                                          ("image", "sub/../../x.jpg"), ("object", "img000_object_1.png;../x.png"),
                                          ("color", "C:\\masks\\x.png"), ("part", "..\\x.png")])
def test_paths_outside_the_dataset_are_refused(broden, tmp_path, column, value):
    root = _copy(broden, tmp_path)
    _set_cell(root, 0, column, value)
    with pytest.raises(DatasetError, match=rf"index.csv row 2: column '{column}' names .*outside the dataset"):
        Broden(root)


# ---------------------------------------------------------------- split and limit
@pytest.mark.parametrize("limit", [0, -5, 1.5, True, "3"])
def test_limit_must_be_a_whole_number_at_least_one(broden, limit):
    with pytest.raises(DatasetError, match="limit must be"):
        Broden(broden, limit=limit)


@pytest.mark.parametrize("limit", [0, -5])
def test_dissect_refuses_limit_below_one(broden, limit):
    with pytest.raises(NetDissectError, match=rf"limit must be an integer >= 1, got {limit}"):
        dissect(TappedColorUnits(), "units", broden, limit=limit, **RUN)  # before the model loads


def test_unknown_split_names_the_splits_present(broden):
    with pytest.raises(DatasetError, match=r"no rows in split 'test'; splits present: 'train' \(22 rows\), "
                                           r"'val' \(8 rows\)"):
        Broden(broden, split="test")


def test_split_and_limit_select_rows_in_order(broden):
    ds = Broden(broden, split="val", limit=3)
    assert [r.image for r in ds.rows] == ["img000.jpg", "img004.jpg", "img008.jpg"]
    assert len(Broden(broden, split="train")) == 22 and len(Broden(broden, limit=30)) == 30
    assert len(Broden(broden, limit=1000)) == 30


def test_split_and_limit_through_dissect(broden):
    result = dissect(TappedColorUnits(), "units", broden, split="val", limit=3, **RUN)
    assert result.summary["dataset"]["n_images"] == 3
    top = set(result["units"].top_images.ravel().tolist()) - {-1}
    assert top <= {0, 1, 2}  # rows of the selection, not of the whole index


# ---------------------------------------------------------------- mask formats
def _object_mask(root, row=1):
    ds = Broden(root)
    rel = ds.rows[row].masks["object"][0]
    return ds, rel, root / "images" / rel


@pytest.mark.parametrize("kind,match", [
    ("L", r"is a 8-bit greyscale PNG \(mode L\)"),
    ("I;16", r"is a 16-bit greyscale PNG \(mode I;16"),
    ("LA", r"is a 8-bit greyscale \+ alpha PNG \(mode LA\)"),
    ("1", r"is a 1-bit black-and-white PNG \(mode 1\)"),
    ("RGB16", r"is a 16-bit-per-channel PNG \(mode RGB, stored as RGB;16B\)"),
    ("JPEG", r"is a JPEG file, not a PNG"),
])
def test_masks_not_8bit_rgb_are_refused(broden, tmp_path, kind, match):
    root = _copy(broden, tmp_path)
    ds, rel, path = _object_mask(root)
    labels = ds.load_labels(1).planes[0]
    if kind == "RGB16":
        path.write_bytes(_png16_rgb(*labels.shape[::-1]))
    elif kind == "JPEG":
        Image.fromarray(np.zeros(labels.shape + (3,), np.uint8)).save(path, format="JPEG")
    elif kind == "I;16":
        Image.fromarray(labels.astype(np.uint16)).save(path)
    elif kind == "1":
        Image.fromarray(labels > 0).save(path)
    else:
        Image.fromarray(labels.astype(np.uint8)).convert(kind).save(path)
    with pytest.raises(DatasetError, match=r"index.csv row 3 \(img001.jpg\): mask .*" + match
                       + r".*R \+ 256 \* G: re-save it as RGB"):
        Broden(root).load_labels(1)


def test_rgba_and_palette_masks_decode_to_the_same_numbers(broden, tmp_path):
    root = _copy(broden, tmp_path)
    ds, rel, path = _object_mask(root)
    want = ds.load_labels(1).planes.copy()
    rgb = Image.open(path).convert("RGB")
    rgb.convert("RGBA").save(path)
    assert Image.open(path).mode == "RGBA"
    np.testing.assert_array_equal(Broden(root).load_labels(1).planes, want)
    arr = np.asarray(rgb)
    colors, inverse = np.unique(arr.reshape(-1, 3), axis=0, return_inverse=True)
    pal = Image.fromarray(inverse.reshape(arr.shape[:2]).astype(np.uint8), mode="L").convert("P")
    pal.putpalette(colors.astype(np.uint8).ravel().tolist())  # what a PNG optimiser writes
    pal.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(Broden(root).load_labels(1).planes, want)


def test_mask_plane_with_large_numbers_decodes_as_int32(tmp_path):
    root = make_broden(tmp_path / "ds", n=6)
    ds = Broden(root)
    lid = [ds.load_labels(i).planes for i in range(len(ds))]
    assert any((p == 300).any() for p in lid)  # R = 44, G = 1


# ---------------------------------------------------------------- decode failures
def test_decompression_bomb_is_a_dataset_error_and_skipped(broden, tmp_path, monkeypatch):
    root = _copy(broden, tmp_path)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(root / "images" / "img003.jpg")  # 40000 px
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30000)  # a warning (between 1x and 2x the limit)
    with pytest.raises(DatasetError, match=r"row 5 \(img003.jpg\): corrupt image .*decompression bomb"):
        Broden(root).load_image(3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)  # an error (over 2x)
    with pytest.raises(DatasetError, match=r"row 5 \(img003.jpg\): corrupt image .*decompression bomb"):
        Broden(root).load_image(3)
    result = dissect(TappedColorUnits(), "units", root, skip_bad=True, **RUN)
    skipped = result.summary["dataset"]["skipped"]
    assert [s["row"] for s in skipped] == [3] and "decompression bomb" in skipped[0]["error"]


def test_decompression_bomb_in_a_mask(broden, tmp_path, monkeypatch):
    root = _copy(broden, tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # masks are 16 x 16 = 256 px
    with pytest.raises(DatasetError, match=r"row 2 \(img000.jpg\): corrupt mask .*decompression bomb"):
        Broden(root).load_labels(0)


def test_other_decoder_errors_are_dataset_errors(broden, tmp_path, monkeypatch):
    import netdissect.data.broden as broden_mod

    class Broken:
        format, mode, tile, size = "PNG", "RGB", [], (16, 16)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def load(self):
            raise struct.error("unpack requires a buffer of 4 bytes")

        def convert(self, mode):
            return self

    monkeypatch.setattr(broden_mod, "_open_image", lambda path: Broken())
    ds = Broden(broden)
    with pytest.raises(DatasetError, match=r"row 2 \(img000.jpg\): corrupt image .*error: unpack requires"):
        ds.load_image(0)
    with pytest.raises(DatasetError, match=r"row 2 \(img000.jpg\): corrupt mask .*error: unpack requires"):
        ds.load_labels(0)


def test_unreadable_image_says_so(broden, tmp_path):
    root = _copy(broden, tmp_path)
    (root / "images" / "img002.jpg").unlink()
    (root / "images" / "img002.jpg").mkdir()
    with pytest.raises(DatasetError, match=r"row 4 \(img002.jpg\): cannot read image file"):
        Broden(root).load_image(2)


# ---------------------------------------------------------------- which images hold a category
def _add_plane(root, row, category, plane):
    rel = f"extra_{row}_{category}.png"
    rgb = np.zeros(plane.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1] = plane % 256, plane // 256
    Image.fromarray(rgb).save(root / "images" / rel)
    header, rows = _read_index(root)
    rows[row][category] = ";".join([p for p in rows[row][category].split(";") if p] + [rel])
    _write_index(root, header, rows)


def test_unknown_label_numbers_do_not_make_an_image_hold_a_category(broden, tmp_path):
    root = _copy(broden, tmp_path)
    ds = Broden(root)
    row = next(i for i, r in enumerate(ds.rows) if not r.masks)  # a texture-only image
    plane = np.zeros((16, 16), np.int32)
    plane[2:6, 3:9] = 77  # not in label.csv
    _add_plane(root, row, "part", plane)
    s = Broden(root).load_labels(row)
    assert s.planes.shape[0] == 1 and not s.has_category[Broden(root).concepts.categories.index("part")]
    labels = LabelBatch.from_samples([s], Broden(root).concepts)
    assert labels.unknown == 24
    # the image stays out of the part concepts' denominators: the IoU of every concept is unchanged
    want = dissect(TappedColorUnits(), "units", broden, **RUN)
    got = dissect(TappedColorUnits(), "units", root, **RUN)
    np.testing.assert_array_equal(got["units"].iou, want["units"].iou)
    assert got.summary["dataset"]["unknown_label_count"] == 24


def test_label_in_several_categories_counts_in_its_non_primary_column(broden, tmp_path):
    """'wood' is material (primary, larger coverage in c_material.csv) and object: found in an
    object plane of an image without material masks, it still counts for 'wood', and the image
    enters the material denominators, exactly as when it is in the material plane."""
    root = _copy(broden, tmp_path)
    ds = Broden(root)
    cats = ds.concepts.categories
    wood = ds.concepts.names.index("wood")
    assert cats[ds.concepts.primary[wood]] == "material"
    moved = 0
    header, rows = _read_index(root)
    for i, r in enumerate(ds.rows):
        if "object" in r.masks and "material" in r.masks:
            s = ds.load_labels(i)
            planes = dict(zip([c for c, ps in r.masks.items() for _ in ps], s.planes))
            obj, mat = planes["object"].copy(), planes["material"]
            obj[mat == 9] = 9
            rgb = np.zeros(obj.shape + (3,), np.uint8)
            rgb[..., 0], rgb[..., 1] = obj % 256, obj // 256
            Image.fromarray(rgb).save(root / "images" / r.masks["object"][0])
            rows[i]["material"] = ""
            moved += 1
    _write_index(root, header, rows)
    assert moved >= 3
    moved_ds = Broden(root)
    for i, r in enumerate(moved_ds.rows):
        if ds.rows[i].masks.get("material"):
            assert "material" not in r.masks and moved_ds.load_labels(i).has_category[cats.index("material")]
    want = dissect(TappedColorUnits(), "units", broden, **RUN)
    got = dissect(TappedColorUnits(), "units", root, **RUN)
    assert want["units"].iou[2, wood] > 0.1  # unit 2 is the blue (wood) detector
    np.testing.assert_array_equal(got["units"].iou, want["units"].iou)


# ---------------------------------------------------------------- mixed mask sizes
def _halve_masks(root, rows_to_halve):
    header, rows = _read_index(root)
    for i in rows_to_halve:
        r = rows[i]
        for c in ("color", "object", "part", "material"):
            for rel in filter(None, r[c].split(";")):
                path = root / "images" / rel
                arr = np.asarray(Image.open(path).convert("RGB"))
                Image.fromarray(np.ascontiguousarray(arr[::2, ::2])).save(path)
        r["sh"] = r["sw"] = str(int(r["sh"]) // 2)
    _write_index(root, header, rows)


def test_mixed_mask_sizes_match_the_reference(broden, tmp_path):
    import torch
    from reference import reference_dissect

    from netdissect.hooks import Trace

    root = _copy(broden, tmp_path)
    _halve_masks(root, [0, 3, 4, 9, 10, 11, 17])
    ds = Broden(root)
    assert ds.mask_sizes() == {(16, 16): 23, (8, 8): 7}
    assert ds.mask_sizes([0, 1, 3]) == {(8, 8): 2, (16, 16): 1}
    assert ds.load_labels(3).planes.shape[1:] == (8, 8)
    model = ElementwiseNet(units=10, seed=3)
    result = dissect(model, ["units"], root, quantile=0.05, cache_dtype="float32", batch_size=7,
                     num_workers=0, progress=False)
    acts = []
    with torch.inference_mode():
        for i in range(len(ds)):
            x = torch.from_numpy(ds.load_image(i).copy()).permute(2, 0, 1)[None].float().div_(255)
            with Trace(model, "units", stop=True) as t:
                model(x)
            acts.append(t.output[0].numpy())
    thresholds, iou = reference_dissect(np.stack(acts), ds, 0.05)
    np.testing.assert_allclose(result["units"].iou, iou, rtol=0, atol=1e-6)
    assert (iou > 0).sum() >= 5


def test_label_batch_refuses_samples_of_several_mask_sizes(broden, tmp_path):
    root = _copy(broden, tmp_path)
    _halve_masks(root, [1])
    ds = Broden(root)
    with pytest.raises(ValueError, match=r"share one mask size, got \[\(8, 8\), \(16, 16\)\] \(rows \[0, 1\]\)"):
        LabelBatch.from_samples([ds.load_labels(0), ds.load_labels(1)], ds.concepts)


# ---------------------------------------------------------------- files digest
def test_files_digest_notices_replaced_touched_and_shuffled_files(broden, tmp_path):
    import os

    root = _copy(broden, tmp_path)
    d0 = Broden(root).files_digest()
    assert len(d0) == 64 and Broden(root).files_digest() == d0  # nothing changed
    assert Broden(root, limit=5).files_digest() != d0 and Broden(root).files_digest(range(5)) != d0
    assert Broden(root, limit=5).files_digest() == Broden(root).files_digest(range(5))

    img = root / "images" / "img002.jpg"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes, newer
    d1 = Broden(root).files_digest()
    assert d1 != d0 and Broden(root).files_digest(mtime=False) == Broden(broden).files_digest(mtime=False)

    Image.new("RGB", (32, 32), (1, 2, 3)).save(img)  # replaced
    assert Broden(root).files_digest(mtime=False) != Broden(broden).files_digest(mtime=False)

    root2 = _copy(broden, tmp_path, "shuffled")
    a, b = root2 / "images" / "img000.jpg", root2 / "images" / "img001.jpg"
    tmp = root2 / "images" / "tmp.jpg"
    a.rename(tmp), b.rename(a), tmp.rename(b)  # two images swapped under the same names
    assert Broden(root2).files_digest(mtime=False) != Broden(broden).files_digest(mtime=False)

    root3 = _copy(broden, tmp_path, "reordered")
    header, rows = _read_index(root3)
    _write_index(root3, header, rows[1:2] + rows[:1] + rows[2:])  # rows reordered in index.csv
    assert Broden(root3).files_digest(mtime=False) != Broden(broden).files_digest(mtime=False)

    (root3 / "images" / "img005.jpg").unlink()  # a missing file enters as missing, no error
    assert Broden(root3).files_digest() != Broden(root3, limit=30).files_digest(range(5))


def test_files_lists_image_then_masks(broden):
    ds = Broden(broden)
    files = ds.files(1)
    assert files[0] == "img001.jpg" and all(f.endswith(".png") for f in files[1:]) and len(files) > 2
