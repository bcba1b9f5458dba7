"""The scorecard in a run: dissect writes it (units.csv, scorecard.npz, summary.json), the FDR
detector rule, `netdissect score` on a kept cache, and the errors (docs/label-trust.md)."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from nets import Tap, TappedColorUnits

from netdissect import dissect, load
from netdissect.cli import main
from netdissect.dissection.result import SCORECARD_COLUMNS
from netdissect.errors import NetDissectError
from netdissect.trust import ScorecardError


class PlantedUnits(TappedColorUnits):
    """TappedColorUnits' map (0 square, 1 disc, 2 wood, 3 dead, 4 grey, 5 striped) plus unit 6: noise
    that depends on nothing in the image (a random map per image, seeded by the image's pixel sum),
    exposed as the submodule ``tap``."""

    def __init__(self):
        super().__init__()
        self.tap = Tap()

    def forward(self, x):
        p = self.pool(x)
        f = self.features(p)
        grey = 1.0 - (p - 0.5).abs().sum(1, keepdim=True) * 4
        ramp = torch.linspace(0, 0.01, f.shape[-1])
        f = torch.cat([f[:, :4], grey, f[:, 5:] + ramp], 1)
        noise = []
        for img in x:
            g = torch.Generator().manual_seed(int(img.sum().item() * 1000) % (2 ** 31))
            noise.append(torch.rand(1, *f.shape[2:], generator=g))
        f = self.tap(torch.cat([f, torch.stack(noise)], 1))
        return f.mean((2, 3))


@pytest.fixture(scope="module")
def run(tmp_path_factory, broden_big):
    out = tmp_path_factory.mktemp("trustrun") / "run"
    model = PlantedUnits()
    result = dissect(model, "tap", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none",
                     out=out, keep_cache=True)
    return out, result


@pytest.fixture(scope="module")
def broden_big(tmp_path_factory):
    from broden_fixture import make_broden

    return make_broden(tmp_path_factory.mktemp("trustds") / "ds", n=120, size=32, seed=11)


def test_planted_detectors_are_significant_and_stable_noise_and_dead_never(run):
    """Thresholds fixed before looking (issue 29): planted detectors q < 0.01 and stability > 0.9;
    the noise unit and the dead unit are never detectors."""
    _, result = run
    lr = result["tap"]
    u, card = lr.units, lr.scorecard
    for k, concept in ((0, "square"), (1, "disc"), (2, "wood")):
        assert u["label"][k] == concept
        assert card["q"][k] < 0.01 and card["stability"][k] > 0.9, (k, card["q"][k], card["stability"][k])
        assert u["detector"][k]
    assert not u["detector"][3] and not u["detector"][6]
    assert card["q"][6] > 0.05 or u["iou"][6] <= 0.04


def test_units_csv_and_summary_carry_the_scorecard(run):
    out, result = run
    with open(out / "tap" / "units.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(c in rows[0] for c in SCORECARD_COLUMNS)
    lr = result["tap"]
    for k, row in enumerate(rows):
        assert row["detector"] == str(int(lr.units["detector"][k]))
        if row["q"]:
            assert float(row["q"]) == pytest.approx(lr.scorecard["q"][k], rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scorecard"]["computed"] and summary["scorecard"]["holdout"] == 0.2
    assert summary["method"] == "broden" and summary["layers"]["tap"]["method"] == "broden"
    s = summary["layers"]["tap"]["scorecard"]
    assert s["detectors_fdr_rule"] == summary["layers"]["tap"]["n_detectors"]
    assert s["detectors_iou_rule"] >= s["detectors_fdr_rule"]
    assert s["holdout"]["images_held_out"] == 24
    assert s["iou_check_max_diff"] < 1e-6  # the scorecard's counts give back pass 2's IoU
    # read back: the same verdicts and columns
    back = load(out)["tap"]
    assert (back.units["detector"] == lr.units["detector"]).all()
    np.testing.assert_allclose(back.scorecard["q"], lr.scorecard["q"])


def test_fdr_one_is_the_iou_rule(broden_big):
    r = dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none",
                fdr=1.0)
    u = r["tap"].units
    assert (u["detector"] == (u["iou"] > 0.04)).all()
    plain = dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False,
                    normalize="none", scorecard=False)
    assert plain.summary["scorecard"]["computed"] is False
    assert (plain["tap"].units["detector"] == u["detector"]).all()


def test_score_rewrites_a_run_from_its_kept_cache(run, tmp_path, capsys):
    out, result = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert main(["score", str(copy), "--fdr", "0.5", "--holdout", "0.3", "--seed", "4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "tap: detectors" in printed
    back = load(copy)
    assert back.summary["scorecard"]["fdr"] == 0.5 and back.summary["scorecard"]["seed"] == 4
    assert back["tap"].scorecard_summary["holdout"]["images_held_out"] == 36
    # the p-values do not depend on the split; q the same tests
    np.testing.assert_allclose(back["tap"].scorecard["p"], result["tap"].scorecard["p"], rtol=1e-9)


def test_score_without_a_cache_says_what_to_rerun(broden_big, tmp_path, capsys):
    out = tmp_path / "nocache"
    dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none",
            out=out, scorecard=False)
    assert main(["score", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has no activation cache" in err and "netdissect dissect --model" in err and "--dataset" in err
    assert err.count("\n") == 1


def test_too_few_images_is_one_clear_line(broden_big, tmp_path):
    with pytest.raises(ScorecardError, match="too few images for the scorecard"):
        dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none",
                limit=25, scorecard=True)
    # by default a probe too small for it gets no scorecard (and the IoU rule), said in summary.json
    small = dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False,
                    normalize="none", limit=25)
    assert small.summary["scorecard"]["computed"] is False
    assert "too few images" in small.summary["scorecard"]["why"]
    assert small["tap"].scorecard is None
    with pytest.raises(ScorecardError, match="--holdout must be"):
        dissect(PlantedUnits(), "tap", broden_big, num_workers=0, progress=False, normalize="none", holdout=1.5)
    with pytest.raises(ScorecardError, match="--fdr must be"):
        dissect(PlantedUnits(), "tap", broden_big, num_workers=0, progress=False, normalize="none", fdr=0)


def test_pnas_mode_runs_the_same_scorecard(broden_big):
    r = dissect(PlantedUnits(), "tap", broden_big, iou="pnas", quantile=0.08, num_workers=0, progress=False,
                normalize="none", scorecard=True)
    s = r["tap"].scorecard_summary
    assert s["iou_check_max_diff"] < 1e-6
    card = r["tap"].scorecard
    assert card["q"][0] < 0.01 and card["q"][1] < 0.01  # square and disc, pooled over every image


def test_robustness_experiment_counts_label_flips_under_noise(broden_big, tmp_path, capsys):
    from pathlib import Path

    spec = f"{Path(__file__).parent / 'nets.py'}:color_units"
    run = tmp_path / "run"
    dissect(spec, "units", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none", out=run)
    assert main(["experiment", "robustness", str(run), "--noise", "0.02", "--quiet", "--workers", "0"]) == 0
    rep = json.loads((run / "robustness" / "robustness.json").read_text())
    r = rep["layers"]["units"]
    assert r["detectors"] >= 3 and r["share_flipped"] is not None
    assert r["share_flipped"] <= 0.34  # the colour detectors keep their labels under small noise
    assert "published" in capsys.readouterr().out
    # strong noise (sigma 1) reaches the units: their IoU falls (the labels of these colour units hold)
    big = tmp_path / "big"
    assert main(["experiment", "robustness", str(run), "--noise", "1", "--quiet", "--workers", "0",
                 "--out", str(big)]) == 0
    strong = json.loads((big / "robustness.json").read_text())["layers"]["units"]
    assert strong["mean_iou_detectors_noisy"] < 0.8 * strong["mean_iou_detectors"]
    assert r["mean_iou_detectors_noisy"] > strong["mean_iou_detectors_noisy"]


def test_merged_chunks_give_the_scorecard_of_one_process(run, broden_big, tmp_path):
    from netdissect.dissection.chunks import merge_chunks

    _, one = run
    chunks = []
    for i in range(2):
        d = tmp_path / f"c{i}"
        torch.manual_seed(0)  # the same (unused) random head in both chunks: one model identity
        dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none",
                out=d, chunk=f"{i}/2")
        chunks.append(d)
    merged = merge_chunks(chunks, tmp_path / "merged", num_workers=0, progress=False)
    assert merged.summary["scorecard"]["computed"]
    a, b = one["tap"].scorecard, merged["tap"].scorecard
    for col in ("p", "q", "stability", "iou_lo", "iou_hi", "holdout_iou", "r_image", "r_pixel", "auprc"):
        np.testing.assert_allclose(np.asarray(b[col], float), np.asarray(a[col], float), rtol=1e-6, atol=1e-9,
                                   err_msg=col)
    assert list(b["holdout_label"]) == list(a["holdout_label"])
    assert (merged["tap"].units["detector"] == one["tap"].units["detector"]).all()


@pytest.mark.parametrize("option", [dict(fdr=0.01), dict(holdout=0.3), dict(scorecard=False), dict(keep_cache=True)])
def test_scorecard_options_a_chunk_would_ignore_are_refused(broden_big, tmp_path, option):
    # the merge scores the whole run with the defaults: a chunk's own settings would be silently dropped
    with pytest.raises(NetDissectError, match="do not apply to a chunk"):
        dissect(PlantedUnits(), "tap", broden_big, num_workers=0, progress=False, normalize="none",
                out=tmp_path / "c0", chunk="0/2", **option)
    assert not (tmp_path / "c0").exists()


def test_robustness_bad_inputs_are_one_line(run, capsys):
    out, _ = run
    assert main(["experiment", "robustness", str(out), "--noise", "0"]) == 1
    assert "--noise must be a positive standard deviation" in capsys.readouterr().err
    # a run of a module object (no spec to rebuild it from)
    assert main(["experiment", "robustness", str(out), "--noise", "0.02"]) == 1
    err = capsys.readouterr().err
    assert "cannot be rebuilt from its summary.json" in err and err.count("\n") == 1


def test_torchrun_two_gloo_ranks_give_the_scorecard_of_one_process(broden_big, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from nets import ElementwiseNet

    tests = Path(__file__).parent
    kw = dict(quantile=0.05, batch_size=8, num_workers=0, topk=3)
    one = dissect(ElementwiseNet(), ["units"], broden_big, progress=False, **kw)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "netdissect", "dissect",
           "--model", f"{tests}/nets.py:elementwise_net", "--layer", "units", "--dataset", str(broden_big),
           "--out", str(out), "--quantile", "0.05", "--batch-size", "8", "--workers", "0", "--topk", "3",
           "--quiet", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = load(out)
    assert ranks.summary["config"]["world_size"] == 2 and ranks.summary["scorecard"]["computed"]
    a, b = one["units"].scorecard, ranks["units"].scorecard
    for col in ("p", "q", "stability", "iou_lo", "iou_hi", "holdout_iou", "r_image", "r_pixel", "auprc"):
        np.testing.assert_allclose(np.asarray(b[col], float), np.asarray(a[col], float), rtol=1e-5, atol=1e-7,
                                   err_msg=col)
    assert (ranks["units"].units["detector"] == one["units"].units["detector"]).all()
    # every unit x concept test, not only the (here all strong) labels
    pa, pb = one["units"].scorecard_matrices["p"], ranks["units"].scorecard_matrices["p"]
    np.testing.assert_allclose(pb, pa, rtol=1e-4, atol=1e-7)
    assert ((pa > 0.01) & (pa < 0.9)).sum() >= 5


def test_compare_draws_the_scorecard_summaries_of_every_run(run, broden_big, tmp_path):
    """`compare` draws each layer's detectors with and without the FDR rule, median stability and
    mean held-out correlation: the figure's marks and compare.csv hold the runs' summary.json values;
    a run without a scorecard gets empty columns and a "none" mark."""
    import matplotlib

    from netdissect.report import compare
    from netdissect.report.charts import scorecard_summaries

    out, _ = run
    other = tmp_path / "other"
    dissect(PlantedUnits(), "tap", broden_big, quantile=0.2, num_workers=0, progress=False, normalize="none",
            out=other)
    plain = tmp_path / "plain"
    dissect(PlantedUnits(), "tap", broden_big, quantile=0.08, num_workers=0, progress=False, normalize="none",
            out=plain, scorecard=False)
    files = compare([out, other, plain], tmp_path / "cmp", labels=["A", "B", "C"])
    assert files["scorecard.png"].stat().st_size > 1000 and files["scorecard.svg"].is_file()
    cards = [json.loads((d / "summary.json").read_text())["layers"]["tap"].get("scorecard") for d in (out, other)]
    assert cards[0]["detectors_fdr_rule"] != cards[1]["detectors_fdr_rule"] or \
        cards[0]["mean_r_image"] != cards[1]["mean_r_image"]  # two different runs
    with open(files["compare.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    for row, card in zip(rows, cards):
        assert int(row["detectors_iou_rule"]) == card["detectors_iou_rule"]
        assert int(row["detectors_fdr_rule"]) == card["detectors_fdr_rule"]
        assert float(row["median_stability"]) == card["median_stability_detectors"]
        assert float(row["mean_r_image"]) == card["mean_r_image"]
        assert float(row["mean_r_pixel"]) == card["mean_r_pixel"]
    assert rows[2]["detectors_fdr_rule"] == "" and rows[2]["mean_r_image"] == ""
    # the marks drawn: bar heights (light: IoU rule, dark: FDR rule), stability bars, the r lines
    fig = scorecard_summaries([("A", "A", cards[0]), ("B", "B", cards[1]), ("C", "C", None)])
    try:
        det, stab, corr = fig.axes[:3]
        heights = [p.get_height() for p in det.patches if isinstance(p, matplotlib.patches.Rectangle)]
        assert heights == [cards[0]["detectors_iou_rule"], cards[0]["detectors_fdr_rule"],
                           cards[1]["detectors_iou_rule"], cards[1]["detectors_fdr_rule"]]
        assert [p.get_height() for p in stab.patches] == [c["median_stability_detectors"] for c in cards]
        lines = {ln.get_label(): ln.get_ydata() for ln in corr.lines}
        for tag, key in (("image-level r", "mean_r_image"), ("pixel-level r", "mean_r_pixel")):
            assert [lines[f"{r}: {tag}"][0] for r in "AB"] == [c[key] for c in cards]
            assert np.isnan(lines[f"C: {tag}"][0])
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
