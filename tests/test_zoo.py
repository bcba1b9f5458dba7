"""The bundled zoo: registry, loading, stored accuracy reproduced on a fresh held-out set, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdissect.data.synth import SCENES, SceneDataset
from netdissect.errors import ModelError
from netdissect.models import zoo
from netdissect.models.zoo import ZOO, build, list_zoo, load_zoo_model

AVAILABLE = [m["name"] for m in list_zoo() if m["available"]]
HELDOUT_SEED = 997   # in the training range 0-999, but used by no recipe


def test_registry_has_the_papers_variants():
    assert {"scene-cnn", "scene-cnn-bn", "scene-cnn-nodrop", "scene-cnn-gap"} <= set(ZOO)
    assert any(e.snapshot_of == "scene-cnn" for e in ZOO.values())
    seeds = {e.train["data_seed"] for e in ZOO.values()} | {e.train["heldout_seed"] for e in ZOO.values()}
    assert all(0 <= s < 1000 for s in seeds) and HELDOUT_SEED not in seeds


@pytest.mark.parametrize("name", list(ZOO))
def test_architectures_have_five_hookable_stages(name):
    net = build(name).eval()
    outs = {}
    hooks = [getattr(net, f"conv{k}").register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o))
             for k in range(1, 6)]
    with torch.no_grad():
        y = net(torch.zeros(2, 3, 112, 112))
    for h in hooks:
        h.remove()
    assert y.shape == (2, len(SCENES))
    assert [outs[k].shape[-1] for k in range(1, 6)] == [56, 28, 14, 14, 14]
    assert all((o >= 0).all() for o in outs.values())  # after ReLU
    assert sum(p.numel() for p in net.parameters()) < 1_500_000  # at most 3 MB in float16: the bundle stays small


def test_bundle_is_small_and_baseline_is_there():
    assert "scene-cnn" in AVAILABLE
    total = sum(p.stat().st_size for p in zoo.WEIGHTS_DIR.iterdir())
    assert total < 20e6
    for name in AVAILABLE:
        assert zoo.card_path(name).exists()


@pytest.fixture(scope="module")
def heldout():
    return SceneDataset(240, seed=HELDOUT_SEED, size=112)


@pytest.mark.parametrize("name", AVAILABLE)
def test_stored_accuracy_is_reproduced(name, heldout):
    model, meta = load_zoo_model(name)
    assert not model.training
    assert meta["classes"] == SCENES and meta["input_size"] == 112
    assert meta["normalize"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert meta["layers"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    with torch.no_grad():
        pred = torch.cat([model(heldout.batch(np.arange(i, i + 120))[0]).argmax(1) for i in (0, 120)])
    acc = float((pred.numpy() == heldout.targets).mean())
    # 240 images: binomial sd <= 0.033; allow ~3 sd
    assert abs(acc - meta["accuracy"]) < 0.1, (name, acc, meta["accuracy"])
    if ZOO[name].snapshot_of is None:
        assert meta["accuracy"] > 3 / len(SCENES)  # well above chance


def test_errors_name_the_model(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="unknown zoo model 'nope'"):
        load_zoo_model("nope")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match="train_zoo.py scene-cnn-gap"):
        load_zoo_model("scene-cnn-gap")
    (tmp_path / "scene-cnn.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="scene-cnn.safetensors"):
        load_zoo_model("scene-cnn")


def test_cli_zoo(capsys):
    from netdissect.cli import main

    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "zoo:scene-cnn " in out and "conv5" in out
    for m in list_zoo():
        if m["available"]:
            assert f"{m['accuracy']:.3f}" in out
    assert "--weights none" in out and "--weights PATH" in out  # how to get the untrained twin or one's own weights
