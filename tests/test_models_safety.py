"""A user's own nn.Module: the no-normalisation warning, preserved() and forward errors."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from netdissect.errors import LayerError, ModelError
from netdissect.models import NoNormalizationWarning, explain_forward, forward_error, load_model, preserved


class Net(nn.Module):
    def __init__(self, cin=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


# --- NoNormalizationWarning ------------------------------------------------------------------------------

def test_python_module_without_normalize_warns_and_says_how():
    with pytest.warns(NoNormalizationWarning, match=r"python:Net: no normalize= .*normalize='imagenet'") as rec:
        _, prep = load_model(Net())
    assert prep.mean is None
    assert issubclass(NoNormalizationWarning, UserWarning)
    assert rec[0].filename == __file__  # points at the caller, not inside netdissect


@pytest.mark.parametrize("normalize", ["none", "imagenet", "0.5,0.25"])
def test_explicit_normalize_does_not_warn(normalize):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(Net(), normalize=normalize)
        load_model("zoo:scene-cnn", weights="none")  # specs carry their own default: no warning


def test_python_module_with_weights_none_is_refused():
    with pytest.raises(ModelError, match="keeps its own weights"):
        load_model(Net(), weights="none", normalize="none")


# --- preserved ---------------------------------------------------------------------------------------------

def _mixed():
    net = Net().train()
    net.bn.eval()
    net.head[0].eval()
    net.conv.weight.requires_grad_(False)
    net.head[1].weight.grad = torch.ones_like(net.head[1].weight)
    return net


def _flags(net):
    return {n: m.training for n, m in net.named_modules()}


def test_preserved_restores_flags_objects_dtype_and_memory_format_after_an_exception():
    net = _mixed()
    flags, params = _flags(net), {n: p for n, p in net.named_parameters()}
    mean, grad = net.bn.running_mean, net.head[1].weight.grad
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    before = {n: t.clone() for n, t in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with preserved(net):
            net.eval().to(torch.float64).to(memory_format=torch.channels_last)
            net.requires_grad_(True)
            assert net.conv.weight.dtype == torch.float64 and not net.conv.weight.is_contiguous()
            assert not any(_flags(net).values())
            raise RuntimeError("boom")
    assert _flags(net) == flags
    assert {n: p for n, p in net.named_parameters()} == params and all(
        a is b for a, b in zip(net.parameters(), params.values()))
    assert net.bn.running_mean is mean and net.head[1].weight.grad is grad and grad.dtype == torch.float32
    assert not net.conv.weight.requires_grad and net.head[1].weight.requires_grad
    for n, t in net.state_dict().items():
        assert t.dtype == before[n].dtype and t.is_contiguous() and torch.equal(t, before[n]), n
    opt.step()  # the optimizer still drives the module's own parameters
    assert not torch.equal(net.head[1].weight, before["head.1.weight"])


def test_preserved_keeps_channels_last_as_found_and_returns_normally():
    net = Net().to(memory_format=torch.channels_last)
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with preserved(net) as m:
        assert m is net
        net.to(memory_format=torch.contiguous_format).eval()
        net(torch.rand(1, 3, 8, 8))
    assert net.training and net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.conv.weight.is_contiguous()


def test_preserved_puts_back_parameters_that_to_replaced():
    net = _mixed()
    w = net.conv.weight
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # .to() makes new Parameter objects
    try:
        with preserved(net):
            net.to(torch.float64)
            assert net.conv.weight is not w
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
    assert net.conv.weight is w and w.dtype == torch.float32


def test_preserved_passes_a_spec_string_through():
    with preserved("zoo:scene-cnn") as spec:
        assert spec == "zoo:scene-cnn"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_preserved_restores_the_device():
    net = _mixed()
    w = net.conv.weight
    with preserved(net):
        net.cuda().eval().to(memory_format=torch.channels_last)
        assert w.is_cuda
        net(torch.rand(1, 3, 8, 8, device="cuda"))
    assert net.conv.weight is w and w.device.type == "cpu" and w.is_contiguous()
    assert net.bn.running_mean.device.type == "cpu" and net.head[1].weight.grad.device.type == "cpu"
    assert _flags(net) == _flags(_mixed())


# --- forward errors ---------------------------------------------------------------------------------------

def test_a_model_that_wants_one_channel_gets_a_one_line_error():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ModelError) as err:
        with explain_forward("gray.py:make", x.shape, normalize="imagenet"):
            Net(cin=1)(x)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("model gray.py:make fails on the dataset's images: it was given (N, C, H, W) = (2, 3, 16, 16)")
    assert "normalised (imagenet)" in msg and "to have 1 channels, but got 3 channels" in msg
    assert "3-channel RGB" in msg
    assert isinstance(err.value.__cause__, RuntimeError)


def test_images_too_small_for_the_model():
    net = nn.Conv2d(3, 4, 7)
    err = None
    try:
        net(torch.rand(1, 3, 4, 4))
    except RuntimeError as exc:
        err = forward_error(net, (1, 3, 4, 4), exc)
    assert "python:Conv2d" in str(err) and "too small" in str(err) and "not normalised" in str(err)


def test_multi_line_torch_messages_give_their_last_line():
    err = forward_error("m", (1, 3, 8, 8), RuntimeError("Traceback inside the model\n  frame\nValueError: bad thing"))
    assert "\n" not in str(err) and "'RuntimeError: ValueError: bad thing'" in str(err)


def test_netdissect_errors_and_stop_forward_pass_through():
    from netdissect.hooks.trace import StopForward

    for exc in (StopForward(), LayerError("no layer x"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with explain_forward("m", (1, 3, 8, 8)):
                raise exc
    with pytest.raises(IndexError):
        with explain_forward("m", (1, 3, 8, 8), passthrough=(IndexError,)):
            raise IndexError("mine")
