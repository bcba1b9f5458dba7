"""``netdissect layers``: calls per forward pass, one line per call, and --size refused when meaningless."""
import re

import pytest

from netdissect.cli import main


def test_layers_shows_calls_per_forward_pass(capsys):
    assert main(["layers", "--model", "torchvision:resnet18", "--weights", "none", "--size", "64"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert re.search(r"ReLU\s+2\s+runs 2x per forward pass", rows["layer4.1.relu"])
    assert "dissectable" not in rows["layer4.1.relu"]  # the plain name has no single output
    assert re.search(r"\(1, 512, 2, 2\)\s+dissectable", rows["layer4.1.relu#1"])
    assert re.search(r"\(1, 512, 2, 2\)\s+dissectable", rows["layer4.1.relu#2"])
    assert "layer4.1.relu#3" not in rows
    assert re.search(r"Conv2d\s+1\s+\(1, 512, 2, 2\)\s+dissectable", rows["layer4.1.conv2"])
    assert re.search(r"ReLU\s+1\s+\(1, 64, 32, 32\)", rows["relu"])  # the stem's relu runs once
    assert "8 module(s) run more than once per forward pass" in out and "NAME#K" in out


@pytest.mark.parametrize("size", ["0", "-5", "100000"])
def test_layers_refuses_a_meaningless_size(size, capsys):
    assert main(["layers", "--model", "torchvision:resnet18", "--weights", "none", "--size", size]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--size {size} is not a usable image side for model torchvision:resnet18" in err
    assert "from 1 to 4096" in err


def test_layers_says_when_the_image_is_too_small_for_the_model(capsys):
    assert main(["layers", "--model", "torchvision:alexnet", "--weights", "none", "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "model torchvision:alexnet fails on one 16x16 image (--size 16): RuntimeError:" in err
    assert "pass a larger --size" in err
