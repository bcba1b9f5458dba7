"""World v2 (32 confusable scene classes): determinism, labels, balance, and the world-version check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netdissect.data import Broden
from netdissect.data.synth.catalogue import CATALOGUE, PIXEL_CATEGORIES
from netdissect.data.synth.catalogue2 import CATALOGUE2, GROUPS2, O2, P2, SCENES2
from netdissect.data.synth.draw import Canvas
from netdissect.data.synth.export import write_world
from netdissect.data.synth.generate import TEXTURE_FRACTION, generate, make_sample
from netdissect.data.synth.scenes2 import NIGHT2, P_KEY, P_SIBLING, compose2, render_scene2
from netdissect.data.synth.worlds import MARKER, check_world, dataset_world, get_world
from netdissect.errors import DatasetError


def _same(a, b):
    assert np.array_equal(a.image, b.image)
    assert a.labels == b.labels and a.scene == b.scene and a.texture == b.texture
    assert a.masks.keys() == b.masks.keys()
    for c in a.masks:
        assert all(np.array_equal(x, y) for x, y in zip(a.masks[c], b.masks[c]))


def test_v2_catalogue_extends_v1_and_groups_cover_every_class():
    assert len(SCENES2) >= 32 and len(set(SCENES2)) == len(SCENES2)
    assert all(len(g) >= 4 for g in GROUPS2.values()) and sorted(sum(GROUPS2.values(), [])) == sorted(SCENES2)
    for cat in PIXEL_CATEGORIES:   # the v1 drawers paint v1 numbers: they must mean the same in v2
        for name in CATALOGUE.lists[cat]:
            assert CATALOGUE2.number(cat, name) == CATALOGUE.number(cat, name)
    assert sorted(CATALOGUE2.numbers.values()) == list(range(1, len(CATALOGUE2) + 1))
    assert CATALOGUE2.number("object", "snow") == CATALOGUE2.number("material", "snow")
    assert get_world(1).scenes == CATALOGUE.lists["scene"] and get_world(2).scenes == SCENES2
    with pytest.raises(ValueError, match="versions 1, 2"):
        get_world(3)


def test_v2_sample_depends_only_on_seed_and_index():
    short = list(generate(3, seed=7, size=48, world=2))
    longer = list(generate(6, seed=7, size=48, world=2))
    for a, b in zip(short, longer):
        _same(a, b)
    _same(make_sample(7, 4, 48, world=2), longer[4])
    _same(next(generate(1, seed=7, size=48, start=5, world=2)), longer[5])
    _same(make_sample(7, 2, 48, world=2), make_sample(7, 2, 48, world=2))
    assert not np.array_equal(make_sample(8, 0, 48, world=2).image, short[0].image)
    # world 1 is unchanged by the v2 code path and differs from world 2
    v1 = make_sample(7, 0, 48)
    assert v1.labels.get("scene", [0])[0] in [CATALOGUE.number("scene", s) for s in CATALOGUE.lists["scene"]] \
        or "texture" in v1.labels


def test_v2_labels_every_pixel_and_draws_the_objects_that_separate_classes():
    for i in range(40):
        s = make_sample(3, i, 48, kind="scene", world=2)
        assert (s.masks["object"][0] > 0).all(), SCENES2[s.scene]          # every scene pixel is some object
        assert s.labels["scene"] == [CATALOGUE2.number("scene", SCENES2[s.scene])]
        assert set(np.unique(s.masks["object"][0])) <= set(O2.values())
    # each class's key draws the object (or part) that defines it (keys forced on, siblings' off)
    defining = {"beach-s": ("obj", "umbrella"), "beach_boats-s": ("obj", "boat"), "harbour-s": ("obj", "house"),
                "quay-s": ("obj", "lamp"), "street-s": ("obj", "person"), "residential-s": ("obj", "tree"),
                "parking_lot-s": ("obj", "car"), "night_street-s": ("obj", "lamp"), "forest-s": ("obj", "tree"),
                "orchard-s": ("part", "fruit"), "park-s": ("obj", "bench"), "farm-s": ("obj", "fence"),
                "kitchen-s": ("obj", "cabinet"), "dining_room-s": ("obj", "chair"), "living_room-s": ("part", "cushion"),
                "bedroom-s": ("part", "pillow"), "office-s": ("part", "screen"), "classroom-s": ("obj", "painting"),
                "library-s": ("part", "book"), "conference_room-s": ("obj", "chair"), "snowfield-s": ("obj", "fence"),
                "ski_resort-s": ("obj", "person"), "snowy_forest-s": ("obj", "tree"),
                "winter_village-s": ("obj", "house"), "pasture-s": ("obj", "cow"), "crop_field-s": ("obj", "crop"),
                "campsite-s": ("obj", "tent"), "country_road-s": ("obj", "car"), "lake-s": ("obj", "boat"),
                "river_bridge-s": ("part", "deck"), "pier-s": ("part", "plank"), "night_harbour-s": ("obj", "lamp")}
    assert sorted(defining) == sorted(SCENES2)
    group_of = {c: g for g, cs in GROUPS2.items() for c in cs}
    for scene, (plane, name) in defining.items():
        hits = 0
        for k in range(4):
            cv = Canvas(112, np.random.default_rng([11, k]))
            assert compose2(cv, group_of[scene], scene[:-2], p_key=1.0, p_sibling=0.0) == [scene[:-2]]
            hits += bool((cv.obj == O2[name]).any() if plane == "obj" else (cv.part == P2[name]).any())
        assert hits >= 3, (scene, name, hits)
    with pytest.raises(KeyError, match="world v2 has"):
        render_scene2(Canvas(32, np.random.default_rng(0)), "moon-s")


def test_v2_classes_are_balanced_and_textures_keep_their_share():
    n = 640
    scenes = np.zeros(len(SCENES2), int)
    textures = 0
    for i in range(n):
        s = make_sample(2017, i, 16, labels=False, world=2)   # the class draw does not depend on the size
        if s.scene >= 0:
            scenes[s.scene] += 1
        else:
            textures += 1
    assert abs(textures / n - TEXTURE_FRACTION) < 0.04, textures
    expected = scenes.sum() / len(SCENES2)
    chi2 = float(((scenes - expected) ** 2 / expected).sum())
    assert chi2 < 61.1, (chi2, scenes)        # p = 0.001 for 31 degrees of freedom
    assert scenes.min() > 0, scenes


def test_datasets_record_their_world_and_a_model_of_the_other_world_refuses_them(tmp_path):
    from netdissect.roles.data import load_labelled

    v1 = write_world(tmp_path / "w1", n=12, seed=5, size=32, progress=False)
    v2 = write_world(tmp_path / "w2", n=12, seed=5, size=32, progress=False, world=2)
    assert dataset_world(v1) == 1 and dataset_world(v2) == 2
    assert json.loads((v2 / MARKER).read_text())["meta"]["world"] == 2
    assert json.loads((v2 / MARKER).read_text())["meta"]["revision"] == get_world(2).revision == 2
    assert json.loads((v1 / MARKER).read_text())["meta"]["revision"] == get_world(1).revision == 1
    # the v2 dataset reads back through the ordinary Broden reader with the v2 names
    ds = Broden(v2)
    assert {"umbrella", "canopy", "snow"} <= set(ds.concepts.names)
    # a synthetic dataset written before world versions existed (no record) is world 1
    legacy = tmp_path / "legacy"
    v1.rename(legacy)
    m = json.loads((legacy / MARKER).read_text())
    m.pop("meta")
    (legacy / MARKER).write_text(json.dumps(m))
    assert dataset_world(legacy) == 1
    with pytest.raises(DatasetError, match=r"world v1, but zoo:x was trained on world v2.*--world 2"):
        check_world(legacy, 2, "zoo:x")
    check_world(legacy, 1, "zoo:x")
    check_world(v2, 2, "zoo:x")
    check_world(v2, None)                       # a model of no known world: nothing to check
    assert dataset_world(tmp_path) is None      # not a dataset
    with pytest.raises(DatasetError, match="world v2, but zoo:y was trained on world v1"):
        load_labelled(v2, get_world(2).scenes, 32, world=1, model="zoo:y", progress=False)
    imgs, y, _, _ = load_labelled(v2, get_world(2).scenes, 32, world=2, progress=False)
    assert len(imgs) == len(y) > 0


def test_ablate_refuses_a_dataset_of_the_other_world(tmp_path, capsys):
    """End to end: a zoo-format weights file of a world-2 model against a world-1 dataset (untrained weights)."""
    import torch
    from safetensors.torch import save_file

    from netdissect.cli import main
    from netdissect.models.zoo import META_KEY, build

    model = build("scene-cnn", 2)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, len(SCENES2))
    path = tmp_path / "w2-scene-cnn.safetensors"
    record = {"classes": SCENES2, "world": 2, "input_size": 32,
              "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}, "train": {"world": 2}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={META_KEY: json.dumps(record)})
    v1 = write_world(tmp_path / "w1", n=12, seed=5, size=32, progress=False, split="train")
    rc = main(["ablate", "--model", "zoo:scene-cnn", "--weights", str(path), "--layer", "conv5",
               "--train", str(v1), "--val", str(v1), "--out", str(tmp_path / "abl"), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "world v1" in err and "trained on world v2" in err, err
    assert "Traceback" not in err


def test_cli_synth_world_2(tmp_path, capsys):
    from netdissect.cli import main

    assert main(["synth", "--world", "2", "--out", str(tmp_path / "d"), "--n", "8", "--size", "32", "--quiet"]) == 0
    assert "world v2" in capsys.readouterr().out
    assert dataset_world(tmp_path / "d") == 2
    names = set(Broden(tmp_path / "d").concepts.names)
    assert set(SCENES2) <= names


def test_train_zoo_refuses_to_put_a_world2_model_among_the_bundled_world1_weights(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_zoo.py"
    spec = importlib.util.spec_from_file_location("train_zoo_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["scene-cnn-wide", "--world", "2"]) == 2      # returns before rendering or training
    err = capsys.readouterr().err
    assert "world-1 models" in err and "--out" in err


def test_v2_classes_of_a_group_share_one_background_and_differ_only_by_their_key_objects():
    """Revision 2: with every key switched off, the classes of a group draw the same image from the same
    random stream (a night class is darker), so only key objects can separate them."""
    for group, scenes in GROUPS2.items():
        kinds = [c[:-2] for c in scenes]
        day = [k for k in kinds if k not in NIGHT2]
        for seed in range(3):
            imgs = {}
            for k in kinds:
                cv = Canvas(48, np.random.default_rng([5, seed]))
                assert compose2(cv, group, k, p_key=0.0, p_sibling=0.0) == []
                imgs[k] = (cv.rgb.copy(), cv.obj.copy())
            for k in day[1:]:
                assert np.array_equal(imgs[k][0], imgs[day[0]][0]), (group, k)
                assert np.array_equal(imgs[k][1], imgs[day[0]][1]), (group, k)
            for k in set(kinds) - set(day):    # a night class: a darker image
                assert imgs[k][0].mean() < 0.7 * imgs[day[0]][0].mean(), (group, k)


def test_v2_key_objects_appear_at_their_rates():
    """A class's key in P_KEY of its images, each sibling's key in P_SIBLING (binomial bounds, p = 1e-4)."""
    n = 300
    own, sib = 0, 0
    for i in range(n):
        cv = Canvas(16, np.random.default_rng([9, i]))
        present = compose2(cv, "field", "pasture")
        own += "pasture" in present
        sib += sum(k in present for k in ("crop_field", "campsite", "country_road"))
    for hits, trials, p in ((own, n, P_KEY), (sib, 3 * n, P_SIBLING)):
        sd = (trials * p * (1 - p)) ** 0.5
        assert abs(hits - trials * p) < 3.9 * sd, (hits, trials, p)
    assert 0.5 < P_KEY < 1 and 0 < P_SIBLING < 0.5


def test_world_probe_reads_the_objects_present_and_runs(capsys):
    """scripts/world_probe.py (the separability probe of docs/world.md, "Pilot 2") on a few small scenes."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "world_probe.py"
    spec = importlib.util.spec_from_file_location("world_probe_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    X, y = mod.features(2, 3, 6, 32, areas=True)
    s = make_sample(3, 0, 32, kind="scene", world=2)
    assert X.shape[0] == 6 and y[0] == s.scene and X.shape[1] % 2 == 1
    ncol = (X.shape[1] - 1) // 2
    assert set(np.unique(X[:, :ncol])) <= {0.0, 1.0}
    # a present label has a positive area, an absent one none; every object plane covers the whole image
    assert np.array_equal(X[:, :ncol] > 0, X[:, ncol:2 * ncol] > 0)
    objects = [CATALOGUE2.number("object", o) for o in CATALOGUE2.lists["object"]]
    assert (X[:, ncol:2 * ncol][:, [i for i in range(ncol) if i < len(objects)]].sum(1) >= 0.99).all()
    assert mod.main(["--world", "2", "--n-train", "64", "--n-test", "32", "--size", "32"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out


def test_train_zoo_cache_of_world2_renders_is_named_by_revision(tmp_path):
    """A render cache of another world-2 revision is never read back for this one."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_zoo.py"
    spec = importlib.util.spec_from_file_location("train_zoo_cache_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = {"world": 2, "data_seed": 5, "n_train": 3, "size": 32}
    ds = mod._dataset(t, "data_seed", "n_train", tmp_path, {}, False)
    disk = tmp_path / "cache" / f"world2r{get_world(2).revision}-seed5-n3-32px.npz"
    assert disk.is_file() and not (tmp_path / "cache" / "world2-seed5-n3-32px.npz").exists()
    again = mod._dataset(t, "data_seed", "n_train", tmp_path, {}, False)     # read back from disk
    assert np.array_equal(again.images, ds.images) and np.array_equal(again.targets, ds.targets)
