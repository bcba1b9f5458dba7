"""The fast "head" path of `ablate` on token layers: the network after a timm or torchvision ViT block,
run on the cached patch map and prefix tokens, gives the logits of a full pass with the same ablation."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torchvision.models import VisionTransformer

from netdissect.errors import NetDissectError
from netdissect.hooks.trace import TraceDict
from netdissect.interventions import ablate
from netdissect.roles.core import Evaluator

from vit_fixture import Oracle

SETS = [[], [3], [3, 9], list(range(0, 16, 2)), list(range(16))]


def _timm(name="vit_small_patch16_224", **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, depth=3, embed_dim=16, num_heads=2, img_size=32,
                             patch_size=8, num_classes=5, **kw).eval()


def _tv():
    torch.manual_seed(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32,
                          num_classes=5).eval()
    torch.nn.init.normal_(m.heads.head.weight)  # torchvision starts its head at zero: every logit 0
    return m


# (model, layer, prefix tokens, whether ablating patch tokens can change the logits: after the last
# block of a model that pools its class token, the patch tokens no longer reach the logits)
MODELS = {
    "timm-vit": (lambda: _timm(), "blocks.1", 1, True),
    "timm-vit-last": (lambda: _timm(), "blocks.2", 1, False),
    "timm-deit-distilled": (lambda: _timm("deit_tiny_distilled_patch16_224"), "blocks.0", 2, True),
    "timm-reg4-avgpool": (lambda: _timm(reg_tokens=4, global_pool="avg"), "blocks.1", 5, True),
    "timm-avgpool-last": (lambda: _timm(global_pool="avg"), "blocks.2", 1, True),
    "torchvision-vit": (_tv, "encoder.layers.encoder_layer_1", 1, True),
    "torchvision-vit-last": (_tv, "encoder.layers.encoder_layer_2", 1, False),
}


def _images(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 5, n)


@pytest.mark.parametrize("which", list(MODELS))
def test_token_head_gives_the_logits_of_a_full_pass_with_the_same_ablation(which):
    make, layer, prefix, changes = MODELS[which]
    model = make()
    imgs, y = _images()
    ev = Evaluator(model, layer, progress=False, batch_size=4)
    acts = ev.activations(imgs)
    assert ev.mode == "head" and ev.why_full is None, ev.why_full
    assert acts.shape == (10, 16, 4, 4)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    # the prefix tokens, read here independently of the evaluator
    with TraceDict(model, [layer]) as tr, torch.no_grad():
        model(x)
    pre = tr[layer].output[:, :prefix]
    for units in SETS:
        keep = torch.ones(16)
        keep[units] = 0
        with torch.no_grad():
            mine = ev.head(acts * keep.view(1, -1, 1, 1), pre)
            with ablate(model, layer, units=units, layout=ev.layout):
                full = model(x)
        assert torch.allclose(mine, full, rtol=1e-4, atol=1e-5), (units, (mine - full).abs().max())
    # the head uses what it is given: ablating every unit changes the logits (unless nothing can)
    with torch.no_grad():
        assert torch.allclose(ev.head(acts * 0, pre), ev.head(acts, pre), atol=1e-4) != changes
    # predictions and per-class log-probabilities equal the full-pass evaluator's
    slow = Evaluator(model, layer, progress=False, batch_size=4, fast=False)
    sacts = slow.activations(imgs)
    assert slow.mode == "full" and torch.equal(sacts, acts)
    p_fast, lp_fast = ev.predict(acts, SETS, imgs, truth=y, n_classes=5)
    p_slow, lp_slow = slow.predict(sacts, SETS, imgs, truth=y, n_classes=5)
    assert np.array_equal(p_fast, p_slow)
    np.testing.assert_allclose(lp_fast, lp_slow, rtol=1e-5, atol=1e-5)


def test_token_head_puts_the_tokens_back_exactly_and_needs_the_prefix():
    """The head's input is the layer's own output again (prefix first, patches row-major), for both token
    orders; the rest of a ViT is blind to the order of its patch tokens, so this is checked on the tokens."""
    model = _timm()
    imgs, _ = _images(4)
    ev = Evaluator(model, "blocks.1", progress=False)
    acts = ev.activations(imgs)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    with TraceDict(model, ["blocks.1"]) as tr, torch.no_grad():
        full = model(x)
    pre = ev._prefix_of(acts, None)
    assert torch.equal(ev.head.tokens(acts, pre), tr["blocks.1"].output)
    with torch.no_grad():
        assert not torch.allclose(ev.head(acts, pre * 0), full, atol=1e-4)  # the class token is used
    from netdissect.hooks.tokens import Layout
    from netdissect.roles.core import _TokenHead

    raw = torch.randn(2 + 3 * 4, 5, 7)  # sequence-first (T, N, C), 2 prefix tokens, a 3x4 grid
    lay = Layout("tokens-seq", 2, (3, 4), 14)
    head = _TokenHead(lambda t: t, lay, "identity")
    assert torch.equal(head.tokens(lay.to_map(raw), lay.prefix_view(raw)), raw)


def test_token_head_finds_prefix_tokens_again_for_other_activations():
    model = _timm()
    imgs, y = _images(6)
    ev = Evaluator(model, "blocks.1", progress=False)
    acts = ev.activations(imgs)
    want = ev.predict(acts, SETS[:3])
    assert np.array_equal(ev.predict(acts.clone(), SETS[:3], imgs), want)  # from the images
    with pytest.raises(NetDissectError, match="Evaluator.activations"):
        ev.predict(acts.clone(), SETS[:3])


class _OwnForward(VisionTransformer):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("make,layer,why", [
    (lambda: _timm(), "blocks.1.mlp", "not one of its blocks"),
    (lambda: _OwnForward(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                         num_classes=5).eval(), "encoder.layers.encoder_layer_0", "forward is not torchvision"),
    (lambda: Oracle((4, 4), 8, 1, False, [(0, 0)] * 4, head_classes=5).eval(), "block",
     "only timm and torchvision"),
])
def test_other_token_layers_fall_back_to_full_passes_saying_why(make, layer, why):
    model = make()
    imgs, _ = _images(4)
    ev = Evaluator(model, layer, progress=False)
    acts = ev.activations(imgs)
    assert ev.mode == "full" and why in ev.why_full
    preds = ev.predict(acts, [[], [0]], imgs)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert np.array_equal(preds[0], model(x).argmax(1).numpy())
