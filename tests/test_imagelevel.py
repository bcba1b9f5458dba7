"""Image-level labelling (issue 29): units without a spatial map (fc, pooled, NAME:cls) scored by the
AUROC of their activation for each concept's presence, Mann-Whitney p-values and BH q-values."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from torch import nn

from netdissect import dissect, load
from netdissect.cli import main
from netdissect.errors import LayerError
from netdissect.stats.ranks import mann_whitney, tie_term

HERE = Path(__file__)


# ---------------------------------------------------------------- the statistics
def slow_auroc(x, pos):
    """Plain pairs: share of (positive, negative) pairs the positive wins, ties one half."""
    P, N = x[pos], x[~pos]
    wins = sum((a > b) + 0.5 * (a == b) for a in P for b in N)
    return wins / (len(P) * len(N))


def test_auroc_and_p_against_plain_pairs_and_scipy():
    rng = np.random.default_rng(3)
    n = 37
    acts = np.stack([rng.integers(0, 5, n), rng.normal(size=n), np.r_[np.zeros(20), rng.integers(1, 3, 17)]],
                    1).astype(np.float32)  # many ties; no ties; a block of ties at 0 (a ReLU unit)
    present = rng.random((n, 6)) < 0.35
    present[:, 5] = False  # no positive image: untestable
    auroc, p = mann_whitney(acts, present)
    for u in range(3):
        for k in range(5):
            pos = present[:, k]
            assert auroc[u, k] == pytest.approx(slow_auroc(acts[:, u], pos), abs=1e-12)
            x = acts[:, u].astype(np.float64)  # (scipy keeps float32 inputs in float32)
            ref = mannwhitneyu(x[pos], x[~pos], alternative="greater", method="asymptotic",
                               use_continuity=True).pvalue
            assert p[u, k] == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert np.isnan(auroc[:, 5]).all() and np.isnan(p[:, 5]).all()
    # a constant unit: every value tied, AUROC exactly chance, p = 1
    a0, p0 = mann_whitney(np.ones((n, 1), np.float32), present[:, :5])
    assert (a0 == 0.5).all() and (p0 == 1).all()


def test_blocks_of_units_and_concepts_give_the_same_numbers(world, monkeypatch):
    """Scoring reads the cache in blocks of units and takes concepts in blocks: the result must not
    depend on the block sizes (1 unit and 2 concepts at a time here)."""
    import netdissect.stats.ranks as ranks

    rng = np.random.default_rng(1)
    acts = rng.integers(0, 6, (50, 4)).astype(np.float32)
    present = rng.random((50, 7)) < 0.4
    for a, b in zip(mann_whitney(acts, present), mann_whitney(acts, present, concept_block=2)):
        np.testing.assert_array_equal(a, b)
    whole = dissect(Planted(), ["fc"], str(world), **KW)["fc"]
    monkeypatch.setattr(ranks, "unit_blocks", lambda n, C, budget=0: [(u, u + 1) for u in range(C)])
    blocks = dissect(Planted(), ["fc"], str(world), **KW)["fc"]
    np.testing.assert_array_equal(whole.auroc, blocks.auroc)
    np.testing.assert_array_equal(whole.p, blocks.p)


def test_tie_term_against_counting():
    x = np.array([[1, 2], [1, 2], [1, 3], [4, 3], [5, 3], [5, 3]], np.float32)
    # column 0: groups of 3 and 2 -> (27 - 3) + (8 - 2); column 1: 2 and 4 -> 6 + 60
    np.testing.assert_array_equal(tie_term(np.sort(x, 0)), [30, 66])


# ---------------------------------------------------------------- a planted network
class Planted(nn.Module):
    """``conv``: a 1x1 conv map (red and blue channels); ``fc``: three image-level units: 0 the
    presence of the red square (any red pixel), 1 noise (a hash of the image's pixels), 2 dead (zero);
    ``pool``: the conv map globally max-pooled, (N, 2, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 2] = 1.0
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Identity()

    def forward(self, x):
        red = ((x[:, 0] > 0.8) & (x[:, 1] < 0.3) & (x[:, 2] < 0.3)).flatten(1).any(1).float()
        h = (x * torch.arange(1, x[0].numel() + 1, dtype=x.dtype).view(x[0].shape)).flatten(1).sum(1)
        noise = torch.frac(torch.sin(h) * 43758.5453)
        c = self.conv(x)
        return self.fc(torch.stack([red, noise, torch.zeros_like(red)], 1)) + self.pool(c).flatten(1)[:, :1] * 0


def planted():
    return Planted()


class SlowPlanted(Planted):
    def forward(self, x):
        import time

        time.sleep(0.1)  # time to kill it midway
        return super().forward(x)


def slow_planted():
    return SlowPlanted()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from broden_fixture import make_broden

    return make_broden(tmp_path_factory.mktemp("il") / "ds", n=80, size=32, seed=4)


KW = dict(normalize="none", num_workers=0, progress=False, batch_size=16, scorecard=False)  # (map layers only)


def test_planted_fc_unit_gets_its_concept_and_noise_is_no_detector(world):
    r = dissect(Planted(), ["conv", "fc", "pool"], str(world), **KW)
    fc = r["fc"]
    names = list(fc.concept_names)
    square = names.index("square")
    # concepts whose presence is the square's among the images counted for them (the lid is its top half;
    # street scenes are the images with a square): all get AUROC 1, the first in concept order labels it
    same = {"square", "lid", "street"}
    assert fc.method == "image-level" and r["pool"].method == "image-level"
    u = fc.units
    # thresholds fixed before looking (issue 29): the planted unit's AUROC 1, q < 0.01; noise and dead never
    assert u["label"][0] == "square" and u["auroc"][0] == 1.0 and fc.auroc[0, square] == 1.0
    assert {n for n, a in zip(names, fc.auroc[0]) if a == 1.0} == same
    assert u["q"][0] < 0.01 and u["detector"][0]
    assert not u["detector"][1] and not u["detector"][2]
    assert u["label"][2] == "" and fc.dead[2] and not fc.dead[0]
    # q-values: BH over every tested unit x concept pair of the layer
    from netdissect.trust.stats import bh

    tested = ~np.isnan(fc.p)
    np.testing.assert_allclose(fc.q, bh(np.nan_to_num(fc.p, nan=1.0), tested))
    # the pooled red channel (max over positions) tells the square too
    assert r["pool"].units["label"][0] in same and r["pool"].units["auroc"][0] == 1.0
    assert r["pool"].kind == "pooled" and fc.kind == "vector"
    # top images are those of highest activation: every top image of unit 0 holds the square
    tops = fc.top_images[0]
    assert all(fc.top_values[0] == 1.0) and (tops >= 0).all()
    # the map layer is untouched by its image-level neighbours: the same as dissected alone
    alone = dissect(Planted(), ["conv"], str(world), **KW)
    np.testing.assert_array_equal(alone["conv"].iou, r["conv"].iou)
    np.testing.assert_array_equal(alone["conv"].thresholds, r["conv"].thresholds)


def test_auroc_matches_a_reference_from_the_masks(world):
    """Presence read back from the dataset's label files by hand: AUROC and p as scipy gives them."""
    from netdissect.data import Broden

    r = dissect(Planted(), ["fc"], str(world), **KW)["fc"]
    ds = Broden(str(world))
    from netdissect.concepts import BrodenMasks

    src = BrodenMasks(ds)
    cons = src.concepts
    acts = np.zeros(len(ds))
    present = np.zeros((len(ds), len(cons)), bool)
    held = np.zeros((len(ds), len(cons.categories)), bool)
    net = Planted()
    from netdissect.probe import BrodenImages

    probe = BrodenImages(ds)
    for i in range(len(ds)):
        with torch.no_grad():
            acts[i] = float(net(probe.batch([probe.load(i)], "cpu"))[0, 1])  # the noise unit
        lab = src.load(i)
        nums = np.unique(np.concatenate([lab.planes.ravel(), np.asarray(lab.image_labels).ravel()]))
        idx = cons.index_of(nums)
        present[i, idx[idx >= 0]] = True
        held[i] = lab.has_category
    for k in range(len(cons)):
        rows = held[:, cons.primary[k]]
        pos = present[rows, k]
        if not pos.any() or pos.all():
            assert np.isnan(r.auroc[1, k])
            continue
        x = acts[rows]
        assert r.auroc[1, k] == pytest.approx(slow_auroc(x, pos), abs=1e-6)
        ref = mannwhitneyu(x[pos], x[~pos], alternative="greater", method="asymptotic").pvalue
        assert r.p[1, k] == pytest.approx(ref, rel=1e-5)


# ---------------------------------------------------------------- the run: CLI, files, load, report, resume
def test_dissect_fc_end_to_end_with_report(world, tmp_path):
    out = tmp_path / "run"
    assert main(["dissect", "--model", f"{HERE}:planted", "--layer", "conv", "--layer", "fc",
                 "--dataset", str(world), "--out", str(out), "--normalize", "none", "--workers", "0",
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "broden"  # a mixed run: the map layers' method; per layer its own
    assert summary["layers"]["fc"]["method"] == "image-level" and summary["layers"]["conv"]["method"] == "broden"
    info = summary["layers"]["fc"]
    assert info["kind"] == "vector" and info["shape"] == [3, 1, 1] and info["image_level"]["auroc_threshold"] == 0.9
    rows = list(csv.DictReader(open(out / "fc" / "units.csv")))
    assert list(rows[0])[:7] == ["unit", "label", "category", "auroc", "p", "q", "detector"]
    assert rows[0]["label"] == "square" and rows[0]["detector"] == "1" and rows[2]["label"] == ""
    assert not (out / "fc" / "iou.npz").exists() and (out / "fc" / "auroc.npz").exists()
    res = load(out)
    assert res["fc"].units["label"][0] == "square" and res["fc"].method == "image-level"
    # the report: the fc layer's cards say AUROC, and its layer is flagged to draw no region outline
    html = (out / "report" / "index.html").read_text()
    tag = '<script type="application/json" id="report-data">'
    data = json.loads(html.split(tag)[1].split("</script>")[0])
    names = [layer["name"] for layer in data["layers"]]
    assert data["layers"][names.index("fc")].get("img") == 1 and "img" not in data["layers"][names.index("conv")]
    assert [u["sc"] for u in data["units"] if u["layer"] == names.index("fc")] == ["AUROC"] * 3
    assert "if (L.img) return;" in html
    # compare draws the image-level layer beside the map layer
    assert main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0


def _break_and_resume(world, tmp_path, victim):
    root = shutil.copytree(world, tmp_path / "ds")
    hidden = tmp_path / "hidden"
    shutil.move(root / victim, hidden)
    out = tmp_path / "run"
    kw = dict(KW, batch_size=8, checkpoint_every=0)
    layers = ["conv", "fc", "pool"]
    with pytest.raises(Exception, match="not found"):
        dissect(Planted(), layers, root, out=out, **kw)
    with np.load(out / ".work" / "checkpoint.npz") as z:
        ckpt = {"phase": int(z["phase"]), "done": int(z["done"]), "files": list(z.files)}
    assert ckpt["done"] > 0
    shutil.move(hidden, root / victim)
    resumed = dissect(Planted(), layers, root, out=out, resume=True, **kw)
    clean = dissect(Planted(), layers, root, **kw)
    for name in ("fc", "pool"):
        np.testing.assert_array_equal(resumed[name].auroc, clean[name].auroc)
        np.testing.assert_array_equal(resumed[name].p, clean[name].p)
        np.testing.assert_array_equal(resumed[name].q, clean[name].q)
        np.testing.assert_array_equal(resumed[name].top_images, clean[name].top_images)
        back = load(out)[name].units
        for field in back.dtype.names:  # (NaN where no label: compared field by field)
            np.testing.assert_array_equal(back[field], clean[name].units[field])
    np.testing.assert_array_equal(resumed["conv"].iou, clean["conv"].iou)
    return ckpt


def test_resume_after_failure_while_reading_labels(world, tmp_path):
    """Killed in pass 2 with the presence bits of the rows read so far in the checkpoint."""
    with open(world / "index.csv") as f:
        row = list(csv.DictReader(f))[45]
    mask = next(v for k, v in row.items() if k not in ("image", "split", "ih", "iw", "sh", "sw") and v and ".png" in v)
    ckpt = _break_and_resume(world, tmp_path, "images/" + mask.split(";")[0])
    assert ckpt["phase"] == 2 and "presence/bits" in ckpt["files"]


def test_killed_process_resumes_to_the_same_result(world, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "netdissect", "dissect", "--model", f"{HERE}:slow_planted", "--layer", "conv",
            "--layer", "fc", "--dataset", str(world), "--out", str(out), "--batch-size", "4", "--workers", "0",
            "--checkpoint-every", "0", "--normalize", "none", "--no-scorecard", "--quiet", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    proc = subprocess.Popen(args, start_new_session=True, env=env)
    ckpt = out / ".work" / "checkpoint.npz"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if ckpt.exists() and int(np.load(ckpt)["done"]) >= 24:
                break
        except Exception:
            pass  # being replaced right now
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 24 <= int(np.load(ckpt)["done"]) < 80 and not (out / "summary.json").exists()
    assert subprocess.run(args + ["--resume"], capture_output=True, env=env).returncode == 0
    clean = dissect(Planted(), ["conv", "fc"], str(world), **KW)
    back = load(out)
    for key in ("auroc", "p", "q", "top_images", "top_values"):
        np.testing.assert_array_equal(getattr(back["fc"], key), getattr(clean["fc"], key))
    np.testing.assert_array_equal(back["conv"].iou, clean["conv"].iou)


def test_torchrun_two_gloo_ranks_give_the_result_of_one_process(world, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "netdissect", "dissect",
           "--model", f"{HERE}:planted", "--layer", "conv", "--layer", "fc", "--layer", "pool", "--dataset", str(world),
           "--out", str(out), "--normalize", "none", "--batch-size", "16", "--workers", "0", "--no-scorecard",
           "--quiet", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(HERE.parent.parent)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = load(out)
    assert ranks.summary["config"]["world_size"] == 2
    one = dissect(Planted(), ["conv", "fc", "pool"], str(world), **KW)
    for name in ("fc", "pool"):
        for key in ("auroc", "p", "q", "top_images", "top_values", "dead", "positives"):
            np.testing.assert_array_equal(getattr(ranks[name], key), getattr(one[name], key), err_msg=f"{name} {key}")
    np.testing.assert_array_equal(ranks["conv"].iou, one["conv"].iou)


# ---------------------------------------------------------------- bad inputs
class FiveD(nn.Module):
    def forward(self, x):
        return x[:, :, None]


def test_a_layer_that_is_neither_map_nor_vector_is_refused(world):
    net = nn.Sequential(FiveD())
    with pytest.raises(LayerError, match=r"outputs \(1, 3, 1, 32, 32\).*one vector per image"):
        dissect(net, ["0"], str(world), **KW)


def test_auroc_threshold_out_of_range(world):
    from netdissect.errors import NetDissectError

    with pytest.raises(NetDissectError, match=r"auroc_threshold \(--auroc-threshold\) must be in \[0.5, 1\]"):
        dissect(Planted(), ["fc"], str(world), auroc_threshold=0.3, **KW)


def test_torchrun_without_out_is_refused_for_image_level_layers(tmp_path):
    """Under torchrun without --out the ranks' caches are in temporary folders rank 0 cannot read."""
    from types import SimpleNamespace

    from netdissect.dissection import imagelevel
    from netdissect.errors import NetDissectError

    st = SimpleNamespace(work=tmp_path / "netdissect-tmp" / "rank0")
    with pytest.raises(NetDissectError, match="'fc' is labelled image-level, which under torchrun needs --out"):
        imagelevel._score_ranks(st, {"fc": ("vector", None)}, {}, 2, [])


def test_merged_chunks_give_the_result_of_one_process(world, tmp_path):
    kw = {k: v for k, v in KW.items() if k != "scorecard"}
    layers = ["conv", "fc", "pool"]
    for i in range(2):
        assert dissect(Planted(), layers, str(world), out=tmp_path / f"c{i}", chunk=f"{i}/2", **kw) is None
    assert main(["merge", str(tmp_path / "c0"), str(tmp_path / "c1"), "--out", str(tmp_path / "run"),
                 "--workers", "0", "--quiet", "--no-report"]) == 0
    merged = load(tmp_path / "run")
    one = dissect(Planted(), layers, str(world), **kw)
    assert merged.summary["layers"]["fc"]["method"] == "image-level" and merged.summary["method"] == "broden"
    for name in ("fc", "pool"):
        for key in ("auroc", "p", "q", "top_images", "top_values", "dead", "positives"):
            np.testing.assert_array_equal(getattr(merged[name], key), getattr(one[name], key), err_msg=f"{name} {key}")
    np.testing.assert_array_equal(merged["conv"].iou, one["conv"].iou)
    assert merged["conv"].scorecard is not None  # the map layer's scorecard, over both chunks

def test_segmenter_labels_an_fc_layer_in_the_same_run(world, tmp_path):
    """With ``--images DIR --segmenter`` (PNAS mode) presence comes from the segmenter's labels."""
    img = tmp_path / "img"
    img.mkdir()
    for p in sorted((world / "images").glob("img0[0-3]*.jpg")):
        shutil.copy(p, img / p.name)
    r = dissect(Planted(), ["conv", "fc"], images=img, segmenter="color", label_cache=tmp_path / "cache", **KW)
    assert r.summary["layers"]["fc"]["method"] == "image-level" and r.summary["method"] == "pnas"
    fc = r["fc"]
    red = list(fc.concept_names).index("red-c")
    assert fc.units["label"][0] == "red-c" and fc.auroc[0, red] == 1.0 and fc.units["q"][0] < 0.01
    assert fc.units["detector"][0] and not fc.units["detector"][1] and fc.units["label"][2] == ""


def test_score_rescores_the_map_layers_of_a_mixed_run(world, tmp_path):
    """`netdissect score` on a run kept with --keep-cache: map layers rescored, the image-level layer kept."""
    out = tmp_path / "run"
    dissect(Planted(), ["conv", "fc"], str(world), out=out, keep_cache=True, **dict(KW, scorecard=None))
    before = (out / "fc" / "units.csv").read_text()
    assert main(["score", str(out), "--fdr", "0.01"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"]["conv"]["method"] == "broden" and summary["layers"]["fc"]["method"] == "image-level"
    assert (out / "fc" / "units.csv").read_text() == before and load(out)["fc"].units["label"][0] == "square"


def test_science_logits_of_the_bundled_classifier_are_their_own_scenes(tmp_path_factory):
    """The bundled scene classifier's logit k, labelled image-level on held-out world images, has its
    own scene class k as best scene concept (AUROC > 0.95); its fc layer has more detectors by the
    default rule than its untrained twin's (measured on 1000 images first: docs/label-trust.md)."""
    from heldout import TRUST_PROBE_SEED
    from netdissect.data.synth.export import write_world
    from netdissect.data.synth.worlds import get_world

    root = tmp_path_factory.mktemp("ilworld") / "probe"
    write_world(root, n=160, seed=TRUST_PROBE_SEED, size=112, overwrite=True, progress=False)
    runs = {w: dissect("zoo:scene-cnn", ["classifier.4", "classifier.7"], root, weights=w, progress=False,
                       num_workers=0) for w in (None, "none")}
    logits = runs[None]["classifier.7"]
    scene = np.flatnonzero(logits.concept_categories == "scene")
    names = [str(n) for n in logits.concept_names[scene]]
    for k, cls in enumerate(get_world(1).scenes):
        best = int(np.nanargmax(logits.auroc[k, scene]))
        assert names[best] == getattr(cls, "name", cls) and logits.auroc[k, scene[best]] > 0.95
    fc = {w: int(r["classifier.4"].units["detector"].sum()) for w, r in runs.items()}
    assert fc[None] > fc["none"], fc


def test_explain_refuses_an_image_level_layer_and_defaults_to_the_map_layer(world, tmp_path):
    """Formulas are pooled over pixels: `explain --layer fc` says so in one line, and without --layer
    a run with one map layer beside image-level ones explains that map layer (not "choose one")."""
    from netdissect.explain.run import ExplainError, _layer_of

    out = tmp_path / "run"
    dissect(Planted(), ["conv", "fc"], str(world), out=out, **dict(KW, scorecard=False))
    res = load(out)
    with pytest.raises(ExplainError, match="image-level.*formulas .*map layers"):
        _layer_of(res, out, "fc")
    assert _layer_of(res, out, None) == "conv"
    assert main(["explain", str(out), "--layer", "fc", "--quiet"]) != 0
