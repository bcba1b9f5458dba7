"""The class token as image-level units (``--layer NAME:cls``): AUROC against concept presence."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from netdissect import load
from netdissect.cli import main
from netdissect.dissection.cls_units import auroc, class_token_units
from netdissect.errors import LayerError


def test_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (40, 3)).astype(np.float32)  # many ties
    present = rng.random((40, 5)) < 0.4
    eligible = np.ones((40, 5), bool)
    eligible[:10, 3:] = False  # concepts 3, 4: another category, held by 30 images only
    got = auroc(scores, present, eligible)
    for u in range(3):
        for k in range(5):
            rows = eligible[:, k]
            assert got[u, k] == pytest.approx(roc_auc_score(present[rows, k], scores[rows, u]), abs=1e-12)
    present[:, 0] = True  # no negative image: undefined
    assert np.isnan(auroc(scores, present, eligible)[:, 0]).all()


class ColourTokens(nn.Module):
    """Tokens of 8 px patches; the class token holds each colour channel's image mean (units 0-2) and 0."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.patch_size = 8
        self.embed = nn.Conv2d(3, 4, 8, 8)
        self.block = nn.Identity()

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        cls = torch.cat([x.mean((2, 3)), torch.zeros(len(x), 1)], 1)[:, None]
        return self.block(torch.cat([cls, t], 1)).mean(1)


def test_class_token_units_find_the_red_square(broden, tmp_path):
    res = class_token_units(ColourTokens(), "block", str(broden), normalize="none")
    red = res.units[0]
    # the red channel's mean tells images with the red square (object; 'street' scenes hold it too)
    assert red[1] in ("square", "street", "lid") and red[3] > 0.9
    assert res.units[3][1] == ""  # a constant unit: AUROC 0.5 (chance) for every concept, no label
    with pytest.raises(LayerError, match="has no class token"):
        class_token_units(ColourTokens(), "embed", str(broden), normalize="none")
    factory = tmp_path / "m.py"
    factory.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_tokens_cls import ColourTokens\n\n"
                       "def make():\n    return ColourTokens()\n" % str(__import__("pathlib").Path(__file__).parent))
    out = tmp_path / "run"
    assert main(["dissect", "--model", f"{factory}:make", "--layer", "block:cls", "--layer", "block",
                 "--dataset", str(broden), "--out", str(out), "--quiet", "--no-report"]) == 0
    # one run: the class token is an image-level layer of it (its own folder, summary entry, load())
    rows = list(csv.DictReader(open(out / "block:cls" / "units.csv")))
    assert len(rows) == 4 and rows[0]["label"] == red[1]
    assert float(rows[0]["auroc"]) == pytest.approx(red[3], abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"]["block:cls"]["method"] == "image-level"
    assert summary["layers"]["block"]["method"] == summary["method"] == "broden"  # the map layer, same command
    assert load(out)["block:cls"].units["label"][0] == red[1]


def test_class_token_shares_the_forward_pass_of_the_map_layer(broden):
    """``block:cls`` beside ``block`` costs no second forward pass (issue 29: one pass)."""
    from netdissect import dissect

    def calls(layers):
        net, n = ColourTokens(), [0]
        net.embed.register_forward_pre_hook(lambda *a: n.__setitem__(0, n[0] + 1))
        dissect(net, layers, str(broden), normalize="none", progress=False, num_workers=0, batch_size=8,
                scorecard=False)
        return n[0]

    assert calls(["block", "block:cls"]) == calls(["block"])
