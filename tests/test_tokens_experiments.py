"""The CVPR 2017 experiments (rotation, basis, probe, training) on a token layer of a tiny random ViT: the
layer is cached as its (N, C, h, w) patch map, so a basis rotates the feature dimension of every patch token."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import timm  # noqa: F401 - a declared test dependency (the factory below builds a timm ViT)
import torch

from netdissect import dissect
from netdissect.cli import main
from netdissect.experiments.basis import ActivationRun
from netdissect.hooks.trace import TraceDict


FACTORY = """import timm, torch

def make(seed=0):
    torch.manual_seed(seed)
    return timm.create_model('vit_small_patch16_224', pretrained=False, depth=2, embed_dim=16, num_heads=2,
                             img_size=64, patch_size=16, num_classes=5).eval()

def other():
    return make(1)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, broden):
    root = tmp_path_factory.mktemp("vit-exp")
    (root / "vit.py").write_text(FACTORY)
    return root / "vit.py", broden  # 30 images of 32 px (conftest)


def _model(factory, name="make"):
    ns = {}
    exec(factory.read_text(), ns)
    return ns[name]()


def test_activation_run_caches_the_patch_map_and_a_basis_rotates_the_token_features(world):
    factory, data = world
    with ActivationRun(f"{factory}:make", "blocks.0", str(data), size=64, num_workers=0) as run:
        assert run.shape == (16, 4, 4) and run.layout.prefix == 1 and run.layout.grid == (4, 4)
        assert run.identity["layouts"]["blocks.0"]["kind"] == "tokens"
        assert run.identity["dataset"]["resize"] == 64
        cached = np.concatenate(list(run.blocks()))
        # the cache is the patch tokens of blocks.0 on the images resized to 64 px (bicubic: timm's own)
        model = _model(factory)
        x = torch.stack([torch.from_numpy(run.probe.load(i).copy()) for i in range(len(run.probe))])
        x = x.permute(0, 3, 1, 2).float() / 255
        from netdissect.models import load_model

        prep = load_model(f"{factory}:make")[1]
        with TraceDict(model, ["blocks.0"]) as tr, torch.no_grad():
            model(prep(x))
        tokens = tr["blocks.0"].output  # (N, 1 + 16, 16)
        want = tokens[:, 1:].reshape(len(x), 4, 4, 16).permute(0, 3, 1, 2).numpy()
        np.testing.assert_allclose(cached, want, rtol=1e-5, atol=1e-5)
        base = run.dissect_basis(None)
        # a rotation that swaps feature dimensions 0<->1 and 2<->3 (det +1) of every patch token swaps the units
        perm = np.arange(16)
        perm[[0, 1, 2, 3]] = [1, 0, 3, 2]
        Q = np.eye(16)[perm]
        rot = run.dissect_basis(Q)
    b, r = base.units, rot.units
    assert list(r["label"]) == [b["label"][k] for k in perm]
    np.testing.assert_allclose(r["iou"], b["iou"][perm])
    # and the unit basis is what `dissect` gives on the same token layer
    res = dissect(f"{factory}:make", ["blocks.0"], str(data), size=64, progress=False, num_workers=0,
                  scorecard=False)
    assert list(res["blocks.0"].units["label"]) == list(b["label"])
    np.testing.assert_allclose(res["blocks.0"].units["iou"], b["iou"], rtol=1e-6)


def test_experiment_commands_on_a_vit_block(world, tmp_path):
    factory, data = world
    common = ["--layer", "blocks.0", "--dataset", str(data), "--size", "64", "--workers", "0", "--quiet", "--limit", "20"]
    assert main(["experiment", "rotation", "--model", f"{factory}:make", *common, "--alphas", "0,0.5,1",
                 "--seed", "1", "--out", str(tmp_path / "rot")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "rot" / "rotation.csv")))
    assert [float(r["alpha"]) for r in rows] == [0.0, 0.5, 1.0]
    assert json.loads((tmp_path / "rot" / "rotation.json").read_text())["units"] == 16
    assert main(["experiment", "basis", "--model", f"{factory}:make", *common, "--basis", "pca", "--no-report",
                 "--out", str(tmp_path / "pca")]) == 0
    s = json.loads((tmp_path / "pca" / "summary.json").read_text())
    assert s["basis"]["kind"] == "pca" and s["identity"]["layouts"]["blocks.0"]["grid"] == [4, 4]
    models = f"{factory}:make,{factory}:other"
    assert main(["experiment", "probe", "--models", models, *common, "--task", "objects",
                 "--out", str(tmp_path / "probe")]) == 0
    assert [r["model"] for r in csv.DictReader(open(tmp_path / "probe" / "probe.csv"))] == ["make", "other"]
    assert main(["experiment", "training", "--models", models, *common, "--out", str(tmp_path / "train")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "train" / "training.csv")))) == 2


def test_a_vit_on_images_of_another_size_says_pass_size(world, tmp_path, capsys):
    factory, data = world
    assert main(["experiment", "rotation", "--model", f"{factory}:make", "--layer", "blocks.0", "--dataset",
                 str(data), "--workers", "0", "--quiet", "--alphas", "0", "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err
    assert "64" in err and "32" in err and len(err.strip().splitlines()) == 1, err
