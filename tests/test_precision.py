"""The bf16 fast path (autocast), and device handling."""
import json

import numpy as np
import pytest
import torch

from netdissect import dissect
from netdissect.cli import main
from netdissect.errors import NetDissectError
from netdissect.hooks import TraceDict, run_to_layers
from nets import SmallRandomCNN, TappedColorUnits

KW = dict(num_workers=0, progress=False, cache_dtype="float32")


def test_tracedict_under_inference_mode_and_autocast():
    model = SmallRandomCNN(1).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        with TraceDict(model, ["conv1", "conv2"], stop=True) as traces:
            first = run_to_layers(model, traces, x)
            second = run_to_layers(model, traces, x)  # re-armed: stops again
    assert first["conv2"].dtype == torch.bfloat16 and first["conv2"].shape == (3, 12, 16, 16)
    assert torch.equal(first["conv1"], second["conv1"])
    assert not model.conv1._forward_hooks  # hooks removed on exit


def test_bf16_agrees_with_fp32_on_hand_built_detectors(broden):
    a = dissect(TappedColorUnits(), "units", broden, quantile=0.08, **KW)["units"]
    b = dissect(TappedColorUnits(), "units", broden, quantile=0.08, precision="bf16", **KW)["units"]
    assert list(a.units["label"]) == list(b.units["label"])
    assert np.abs(a.units["iou"] - b.units["iou"]).max() <= 0.01
    assert b.units["iou"][0] > 0.5 and b.units["label"][0] == "square"


def test_bf16_really_runs_in_bf16_and_stays_close(broden, monkeypatch):
    # the bf16 path itself, on any CPU: where bf16 is not native it is emulated (slower, same numbers),
    # and the engine would fall back to fp32, so the device check is told bf16 is native here
    from netdissect.dissection import config
    monkeypatch.setattr(config, "native_bf16", lambda device: (True, "told native by the test"))
    kw = dict(quantile=0.02, **KW)
    a = dissect(SmallRandomCNN(1), ["conv2"], broden, **kw)["conv2"]
    b = dissect(SmallRandomCNN(1), ["conv2"], broden, precision="bf16", **kw)["conv2"]
    assert not np.array_equal(a.thresholds, b.thresholds)  # autocast took effect
    np.testing.assert_allclose(b.thresholds, a.thresholds, rtol=0.03, atol=0.02)
    det = a.units["detector"]
    assert (a.units["label"][det] == b.units["label"][det]).mean() >= 0.9
    assert np.abs(a.units["iou"] - b.units["iou"]).max() < 0.05  # 30 tiny images: a few pixels move IoU


def test_precision_on_the_command_line(broden, tmp_path):
    out = tmp_path / "run"
    assert main(["dissect", "--model", "tests/nets.py:color_units", "--layer", "units", "--dataset", str(broden),
                 "--out", str(out), "--quantile", "0.08", "--precision", "bf16", "--workers", "0",
                 "--quiet", "--no-report"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["precision"] == "bf16"
    with pytest.raises(NetDissectError, match="precision must be one of"):
        dissect(TappedColorUnits(), "units", broden, precision="fp8", **KW)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_clear_error(broden):
    with pytest.raises(NetDissectError, match="--device cuda: CUDA is not available"):
        dissect(TappedColorUnits(), "units", broden, device="cuda", **KW)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_equals_cpu(broden):
    from nets import ElementwiseNet

    a = dissect(ElementwiseNet(), "units", broden, quantile=0.05, **KW)["units"]
    b = dissect(ElementwiseNet(), "units", broden, quantile=0.05, device="cuda", **KW)["units"]
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    np.testing.assert_allclose(a.iou, b.iou, atol=1e-6)
