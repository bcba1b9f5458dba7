"""The one edit rule x <- x (1 - a) + v a as context managers on the hooks."""
import pytest
import torch
import torchvision
from torch import nn

from netdissect.errors import LayerError, NetDissectError
from netdissect.hooks import TraceDict
from netdissect.interventions import EditError, ablate, apply_edit, edit


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def _layer_out(model, layer, x):
    with TraceDict(model, [layer]) as ret:
        y = model(x)
    return ret[layer].output, y


def test_ablate_zeroes_units_and_restores(resnet):
    x = torch.rand(2, 3, 64, 64)
    before = resnet(x)
    with ablate(resnet, "layer4.1", units=[3, 17, 200]):
        out, y = _layer_out(resnet, "layer4.1", x)
    assert (out[:, [3, 17, 200]] == 0).all()
    clean, _ = _layer_out(resnet, "layer4.1", x)
    keep = [u for u in range(512) if u not in (3, 17, 200)]
    assert torch.equal(out[:, keep], clean[:, keep])
    assert not torch.equal(y, before)
    assert torch.equal(resnet(x), before)          # hook removed
    assert not resnet.layer4[1]._forward_hooks


def test_restored_after_exception(resnet):
    with pytest.raises(ZeroDivisionError):
        with ablate(resnet, "layer3", units=[0]):
            1 / 0
    assert not resnet.layer3._forward_hooks


def test_ablation_matches_manual_head(resnet):
    """Ablation inside the model equals zeroing the captured activation and running the rest by hand."""
    x = torch.rand(2, 3, 64, 64)
    with ablate(resnet, "layer4", units=list(range(0, 512, 2))):
        y = resnet(x)
    a, _ = _layer_out(resnet, "layer4", x)
    a = a.clone()
    a[:, ::2] = 0
    manual = resnet.fc(torch.flatten(resnet.avgpool(a), 1))
    assert torch.allclose(y, manual, atol=1e-6)


def test_general_rule_per_unit_and_spatial(resnet):
    x = torch.rand(1, 3, 64, 64)
    clean, _ = _layer_out(resnet, "layer3", x)   # (1, 256, 4, 4)
    mask = torch.zeros(4, 4)
    mask[1, 2] = 1.0
    mask[0, 0] = 0.25
    value = torch.arange(256, dtype=torch.float32)
    with edit(resnet, "layer3", alpha=mask, value=value, units=[5, 9]):
        out, _ = _layer_out(resnet, "layer3", x)
    assert out[0, 5, 1, 2] == 5 and out[0, 9, 1, 2] == 9
    assert torch.allclose(out[0, 5, 0, 0], clean[0, 5, 0, 0] * 0.75 + 5 * 0.25)
    assert torch.equal(out[0, 5, 3, 3], clean[0, 5, 3, 3])
    others = [u for u in range(256) if u not in (5, 9)]
    assert torch.equal(out[0, others], clean[0, others])
    a = torch.rand(256, 4, 4)
    v = torch.randn(1, 256, 4, 4)
    with edit(resnet, "layer3", alpha=a, value=v):
        out, _ = _layer_out(resnet, "layer3", x)
    assert torch.allclose(out, clean * (1 - a) + v * a, atol=1e-6)


def test_apply_edit_exact_and_not_in_place():
    x = torch.tensor([[1.0, float("inf")], [float("nan"), 4.0]]).view(1, 2, 2, 1)
    y = apply_edit(x, alpha=torch.tensor([0.0, 1.0]), value=7.0)
    assert y[0, 1].eq(7).all() and y[0, 0, 0, 0] == 1 and torch.isinf(y[0, 0, 1, 0])
    assert torch.isinf(x[0, 0, 1, 0]) and x[0, 1, 1, 0] == 4     # input untouched


def test_inference_mode_and_nested_call_spec(resnet):
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        with ablate(resnet, "layer4.1.relu#2", units=[1, 2]):
            out, _ = _layer_out(resnet, "layer4.1", x)
    assert (out[:, [1, 2]] == 0).all()
    with torch.inference_mode():
        with edit(resnet, "layer2.0.conv1", alpha=1.0, value=0.0):
            y = resnet(x)
    assert torch.isfinite(y).all()


def test_in_place_relu_after_edit():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    x = torch.randn(1, 3, 6, 6)
    with ablate(net, "0", units=[1]):
        with TraceDict(net, ["0", "1"]) as ret:
            net(x)
    assert (ret["0"].output[:, 1] == 0).all()
    assert (ret["0"].output[:, 0] < 0).any()          # captured before the in-place ReLU


def test_bad_inputs_are_one_line(resnet):
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(LayerError, match="no layer 'layer9'"):
        with ablate(resnet, "layer9", units=[1]):
            pass
    with pytest.raises(EditError, match="out of range: the layer has 256 units"):
        with ablate(resnet, "layer3", units=[256]):
            resnet(x)
    with pytest.raises(EditError, match="does not"):
        with edit(resnet, "layer3", alpha=torch.ones(3, 3)):
            resnet(x)
    with pytest.raises(EditError, match="alpha must be in"):
        with edit(resnet, "layer3", alpha=2.0):
            pass
    for exc in (EditError("x"),):
        assert isinstance(exc, NetDissectError)
    assert not resnet.layer3._forward_hooks
