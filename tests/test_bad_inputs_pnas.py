"""The PNAS commands under bad input (issue 32): ``ablate``, ``adversarial``, ``gan remove|insert``,
``paint``, ``experiment``, ``dissect --images/--samples``, ``proggan:`` files, ``download``, ``synth``.

Each case is refused in one line naming the thing (never a traceback, never a silent wrong result), or
now gives the right result; docs/bad-inputs.md ("The PNAS commands") lists them.  Tiny models and
datasets only: a classifier of 4 units on 16 px images, the painter generator of test_gan_roles.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from netdissect.cli import main
from netdissect.errors import NetDissectError

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


# ----------------------------------------------------------------------------- tiny models and data
class Tiny(nn.Module):
    """conv(3 -> width) + ReLU ("features"), global average pool, linear to 2 classes."""

    def __init__(self, seed: int = 0, width: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 2)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_a():
    return Tiny(0)


def tiny_b():
    return Tiny(1)


def tiny_wide():
    return Tiny(0, 6)


def tiny_nan():
    m = Tiny(0)
    with torch.no_grad():
        m.fc.bias.fill_(float("nan"))
    return m


class Boom(Tiny):
    def forward(self, x):
        self.features(x)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


def tiny_boom():
    return Boom(0)


def spec(name: str) -> str:
    return f"{HERE}:{name}"


def _folders(root: Path, classes=("a", "b"), n: int = 6) -> Path:
    """Class folders of 16 px PNGs: class 0 reddish, class 1 bluish, with noise."""
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 120, (16, 16, 3))
            img[..., 0 if k == 0 else 2] += 120
            Image.fromarray(img.astype(np.uint8)).save(root / c / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pnas")
    return {"train": _folders(root / "train"), "val": _folders(root / "val", n=5)}


def _ablate_args(data, out, model="tiny_a", *extra):
    return ["ablate", "--model", spec(model), "--layer", "features", "--classes", "a,b", "--size", "16",
            "--train", str(data["train"]), "--val", str(data["val"]), "--sizes", "1", "--quiet",
            "--out", str(out), *extra]


def _run_ablation(data, out, model="tiny_a", train=None, **kw):
    from netdissect.roles.run import run_ablation

    return run_ablation(spec(model), "features", train or data["train"], data["val"], out, classes="a,b", size=16,
                        sizes=[1], progress=False, figures=False, **kw)


@pytest.fixture(scope="module")
def ablation(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("abl") / "run"
    _run_ablation(data, out)
    return out


def _one_line_error(capsys, must: str) -> str:
    err = capsys.readouterr().err.strip()
    assert must in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _gan_run(tmp_path, **edit):
    """The painter's generator run (test_gan_roles) with ``summary.json`` edited: ``edit`` maps dotted keys
    to values (None deletes)."""
    sys.path.insert(0, str(HERE.parent))
    from test_gan_roles import _painter_run

    run = _painter_run(tmp_path / "gan")
    s = json.loads((run / "summary.json").read_text())
    for key, v in edit.items():
        *path, last = key.split(".")
        d = s
        for p in path:
            d = d[p]
        if v is None:
            d.pop(last, None)
        else:
            d[last] = v
    (run / "summary.json").write_text(json.dumps(s))
    return run


def _painter_digest():
    sys.path.insert(0, str(HERE.parent))
    from test_gan_roles import Painter

    from netdissect.models import model_identity
    return model_identity(Painter())


def _gan(run, out, cmd="remove", *extra, sizes="1,2", figures=False):
    base = ["gan", cmd, "--run", str(run), "--layer", "layer1", "--concept", "red-c", "--samples", "5", "--seed",
            "2", "--out", str(out), "--quiet"] + ([] if figures else ["--no-figures"])
    return base + (["--sizes", sizes] if cmd == "remove" else ["--n", "2", "--min-samples", "1"]) + list(extra)


# ----------------------------------------------------------------------------- data lost: --out
def test_empty_out_is_refused_by_every_command(data, ablation, tmp_path, monkeypatch, capsys, broden):
    """--out '' would write into the current folder (the commands said "wrote /index.html")."""
    run = _gan_run(tmp_path)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    for argv in (_ablate_args(data, ""),
                 ["adversarial", "--model", spec("tiny_a"), "--layer", "features", "--ablation", str(ablation),
                  "--val", str(data["val"]), "--classes", "a,b", "--size", "16", "--targets", "a", "--out", "",
                  "--quiet"],
                 _gan(run, ""), _gan(run, "", "insert"),
                 ["experiment", "rotation", "--model", "zoo:scene-cnn", "--layer", "conv5", "--dataset", str(broden),
                  "--out", "", "--quiet"]):
        assert main(argv) == 1, argv
        _one_line_error(capsys, "--out is empty")
    assert os.listdir(here) == []


def test_out_among_the_inputs_is_refused(data, tmp_path, capsys, broden):
    """--out equal to --train added cache/ and figures/ to the dataset; --out equal to the run, likewise."""
    before = sorted(p.name for p in data["train"].rglob("*"))
    assert main(_ablate_args(data, data["train"])) == 1
    _one_line_error(capsys, f"--out {data['train']} is --train {data['train']}")
    assert main(_ablate_args(data, data["val"] / "a")) == 1
    _one_line_error(capsys, "lies inside --val")
    assert sorted(p.name for p in data["train"].rglob("*")) == before
    run = _gan_run(tmp_path)
    assert main(_gan(run, run)) == 1
    _one_line_error(capsys, "is --run")
    assert main(_gan(run, run.parent)) == 1
    _one_line_error(capsys, "--run")
    assert not (run / "cache").exists()
    assert main(["experiment", "rotation", "--model", "zoo:scene-cnn", "--layer", "conv5", "--dataset", str(broden),
                 "--out", str(broden / "rot"), "--quiet"]) == 1
    _one_line_error(capsys, "lies inside --dataset")
    assert not (broden / "rot").exists()
    assert main(["experiment", "basis", "--model", "zoo:scene-cnn", "--layer", "conv5", "--dataset", str(broden),
                 "--basis", "random", "--out", str(broden), "--quiet"]) == 1
    _one_line_error(capsys, "is --dataset")


def test_a_folder_of_something_else_is_not_overwritten(data, tmp_path, capsys):
    """ablate --out runs/demo overwrote the demo's story page without asking."""
    story = tmp_path / "demo"
    (story / "story").mkdir(parents=True)
    (story / "index.html").write_text("<html>the story</html>")
    assert main(_ablate_args(data, story)) == 1
    err = _one_line_error(capsys, "is not empty and not a `netdissect ablate` run")
    assert "the demo's story" in err and "index.html" in err
    assert (story / "index.html").read_text() == "<html>the story</html>"
    assert sorted(os.listdir(story)) == ["index.html", "story"]
    run = _gan_run(tmp_path)  # a dissection run
    assert main(_ablate_args(data, run)) == 1
    _one_line_error(capsys, "a `netdissect dissect` run")
    # a gan remove run is not a gan insert run
    out = tmp_path / "rem"
    assert main(_gan(run, out)) == 0
    assert main(_gan(run, out, "insert")) == 1
    _one_line_error(capsys, "holds a `netdissect gan remove` run, not a `netdissect gan insert` one")


def test_a_second_job_on_the_same_out_is_refused(data, ablation, tmp_path, capsys, broden):
    """No lock: two jobs wrote one folder and the last to finish won."""
    out = tmp_path / "busy"
    out.mkdir()
    code = ("import sys, time; from netdissect.runfolder import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = _gan_run(tmp_path)
        for argv in (_ablate_args(data, out),
                     ["adversarial", "--model", spec("tiny_a"), "--layer", "features", "--ablation", str(ablation),
                      "--val", str(data["val"]), "--classes", "a,b", "--size", "16", "--targets", "a",
                      "--out", str(out), "--quiet"],
                     _gan(run, out), _gan(run, out, "insert"),
                     ["experiment", "rotation", "--model", "zoo:scene-cnn", "--layer", "conv5", "--dataset",
                      str(broden), "--out", str(out), "--quiet"],
                     ["experiment", "training", "--models", "zoo:scene-cnn", "--layer", "conv5", "--dataset",
                      str(broden), "--out", str(out), "--quiet"]):
            assert main(argv) == 1, argv
            _one_line_error(capsys, f"another netdissect job (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(os.listdir(out)) in ([], [".lock"])


def _full_disk_on(monkeypatch, name: str) -> None:
    """os.fsync fails with ENOSPC for the temporary file of ``name`` (as a full disk would)."""
    real = os.fsync

    def fsync(fd):
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to tell the files apart")
def test_a_failed_rerun_leaves_the_previous_results_whole(data, tmp_path, monkeypatch, capsys):
    """A full disk during a rerun left the new run's csv and npz beside the old run's json; the error named
    no path.  Now the previous results stay as they were, and the message names the file."""
    out = tmp_path / "abl"
    _run_ablation(data, out)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and "cache" not in p.parts
             and not p.name.startswith(".")}
    _full_disk_on(monkeypatch, "removal.csv")
    assert main(_ablate_args(data, out, "tiny_a", "--sizes", "2", "--limit", "8")) == 1
    _one_line_error(capsys, "removal.csv: No space left on device")
    now = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and "cache" not in p.parts
           and not p.name.startswith(".")}
    assert now == files and not (out / ".partial").exists()
    monkeypatch.undo()
    # the same for gan remove
    run = _gan_run(tmp_path, **{"model.sha256": _painter_digest()})
    rem = tmp_path / "rem"
    assert main(_gan(run, rem)) == 0
    old = {p.name: p.read_bytes() for p in rem.iterdir() if p.is_file() and not p.name.startswith(".")}
    _full_disk_on(monkeypatch, "removal.npz")
    assert main(_gan(run, rem, sizes="3")) == 1
    _one_line_error(capsys, "removal.npz: No space left on device")
    assert {p.name: p.read_bytes() for p in rem.iterdir() if p.is_file() and not p.name.startswith(".")} == old
    monkeypatch.undo()
    # a rerun that succeeds replaces every file, and removes those the new run does not write
    assert main(_gan(run, rem, "remove", "--grid", "2", sizes="3", figures=True)) == 0
    assert (rem / "figures" / "removal_grid.png").exists()
    assert main(_gan(run, rem, sizes="3")) == 0
    assert not (rem / "figures" / "removal_grid.png").exists()
    assert json.loads((rem / "removal.json").read_text())["rows"][0]["n"] == 3


# ----------------------------------------------------------------------------- silent wrong results
def test_the_ablate_cache_follows_what_decides_the_predictions(data, tmp_path):
    """The cache key ignored --normalize, the weights file and the images: a rerun into the same --out
    reused another run's predictions."""
    import shutil

    def importance(out, **kw):
        _run_ablation(data, out, train=kw.pop("train", None), **kw)
        with np.load(out / "importance.npz") as z:
            return z["train"].copy(), z["val"].copy()

    out = tmp_path / "same"
    first = importance(out)
    # other pixels under the same file names
    train2 = tmp_path / "train2"
    shutil.copytree(data["train"], train2)
    for p in train2.rglob("*.png"):
        a = np.asarray(Image.open(p))
        Image.fromarray(255 - a).save(p)
    fresh = importance(tmp_path / "fresh1", train=train2)
    assert not np.array_equal(fresh[0], first[0])          # the change matters ...
    same_name = tmp_path / "t"                             # ... and is seen under the same folder and file names
    shutil.copytree(data["train"], same_name)
    np.testing.assert_array_equal(importance(tmp_path / "byname", train=same_name)[0], first[0])
    shutil.rmtree(same_name)
    shutil.copytree(train2, same_name)
    np.testing.assert_array_equal(importance(tmp_path / "byname", train=same_name)[0], fresh[0])
    # --normalize
    norm = importance(tmp_path / "fresh2", normalize="0.5,0.25")
    assert not np.array_equal(norm[1], first[1])
    np.testing.assert_array_equal(importance(out, normalize="0.5,0.25")[1], norm[1])
    # the weights file's contents
    w = tmp_path / "w.pt"
    torch.save(tiny_b().state_dict(), w)
    wb = importance(tmp_path / "fresh3", weights=str(w))
    importance(out, weights=str(w))
    torch.save(tiny_a().state_dict(), w)
    np.testing.assert_array_equal(importance(out, weights=str(w))[0], first[0])
    assert not np.array_equal(wb[0], first[0])


def test_a_train_split_of_one_class_is_refused(data, tmp_path, capsys):
    """All-NaN importance, "most important" units ranked by unit number, "accuracy 1.000"."""
    one = _folders(tmp_path / "one", classes=("a",))
    assert main(_ablate_args(data, tmp_path / "o")[:-2] + ["--train", str(one), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "are all of one class (a)")


def test_limit_takes_images_across_the_classes(data):
    """--limit N on class folders took the first N files in folder order: all of one class."""
    from netdissect.roles.data import load_labelled

    _, y, paths, _ = load_labelled(data["train"], ["a", "b"], 16, limit=4, progress=False)
    assert sorted(y.tolist()) == [0, 0, 1, 1]
    assert paths == ["a/00.png", "a/01.png", "b/00.png", "b/01.png"]
    _, y, _, _ = load_labelled(data["train"], ["a", "b"], 16, limit=5, progress=False)
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1]


def test_class_names_match_folders_with_or_without_s(tmp_path):
    """docs/roles.md: names match with or without Broden's -s; names without -s did not match -s folders."""
    from netdissect.roles.data import load_labelled

    root = _folders(tmp_path / "s", classes=("a-s", "b-s"), n=2)
    _, y, _, _ = load_labelled(root, ["a", "b"], 16, progress=False)
    assert y.tolist() == [0, 0, 1, 1]
    root = _folders(tmp_path / "bare", classes=("a", "b"), n=2)
    _, y, _, _ = load_labelled(root, ["a-s", "b-s"], 16, progress=False)
    assert y.tolist() == [0, 0, 1, 1]


def test_another_models_ablation_is_refused_before_any_attack(data, ablation, tmp_path, monkeypatch, capsys):
    """Same width: ran to the end with another model's unit ranking; wider: a traceback after every attack."""
    import shutil

    import netdissect.roles.adversarial as adv

    def no_attack(*a, **k):
        raise AssertionError("an attack ran before the inputs were checked")
    monkeypatch.setattr(adv, "pgd", no_attack)
    monkeypatch.setattr(adv, "cw_l2", no_attack)
    base = ["adversarial", "--layer", "features", "--val", str(data["val"]), "--classes", "a,b", "--size", "16",
            "--targets", "a", "--attack", "pgd", "--steps", "1", "--quiet"]
    assert main(base + ["--model", spec("tiny_b"), "--ablation", str(ablation), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "ranked the units of")
    legacy = tmp_path / "legacy"  # an ablate run written before it recorded the weights digest
    shutil.copytree(ablation, legacy)
    s = json.loads((legacy / "roles.json").read_text())
    del s["model_sha256"]
    (legacy / "roles.json").write_text(json.dumps(s))
    assert main(base + ["--model", spec("tiny_wide"), "--ablation", str(legacy), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "ranks 4 units of 'features', but this model's 'features' has 6")


def test_a_changed_generator_is_refused_by_gan_and_paint(tmp_path, capsys):
    """gan remove/insert and paint never compared the generator's weights with the run's digest."""
    run = _gan_run(tmp_path, **{"model.sha256": "0123456789abcdef"})
    for cmd in ("remove", "insert"):
        assert main(_gan(run, tmp_path / cmd, cmd)) == 1
        _one_line_error(capsys, "but " + str(run) + " dissected weights of digest 0123456789abcdef")
    from netdissect.app import toy

    toy_run = toy.write_toy_run(tmp_path / "toy")
    s = json.loads((toy_run / "summary.json").read_text())
    s["model"]["sha256"] = "0123456789abcdef"
    (toy_run / "summary.json").write_text(json.dumps(s))
    assert main(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(toy_run), "--port", "1"]) == 1
    _one_line_error(capsys, "dissected weights of digest 0123456789abcdef")


class _Blowup(nn.Module):
    """A generator whose output overflows when layer1 is set very high (as gan insert --value 1e38 does)."""
    z_dim = 4

    def __init__(self, nan: bool = False):
        super().__init__()
        self.nan = nan
        self.layer1 = nn.Sequential(nn.Unflatten(1, (4, 1, 1)), nn.Upsample(scale_factor=4))
        self.layer2 = nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.layer2.weight.fill_(1e3)

    def forward(self, z):
        y = self.layer2(self.layer1(z))
        if self.nan and len(y) > 1:
            y = y.clone()
            y[1] = float("nan")
        return nn.functional.interpolate(y, size=(16, 16))


def nan_generator():
    return _Blowup(nan=True)


def test_non_finite_generator_output_is_refused(tmp_path, capsys):
    """NaN or infinite outputs were clamped into black or white images and labelled, served and counted."""
    from netdissect.app.painter import Painter, PaintError
    from netdissect.errors import ActivationError
    from netdissect.roles.generator import CutGenerator

    cut = CutGenerator(_Blowup(), "layer1")
    z = torch.ones(3, 4)
    act = cut.activations(z)
    assert torch.isfinite(cut.images(act, z)).all()
    alpha = torch.ones(4)
    with pytest.raises(ActivationError, match="with the edit gives NaN or infinite values for 3 row"):
        cut.images(act, z, alpha, 1e38)
    with pytest.raises(PaintError, match="NaN or infinite values"):
        Painter(_Blowup(nan=True), "layer1", [], z_dim=4)
    assert main(["dissect", "--model", spec("nan_generator"), "--layer", "layer1", "--samples", "4", "--seed", "1",
                 "--segmenter", "color", "--seg-size", "4", "--out", str(tmp_path / "d"), "--no-report", "--quiet",
                 "--label-cache", str(tmp_path / "labels")]) == 1
    _one_line_error(capsys, "NaN or infinite values for 1 sample(s): ['sample 1 of seed 1']")


def test_non_finite_logits_are_refused(data, tmp_path, capsys):
    """NaN head weights: a traceback (head) or class 0 predicted for everything (--full-passes)."""
    for extra in ([], ["--full-passes"]):
        assert main(_ablate_args(data, tmp_path / "o", "tiny_nan", *extra)) == 1
        _one_line_error(capsys, "NaN or infinite logits on image(s) [0]")
    from netdissect.errors import ActivationError
    from netdissect.roles.core import Evaluator

    net = tiny_a().eval()
    ev = Evaluator(net, "features", progress=False, fast=False, batch_size=8)
    imgs = np.zeros((6, 16, 16, 3), np.uint8)
    with torch.no_grad():
        net.fc.bias[1] = float("inf")
    with pytest.raises(ActivationError, match=r"logits on image\(s\) \[0, 1, 2, 3, 4, 5\]"):
        ev.predict_full(imgs, [])


def test_duplicate_targets_are_refused(data, ablation, tmp_path, capsys):
    for targets in ("a,a", "a,b,a"):
        assert main(["adversarial", "--model", spec("tiny_a"), "--layer", "features", "--ablation", str(ablation),
                     "--val", str(data["val"]), "--classes", "a,b", "--size", "16", "--targets", targets,
                     "--out", str(tmp_path / "o"), "--quiet"]) == 1
        _one_line_error(capsys, "--targets names 'a' twice")


def test_symlink_loops_and_links_count_each_image_once(tmp_path):
    """A symlink loop inside --images counted one image 41 times."""
    from netdissect.probe.folder import ImageFolder

    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for name in ("x.png", "sub/y.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / name)
    os.symlink("..", root / "sub" / "loop")
    os.symlink("x.png", root / "same.png")
    assert ImageFolder(root).files == ["same.png", "sub/y.png"]


def test_16_bit_greyscale_is_scaled_by_its_range(tmp_path):
    """I;16 images read almost white (mean 254 instead of 128)."""
    from netdissect.probe.folder import ImageFolder
    from netdissect.roles.data import load_labelled

    root = tmp_path / "g" / "a"
    root.mkdir(parents=True)
    grey = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)   # 0..65535, mean 32767.5
    Image.fromarray(grey).save(root / "g.png")
    assert Image.open(root / "g.png").mode == "I;16"
    for img in (ImageFolder(tmp_path / "g").load(0), load_labelled(tmp_path / "g", ["a"], progress=False)[0][0]):
        assert img.shape == (16, 16, 3) and abs(float(img.mean()) - 127.5) < 0.5
        assert int(img[0, 0, 0]) == 0 and int(img[-1, -1, 0]) == 255


def test_a_label_size_of_one_pixel_is_refused(tmp_path):
    """--seg-size 1 called 128 of 128 units detectors."""
    from netdissect.concepts.segmenter import SegmenterLabels
    from netdissect.probe.folder import ImageFolder
    from netdissect.segment import load_segmenter

    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "x.png")
    with pytest.raises(NetDissectError, match="1x1 is too small to carry a concept"):
        SegmenterLabels(load_segmenter("color"), ImageFolder(root), seg_size=1, cache_dir=tmp_path / "c")


# ----------------------------------------------------------------------------- tracebacks -> one line
def test_classifier_options_are_checked_before_any_work(data, tmp_path, capsys):
    cases = [(["--batch-size", "0"], "--batch-size must be a whole number >= 1"),
             (["--batch-size", "-3"], "--batch-size must be a whole number >= 1"),
             (["--size", "-5"], "--size must be a whole number of pixels >= 8"),
             (["--size", "1"], "--size must be a whole number of pixels >= 8"),
             (["--device", "bogus"], "--device 'bogus' is not a device"),
             (["--device", "meta"], "netdissect runs on cpu, cuda or mps")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "this machine has no CUDA GPU"))
    for extra, msg in cases:
        out = tmp_path / "o"
        args = _ablate_args(data, out)
        i = args.index("--size")
        args = args[:i] + args[i + 2:] if "--size" in extra else args
        assert main(args + extra) == 1, extra
        _one_line_error(capsys, msg)
        assert not out.exists()
    run = _gan_run(tmp_path)
    for extra, msg in (["--device", "bogus"], "is not a device"), (["--device", "cuda:7"], "cuda:7"):
        assert main(_gan(run, tmp_path / "g", "remove", *extra)) == 1
        _one_line_error(capsys, msg)


def test_a_forward_that_raises_is_one_line(data, tmp_path, capsys):
    assert main(_ablate_args(data, tmp_path / "o", "tiny_boom")) == 1
    _one_line_error(capsys, "fails on a batch of images (1, 3, 16, 16): RuntimeError: mat1 and mat2")


def test_a_generator_is_not_a_classifier(data, tmp_path, capsys):
    args = _ablate_args(data, tmp_path / "o")
    args[args.index("--model") + 1] = "zoo:world-gan"
    assert main(args) == 1
    _one_line_error(capsys, "--model zoo:world-gan is a generator")


def test_adversarial_options_are_checked_before_any_attack(data, ablation, tmp_path, monkeypatch, capsys):
    """--eps nan|inf|-0.5 and --binary-steps 0 ran every attack before refusing; a read-only --out was
    noticed after every attack; --seed -1 and --batch-size 0 were tracebacks."""
    import tempfile

    import netdissect.roles.adversarial as adv

    def no_attack(*a, **k):
        raise AssertionError("an attack ran before the options were checked")
    monkeypatch.setattr(adv, "pgd", no_attack)
    monkeypatch.setattr(adv, "cw_l2", no_attack)
    base = ["adversarial", "--model", spec("tiny_a"), "--layer", "features", "--ablation", str(ablation),
            "--val", str(data["val"]), "--classes", "a,b", "--size", "16", "--targets", "a", "--quiet",
            "--out", str(tmp_path / "o")]
    for extra, msg in ((["--attack", "pgd", "--eps", "nan"], "--eps must be a finite number > 0"),
                       (["--attack", "pgd", "--eps", "inf"], "--eps must be a finite number > 0"),
                       (["--attack", "pgd", "--eps", "-0.5"], "--eps must be a finite number > 0"),
                       (["--binary-steps", "0"], "--binary-steps must be a whole number >= 1"),
                       (["--seed", "-1"], "--seed must be a whole number from 0 to 2**32-1"),
                       (["--batch-size", "0"], "--batch-size must be a whole number >= 1"),
                       (["--batch-size", "-2"], "--batch-size must be a whole number >= 1"),
                       (["--lr", "nan"], "--lr must be a finite number > 0")):
        assert main(base + extra) == 1, extra
        _one_line_error(capsys, msg)
        assert not (tmp_path / "o").exists()

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(base) == 1
    _one_line_error(capsys, "the run folder is not writable (permission denied")


def test_a_hand_edited_generator_run_is_one_line(tmp_path, capsys):
    """summary.json without dataset.seed, or with a non-numeric dataset.dim: tracebacks; a wrong dim
    suggested "drop --z-dim" to a user who never gave it."""
    for edit, msg in (({"dataset.seed": None}, "dataset.seed (the latent seed) lacks it"),
                      ({"dataset.dim": "four"}, 'dataset.dim (the latent size) has "four"'),
                      ({"dataset.dim": 7}, "says the latent size (dataset.dim) is 7")):
        run = _gan_run(tmp_path / str(len(os.listdir(tmp_path))), **edit)
        assert main(_gan(run, tmp_path / "o")) == 1, edit
        err = _one_line_error(capsys, msg)
        assert "drop --z-dim" not in err


def test_a_segmenter_whose_identity_fails_is_one_line(tmp_path, monkeypatch):
    from netdissect.concepts.segmenter import SegmenterLabels
    from netdissect.probe.folder import ImageFolder
    from netdissect.segment import load_segmenter

    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "x.png")
    seg = load_segmenter("color")

    def boom():
        raise KeyError("weights")
    for ident, msg in ((boom, r"its identity\(\) failed \(KeyError"),
                       (lambda: {"w": object()}, "returned something that is not JSON"),
                       (lambda: {"w": float("nan")}, "returned something that is not JSON"),
                       (lambda: ["a"], "not a JSON object")):
        monkeypatch.setattr(seg, "identity", ident)
        with pytest.raises(NetDissectError, match=msg):
            SegmenterLabels(seg, ImageFolder(root), seg_size=2, cache_dir=tmp_path / "c")


def test_samples_beyond_memory_are_refused_before_drawing():
    from netdissect.probe.latent import latent_z

    t = time.perf_counter()
    with pytest.raises(NetDissectError, match=r"3000000000 latent samples of size 128 need 4291.5 GiB"):
        latent_z(3_000_000_000, 0, 128)
    assert time.perf_counter() - t < 5


def test_download_and_synth_options_are_one_line(tmp_path, capsys):
    for argv, msg in ((["download", "--timeout=-1", "http://example.com/x.zip", "--to", str(tmp_path)],
                       "--timeout must be a number of seconds > 0"),
                      (["download", "--timeout=nan", "http://example.com/x.zip", "--to", str(tmp_path)],
                       "--timeout must be a number of seconds > 0"),
                      (["download", "http://[::1/x.zip", "--to", str(tmp_path)], "not a valid URL (Invalid IPv6 URL)"),
                      (["download", "http://example.com/x.zip", "--url", "http://[::1/x.zip", "--to", str(tmp_path)],
                       "not a valid URL"),
                      (["synth", "--seed", "-1", "--out", str(tmp_path / "s"), "--n", "1", "--quiet"],
                       "--seed must be a whole number from 0 to 2**32-1"),
                      (["synth", "--size", "100000", "--out", str(tmp_path / "s"), "--n", "1", "--quiet"],
                       "--size must be from 16 to 2048 px")):
        assert main(argv) == 1, argv
        _one_line_error(capsys, msg)
    from netdissect.data.download import download
    with pytest.raises(NetDissectError, match="timeout"):
        download("http://example.com/x", tmp_path / "x", timeout=-1)


def test_malformed_proggan_files_are_one_line(tmp_path):
    from netdissect.models import load_model
    from netdissect.models.proggan import ProgressiveGenerator

    sd = ProgressiveGenerator(8, [4, 4], 4).state_dict()
    foo = {("features.foo" if k == "layer1.conv.weight" else k): v for k, v in sd.items()}
    cases = {"one_d": ({**sd, "layer1.conv.weight": torch.zeros(4)}, "layer1.conv.weight has shape (4,)"),
             "foo": ({**foo, "features.0.conv.weight": sd["layer1.conv.weight"]}, "key 'features.foo' is not"),
             "zero": ({**sd, "layer1.conv.weight": torch.zeros(0, 4, 4, 4)}, "has shape (0, 4, 4, 4)"),
             "zero_in": ({**sd, "layer3.conv.weight": torch.zeros(4, 0, 3, 3)}, "has shape (4, 0, 3, 3)")}
    for name, (state, msg) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        with pytest.raises(NetDissectError) as e:
            load_model(f"proggan:{path}", generator=True)
        assert msg in str(e.value) and str(path) in str(e.value), str(e.value)


def test_paint_on_a_busy_port_says_so(tmp_path, capsys):
    """It printed "open http://..." and exited with uvicorn's code 3."""
    from netdissect.app import toy

    run = toy.write_toy_run(tmp_path / "toy")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["paint", "--model", "netdissect.app.toy:toy_generator", "--run", str(run),
                     "--port", str(port)]) == 1
    out = capsys.readouterr()
    assert "open http" not in out.out
    assert f"port {port} on 127.0.0.1 is in use" in out.err and len(out.err.strip().splitlines()) == 1
