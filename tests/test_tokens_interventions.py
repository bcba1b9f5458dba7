"""Interventions on token layers: the one edit rule on the patch tokens (prefix tokens untouched
unless asked), unit ablation in a ViT, and `netdissect ablate` / `adversarial` on a ViT block."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from netdissect.cli import main
from netdissect.hooks import TraceDict, run_to_layers
from netdissect.hooks.tokens import probe_layout
from netdissect.interventions import EditError, ablate, edit
from netdissect.roles.core import Evaluator, importance_table

from vit_fixture import Oracle

import timm  # noqa: E402  (a declared test dependency: a broken install fails, it is not skipped)


def _raw(model, layer, x):
    with TraceDict(model, [layer]) as tr, torch.no_grad():
        model(x)
    return tr[layer].output


@pytest.mark.parametrize("seq_first", [False, True])
def test_edit_rule_on_patch_tokens_leaves_prefix_tokens(seq_first):
    torch.manual_seed(0)
    cells = [(r, c) for r in range(3) for c in range(4)]
    model = Oracle((3, 4), 8, 2, seq_first, cells).eval()
    # a block after the layer whose output we read: the token layer is "block", edited
    x = torch.rand(2, 3, 24, 32)
    lay = probe_layout(model, "block", x)
    before = _raw(model, "block", x)
    tok = before.transpose(0, 1) if seq_first else before  # (N, T, C) by hand
    # ablate units 3 and 5 on every patch token
    with ablate(model, "block", units=[3, 5], layout=lay), TraceDict(model, ["block"]) as tr, torch.no_grad():
        model(x)
    after = tr["block"].output
    after = after.transpose(0, 1) if seq_first else after
    want = tok.clone()
    want[:, 2:, [3, 5]] = 0
    assert torch.equal(after, want)
    assert torch.equal(after[:, :2], tok[:, :2])  # the prefix tokens as they were
    # a spatial (H, W) alpha picks patch tokens by grid position: cell (1, 2) is token 2 + 1 * 4 + 2
    alpha = torch.zeros(3, 4)
    alpha[1, 2] = 1
    with edit(model, "block", alpha=alpha, value=7.0, layout=lay), TraceDict(model, ["block"]) as tr, \
            torch.no_grad():
        model(x)
    after = tr["block"].output
    after = after.transpose(0, 1) if seq_first else after
    want = tok.clone()
    want[:, 2 + 1 * 4 + 2, :] = 7.0
    assert torch.equal(after, want)
    # prefix=True: per unit on the prefix tokens as well
    with ablate(model, "block", units=[0], layout=lay, prefix=True), TraceDict(model, ["block"]) as tr, \
            torch.no_grad():
        model(x)
    after = tr["block"].output
    after = after.transpose(0, 1) if seq_first else after
    want = tok.clone()
    want[:, :, 0] = 0
    assert torch.equal(after, want)
    with pytest.raises(EditError, match="per-unit"):
        with edit(model, "block", alpha=alpha, layout=lay, prefix=True), torch.no_grad():
            model(x)


def _tiny_vit(classes=5, size=32):
    return timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, embed_dim=16, num_heads=2,
                             img_size=size, patch_size=8, num_classes=classes).eval()


def test_evaluator_ablates_units_on_patch_tokens_with_full_passes():
    torch.manual_seed(0)
    model = _tiny_vit()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 5, 12)
    ev = Evaluator(model, "blocks.0", progress=False, batch_size=5, fast=False)  # the head path: test_tokens_head
    acts = ev.activations(imgs)
    assert acts.shape == (12, 16, 4, 4)
    assert ev.mode == "full" and ev.why_full == "fast=False"
    preds = ev.predict(acts, [[], [3], [3, 9]], imgs)
    # by hand: zero feature 3 (and 9) of every patch token of blocks.0, prefix (class) token untouched
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255

    def hand(units):
        def hook(m, i, o):
            o = o.clone()
            o[:, 1:, units] = 0
            return o
        h = model.blocks[0].register_forward_hook(hook)
        with torch.no_grad():
            out = model(x).argmax(1).numpy()
        h.remove()
        return out
    with torch.no_grad():
        assert np.array_equal(preds[0], model(x).argmax(1).numpy())
    assert np.array_equal(preds[1], hand([3])) and np.array_equal(preds[2], hand([3, 9]))
    base, imp, _, _ = importance_table(ev, acts, y, 5, imgs)
    assert imp.shape == (16, 5) and np.isfinite(base).all()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit-world")
    for split, n in (("train", 16), ("val", 16)):
        assert main(["synth", "--split", split, "--out", str(root / split), "--n", str(n), "--size", "32",
                     "--quiet"]) == 0
    return root


def test_ablate_and_adversarial_cli_on_a_vit_block(world, tmp_path):
    from netdissect.models.zoo import load_zoo_model

    from netdissect.roles.data import load_labelled

    classes = load_zoo_model("scene-cnn")[1]["classes"]
    j = int(load_labelled(world / "val", classes, 32, progress=False)[1][0])  # the first val image's class
    factory = tmp_path / "vit.py"
    # a random ViT whose head favours class j, so that some val images are classified correctly
    factory.write_text("import timm, torch\n\ndef make():\n    m = timm.create_model('vit_small_patch16_224', "
                       "pretrained=False, depth=2, embed_dim=16, num_heads=2, img_size=32, patch_size=8, "
                       f"num_classes={len(classes)})\n    with torch.no_grad():\n"
                       f"        m.head.weight.normal_(0, 1.0)\n        m.head.bias[{j}] += 2.0\n    return m\n")
    out = tmp_path / "abl"
    assert main(["ablate", "--model", f"{factory}:make", "--layer", "blocks.0", "--train", str(world / "train"),
                 "--val", str(world / "val"), "--out", str(out), "--classes", ",".join(classes), "--sizes", "1",
                 "--quiet"]) == 0
    summary = json.loads((out / "roles.json").read_text())
    # a timm ViT block: the rest of the network is cut off (tests/test_tokens_head.py checks it is exact)
    assert summary["units"] == 16 and summary["mode"] == "head" and summary["why_full_passes"] is None
    with np.load(out / "importance.npz") as z:
        assert z["train"].shape == (16, len(classes))
    assert len(list(csv.DictReader(open(out / "unit_classifiers.csv")))) == 16 * len(classes)
    # attack toward a class other than one the (random) model gets right on some val image
    right = [r["class"] for r in csv.DictReader(open(out / "baseline.csv"))
             if r["class"] != "all" and float(r["recall"]) > 0]
    assert right, "the random ViT classifies no val image correctly: nothing to attack"
    target = next(c for c in classes if c != right[0])
    adv = tmp_path / "adv"
    assert main(["adversarial", "--model", f"{factory}:make", "--layer", "blocks.0", "--ablation", str(out),
                 "--val", str(world / "val"), "--out", str(adv), "--classes", ",".join(classes), "--attack", "pgd",
                 "--eps", "1.0",                 "--steps", "10", "--n", "2", "--targets", target, "--quiet"]) == 0
    s = json.loads((adv / "adversarial.json").read_text())
    assert s["attacked"] >= 1
