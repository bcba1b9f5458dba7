"""Vision transformers from torchvision, timm, Hugging Face and open_clip, dissected offline.

Every model is built with random weights from its library's own configuration machinery (small:
one or two blocks, a narrow width, 48-64 px images), through the ``timm:``, ``hf:`` and
``open_clip:`` specs where there is one.  For each: the layout found (batch-first or
sequence-first tokens, channels-last map), the prefix count and patch grid are the library's; the
activations traced are exactly the model's own tokens reshaped by hand; and a dissection runs end
to end with one labelled row per unit.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdissect import dissect
from netdissect.hooks import TraceDict
from netdissect.hooks.tokens import find_layout, model_tokens
from netdissect.models import load_model

from broden_fixture import make_broden

# declared test dependencies (pyproject's `test` extra): a broken install fails here, it is not skipped
import open_clip  # noqa: E402
import timm  # noqa: E402
import transformers  # noqa: E402

TINY_VIT = dict(depth=1, embed_dim=32, num_heads=2)


def _tv_vit():
    from torchvision.models import VisionTransformer

    # vit_b_16's patch size, one narrow block
    m = VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    return m, "imagenet"


def _tv_swin():
    from torchvision.models import SwinTransformer

    m = SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4])
    return m, "imagenet"


def _tv_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(24, 48, 1), CNBlockConfig(48, None, 1)]), "imagenet"


def _tv_maxvit():
    from torchvision.models import MaxVit

    return MaxVit(input_size=(64, 64), stem_channels=8, partition_size=4, block_channels=[24], block_layers=[1],
                  head_dim=8, stochastic_depth_prob=0.0), "imagenet"


def _timm(name, **kw):
    def build():
        m, prep = load_model(f"timm:{name}", weights="none", model_kwargs={**TINY_VIT, **kw})
        return m, prep
    return build


def _hf(kind):
    def build(tmp):
        from transformers import (CLIPVisionConfig, Dinov2WithRegistersConfig, ViTConfig, ViTForImageClassification,
                                  ViTImageProcessor)

        folder = tmp / f"hf-{kind}"
        small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        if kind == "vit":  # a saved random model with a head, loaded with its (local) weights
            cfg = ViTConfig(**small, image_size=64, patch_size=16, num_labels=5,
                            architectures=["ViTForImageClassification"])
            torch.manual_seed(0)
            ViTForImageClassification(cfg).save_pretrained(folder)
            ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
            return load_model(f"hf:{folder}")
        if kind == "dinov2-reg":
            Dinov2WithRegistersConfig(**small, image_size=56, patch_size=14, num_register_tokens=4).save_pretrained(folder)
        else:
            CLIPVisionConfig(**small, image_size=64, patch_size=16).save_pretrained(folder)
        return load_model(f"hf:{folder}", weights="none")
    return build


def _open_clip():
    return load_model("open_clip:ViT-B-32", weights="none", model_kwargs=dict(
        embed_dim=32, vision_cfg=dict(image_size=64, layers=1, width=32, patch_size=16, head_width=16),
        text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1)))


# name: (builder, layer, input (H, W), expected kind, prefix, grid, units)
CASES = {
    "torchvision-vit_b_16": (_tv_vit, "encoder.layers.encoder_layer_0", (64, 64), "tokens", 1, (4, 4), 32),
    "torchvision-swin_t": (_tv_swin, "features.1", (64, 64), "nhwc", 0, (16, 16), 24),
    "torchvision-convnext_tiny": (_tv_convnext, "features.1", (64, 64), "nchw", 0, (16, 16), 24),
    "torchvision-convnext_tiny-inner": (_tv_convnext, "features.1.0.block.2", (64, 64), "nhwc", 0, (16, 16), 24),
    "torchvision-maxvit_t": (_tv_maxvit, "blocks.0", (64, 64), "nchw", 0, (16, 16), 24),
    "timm-vit_s16": (_timm("vit_small_patch16_224", img_size=64), "blocks.0", (64, 64), "tokens", 1, (4, 4), 32),
    "timm-deit_distilled": (_timm("deit_tiny_distilled_patch16_224", img_size=64), "blocks.0", (64, 64), "tokens", 2,
                            (4, 4), 32),
    "timm-vit_reg4": (_timm("vit_small_patch14_reg4_dinov2", img_size=56), "blocks.0", (56, 56), "tokens", 5,
                      (4, 4), 32),
    "timm-vit_nonsquare": (_timm("vit_small_patch16_224", img_size=(48, 64)), "blocks.0", (48, 64), "tokens", 1,
                           (3, 4), 32),
    "hf-vit": (_hf("vit"), "vit.layers.0", (64, 64), "tokens", 1, (4, 4), 32),
    "hf-dinov2_registers": (_hf("dinov2-reg"), "encoder.layer.0", (56, 56), "tokens", 5, (4, 4), 32),
    "hf-clip_vision": (_hf("clip"), "encoder.layers.0", (64, 64), "tokens", 1, (4, 4), 32),
    "open_clip-vit_b_32": (_open_clip, "visual.transformer.resblocks.0", (64, 64), "tokens", 1, (4, 4), 32),
}


def _build(name, tmp):
    builder = CASES[name][0]
    out = builder(tmp) if name.startswith("hf-") else builder()
    return out[0].eval(), out[1]


def _by_hand(raw, kind, prefix, grid):
    """The model's own output as (N, C, h, w), reshaped without netdissect."""
    h, w = grid
    if kind == "tokens":
        patches = raw[:, prefix:, :]                  # (N, h*w, C), row-major
        return patches.transpose(1, 2).reshape(raw.shape[0], raw.shape[2], h, w)
    if kind == "nhwc":
        return raw.permute(0, 3, 1, 2)
    return raw


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit-data")
    made = {}

    def get(hw):
        if hw not in made:
            if hw[0] == hw[1]:
                made[hw] = make_broden(root / f"b{hw[0]}", n=8, size=hw[0])
            else:  # a non-square dataset: the planted-cell dataset of vit_fixture (masks half size)
                from vit_fixture import make_cells

                made[hw] = make_cells(root / f"c{hw[0]}x{hw[1]}", (hw[0] // 16, hw[1] // 16), 16, n=8)
        return made[hw]
    return get


@pytest.mark.parametrize("name", list(CASES))
def test_token_layer_is_the_models_own_tokens_and_dissects(name, tmp_path, datasets):
    _, layer, hw, kind, prefix, grid, units = CASES[name]
    model, prep = _build(name, tmp_path)
    norm = prep if isinstance(prep, str) else None
    x = torch.rand(3, 3, *hw)
    raw = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: raw.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    lay = find_layout(layer, raw[0], 3, hw, model_tokens(model))
    assert (lay.kind, lay.prefix, lay.grid or grid) == (kind, prefix, grid), lay.describe()
    with TraceDict(model, [layer], views={layer: lay.to_map}) as tr, torch.no_grad():
        model(x)
    got = tr[layer].output
    want = _by_hand(raw[0], kind, prefix, grid)
    assert got.shape == (3, units, *grid)
    assert torch.equal(got, want)

    res = dissect(model, [layer], str(datasets(hw)), normalize=norm if norm else prep.describe(), progress=False,
                  num_workers=0, batch_size=8)
    L = res[layer]
    assert L.shape == (units, *grid)
    assert len(L.units) == units and (L.units["label"] != "").any()
    assert np.isfinite(L.iou).all()
    if kind != "nchw":
        assert res.summary["layouts"][layer]["kind"] == kind
        assert res.summary["layouts"][layer]["prefix"] == prefix


def test_library_specs_record_their_preprocessing(tmp_path):
    m, prep = load_model("timm:vit_small_patch16_224", weights="none", model_kwargs={**TINY_VIT, "img_size": 64})
    assert prep.size == (64, 64) and prep.interpolation == "bicubic" and prep.mean == (0.5, 0.5, 0.5)
    m, prep = _open_clip()
    assert prep.size == (64, 64) and prep.mean[0] == pytest.approx(0.48145466)
    m, prep = _hf("vit")(tmp_path)
    assert prep.size == (64, 64) and prep.mean == (0.5, 0.5, 0.5) and prep.interpolation == "bilinear"
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 5)  # logits of the head
    _, prep2 = load_model(f"hf:{tmp_path / 'hf-vit'}", normalize="imagenet")
    assert prep2.describe() == "imagenet" and prep2.size == (64, 64)  # --normalize keeps the size


def test_a_tuple_output_names_what_it_got_and_what_to_use(datasets):
    from netdissect.errors import LayerError

    model, _ = _tv_vit()  # its self_attention is an nn.MultiheadAttention: (output, weights)
    with pytest.raises(LayerError, match=r"'encoder.layers.encoder_layer_0.self_attention' outputs a tuple "
                                         r"\(\[0\] \(1, 17, 32\), \[1\] NoneType\).*dissect the block that holds it, "
                                         r"e.g. 'encoder.layers.encoder_layer_0'"):
        dissect(model, ["encoder.layers.encoder_layer_0.self_attention"], str(datasets((64, 64))), normalize="none",
                progress=False, num_workers=0)


def test_missing_library_is_one_line_naming_the_extra(monkeypatch):
    import builtins

    from netdissect.errors import ModelError

    real = builtins.__import__

    def no_timm(name, *a, **k):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ModelError, match=r"needs the timm package.*pip install 'netdissect\[timm\]'"):
        load_model("timm:vit_small_patch16_224", weights="none")


def test_failed_download_names_the_hub_id_and_remedies(monkeypatch, tmp_path):
    from netdissect.errors import ModelError

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # (read at import: set on the module too) no network in tests
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(ModelError, match=r"cannot download hf:nobody-x/no-such-vit.*https://huggingface.co/nobody-x/"
                                         r"no-such-vit.*--weights PATH, or hf:path/to/folder.*cache folder"):
        load_model("hf:nobody-x/no-such-vit")


def test_size_resizes_a_broden_dataset_for_a_fixed_size_model(datasets, tmp_path):
    from netdissect.errors import ModelError

    small = str(datasets((32, 32)))
    _hf("vit")(tmp_path)  # a saved Hugging Face ViT for 64 px images: its spec records that size
    with pytest.raises(ModelError, match=r"built for 64x64 images and these are 32x32: pass --size 64"):
        dissect(f"hf:{tmp_path / 'hf-vit'}", ["vit.layers.0"], small, progress=False, num_workers=0)
    res = dissect(f"hf:{tmp_path / 'hf-vit'}", ["vit.layers.0"], small, progress=False, num_workers=0, size=64)
    assert res["vit.layers.0"].shape == (32, 4, 4)
    assert res.summary["identity"]["model"]["input_size"] == [64, 64]
    layer = "encoder.layers.encoder_layer_0"
    model, _ = _tv_vit()  # built for 64 px only
    res = dissect(model, [layer], small, normalize="imagenet", progress=False, num_workers=0, size=64)
    L = res[layer]
    assert L.shape == (32, 4, 4) and L.mask_size == (16, 16)  # masks keep their size
    assert res.summary["dataset"]["resize"] == 64


def test_a_token_layer_with_segmenter_labels(datasets, tmp_path):
    """PNAS-style labels (a segmenter on an image folder) on a ViT block: the same patch map."""
    model, prep = load_model("timm:vit_small_patch16_224", weights="none", model_kwargs={**TINY_VIT, "img_size": 64})
    res = dissect(model, ["blocks.0"], images=str(datasets((64, 64)) / "images"), segmenter="color",
                  normalize=prep.describe(), progress=False, num_workers=0, size=64, label_cache=tmp_path / "labels")
    L = res["blocks.0"]
    assert L.shape == (32, 4, 4) and res.summary["labels"]["iou"] == "pnas"
    assert (L.units["label"] != "").any() and res.summary["layouts"]["blocks.0"]["prefix"] == 1
