"""The planted oracle: a transformer whose unit k fires only on the patch token at grid cell (r, c).

Dissecting its token layer must light the pixels of that cell, for batch-first and
sequence-first token orders, 1, 2 and 5 prefix tokens (and none) and a non-square grid.  An
off-by-one anywhere (a prefix token kept, a patch dropped, rows and columns swapped) moves a
unit's map by one cell and fails these tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdissect import dissect
from netdissect.errors import LayerError
from netdissect.hooks import TraceDict, run_to_layers
from netdissect.hooks.tokens import find_layout, model_tokens

from vit_fixture import Oracle, make_cells

PATCH = 8


def _cells(h, w):
    """One unit per cell, in an order that is not the token order (a shuffled permutation)."""
    cells = [(r, c) for r in range(h) for c in range(w)]
    order = np.random.default_rng(h * 10 + w).permutation(len(cells))
    return [cells[i] for i in order]


CASES = [  # (grid, prefix, seq_first)
    ((3, 4), 1, False),
    ((3, 4), 2, True),
    ((3, 4), 5, False),
    ((4, 3), 5, True),
    ((2, 5), 0, False),
    ((3, 3), 1, True),
]


@pytest.mark.parametrize("grid,prefix,seq_first", CASES)
def test_captured_map_is_the_planted_cell(grid, prefix, seq_first):
    h, w = grid
    cells = _cells(h, w)
    model = Oracle(grid, PATCH, prefix, seq_first, cells).eval()
    x = torch.rand(3, 3, h * PATCH, w * PATCH)
    with TraceDict(model, ["block"], stop=True) as tr:
        raw = run_to_layers(model, tr, x)["block"]
    lay = find_layout("block", raw, 3, (h * PATCH, w * PATCH), model_tokens(model))
    assert (lay.kind, lay.prefix, lay.grid) == ("tokens-seq" if seq_first else "tokens", prefix, (h, w))
    seen = []
    hook = model.block.register_forward_hook(lambda m, i, o: seen.append(o))
    with TraceDict(model, ["block"], stop=True, views={"block": lay.to_map}) as tr:
        a = run_to_layers(model, tr, x)["block"]
    hook.remove()
    assert a.shape == (3, len(cells), h, w)
    # a view of the layer's own output: the reshape made no copy (a pass that stops there copies nothing)
    assert a.untyped_storage().data_ptr() == seen[0].untyped_storage().data_ptr()
    patch_mean = F.avg_pool2d(x.mean(1, keepdim=True), PATCH)[:, 0] + 0.1  # (N, h, w)
    want = torch.zeros_like(a)
    for k, (r, c) in enumerate(cells):
        want[:, k, r, c] = patch_mean[:, r, c]
    torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grid,prefix,seq_first", CASES[:4])
def test_dissection_lights_the_planted_cell(tmp_path, grid, prefix, seq_first):
    h, w = grid
    cells = _cells(h, w)
    data = make_cells(tmp_path / "data", grid, PATCH, n=10)
    model = Oracle(grid, PATCH, prefix, seq_first, cells)
    res = dissect(model, ["block"], str(data), normalize="none", progress=False, num_workers=0, batch_size=4,
                  quantile=0.02)
    layer = res["block"]
    assert layer.shape[1:] == (h, w)
    labels = list(layer.units["label"])
    assert labels == [f"cell{r}_{c}" for r, c in cells]
    assert (layer.iou.argmax(1) == np.array([r * w + c for r, c in cells])).all()
    # the pixels of each unit's top image: thresholded bilinear upsampling of its map, as the engine does
    sh, sw = h * PATCH // 2, w * PATCH // 2
    for k, (r, c) in enumerate(cells):
        m = torch.from_numpy(layer.top_maps[k, 0].astype(np.float32))[None, None]
        up = F.interpolate(m, size=(sh, sw), mode="bilinear", align_corners=False)[0, 0]
        lit = (up > float(layer.thresholds[k])).nonzero().float()
        assert len(lit), f"unit {k} lights nothing"
        cy, cx = lit.mean(0).tolist()
        bs = PATCH // 2  # a patch is bs x bs mask pixels
        assert r * bs <= cy < (r + 1) * bs and c * bs <= cx < (c + 1) * bs, (k, (r, c), (cy, cx))
        centre = (r * bs + bs // 2, c * bs + bs // 2)
        assert up[centre] > layer.thresholds[k]


def test_unknown_prefix_count_is_an_error_asking_for_it(tmp_path):
    data = make_cells(tmp_path / "data", (3, 4), PATCH, n=10)
    model = Oracle((3, 4), PATCH, 2, False, _cells(3, 4), declare_prefix=None)
    del model.patch_size
    with pytest.raises(LayerError, match=r"--prefix-tokens N"):
        dissect(model, ["block"], str(data), normalize="none", progress=False, num_workers=0)
    res = dissect(model, ["block"], str(data), normalize="none", progress=False, num_workers=0, prefix_tokens=2,
                  quantile=0.02)
    assert list(res["block"].units["label"]) == [f"cell{r}_{c}" for r, c in _cells(3, 4)]
    assert res.summary["layouts"]["block"]["prefix"] == 2 and res.summary["identity"]["prefix_tokens"] == 2


@pytest.mark.parametrize("wrong", [1, 3])
def test_a_wrong_prefix_count_fails_rather_than_shifting(tmp_path, wrong):
    data = make_cells(tmp_path / "data", (3, 4), PATCH, n=4)
    model = Oracle((3, 4), PATCH, 2, False, _cells(3, 4), declare_prefix=wrong)
    with pytest.raises(LayerError, match=r"no patch grid|--prefix-tokens"):
        dissect(model, ["block"], str(data), normalize="none", progress=False, num_workers=0)


def test_a_one_tuple_output_is_its_tensor(tmp_path):
    """A block returning ``(tokens,)`` (Hugging Face layers before transformers 5) is its one tensor."""

    class TupleIdentity(torch.nn.Module):
        def forward(self, t):
            return (t,)

    data = make_cells(tmp_path / "data", (3, 4), PATCH, n=10)
    cells = _cells(3, 4)
    model = Oracle((3, 4), PATCH, 1, False, cells)
    model.block = TupleIdentity()
    res = dissect(model, ["block"], str(data), normalize="none", progress=False, num_workers=0, quantile=0.02)
    assert list(res["block"].units["label"]) == [f"cell{r}_{c}" for r, c in cells]
    assert res.summary["layouts"]["block"]["item"] is True


def test_layers_command_shows_tokens_grid_and_why(tmp_path, capsys):
    from netdissect.cli import main

    f = tmp_path / "m.py"
    f.write_text("import sys\nsys.path.insert(0, %r)\nfrom vit_fixture import Oracle\n\n"
                 "def make():\n    return Oracle((3, 3), 8, 2, True, [(0, 0), (2, 1)])\n" % str(Path(__file__).parent))
    assert main(["layers", "--model", f"{f}:make", "--size", "24"]) == 0
    out = capsys.readouterr().out
    assert "(tokens, dim) = (11, 2) = 2 prefix + 3x3 patch grid, sequence-first" in out
    assert "layouts found" in out and "num_prefix_tokens" in out and "axis 1 is the batch" in out
