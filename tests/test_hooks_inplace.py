"""A retained output is never rewritten by in-place operations later in the forward pass.

Before the fix, ``Trace`` kept ``output.detach()`` (shared storage): asked
together with a later layer, AlexNet's ``features.0`` came back post-ReLU.
Each case traces a layer alone (the pass ends at it) and with later layers
(the pass goes on through in-place ops), and requires identical outputs.
"""
import contextlib

import pytest
import torch
import torchvision
from torch import nn

from netdissect.hooks import Trace, TraceDict, run_to_layers


class ProGANBlock(nn.Module):
    """conv -> LeakyReLU(0.2, inplace=True) twice, then upsample, as in ProGAN generators."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(8, 8, 3, padding=1)
        self.act0 = nn.LeakyReLU(0.2, inplace=True)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.act1 = nn.LeakyReLU(0.2, inplace=True)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x):
        return self.up(self.act1(self.conv1(self.act0(self.conv0(x)))))


def _progan():
    return nn.Sequential(ProGANBlock(), ProGANBlock(), nn.Conv2d(8, 3, 1))


# (model factory, input channels, layers to check, later layers requested with them)
CASES = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), 3, ["features.0", "features.3"], ["features.10"]),
    "vgg11": (lambda: torchvision.models.vgg11(weights=None), 3, ["features.0", "features.3"], ["features.18"]),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 3,
                 ["bn1", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn2"], ["layer3"]),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), 3,
                    ["features.norm0", "features.denseblock1.denselayer1.norm1"], ["features.transition1"]),
    "progan": (_progan, 8, ["0.conv0", "0.conv1", "1.conv0"], ["2"]),
}

MODES = {
    "plain": contextlib.nullcontext,
    "inference_mode": torch.inference_mode,
    "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    make, channels, layers, later = CASES[request.param]
    torch.manual_seed(0)
    model = make().eval()
    torch.manual_seed(1)
    return model, torch.randn(2, channels, 64, 64), layers, later


def _alone(model, x, layer):
    with TraceDict(model, [layer], stop=True) as ret:
        model(x)
    return ret[layer].output


@pytest.mark.parametrize("mode", list(MODES))
def test_an_output_is_the_same_whatever_else_is_requested(case, mode):
    model, x, layers, later = case
    with MODES[mode](), torch.no_grad():
        alone = {layer: _alone(model, x, layer) for layer in layers}
        with TraceDict(model, layers + later, stop=True) as ret:  # the pass goes on through in-place ops
            model(x)
        with TraceDict(model, layers + later) as full:  # no stop: the whole forward pass runs
            model(x)
        with TraceDict(model, layers + later, stop=True) as traces:  # the engine's way, twice
            run_to_layers(model, traces, x)
            outs = run_to_layers(model, traces, x)
    for layer in layers:
        assert torch.equal(ret[layer].output, alone[layer]), layer
        assert torch.equal(full[layer].output, alone[layer]), layer
        assert torch.equal(outs[layer], alone[layer]), layer


def test_alexnet_conv1_keeps_its_negative_values():
    """The reported case: features.0 has negative values whatever else is traced."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with TraceDict(model, ["features.0", "features.10"], stop=True) as ret:
        model(x)
    assert ret["features.0"].output.min() < 0


def test_only_the_call_that_ends_the_pass_is_not_copied():
    """Lowest cost: the layer whose completion ends a stop=True pass keeps the live tensor."""
    model = _progan().eval()
    live = {}
    for name in ("0.conv0", "1.conv0"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, _n=name: live.__setitem__(_n, o))
    x = torch.randn(1, 8, 16, 16)
    with TraceDict(model, ["1.conv0", "0.conv0"], stop=True) as ret:
        model(x)
    assert ret["1.conv0"].output.data_ptr() == live["1.conv0"].data_ptr()  # the pass ended here: no copy
    assert ret["0.conv0"].output.data_ptr() != live["0.conv0"].data_ptr()  # the pass went on: copied
    with Trace(model, "0.conv0", stop=True) as t:
        model(x)
    assert t.output.data_ptr() == live["0.conv0"].data_ptr()
    with Trace(model, "1.conv0") as t:  # no stop: the pass goes on
        model(x)
    assert t.output.data_ptr() != live["1.conv0"].data_ptr()


def test_edit_output_is_what_is_retained_and_what_the_model_sees():
    """Ablation-style edit x <- x(1-a) + v a on a layer followed by an in-place ReLU."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    a = torch.zeros(1, 64, 1, 1)
    a[:, :8] = 1
    v = -5.0

    def ablate(out, layer):
        return out * (1 - a) + v * a if layer == "features.0" else out

    with torch.inference_mode():
        plain = _alone(model, x, "features.3")
        with TraceDict(model, ["features.0", "features.3"], edit_output=ablate, stop=True) as ret:
            model(x)
    edited = ret["features.0"].output
    assert (edited[:, :8] == v).all()  # the in-place ReLU that follows did not rewrite it
    assert not torch.equal(ret["features.3"].output, plain)  # the model went on with the edited output


def test_edit_in_place_then_relu_in_place():
    """An edit that itself works in place is retained as edited, not as the ReLU left it."""
    model = _progan().eval()
    x = torch.randn(1, 8, 16, 16)

    def shift(out, layer):
        return out.sub_(10.0)

    with TraceDict(model, ["0.conv0", "2"], edit_output=lambda o, n: shift(o, n) if n == "0.conv0" else o) as ret:
        model(x)
    assert ret["0.conv0"].output.max() < 0  # LeakyReLU(inplace) would have scaled these by 0.2
    with torch.no_grad():
        ref = model[0].conv0(x) - 10.0
    assert torch.allclose(ret["0.conv0"].output, ref)
