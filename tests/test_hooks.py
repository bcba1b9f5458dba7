"""Trace / TraceDict: retain, edit, stop, and always clean up."""
import pytest
import torch
from torch import nn

from netdissect.errors import LayerError
from netdissect.hooks import Trace, TraceDict, layer_names, resolve_layer


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 5, 3), nn.ReLU()), nn.Flatten())


def test_trace_retains_output_and_removes_hook():
    net = _net()
    x = torch.rand(2, 3, 8, 8)
    with Trace(net, "2.0") as t:
        y = net(x)
    assert t.output.shape == (2, 5, 4, 4) and not t.output.requires_grad
    assert all(not m._forward_hooks for m in net.modules())
    assert torch.equal(net(x), y)


def test_tracedict_stop_skips_the_rest():
    net = _net()
    calls = []
    net[3].register_forward_hook(lambda *a: calls.append(1))
    with TraceDict(net, ["0", "2.0"], stop=True) as ret:
        net(torch.rand(1, 3, 8, 8))
    assert ret["0"].output.shape == (1, 4, 6, 6) and ret["2.0"].output.shape == (1, 5, 4, 4)
    assert calls == []  # Flatten never ran
    assert all(not m._forward_hooks for m in list(net.modules())[:-1])


def test_edit_output_zeroes_units():
    net = _net()
    x = torch.rand(1, 3, 8, 8)

    def ablate(out, layer):
        out = out.clone()
        out[:, :2] = 0
        return out

    with Trace(net, "0", edit_output=ablate) as t:
        net(x)
    assert t.output[:, :2].abs().sum() == 0 and t.output[:, 2:].abs().sum() > 0


def test_hooks_removed_when_the_forward_fails():
    net = _net()
    with pytest.raises(RuntimeError):
        with TraceDict(net, ["0", "2.0"]):
            net(torch.rand(1, 5, 8, 8))  # wrong channel count
    assert all(not m._forward_hooks for m in net.modules())


def test_unknown_layer_lists_close_names_and_hooks_nothing():
    net = _net()
    with pytest.raises(LayerError, match=r"no layer '2\.1x'.*close matches: 2\.1"):
        TraceDict(net, ["0", "2.1x"])
    assert all(not m._forward_hooks for m in net.modules())
    assert "2.0" in layer_names(net)
    assert resolve_layer(net, "2.1") is net[2][1]
