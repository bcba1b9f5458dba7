"""Loading models from specs, with their preprocessing."""
import sys

import pytest
import torch

from netdissect.errors import ModelError
from netdissect.models import Preprocess, describe_weights, load_model, load_state_dict, parse_normalize
from netdissect.models.loading import IMAGENET_MEAN, model_identity


def test_torchvision_random_weights_and_imagenet_preprocessing():
    model, prep = load_model("torchvision:resnet18", weights="none")
    assert not model.training
    assert prep.mean == IMAGENET_MEAN and prep.describe() == "imagenet"


def test_places365_style_checkpoint(tmp_path):
    import torchvision

    src = torchvision.models.resnet18(num_classes=365)
    ckpt = {"epoch": 90, "arch": "resnet18",
            "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}
    path = tmp_path / "resnet18_places365.pth.tar"
    torch.save(ckpt, path)
    model, _ = load_model("torchvision:resnet18", weights=str(path))
    assert model.fc.out_features == 365
    assert model_identity(model) == model_identity(src)


def test_safetensors_weights_into_a_factory_model(tmp_path):
    from safetensors.torch import save_file

    factory = tmp_path / "mynet.py"
    factory.write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n")
    src = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    model, prep = load_model(f"{factory}:make", weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(model[0].weight, src[0].weight)
    assert prep.mean is None  # RGB in [0, 1] unless told otherwise


def test_package_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("import torch\n\ndef tiny():\n    return torch.nn.Conv2d(3, 2, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = load_model("mypkg.nets:tiny", normalize="0.5,0.25")
    assert isinstance(model, torch.nn.Conv2d)
    sys.modules.pop("mypkg.nets", None)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="do not fit"):
        load_model("torchvision:resnet18", weights=str(tmp_path / "bad.pth"))


@pytest.mark.parametrize("spec,match", [
    ("resnet18", "expected torchvision:NAME"),
    ("torchvision:resnet181", "no model 'resnet181'.*resnet18"),
    ("nowhere/x.py:f", "model file not found"),
    ("collections:OrderedDict", "returned OrderedDict, not a torch.nn.Module"),
    ("json:loads", r"calling loads\(\) failed: TypeError"),
    ("json:nothing", "no callable 'nothing'"),
    ("no_such_module_xyz:f", "cannot import module"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ModelError, match=match):
        load_model(spec)


def test_corrupt_weights_file(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_state_dict(tmp_path / "w.pth")
    with pytest.raises(ModelError, match="weights file not found"):
        load_state_dict(tmp_path / "missing.pth")


def test_parse_normalize():
    assert parse_normalize("imagenet").mean == IMAGENET_MEAN
    assert parse_normalize("none") == Preprocess()
    p = parse_normalize("0.5,0.2")
    assert p.mean == (0.5,) * 3 and p.std == (0.2,) * 3
    x = torch.full((1, 3, 2, 2), 0.7)
    assert torch.allclose(p(x), torch.full((1, 3, 2, 2), 1.0))
    with pytest.raises(ModelError, match="--normalize"):
        parse_normalize("imagenett")


def test_zoo_model_and_its_untrained_twin():
    trained, prep = load_model("zoo:scene-cnn")
    random, prep2 = load_model("zoo:scene-cnn", weights="none")
    assert prep == prep2 and prep.mean == (0.5, 0.5, 0.5)
    assert model_identity(trained) != model_identity(random)
    assert [n for n, _ in trained.named_modules()] == [n for n, _ in random.named_modules()]


# --- zoo:NAME --weights PATH / none ------------------------------------------------------------------------

def test_zoo_weights_path_is_loaded_into_the_zoo_architecture():
    from netdissect.models.zoo import load_zoo_model, weights_path

    step50, _ = load_zoo_model("scene-cnn-step50")
    model, prep = load_model("zoo:scene-cnn", weights=str(weights_path("scene-cnn-step50")))  # float16 safetensors
    assert model_identity(model) == model_identity(step50) != model_identity(load_model("zoo:scene-cnn")[0])
    assert prep.mean == (0.5, 0.5, 0.5) and not model.training


def test_zoo_weights_path_checkpoint_with_dataparallel_prefix(tmp_path):
    from netdissect.models.zoo import build

    torch.manual_seed(5)
    src = build("scene-cnn-bn")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "c.pth")
    model, _ = load_model("zoo:scene-cnn-bn", weights=str(tmp_path / "c.pth"))
    assert model_identity(model) == model_identity(src)


def test_zoo_weights_that_are_not_a_file_or_do_not_fit(tmp_path):
    from netdissect.models.zoo import weights_path

    with pytest.raises(ModelError, match=r"zoo:scene-cnn --weights 'IMAGENET1K_V1': no such file"):
        load_model("zoo:scene-cnn", weights="IMAGENET1K_V1")
    with pytest.raises(ModelError, match="do not fit"):
        load_model("zoo:scene-cnn", weights=str(weights_path("scene-cnn-gap")))


def test_zoo_untrained_twin_of_a_model_whose_weights_are_not_bundled(tmp_path, monkeypatch):
    from netdissect.models import zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    model, prep = load_model("zoo:scene-cnn-gap", weights="none")
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.25, 0.25, 0.25)
    with pytest.raises(ModelError, match="train_zoo.py scene-cnn-gap"):
        load_model("zoo:scene-cnn-gap")


# --- seeded random initialisation ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["torchvision:resnet18", "zoo:scene-cnn"])
def test_random_init_is_seeded_and_leaves_the_global_rng_alone(spec):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, _ = load_model(spec, weights="none")
    b, _ = load_model(spec, weights="none", seed=0)
    c, _ = load_model(spec, weights="none", seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is where it was
    assert model_identity(a) == model_identity(b) != model_identity(c)


def test_factory_init_is_seeded(tmp_path):
    (tmp_path / "f.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n")
    a, _ = load_model(f"{tmp_path / 'f.py'}:make")
    b, _ = load_model(f"{tmp_path / 'f.py'}:make")
    c, _ = load_model(f"{tmp_path / 'f.py'}:make", seed=7)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "0"])
def test_bad_seeds(seed):
    with pytest.raises(ModelError, match="--seed"):
        load_model("zoo:scene-cnn", weights="none", seed=seed)


def test_cli_seed_argument():
    import argparse

    from netdissect.cli._common import add_model_args

    p = argparse.ArgumentParser()
    add_model_args(p)
    assert p.parse_args(["--model", "zoo:scene-cnn"]).seed == 0
    assert p.parse_args(["--model", "zoo:scene-cnn", "--seed", "42"]).seed == 42
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "zoo:scene-cnn", "--seed", "-1"])


# --- what was loaded, in words ------------------------------------------------------------------------------

def test_describe_weights():
    import hashlib

    from netdissect.models.zoo import weights_path

    digest = hashlib.sha256(weights_path("scene-cnn").read_bytes()).hexdigest()[:8]
    assert describe_weights("zoo:scene-cnn", None) == f"bundled zoo:scene-cnn (sha256 {digest}…)"
    assert describe_weights("zoo:scene-cnn", "DEFAULT") == f"bundled zoo:scene-cnn (sha256 {digest}…)"
    assert describe_weights("zoo:scene-cnn", "none") == "random init, seed 0"
    assert describe_weights("zoo:scene-cnn", "w/x.pth") == "file w/x.pth"
    assert describe_weights("torchvision:resnet18", None) == "torchvision DEFAULT (ResNet18_Weights.IMAGENET1K_V1)"
    assert describe_weights("torchvision:resnet50", "IMAGENET1K_V2") == "torchvision ResNet50_Weights.IMAGENET1K_V2"
    assert describe_weights("torchvision:resnet18", "none", seed=4) == "random init, seed 4"
    assert describe_weights("torchvision:resnet18", "places.pth.tar") == "file places.pth.tar"
    assert describe_weights("my.py:make", None, seed=2) == "as built by my.py:make (torch seed 2)"
    assert describe_weights(torch.nn.Conv2d(3, 4, 1), None) == "as given (python:Conv2d)"
    assert describe_weights(torch.nn.Conv2d(3, 4, 1), "w.safetensors") == "file w.safetensors"
