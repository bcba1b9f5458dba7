"""The experiments: a layer dissected in another basis from one forward pass, the rotation
sweep, the basis run, the linear probe and the training curve (small datasets here; the
science check of the rotation on the embedded world is in test_experiments_world.py)."""
import csv
import json

import numpy as np
import pytest
import torch

from netdissect import dissect, load
from netdissect.cli import main
from netdissect.errors import NetDissectError
from netdissect.experiments.basis import ActivationRun, BasisLayer, check_basis, load_basis
from netdissect.experiments.rotation import random_rotation, rotation_power
from netdissect.experiments.sweep import check_seeds, rotation_sweep
from netdissect.models.zoo import load_zoo_model

LAYER = "conv3"  # 96 channels, 4 x 4 at the fixture's 32 px


def _equal(a, b):
    np.testing.assert_array_equal(a.iou, b.iou)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    np.testing.assert_array_equal(a.top_images, b.top_images)
    np.testing.assert_array_equal(a.top_values, b.top_values)
    assert a.unique_detectors == b.unique_detectors


@pytest.fixture(scope="module")
def bases(broden):
    """One forward pass: the unit basis and two rotated ones."""
    Q = random_rotation(96, seed=4)
    with ActivationRun("zoo:scene-cnn", LAYER, broden, batch_size=8, num_workers=0) as run:
        out = {0.5: run.dissect_basis(rotation_power(Q, 0.5)), 1.0: run.dissect_basis(Q),
               0.0: run.dissect_basis(None)}
    return Q, out


def test_unit_basis_equals_the_engine(broden, bases):
    ref = dissect("zoo:scene-cnn", [LAYER], broden, batch_size=8, num_workers=0, progress=False)[LAYER]
    _equal(bases[1][0.0], ref)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_rotated_dissection_equals_dissecting_the_rotated_model(broden, bases, alpha):
    Q, out = bases
    model, meta = load_zoo_model("scene-cnn")
    getattr(model, LAYER).append(BasisLayer(rotation_power(Q, alpha)))
    n = meta["normalize"]
    ref = dissect(model, [LAYER], broden, normalize=f"{n['mean'][0]},{n['std'][0]}", batch_size=8, num_workers=0,
                  progress=False)[LAYER]
    _equal(out[alpha], ref)


def test_a_rotation_changes_the_units(bases):
    _, out = bases
    assert not np.array_equal(out[1.0].iou, out[0.0].iou)


def test_check_basis_refuses_bad_matrices(tmp_path):
    for M, msg in [(np.ones(4), "2-D"), (np.ones((4, 3)), "4 columns"), (np.ones((4, 5)), "transpose"),
                   (np.zeros((0, 4)), "no directions"), (np.full((2, 4), np.nan), "NaN"),
                   (np.array([[1, 0, 0, 0], [0, 0, 0, 0]]), "direction 1 is all zeros"),
                   (np.ones((2, 4), complex), "real")]:
        with pytest.raises(NetDissectError, match=msg):
            check_basis(M, 4)
    np.save(tmp_path / "m.npy", np.eye(4)[:3])
    assert load_basis(tmp_path / "m.npy", 4).shape == (3, 4)
    from safetensors.numpy import save_file

    save_file({"a": np.eye(4, dtype=np.float32), "b": np.eye(4, dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    assert load_basis(f"{tmp_path}/m.safetensors:b", 4).shape == (4, 4)
    with pytest.raises(NetDissectError, match="holds 2 tensors"):
        load_basis(tmp_path / "m.safetensors", 4)
    with pytest.raises(NetDissectError, match="no tensor 'c'"):
        load_basis(f"{tmp_path}/m.safetensors:c", 4)
    with pytest.raises(NetDissectError, match="not found"):
        load_basis(tmp_path / "nope.npy", 4)
    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(NetDissectError, match="not a readable"):
        load_basis(tmp_path / "bad.npy", 4)
    with pytest.raises(NetDissectError, match=".npy or .safetensors"):
        load_basis(__file__, 4)


def test_seeds_are_checked():
    assert check_seeds("3,1,3") == [3, 1] and check_seeds(2) == [2]
    for bad, msg in [("", "no seeds"), ("x", "whole numbers"), ("-1", ">= 0")]:
        with pytest.raises(NetDissectError, match=msg):
            check_seeds(bad)


def test_rotation_sweep_writes_its_table(broden, tmp_path):
    out = tmp_path / "rot"
    table = rotation_sweep("zoo:scene-cnn", LAYER, broden, alphas="0,0.5,1", seeds="1,2", out=out, batch_size=8,
                           num_workers=0)
    rows = list(csv.DictReader((out / "rotation.csv").open()))
    cats = table.categories
    assert list(rows[0]) == ["alpha", "seed", *cats, "total", "detector_units"]
    assert [(r["alpha"], r["seed"]) for r in rows] == [("0", "1"), ("0", "2"), ("0.5", "1"), ("0.5", "2"),
                                                       ("1", "1"), ("1", "2")]
    for r in rows:
        assert int(r["total"]) == sum(int(r[c]) for c in cats)
    assert rows[0] == {**rows[1], "seed": "1"}  # alpha 0 is the unit basis for every seed
    assert (out / "rotation.png").stat().st_size > 0 and (out / "rotation.svg").stat().st_size > 0
    info = json.loads((out / "rotation.json").read_text())
    assert info["alphas"] == [0, 0.5, 1] and info["seeds"] == [1, 2] and len(info["timing_s"]["per_basis"]) == 5


def test_basis_command_writes_a_normal_run(broden, tmp_path, capsys):
    out = tmp_path / "pca"
    assert main(["experiment", "basis", "--model", "zoo:scene-cnn", "--layer", LAYER, "--dataset", str(broden),
                 "--basis", "pca", "--out", str(out), "--quiet", "--workers", "0"]) == 0
    run = load(out)
    assert run.summary["basis"]["kind"] == "pca" and run[LAYER].iou.shape[0] == 96
    assert (out / "report" / "index.html").exists()
    assert "pca basis" in capsys.readouterr().out
    # a user's matrix: 10 directions, fewer than the channels
    np.save(tmp_path / "dict.npy", np.random.default_rng(0).standard_normal((10, 96)))
    assert main(["experiment", "basis", "--model", "zoo:scene-cnn", "--layer", LAYER, "--dataset", str(broden),
                 "--basis", str(tmp_path / "dict.npy"), "--out", str(tmp_path / "mine"), "--quiet", "--no-report",
                 "--workers", "0"]) == 0
    assert load(tmp_path / "mine")[LAYER].iou.shape[0] == 10
    from netdissect.report import compare

    made = compare([out, tmp_path / "mine"], tmp_path / "cmp", labels=["pca", "mine"])
    assert "compare.csv" in made and (tmp_path / "cmp" / "compare.csv").read_text().count("\n") >= 3


def test_ica_basis(broden):
    from netdissect.experiments.basis import ica_basis

    with ActivationRun("zoo:scene-cnn", LAYER, broden, num_workers=0) as run:
        W, info = ica_basis(run, seed=0, max_iter=50)
        assert W.shape[1] == 96 and info["kind"] == "ica" and W.shape[0] == info["components"] <= 96
        r = run.dissect_basis(W)
    assert r.iou.shape[0] == W.shape[0]


@pytest.mark.parametrize("argv,msg", [
    (["rotation", "--alphas", "0,2"], r"alphas must lie in \[0, 1\]"),
    (["rotation", "--seed", "a"], "whole numbers"),
    (["basis", "--basis", "nope.npy"], "not found"),
    (["basis", "--basis", "x.csv"], "not found"),
])
def test_bad_inputs_are_one_line_errors(broden, tmp_path, capsys, argv, msg):
    import re

    cmd = ["experiment", argv[0], "--model", "zoo:scene-cnn", "--layer", LAYER, "--dataset", str(broden),
           "--out", str(tmp_path / "o"), "--quiet", "--workers", "0", *argv[1:]]
    assert main(cmd) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(msg, err), err


def test_bad_layer_is_one_line_error(broden, tmp_path, capsys):
    assert main(["experiment", "rotation", "--model", "zoo:scene-cnn", "--layer", "conv9", "--dataset", str(broden),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "conv9" in err


def test_basis_layer_is_a_1x1_convolution():
    M = random_rotation(5, 2)[:3]
    x = torch.randn(2, 5, 4, 4)
    y = BasisLayer(M)(x)
    ref = torch.nn.functional.conv2d(x.double(), torch.from_numpy(M)[:, :, None, None]).float()
    torch.testing.assert_close(y, ref)


def test_fit_probe_finds_a_linear_signal_and_no_more():
    from netdissect.experiments.probe import fit_probe

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    Y = np.stack([X[:, 0] + 0.2 * rng.standard_normal(300) > 0, rng.random(300) > 0.5], 1)
    idx = rng.permutation(300)
    train, test = np.sort(idx[:200]), np.sort(idx[200:])
    signal = fit_probe(X, Y[:, :1], train, test)
    noise = fit_probe(X, Y[:, 1:], train, test)
    assert signal["accuracy"] >= 0.9 and signal["balanced_accuracy"] >= 0.9
    assert noise["balanced_accuracy"] <= 0.65


def test_probe_and_training_experiments(broden, tmp_path, capsys):
    assert main(["experiment", "probe", "--models", "zoo:scene-cnn,zoo:scene-cnn@none", "--layer", LAYER,
                 "--dataset", str(broden), "--task", "objects", "--out", str(tmp_path / "p"), "--quiet",
                 "--workers", "0"]) == 0
    rows = list(csv.DictReader((tmp_path / "p" / "probe.csv").open()))
    assert [r["model"] for r in rows] == ["scene-cnn", "scene-cnn-untrained"]
    assert all(0 <= float(r["accuracy"]) <= 1 and int(r["concepts"]) == 2 for r in rows)
    assert (tmp_path / "p" / "probe.png").exists() and (tmp_path / "p" / "probe.svg").exists()
    assert main(["experiment", "training", "--models", "zoo:scene-cnn@none,zoo:scene-cnn-step50,zoo:scene-cnn",
                 "--layer", LAYER, "--dataset", str(broden), "--out", str(tmp_path / "t"), "--quiet",
                 "--workers", "0"]) == 0
    rows = list(csv.DictReader((tmp_path / "t" / "training.csv").open()))
    assert [(r["model"], r["step"]) for r in rows] == [("scene-cnn-untrained", "0"), ("scene-cnn-step50", "50"),
                                                       ("scene-cnn", "2500")]
    assert float(rows[2]["accuracy"]) > 0.9 and rows[0]["accuracy"] == ""
    assert (tmp_path / "t" / "training.png").exists()
    assert "scene-cnn-step50" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["probe", "--models", "zoo:scene-cnn", "--task", "vehicles"], "not a category"),
    (["probe", "--models", " , ", "--task", "object"], "--models is empty"),
    (["probe", "--models", "zoo:scene-cnn,zoo:scene-cnn", "--task", "object"], "twice"),
    (["probe", "--models", "zoo:scene-cnn", "--test-share", "1.5"], "between 0 and 1"),
    (["training", "--models", "zoo:no-such-model"], "unknown zoo model"),
])
def test_bad_probe_and_training_inputs(broden, tmp_path, capsys, argv, msg):
    cmd = ["experiment", argv[0], "--layer", LAYER, "--dataset", str(broden), "--out", str(tmp_path / "o"),
           "--quiet", "--workers", "0", *argv[1:]]
    assert main(cmd) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and msg in err, err
