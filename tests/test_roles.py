"""Unit importance in a classifier: metrics, the fast path equals naive ablation, resume, outputs, errors."""
import csv
import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from netdissect.cli import main
from netdissect.errors import NetDissectError
from netdissect.roles.core import (Checkpoint, Evaluator, balanced_accuracy, best_thresholds, head_after,
                                   importance_table, ranking, removal_curves, threshold_ba)


def test_balanced_accuracy_by_hand():
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    ba, rec, tnr, acc = balanced_accuracy(pred, truth, 4)
    # class 0: TP 1 of 2, negatives 4 of which 1 predicted 0 -> TNR 3/4
    assert rec[0] == 0.5 and tnr[0] == 0.75 and ba[0] == 0.625
    assert rec[1] == 1.0 and tnr[1] == 0.75
    assert np.isnan(ba[3]) and acc == 4 / 6
    many = balanced_accuracy(np.stack([pred, truth]), truth, 4)
    assert np.allclose(many[0][0][:3], ba[:3]) and np.allclose(many[0][1][:3], 1.0)


def test_best_threshold_is_brute_force_optimum():
    rng = np.random.default_rng(0)
    peak = rng.normal(size=(60, 5)).round(1)
    pos = rng.random(60) < 0.3
    peak[pos, 0] += 2
    thr, ba = best_thresholds(peak, pos)
    for u in range(5):
        cands = np.concatenate([[peak[:, u].min() - 1], np.unique(peak[:, u])])
        brute = max(threshold_ba(peak[:, [u]], pos, np.array([t]))[0] for t in cands)
        assert ba[u] == pytest.approx(brute)
        assert threshold_ba(peak[:, [u]], pos, thr[[u]])[0] == pytest.approx(ba[u])
    assert ba[0] > 0.8


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2),
                                      nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class _Residual(nn.Module):  # the rest is not its children in order
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.fc((self.b(h) + h).mean((2, 3)))


def _data(n=40, size=16, k=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, k, n)


@pytest.mark.parametrize("layer", ["features", "features.1", "features.3"])
def test_fast_importance_equals_naive_full_model_ablation(layer):
    net = _Net().eval()
    imgs, y = _data()
    fast = Evaluator(net, layer, batch_size=16, progress=False)
    acts = fast.activations(imgs)
    assert fast.mode == "head"
    naive = Evaluator(net, layer, batch_size=16, progress=False, fast=False)
    assert naive.mode == "full"
    f = importance_table(fast, acts, y, 5, imgs, chunk=5)
    n = importance_table(naive, acts, y, 5, imgs)
    assert np.array_equal(f[3], n[3])                 # every prediction of every ablation
    assert np.array_equal(f[1], n[1]) and np.allclose(f[2], n[2], atol=1e-9)
    assert np.abs(f[1]).sum() > 0 or np.abs(f[2]).sum() > 0
    sets = [[0, 1, 2], list(range(acts.shape[1]))]
    assert np.array_equal(fast.predict(acts, sets), naive.predict(acts, sets, imgs))


def test_resnet_layer3_head_and_fallbacks():
    torch.manual_seed(0)
    r = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    imgs, y = _data(12, 32, 4)
    ev = Evaluator(r, "layer3", progress=False)
    acts = ev.activations(imgs)
    assert ev.mode == "head"
    naive = Evaluator(r, "layer3", progress=False, fast=False)
    assert np.array_equal(ev.predict(acts, [[], [1], [5, 7]]), naive.predict(acts, [[], [1], [5, 7]], imgs))
    assert head_after(r, "layer3.0") is not None                   # blocks of a Sequential run in order
    assert head_after(r, "layer3.0.conv1") is None                 # inside a residual block
    assert head_after(r, "layer4.1.relu#2") is None
    res = Evaluator(_Residual().eval(), "a", progress=False)
    res.activations(_data(4, 8, 3)[0])
    assert res.mode == "full" and "do not reproduce" in res.why_full


def test_checkpoint_resumes_without_recomputing(tmp_path):
    net = _Net().eval()
    imgs, y = _data()
    ev = Evaluator(net, "features", batch_size=16, progress=False)
    acts = ev.activations(imgs)
    ck = Checkpoint(tmp_path / "c.npz", "k1")
    full = importance_table(ev, acts, y, 5, checkpoint=ck, chunk=4)
    preds, logp, done = ck.load(13, 40, 5)
    done[5:] = False
    preds[5:] = -1
    ck.save(preds, logp, done)
    calls = []
    orig = ev.predict
    ev.predict = lambda a, sets, *args, **kw: calls.append(len(sets)) or orig(a, sets, *args, **kw)
    again = importance_table(ev, acts, y, 5, checkpoint=ck, chunk=4)
    assert sum(calls) == 8 and np.array_equal(again[1], full[1])
    assert Checkpoint(tmp_path / "c.npz", "other key").load(13, 40, 5) is None


def test_ranking_and_removal():
    imp = np.array([[0.1, 0.0], [0.3, 0.0], [0.1, 0.0]])
    tb = np.array([[0.0, 0.1], [0.0, 0.0], [0.5, 0.2]])
    order = ranking(imp, tb)
    assert order[0].tolist() == [1, 2, 0] and order[1].tolist() == [2, 0, 1]
    net = _Net().eval()
    imgs, y = _data()
    ev = Evaluator(net, "features", batch_size=16, progress=False)
    acts = ev.activations(imgs)
    order = np.tile(np.arange(12), (5, 1))
    rows = removal_curves(ev, acts, y, 5, order, [1, 12, 99])
    assert {(r[1], r[2]) for r in rows if r[0] == 0} == {(m, n) for m in ("most_important", "all_but_most_important")
                                                         for n in (1, 12)}
    alloff = [r for r in rows if r[1] == "most_important" and r[2] == 12]
    assert len({r[4] for r in alloff}) == 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    for split, n in (("train", 60), ("val", 50)):
        assert main(["synth", "--split", split, "--out", str(root / split), "--n", str(n), "--quiet"]) == 0
    return root


def test_synth_split_disjoint_seeds(world):
    rows = {s: list(csv.DictReader(open(world / s / "index.csv"))) for s in ("train", "val")}
    assert {r["split"] for r in rows["train"]} == {"train"} and {r["split"] for r in rows["val"]} == {"val"}
    assert "synth_3001_" in rows["train"][0]["image"] and "synth_3002_" in rows["val"][0]["image"]


def test_ablate_cli_outputs(world, tmp_path, capsys):
    out = tmp_path / "abl"
    args = ["ablate", "--model", "zoo:scene-cnn", "--layer", "conv4", "--train", str(world / "train"),
            "--val", str(world / "val"), "--out", str(out), "--sizes", "1,4", "--limit", "40", "--quiet"]
    assert main(args) == 0
    with np.load(out / "importance.npz") as z:
        assert z["train"].shape == (96, 8) and z["val"].shape == (96, 8) and len(z["classes"]) == 8
    base = list(csv.DictReader(open(out / "baseline.csv")))
    assert [r["class"] for r in base][:2] == ["street-s", "forest-s"] and base[-1]["class"] == "all"
    rem = list(csv.DictReader(open(out / "removal.csv")))
    assert {r["n"] for r in rem} == {"1", "4", "96"} and len(rem) == 8 * 3 * 2
    uc = list(csv.DictReader(open(out / "unit_classifiers.csv")))
    assert len(uc) == 8 * 96 and set(uc[0]) == {"class", "unit", "threshold", "train_balanced_accuracy",
                                                "val_balanced_accuracy"}
    summary = json.loads((out / "roles.json").read_text())
    assert summary["mode"] == "head" and summary["train"]["images"] == 40
    assert (out / "figures" / "removal.svg").exists() and "conv4" in (out / "index.html").read_text()
    # a second run resumes from the checkpoint and writes the same table
    first = np.load(out / "importance.npz")["train"]
    assert main(args) == 0
    assert np.array_equal(np.load(out / "importance.npz")["train"], first)


def test_errors_are_one_line(world, tmp_path, capsys):
    unl = tmp_path / "tex"
    # a Broden folder without class labels: texture images only
    main(["synth", "--out", str(unl), "--n", "3", "--quiet"])
    idx = unl / "index.csv"
    lines = idx.read_text().splitlines()
    head = lines[0].split(",")
    col = head.index("scene")
    idx.write_text("\n".join([lines[0]] + [",".join(v if i != col else "" for i, v in enumerate(ln.split(",")))
                                           for ln in lines[1:]]) + "\n")
    base = ["ablate", "--model", "zoo:scene-cnn", "--train", str(world / "train"), "--out", str(tmp_path / "o"),
            "--quiet"]
    for extra, msg in ((["--layer", "conv5", "--val", str(unl)], "no row has a class label"),
                       (["--layer", "conv9", "--val", str(world / "val")], "no layer 'conv9'"),
                       (["--layer", "conv5", "--val", str(world / "val"), "--classes", "a,b"], "classes")):
        assert main(base + extra) != 0
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    with pytest.raises(NetDissectError, match="--val-every"):
        from netdissect.cli import synth
        ns = type("A", (), dict(out=str(tmp_path / "x"), n=2, size=32, split="val", val_every=3, seed=None,
                                overwrite=False, format="jpg", quiet=True))
        synth.run(ns)


def test_non_finite_activations_are_refused():
    from netdissect.errors import ActivationError

    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 16 * 16, 3))
    with torch.no_grad():
        net[0].bias.fill_(float("nan"))
    with pytest.raises(ActivationError, match="NaN or infinite activations on images 0..3"):
        Evaluator(net, "0", progress=False).activations(_data(4, 16, 3)[0])


def test_dissection_of_another_model_is_refused(world, tmp_path, capsys):
    """--dissection must be a run of these very weights: a same-width layer of another model (the
    baseline's second seed) would label the units with the wrong concepts without any error."""
    run = tmp_path / "seed1"
    assert main(["dissect", "--model", "zoo:scene-cnn-seed1", "--layer", "conv4", "--dataset", str(world / "val"),
                 "--out", str(run), "--no-report", "--quiet"]) == 0
    base = ["ablate", "--layer", "conv4", "--train", str(world / "train"), "--val", str(world / "val"),
            "--dissection", str(run), "--sizes", "1", "--limit", "20", "--quiet"]
    assert main(base + ["--model", "zoo:scene-cnn", "--out", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err.strip()
    assert "was made with zoo:scene-cnn-seed1" in err and "not with zoo:scene-cnn" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a" / "cache").exists()  # refused before any ablation was computed
    assert main(base + ["--model", "zoo:scene-cnn-seed1", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "roles.json").read_text())["unit_labels"]
