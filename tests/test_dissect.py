"""The dissection engine against a plain reference, and on networks whose units are known detectors."""
import json

import numpy as np
import pytest
import torch

from nets import ElementwiseNet, NaNNet, SmallRandomCNN, TappedColorUnits
from reference import layer_activations as _acts
from reference import reference_dissect, union_rule_cases
from netdissect import dissect, load
from netdissect.data import Broden
from netdissect.errors import ActivationError, LayerError, NetDissectError


@pytest.mark.parametrize("q", [0.005, 0.05])
@pytest.mark.parametrize("layer", ["units", "units2"])
@pytest.mark.parametrize("counting", ["kernel", "torch"])
def test_matches_reference_exactly(broden, q, layer, counting, monkeypatch):
    """Both ways of counting masks against labels: the compiled CPU kernel and the torch path
    (what a GPU runs), forced here on the CPU.

    The ramp makes every unit of ``units`` live (without it 6-7 of 10 masks were empty on the flat
    test images) and puts masks on images that lack a concept's category, where the union rule
    (only images holding the category count) decides the IoU: a wrong rule fails here."""
    from netdissect.dissection import kernel

    if counting == "torch":
        monkeypatch.setattr(kernel, "available", lambda: False)
    else:
        assert kernel.available(), "numba is a dependency: the compiled kernel must build"
    model = ElementwiseNet(units=10, seed=3, ramp=0.05)
    ds = Broden(broden)
    result = dissect(model, [layer], broden, quantile=q, cache_dtype="float32", batch_size=7,
                     num_workers=0, progress=False)
    acts = _acts(model, ds, layer)
    thresholds, iou = reference_dissect(acts, ds, q)
    lr = result[layer]
    np.testing.assert_allclose(lr.thresholds, thresholds.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_allclose(lr.iou, iou, rtol=0, atol=1e-6)
    # the comparison is not vacuous: live units, concepts they overlap, and the union rule at work
    # (units2 at q = 0.005 keeps only a few cells, all on images that hold every category)
    sparse = (layer, q) == ("units2", 0.005)
    live = (acts > thresholds[None, :, None, None]).any((0, 2, 3)).sum()
    assert (iou > 0).sum() >= (5 if sparse else 10) and live >= (5 if sparse else 10), (live, (iou > 0).sum())
    assert sparse or union_rule_cases(acts, ds, thresholds, iou) >= 10
    best = iou.argmax(1)
    has = iou.max(1) > 0
    assert list(lr.units["label"][has]) == [ds.concepts.names[c] for c in best[has]]


def test_kernel_build_failure_falls_back_to_torch_with_a_warning(broden, monkeypatch):
    from netdissect.dissection import kernel

    kw = dict(quantile=0.05, cache_dtype="float32", num_workers=0, progress=False)
    want = dissect(ElementwiseNet(units=10, seed=3), ["units"], broden, **kw)

    def broken():
        raise ValueError("no LLVM today")

    monkeypatch.setattr(kernel, "_state", None)
    monkeypatch.setattr(kernel, "_compile", broken)
    with pytest.warns(RuntimeWarning, match="no LLVM today.*counting with torch"):
        got = dissect(ElementwiseNet(units=10, seed=3), ["units"], broden, **kw)
    assert kernel.available() is False
    np.testing.assert_array_equal(got["units"].iou, want["units"].iou)


def test_two_layers_share_one_pass_and_get_their_own_thresholds(broden):
    model = ElementwiseNet(units=10, seed=3)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    both = dissect(model, ["units", "units2"], broden, quantile=0.05, cache_dtype="float32",
                   batch_size=30, num_workers=0, progress=False)
    # stop=True ends each batch's pass after units2, so the model's own forward returns only once:
    # in the one whole forward pass on the first image that checks how often each layer runs
    assert calls == [1]
    one = dissect(ElementwiseNet(units=10, seed=3), ["units2"], broden, quantile=0.05, cache_dtype="float32",
                  num_workers=0, progress=False)
    np.testing.assert_array_equal(both["units2"].thresholds, one["units2"].thresholds)
    np.testing.assert_array_equal(both["units2"].iou, one["units2"].iou)
    assert not np.array_equal(both["units"].thresholds, both["units2"].thresholds)


def test_hand_built_detectors_get_their_concepts(broden):
    result = dissect(TappedColorUnits(), "units", broden, quantile=0.08, num_workers=0, progress=False)
    u = result["units"].units
    assert (u["label"][0], u["category"][0]) == ("square", "object")
    assert (u["label"][1], u["category"][1]) == ("disc", "object")
    assert (u["label"][2], u["category"][2]) == ("wood", "material")  # primary category by coverage
    assert u["label"][3] == "" and u["iou"][3] == 0 and not u["detector"][3]  # dead unit
    assert (u["label"][5], u["category"][5]) == ("striped", "texture")  # image-level label
    assert u["iou"][0] > 0.5 and u["iou"][1] > 0.5
    lr = result["units"]
    assert lr.dead.tolist() == [False, False, False, True, False, False]
    s = lr.summary()
    assert s["dead_units"] == 1
    assert s["unique_detectors"]["object"] == 2 and s["detector_units"]["object"] == 2
    assert s["unique_detectors"]["texture"] == 1
    # per-category best: unit 0's best part is the square's lid (label number 300, in the G channel)
    names, vals = lr.category_best["part"]
    assert names[0] == "lid" and vals[0] > 0.2


def test_run_directory_roundtrip(broden, tmp_path):
    out = tmp_path / "run"
    result = dissect(TappedColorUnits(), ["units"], broden, out=out, quantile=0.08, num_workers=0, progress=False,
                     topk=3)
    again = load(out)
    np.testing.assert_array_equal(again["units"].iou, result["units"].iou)
    assert list(again["units"].units["label"]) == list(result["units"].units["label"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 1
    assert summary["layers"]["units"]["n_units"] == 6
    assert summary["dataset"]["n_images"] == 30
    lines = (out / "units" / "units.csv").read_text().splitlines()
    assert lines[0].startswith("unit,label,category,iou,threshold,detector,color_label,color_iou")
    assert [ln.split(",")[0] for ln in lines[1:]] == [str(i) for i in range(6)]
    top = np.load(out / "units" / "topk.npz")
    assert top["images"].shape == (6, 3) and top["maps"].shape == (6, 3, 16, 16)
    peaks = _acts(TappedColorUnits(), Broden(broden), "units").max((2, 3))
    assert top["images"][0, 0] == int(np.argmax(peaks[:, 0]))
    assert not (out / ".work").exists()


def test_float16_cache_agrees_with_float32(broden):
    kw = dict(quantile=0.02, num_workers=0, progress=False)
    a = dissect(SmallRandomCNN(1), ["conv2"], broden, cache_dtype="float32", **kw)["conv2"]
    b = dissect(SmallRandomCNN(1), ["conv2"], broden, cache_dtype="float16", **kw)["conv2"]
    assert np.abs(a.iou - b.iou).max() < 0.02
    det = a.units["detector"]
    assert (a.units["label"][det] == b.units["label"][det]).mean() >= 0.9


def test_unknown_layer_names_close_matches(broden):
    with pytest.raises(LayerError, match=r"no layer 'conv3'.*close matches: conv(1|2)"):
        dissect(SmallRandomCNN(), ["conv3"], broden, progress=False)


def test_fc_layer_is_labelled_image_level(broden):
    """An (N, C) output was refused before issue 29; now it is labelled image-level (AUROC, test_imagelevel.py).
    An output that is neither a map, a token sequence nor a vector is still refused there."""
    fc = dissect(SmallRandomCNN(), ["fc"], broden, num_workers=0, progress=False)["fc"]
    assert fc.method == "image-level" and fc.auroc.shape == (len(fc.units), len(fc.concept_names))


def test_nan_activations_are_a_clear_error(broden):
    with pytest.raises(ActivationError, match=r"'conv': NaN or infinite activations at .*index.csv row 2"):
        dissect(NaNNet(), ["conv"], broden, num_workers=0, progress=False)


def test_float16_overflow_names_the_fix(broden):
    class Big(SmallRandomCNN):
        def forward(self, x):
            return super().forward(x * 1e6)

    with pytest.raises(ActivationError, match="overflow float16.*--cache-dtype float32"):
        dissect(Big(), ["conv2"], broden, num_workers=0, progress=False, cache_dtype="float16")
    r = dissect(Big(), ["conv2"], broden, num_workers=0, progress=False)  # the default cache is float32
    assert np.isfinite(r["conv2"].thresholds).all()


def test_bad_parameters(broden):
    with pytest.raises(NetDissectError, match="quantile"):
        dissect(SmallRandomCNN(), ["conv2"], broden, quantile=1.5, progress=False)
    with pytest.raises(NetDissectError, match="dataset folder not found"):
        dissect(SmallRandomCNN(), ["conv2"], broden.parent / "nope", progress=False)


def test_unfinished_run_needs_resume(broden, tmp_path):
    (tmp_path / "run" / ".work").mkdir(parents=True)
    (tmp_path / "run" / ".work" / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(NetDissectError, match="unfinished run: pass --resume"):
        dissect(SmallRandomCNN(), ["conv2"], broden, out=tmp_path / "run", progress=False)
