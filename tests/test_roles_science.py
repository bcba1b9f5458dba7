"""Science check on the bundled classifier (PNAS 2020 Fig. 2 and Fig. 5), zoo:scene-cnn conv5 on world images.

Train split: world seed 7002, val: seed 7003 (``netdissect synth --split ... --seed``), 112 px: held-out
seeds (tests/heldout.py; docs/world.md, "Seeds"), not the `synth --split` defaults 3001/3002 on which
docs/roles.md measured its tables.  Thresholds are the issue's.
"""
import numpy as np
import pytest
import torch

from heldout import ROLES_TRAIN_SEED, ROLES_VAL_SEED
from netdissect.cli import main
from netdissect.roles.attacks import cw_l2, pgd
from netdissect.roles.run import run_ablation

N_TRAIN, N_VAL = 250, 200


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("science")
    for split, n, seed in (("train", N_TRAIN, ROLES_TRAIN_SEED), ("val", N_VAL, ROLES_VAL_SEED)):
        assert main(["synth", "--split", split, "--seed", str(seed), "--out", str(root / split), "--n", str(n),
                     "--quiet"]) == 0
    summary = run_ablation("zoo:scene-cnn", "conv5", root / "train", root / "val", root / "abl",
                           sizes=[4, 20], progress=False, figures=False)
    import csv
    rem = {(r["class"], r["mode"], int(r["n"])): (float(r["balanced_accuracy"]), float(r["all_class_accuracy"]))
           for r in csv.DictReader(open(root / "abl" / "removal.csv"))}
    return root, summary, rem


def test_removing_a_class_s_units(ablation):
    _, s, rem = ablation
    classes, base = s["classes"], s["baseline_val"]
    drop_cls = np.array([base["balanced_accuracy"][c] - rem[(c, "most_important", 20)][0] for c in classes])
    drop_all = np.array([base["all_class_accuracy"] - rem[(c, "most_important", 20)][1] for c in classes])
    # all-class accuracy drops much less than the class's own accuracy
    assert drop_cls.mean() > 2 * drop_all.mean(), (drop_cls, drop_all)
    # keeping only the 20 leaves the class well above chance
    kept = np.array([rem[(c, "all_but_most_important", 20)][0] for c in classes])
    assert (kept >= 0.7).mean() >= 0.75, kept
    # removing the 20 most important costs the class at least 3 points of balanced accuracy on average
    assert drop_cls.mean() > 0.03, drop_cls


def test_the_ranking_matters(ablation):
    """The control: removing each class's 20 least important units (the other end of its ranking) costs the
    class less than removing its 20 most important (before issue 32 a comment claimed this; nothing ran it)."""
    from netdissect.roles.core import Evaluator, removal_curves
    from netdissect.roles.data import load_labelled
    from netdissect.roles.run import load_classifier

    root, s, rem = ablation
    classes, base = s["classes"], s["baseline_val"]
    model, prep, names, size = load_classifier("zoo:scene-cnn", None, None, None)
    assert names == classes
    ev = Evaluator(model, "conv5", prep, progress=False)
    images, y, _, _ = load_labelled(root / "val", classes, size, progress=False)
    order = np.load(root / "abl" / "importance.npz")["ranking"]
    least = removal_curves(ev, ev.activations(images), y, len(classes), np.ascontiguousarray(order[:, ::-1]), [20],
                           images)
    at_least = {classes[c]: ba for c, mode, n, ba, _ in least if mode == "most_important" and n == 20}
    drop_most = np.array([base["balanced_accuracy"][c] - rem[(c, "most_important", 20)][0] for c in classes])
    drop_least = np.array([base["balanced_accuracy"][c] - at_least[c] for c in classes])
    assert drop_most.mean() > drop_least.mean(), (drop_most, drop_least)


@pytest.mark.xfail(strict=True, reason="measured: zoo:scene-cnn conv5 (128 units, 8 classes) is redundant; "
                   "removing 20 units brings only night_city to chance (docs/roles.md, seeds 3001/3002; it fails "
                   "on the held-out seeds 7002/7003 as well)")
def test_twenty_units_bring_most_classes_to_chance(ablation):
    _, s, rem = ablation
    at = np.array([rem[(c, "most_important", 20)][0] for c in s["classes"]])
    assert (at <= 0.65).mean() > 0.5, at


def test_adversarial_moves_the_important_units(ablation, tmp_path):
    root, _, _ = ablation
    out = tmp_path / "adv"
    assert main(["adversarial", "--model", "zoo:scene-cnn", "--layer", "conv5", "--ablation", str(root / "abl"),
                 "--val", str(root / "val"), "--attack", "pgd", "--eps", "0.2", "--steps", "12",
                 "--targets", "forest,office", "--n", "20", "--out", str(out), "--quiet"]) == 0
    import csv
    groups = {"target": [], "source": [], "other": []}
    for r in csv.DictReader(open(out / "unit_changes.csv")):
        groups[r["group"]].append(float(r["change"]))
    st = {g: (np.mean(v), 2.58 * np.std(v, ddof=1) / np.sqrt(len(v)),
              np.mean(np.abs(v)), 2.58 * np.std(np.abs(v), ddof=1) / np.sqrt(len(v))) for g, v in groups.items()}
    assert len(groups["target"]) >= 40, st
    assert st["target"][0] - st["target"][1] > 0, st                  # the target's units increase
    # the other units rise (99% interval above zero); the source's units fall: below zero on average and, 99%
    # apart, below the other units (their own interval may still reach zero at this sample size: measured on the
    # held-out seeds, source -0.14 +- 1.23, other 1.58 +- 0.19, target 9.96 +- 1.12)
    assert st["other"][0] - st["other"][1] > 0, st
    assert st["source"][0] < 0 and st["source"][0] + st["source"][1] < st["other"][0] - st["other"][1], st
    for g in ("target", "source"):                                    # both move more than the others (99% apart)
        assert st[g][2] - st[g][3] > st["other"][2] + st["other"][3], (g, st)


def test_attacks_are_targeted_and_bounded():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(6, 3, 2, 2)
    t = (net(x).argmax(1) + 1) % 3
    adv = pgd(net, x, t, eps=0.5, alpha=0.05, steps=60)
    assert (adv - x).abs().max() <= 0.5 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (net(adv).argmax(1) == t).float().mean() > 0.5
    cw = cw_l2(net, x, t, binary_steps=3, steps=80, lr=0.05, initial_const=1.0)
    ok = net(cw).argmax(1) == t
    assert ok.float().mean() > 0.5 and cw.min() >= 0 and cw.max() <= 1
    # unchanged where it failed; successful ones are no farther than the PGD ones reaching the target
    assert torch.equal(cw[~ok], x[~ok])
