"""Loading models from specs, with their preprocessing."""
import sys

import pytest
import torch

from netdissect.errors import ModelError
from netdissect.models import Preprocess, load_model, load_state_dict, parse_normalize
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
    torch.manual_seed(0)
    random, prep2 = load_model("zoo:scene-cnn", weights="none")
    assert prep == prep2 and prep.mean == (0.5, 0.5, 0.5)
    assert model_identity(trained) != model_identity(random)
    assert [n for n, _ in trained.named_modules()] == [n for n, _ in random.named_modules()]
