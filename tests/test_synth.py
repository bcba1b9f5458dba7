"""The synthetic world: determinism, labels, colour naming, and writer -> Broden reader round trip."""
from __future__ import annotations

import numpy as np
import pytest

from netdissect.data import Broden
from netdissect.data.synth import CATALOGUE, SCENES, TEXTURES, SceneDataset, generate, make_sample
from netdissect.data.synth.catalogue import COLORS, MATERIALS, OBJECTS, PARTS
from netdissect.data.synth.colors import COLOR_NAMES, name_colors
from netdissect.data.writer import BrodenWriter
from netdissect.errors import DatasetError


def _same(a, b):
    assert np.array_equal(a.image, b.image)
    assert a.labels == b.labels and a.scene == b.scene and a.texture == b.texture
    assert a.masks.keys() == b.masks.keys()
    for c in a.masks:
        assert all(np.array_equal(x, y) for x, y in zip(a.masks[c], b.masks[c]))


def test_world_is_as_large_as_the_issue_asks():
    assert len(SCENES) >= 8 and len(OBJECTS) >= 15 and len(PARTS) >= 15
    assert len(MATERIALS) >= 6 and len(TEXTURES) >= 8 and len(COLORS) == 11
    assert CATALOGUE.categories == ["color", "object", "part", "material", "scene", "texture"]
    assert min(CATALOGUE.numbers.values()) == 1
    assert CATALOGUE.number("object", "water") == CATALOGUE.number("material", "water")


def test_sample_depends_only_on_seed_and_index():
    short = list(generate(3, seed=7, size=64))
    longer = list(generate(6, seed=7, size=64))
    for a, b in zip(short, longer):
        _same(a, b)
    _same(make_sample(7, 4, 64), longer[4])
    _same(next(generate(1, seed=7, size=64, start=5)), longer[5])
    assert not np.array_equal(make_sample(8, 0, 64).image, short[0].image)


def test_samples_hold_valid_labels_at_mask_size():
    valid = {c: {CATALOGUE.numbers[n] for n in CATALOGUE.lists[c]} for c in CATALOGUE.categories}
    kinds = set()
    for s in generate(40, seed=3, size=112):
        assert s.image.shape == (112, 112, 3) and s.image.dtype == np.uint8
        for c, planes in s.masks.items():
            for p in planes:
                assert p.shape == (56, 56)
                assert set(np.unique(p)) - {0} <= valid[c]
        for c, nums in s.labels.items():
            assert set(nums) <= valid[c]
        if s.scene >= 0:
            kinds.add("scene")
            assert s.labels == {"scene": [CATALOGUE.number("scene", SCENES[s.scene])]}
            assert s.masks["object"][0].all()  # every scene pixel belongs to some object
        else:
            kinds.add("texture")
            assert list(s.masks) == ["color"] and "texture" in s.labels
    assert kinds == {"scene", "texture"}
    assert make_sample(0, 0, 64, kind="texture").texture >= 0
    assert make_sample(0, 0, 64).masks["color"][0].shape == (32, 32)


def test_size_is_checked():
    with pytest.raises(ValueError, match="size"):
        make_sample(0, 0, 8)


@pytest.mark.parametrize("rgb,name", [
    ((255, 0, 0), "red"), ((0, 0, 255), "blue"), ((0, 128, 0), "green"), ((255, 255, 0), "yellow"),
    ((255, 165, 0), "orange"), ((255, 192, 203), "pink"), ((128, 0, 128), "purple"),
    ((139, 69, 19), "brown"), ((128, 128, 128), "grey"), ((255, 255, 255), "white"), ((0, 0, 0), "black"),
    ((135, 206, 235), "blue"), ((30, 30, 120), "blue"), ((0, 100, 0), "green"),
])
def test_colour_naming(rgb, name):
    assert COLOR_NAMES[int(name_colors(np.array(rgb, np.uint8)))] == f"{name}-c"


def test_scene_dataset():
    ds = SceneDataset(6, seed=1, size=64, flip=True)
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and 0 <= int(y) < len(SCENES)
    assert ds.targets[2] == make_sample(1, 2, 64, kind="scene").scene
    xb, yb = ds.batch(np.arange(6))
    assert xb.shape == (6, 3, 64, 64) and yb.tolist() == ds.targets.tolist()


# ---------------------------------------------------------------- writer -> reader
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from netdissect.data.synth.export import write_world

    samples = list(generate(30, seed=11, size=64))
    root = write_world(tmp_path_factory.mktemp("w") / "world", 30, seed=11, size=64, progress=False)
    return root, samples


def test_round_trip_through_broden_reader(world):
    root, samples = world
    ds = Broden(root)
    assert len(ds) == 30
    assert ds.concepts.categories == CATALOGUE.categories
    assert len(ds.concepts) == len(CATALOGUE)
    names = ds.concepts.names
    assert ds.concepts.primary_names[names.index("water")] == "object"
    assert ds.concepts.primary_names[names.index("wood")] == "material"
    assert ds.concepts.primary_names[names.index("street-s")] == "scene"
    assert {r.split for r in ds.rows} == {"train", "val"}
    for i, s in enumerate(samples):
        row = ds.rows[i]
        assert (row.ih, row.iw, row.sh, row.sw) == (64, 64, 32, 32)
        assert ds.load_image(i).shape == (64, 64, 3)
        lab = ds.load_labels(i)
        expected = [p for c in ds.concepts.categories if c in s.masks for p in s.masks[c]]
        order = [p for c in row.masks for p in s.masks[c]]
        assert len(order) == len(expected) == lab.planes.shape[0]
        for got, want in zip(lab.planes, order):
            assert np.array_equal(got, want)
        assert sorted(lab.image_labels.tolist()) == sorted(n for v in s.labels.values() for n in v)
        assert row.labels == s.labels


def test_writer_counts(world):
    import csv

    root, samples = world
    rows = {r["name"]: r for r in csv.DictReader(open(root / "c_scene.csv"))}
    n_street = sum(1 for s in samples if s.scene == SCENES.index("street-s"))
    assert int(rows["street-s"]["frequency"]) == n_street
    cats = {r["name"]: r for r in csv.DictReader(open(root / "category.csv"))}
    assert int(cats["color"]["frequency"]) == 30 and int(cats["color"]["count"]) == 11
    label = {r["name"]: r for r in csv.DictReader(open(root / "label.csv"))}
    assert label["water"]["category"].startswith("object(") and ";material(" in label["water"]["category"]


def test_writer_large_numbers_and_errors(tmp_path):
    cats = {"object": ["a", "b"], "scene": ["s"]}
    numbers = {"a": 1, "b": 300, "s": 301}
    plane = np.zeros((4, 4), np.int32)
    plane[1:3, 1:3] = 300
    plane[0, 0] = 1
    with BrodenWriter(tmp_path / "d", cats, numbers) as w:
        w.add(np.zeros((8, 8, 3), np.uint8), {"object": [plane]}, {"scene": [301]})
    ds = Broden(tmp_path / "d")
    assert np.array_equal(ds.load_labels(0).planes[0], plane)
    assert ds.load_labels(0).image_labels.tolist() == [301]
    with pytest.raises(DatasetError, match="already exists"):
        BrodenWriter(tmp_path / "d", cats, numbers)
    with pytest.raises(DatasetError, match="not in category 'object'"):
        with BrodenWriter(tmp_path / "e", cats, numbers) as w:
            w.add(np.zeros((8, 8, 3), np.uint8), {"object": [plane * 0 + 301]})
    assert not (tmp_path / "e").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no partial folder left


def test_cli_synth(tmp_path, capsys):
    from netdissect.cli import main

    assert main(["synth", "--out", str(tmp_path / "w"), "--n", "5", "--seed", "2017", "--size", "48",
                 "--quiet"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert len(Broden(tmp_path / "w")) == 5
    assert main(["synth", "--out", str(tmp_path / "w"), "--n", "5", "--quiet"]) == 1


def test_overwrite_replaces_only_a_dataset_netdissect_wrote(tmp_path, capsys):
    from netdissect.cli import main
    from netdissect.data.writer import MARKER

    out = tmp_path / "w"
    args = ["synth", "--out", str(out), "--n", "3", "--size", "32", "--quiet"]
    assert main(args) == 0 and (out / MARKER).is_file()
    assert main(args + ["--n", "4", "--overwrite"]) == 0  # its own dataset: replaced
    assert len(Broden(out)) == 4
    capsys.readouterr()

    other = tmp_path / "photos"  # any other folder, even one that looks like a dataset
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"precious")
    (other / "index.csv").write_text("image,split,ih,iw,sh,sw\n")
    assert main(["synth", "--out", str(other), "--n", "3", "--size", "32", "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "was not written by netdissect" in err and MARKER in err and "Traceback" not in err
    assert (other / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "w"]  # no partial folder left

    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    assert main(["synth", "--out", str(afile), "--n", "3", "--quiet", "--overwrite"]) == 1
    assert "is not a folder" in capsys.readouterr().err and afile.read_text() == "keep me"


def test_overwrite_refuses_a_folder_replaced_while_writing(tmp_path):
    from netdissect.data.writer import MARKER

    cats, numbers = {"object": ["a"]}, {"a": 1}
    with BrodenWriter(tmp_path / "d", cats, numbers) as w:
        w.add(np.zeros((8, 8, 3), np.uint8))
    w = BrodenWriter(tmp_path / "d", cats, numbers, overwrite=True)
    w.add(np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "d" / MARKER).unlink()  # someone put another folder there meanwhile
    with pytest.raises(DatasetError, match="was not written by netdissect"):
        w.close()
    assert (tmp_path / "d" / "index.csv").exists() and [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize("out", ["", "  ", "."])
def test_synth_out_must_name_a_folder(tmp_path, monkeypatch, capsys, out):
    from netdissect.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", out, "--n", "2", "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert ("--out must name" in err or "must be a named folder" in err) and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_color_table_is_the_nearest_prototype_in_lab():
    """The tabulated map equals the plain nearest-prototype rule (dense distances, argmin) on a
    random sample of the grid's cells, so the fast table build changes no colour label."""
    from netdissect.data.synth.colors import _LEVELS, _STEP, PROTOTYPES, color_table, rgb_to_lab

    cells = np.random.default_rng(0).integers(0, _LEVELS, size=(5000, 3))
    lab = rgb_to_lab(cells * _STEP + (_STEP - 1) / 2.0)
    d = ((lab[:, None, :] - rgb_to_lab(PROTOTYPES[:, 1:])[None]) ** 2).sum(-1)
    expected = PROTOTYPES[d.argmin(1), 0].astype(np.uint8)
    assert np.array_equal(color_table()[cells[:, 0], cells[:, 1], cells[:, 2]], expected)
