"""Modules that run more than once per forward pass (NAME#K), and layers that do not run at all.

torchvision's BasicBlock calls its one ``relu`` twice; MobileNet/EfficientNet-style
blocks often call one activation module after the expansion and again after the
strided depthwise convolution.  Before the fix, ``stop=True`` silently gave the
first call, and a layer that did not run in a pass returned the previous pass's output.
"""
import pytest
import torch
import torchvision
from torch import nn

from netdissect.errors import LayerError, ModelError
from netdissect.hooks import Trace, TraceDict, check_layers, resolve_layer, run_to_layers, split_layer


class SharedActBlock(nn.Module):
    """Inverted residual with ONE activation module, called at two resolutions."""

    def __init__(self, c=4, e=3):
        super().__init__()
        self.expand = nn.Conv2d(c, c * e, 1)
        self.dw = nn.Conv2d(c * e, c * e, 3, stride=2, padding=1, groups=c * e)
        self.act = nn.Hardswish()
        self.project = nn.Conv2d(c * e, c, 1)

    def forward(self, x):
        return self.project(self.act(self.dw(self.act(self.expand(x)))))


def _mbnet():
    torch.manual_seed(0)
    return nn.Sequential(SharedActBlock(), SharedActBlock(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


X64 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_basicblock_relu_calls(resnet):
    with torch.inference_mode():
        with TraceDict(resnet, ["layer4.1.relu#2"], stop=True) as second:
            resnet(X64)
        with TraceDict(resnet, ["layer4.1.relu#1"], stop=True) as first:
            resnet(X64)
        with TraceDict(resnet, ["layer4.1", "layer4.1.bn1"], stop=True) as ref:
            resnet(X64)
    assert torch.equal(second["layer4.1.relu#2"].output, ref["layer4.1"].output)  # the block's output
    assert torch.equal(first["layer4.1.relu#1"].output, ref["layer4.1.bn1"].output.relu())  # mid-block
    assert not torch.equal(first["layer4.1.relu#1"].output, second["layer4.1.relu#2"].output)


def test_both_calls_of_one_module_in_one_tracedict(resnet):
    with torch.inference_mode(), TraceDict(resnet, ["layer4.1.relu#1", "layer4.1.relu#2", "layer4.1"],
                                           stop=True) as traces:
        outs = run_to_layers(resnet, traces, X64)
        again = run_to_layers(resnet, traces, X64)  # the count restarts with each forward pass
    assert torch.equal(outs["layer4.1.relu#2"], outs["layer4.1"])
    assert not torch.equal(outs["layer4.1.relu#1"], outs["layer4.1.relu#2"])
    for name in outs:
        assert torch.equal(outs[name], again[name])


def test_shared_activation_at_two_resolutions():
    net = _mbnet()
    x = torch.rand(1, 4, 16, 16)
    with TraceDict(net, ["0.act#1", "0.act#2", "1.act#2"], stop=True) as ret:
        net(x)
    assert ret["0.act#1"].output.shape == (1, 12, 16, 16)
    assert ret["0.act#2"].output.shape == (1, 12, 8, 8)
    assert ret["1.act#2"].output.shape == (1, 12, 4, 4)
    with torch.no_grad():
        assert torch.equal(ret["0.act#2"].output, net[0].act(net[0].dw(ret["0.act#1"].output)))
    found = check_layers(net, ["0.act#2", "0.dw"], x)
    assert found["0.act#2"] == {"module": "0.act", "call": 2, "calls": 2, "shape": (1, 12, 8, 8)}
    assert found["0.dw"] == {"module": "0.dw", "call": 1, "calls": 1, "shape": (1, 12, 8, 8)}


def test_check_layers_refuses_a_plain_name_that_runs_twice():
    net = _mbnet()
    with pytest.raises(LayerError, match=r"'0\.act' \(Hardswish\) runs 2 times per forward pass.*"
                                         r"0\.act#1 \(1, 12, 16, 16\), 0\.act#2 \(1, 12, 8, 8\).*"
                                         r"runs once, such as '0' \(1, 4, 8, 8\)"):
        check_layers(net, ["0.dw", "0.act"], torch.rand(1, 4, 16, 16))


def test_check_layers_resnet_relu(resnet):
    with pytest.raises(LayerError, match=r"layer4\.1\.relu#1 \(1, 512, 2, 2\), layer4\.1\.relu#2 .*'layer4\.1'"):
        check_layers(resnet, ["layer4", "layer4.1.relu"], X64[:1])
    with pytest.raises(LayerError, match=r"'layer4\.1\.relu#3'.*runs only 2 time\(s\).*layer4\.1\.relu#1 to "
                                         r"layer4\.1\.relu#2"):
        check_layers(resnet, ["layer4.1.relu#3"], X64[:1])
    with pytest.raises(LayerError, match=r"'layer4\.1\.conv1#2'.*runs only 1 time\(s\).*name 'layer4\.1\.conv1'"):
        check_layers(resnet, ["layer4.1.conv1#2"], X64[:1])
    assert check_layers(resnet, ["layer4", "layer3.0.relu#2"], X64[:1]) == {
        "layer4": {"module": "layer4", "call": 1, "calls": 1, "shape": (1, 512, 2, 2)},
        "layer3.0.relu#2": {"module": "layer3.0.relu", "call": 2, "calls": 2, "shape": (1, 256, 4, 4)},
    }


def test_check_layers_refuses_a_layer_that_does_not_run():
    net = Skipper()  # 'extra' does not run on a batch of one
    with pytest.raises(LayerError, match=r"layer 'extra' \(Conv2d\) does not run in a forward pass of an input "
                                         r"of shape \(1, 3, 8, 8\)"):
        check_layers(net, ["conv", "extra"], torch.rand(1, 3, 8, 8))


def test_check_layers_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    stats = net[1].running_mean.clone()
    check_layers(net, ["1"], torch.rand(2, 3, 8, 8))
    assert net.training and net[1].training and torch.equal(net[1].running_mean, stats)
    assert all(not m._forward_hooks for m in net.modules())


def test_check_layers_names_the_input_a_failing_model_got():
    net = nn.Sequential(nn.Conv2d(1, 4, 3))
    with pytest.raises(ModelError, match=r"model Sequential fails on an input of shape \(1, 3, 8, 8\): RuntimeError"):
        check_layers(net, ["0"], torch.rand(1, 3, 8, 8))
    assert all(not m._forward_hooks for m in net.modules())


def test_a_plain_name_that_fires_twice_is_an_error_without_stop(resnet):
    with pytest.raises(LayerError, match=r"'layer1\.0\.relu' \(ReLU\) ran a second time.*'layer1\.0\.relu#1'.*"
                                         r"parent 'layer1\.0'"):
        with TraceDict(resnet, ["layer1.0.relu"]):
            resnet(X64)
    with pytest.raises(LayerError, match="ran a second time"):  # stop=True, a later layer keeps the pass going
        with TraceDict(resnet, ["layer1.0.relu", "layer2"], stop=True) as traces:
            run_to_layers(resnet, traces, X64)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in resnet.modules())
    calls = []
    with Trace(resnet, "layer1.0.relu", retain_output=False, edit_output=lambda o, n: calls.append(n) or o):
        resnet(X64)  # editing without retaining: every call is edited, no error
    assert calls == ["layer1.0.relu", "layer1.0.relu"]


def test_call_count_restarts_with_each_forward_pass(resnet):
    with torch.inference_mode(), Trace(resnet, "layer4.0.conv1") as t:
        resnet(X64)
        resnet(X64)  # a second pass: the plain name ran once per pass, no error
        assert t.calls == 1
        resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(torch.rand(2, 64, 16, 16)))))
        assert t.calls == 1 and t.output.shape == (2, 512, 2, 2)  # entered through a module above the layer
    with torch.inference_mode(), Trace(resnet, "layer4.0.relu#2") as t:
        resnet.layer4[0](torch.rand(1, 256, 8, 8))  # the module above, called on its own
        resnet.layer4[0](torch.rand(1, 256, 8, 8))
        assert t.calls == 2 and t.ran and t.output.shape == (1, 512, 4, 4)
    with torch.inference_mode(), Trace(resnet, "fc") as t:
        resnet.fc(torch.rand(3, 512))  # the traced module itself, called twice: two passes of its own
        resnet.fc(torch.rand(5, 512))
        assert t.calls == 1 and t.output.shape == (5, 1000)


def test_call_index_must_be_a_whole_number_from_one(resnet):
    for bad in ("layer4.1.relu#0", "layer4.1.relu#-1", "layer4.1.relu#x", "layer4.1.relu#", "layer4.1.relu#01"):
        with pytest.raises(LayerError, match=r"call index after '#' must be a whole number from 1"):
            TraceDict(resnet, ["layer4", bad])
    assert all(not m._forward_hooks for m in resnet.modules())
    with pytest.raises(LayerError, match=r"no layer 'layer4\.1\.rel'"):
        resolve_layer(resnet, "layer4.1.rel#2")
    assert resolve_layer(resnet, "layer4.1.relu#2") is resnet.layer4[1].relu
    assert split_layer(resnet, "layer4.1.relu#12") == ("layer4.1.relu", 12)
    net = nn.ModuleDict({"a#1": nn.ReLU()})  # a module whose own name holds '#': a plain name
    assert split_layer(net, "a#1") == ("a#1", None) and resolve_layer(net, "a#1") is net["a#1"]


class Skipper(nn.Module):
    """Runs ``extra`` only on batches of more than one image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.extra = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.extra(x) if len(x) > 1 else x


def test_a_layer_that_does_not_run_is_an_error_not_the_previous_output():
    net = Skipper()
    with TraceDict(net, ["conv", "extra"], stop=True) as traces:
        outs = run_to_layers(net, traces, torch.rand(2, 3, 8, 8))
        assert outs["extra"].shape == (2, 4, 6, 6)
        with pytest.raises(LayerError, match=r"layer 'extra' did not run in the forward pass of an input of "
                                             r"shape \(1, 3, 8, 8\): the model's forward did not call module "
                                             r"'extra'"):
            run_to_layers(net, traces, torch.rand(1, 3, 8, 8))
        assert traces["extra"].output is None  # cleared, not left from the pass before
        assert traces["conv"].output.shape == (1, 4, 6, 6)


def test_a_call_beyond_the_count_is_an_error_in_run_to_layers(resnet):
    with TraceDict(resnet, ["layer4.1.relu#3"], stop=True) as traces:
        with pytest.raises(LayerError, match=r"'layer4\.1\.relu#3' did not run.*ran only 2 time\(s\) in it, not 3"):
            run_to_layers(resnet, traces, X64)


def test_edit_output_edits_only_the_named_call(resnet):
    seen = []

    def zero(out, layer):
        seen.append(layer)
        return torch.zeros_like(out)

    with torch.inference_mode(), TraceDict(resnet, ["layer4.1.relu#1", "layer4.1"], edit_output=zero) as ret:
        resnet(X64)
    assert seen == ["layer4.1.relu#1", "layer4.1"]  # once each: the block's second relu call is not edited
    assert (ret["layer4.1.relu#1"].output == 0).all()
