"""--size resamples with the interpolation the model's library records (bicubic for many timm models), as
the library's own eval transform (torchvision Resize on a PIL image) does; bilinear where none is recorded."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from netdissect import dissect
from netdissect.data import Broden
from netdissect.errors import DatasetError
from netdissect.probe import BrodenImages, pil_resample
from netdissect.probe.folder import ImageFolder
from netdissect.roles.data import load_labelled

from broden_fixture import make_broden


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    return make_broden(tmp_path_factory.mktemp("resample") / "b", n=4, size=32)


def _torchvision(img: np.ndarray, size: int, mode: InterpolationMode) -> np.ndarray:
    """What a timm / torchvision eval transform gives: Resize on the PIL image (the whole image, no crop)."""
    return np.asarray(TF.resize(Image.fromarray(img), [size, size], interpolation=mode))


def test_broden_images_resample_as_the_model_records(broden):
    ds = Broden(broden)
    raw = ds.load_image(0)
    bil = BrodenImages(ds, size=56).load(0)
    bic = BrodenImages(ds, size=56, interpolation="bicubic").load(0)
    near = BrodenImages(ds, size=56, interpolation="InterpolationMode.NEAREST").load(0)
    assert bil.shape == bic.shape == (56, 56, 3)
    assert np.array_equal(bil, _torchvision(raw, 56, InterpolationMode.BILINEAR))
    assert np.array_equal(bic, _torchvision(raw, 56, InterpolationMode.BICUBIC))
    assert np.array_equal(near, _torchvision(raw, 56, InterpolationMode.NEAREST))
    assert not np.array_equal(bil, bic) and not np.array_equal(bic, near)
    # nearest takes only pixels of the image; bicubic overshoots between them (a sharper kernel)
    assert set(map(tuple, near.reshape(-1, 3))) <= set(map(tuple, raw.reshape(-1, 3)))
    # the run's identity says how it resized (bilinear, the default, says nothing: old runs resume)
    assert "resample" not in BrodenImages(ds, size=56).identity()
    assert BrodenImages(ds, size=56, interpolation="bilinear").identity() == BrodenImages(ds, size=56).identity()
    assert BrodenImages(ds, size=56, interpolation="bicubic").identity()["resample"] == "bicubic"
    assert BrodenImages(ds, size=56, interpolation="InterpolationMode.NEAREST").identity()["resample"] == "nearest"


def test_image_folder_and_labelled_images_resample_too(broden, tmp_path):
    raw = Broden(broden).load_image(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(raw).save(folder / "a.png")
    want = _torchvision(raw, 48, InterpolationMode.BICUBIC)
    assert np.array_equal(ImageFolder(folder, size=48, interpolation="bicubic").load(0), want)
    assert np.array_equal(ImageFolder(folder, size=48).load(0), _torchvision(raw, 48, InterpolationMode.BILINEAR))
    assert ImageFolder(folder, size=48, interpolation="bicubic").identity()["resample"] == "bicubic"
    # the classifier experiments' images (ablate, adversarial)
    (tmp_path / "cls" / "a").mkdir(parents=True)
    (tmp_path / "cls" / "b").mkdir(parents=True)
    Image.fromarray(raw).save(tmp_path / "cls" / "a" / "x.png")
    Image.fromarray(raw[::-1].copy()).save(tmp_path / "cls" / "b" / "y.png")
    imgs = load_labelled(tmp_path / "cls", ["a", "b"], 48, progress=False, interpolation="bicubic")[0]
    assert np.array_equal(imgs[0], want)


def test_an_unknown_interpolation_is_one_line():
    with pytest.raises(DatasetError, match=r"interpolation 'sinc' is not one of nearest, bilinear, bicubic"):
        pil_resample("sinc")


def test_dissect_resizes_with_the_specs_interpolation(broden, tmp_path):
    """A Hugging Face ViT whose image processor says bicubic (resample=3): --size resizes bicubic."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path / "hf-vit"
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=64,
                    patch_size=16, num_labels=3, architectures=["ViTForImageClassification"])
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}, resample=3).save_pretrained(folder)
    res = dissect(f"hf:{folder}", ["vit.layers.0"], str(broden), progress=False, num_workers=0, size=64,
                  scorecard=False)
    assert res.summary["identity"]["model"]["interpolation"] == "bicubic"
    assert res.summary["dataset"]["resize"] == 64 and res.summary["dataset"]["resample"] == "bicubic"


def test_merge_rebuilds_the_rows_with_the_recorded_interpolation(broden, tmp_path):
    """`netdissect merge` reads the chunks' rows again: resized as they were (dataset.resample)."""
    from types import SimpleNamespace

    from netdissect.dissection.chunks import _probe

    ds = Broden(broden)
    made = BrodenImages(ds, size=56, interpolation="bicubic")
    probe, _ = _probe({"dataset": made.identity()}, None, SimpleNamespace(limit=None, split=None))
    assert probe.identity() == made.identity()
    assert np.array_equal(probe.load(1), made.load(1))
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(ds.load_image(0)).save(folder / "a.png")
    made = ImageFolder(folder, size=48, interpolation="bicubic")
    probe, _ = _probe({"dataset": made.identity()}, None, SimpleNamespace(limit=None, split=None))
    assert probe.identity() == made.identity() and np.array_equal(probe.load(0), made.load(0))
