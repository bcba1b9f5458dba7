"""The label scorecard of segmenter-labelled runs (issue 29): `dissect --segmenter` computes it (IoU
modes broden and pnas), and `netdissect score` recomputes it from the kept cache, reading the
segmenter's labels that --keep-cache kept beside the activations (no segmenter runs)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from netdissect import dissect, load
from netdissect.cli import main
from test_segment import SEGMENTER, _net

KW = dict(num_workers=0, batch_size=16, progress=False, normalize="none", topk=3, seg_size=(9, 7))
COLUMNS = ("p", "q", "stability", "iou_lo", "iou_hi", "holdout_iou", "r_image", "r_pixel", "auprc")


def band_folder(root):
    """``root`` with 60 small images (enough for the scorecard's default holdout) in ``img/a`` and the
    band segmenter in ``seg.py``; shared with test_explain_segmenter.py."""
    rng = np.random.default_rng(8)
    (root / "img" / "a").mkdir(parents=True)
    for k in range(60):
        img = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((40, 32), Image.BILINEAR)
        img.save(root / "img" / "a" / f"{k:02d}.png")
    (root / "seg.py").write_text(SEGMENTER)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return band_folder(tmp_path_factory.mktemp("trustseg"))


@pytest.mark.parametrize("iou, q", [("broden", 0.05), ("pnas", 0.01)])
def test_segmenter_run_has_a_scorecard_and_score_rebuilds_it(folder, tmp_path, iou, q):
    run = tmp_path / "run"
    one = dissect(_net(), ["units"], images=folder / "img", segmenter=f"{folder}/seg.py:make", iou=iou, quantile=q,
                  label_cache=tmp_path / "labels", out=run, keep_cache=True, **KW)
    assert one.summary["scorecard"]["computed"], one.summary["scorecard"]
    s = one["units"].scorecard_summary
    assert s["iou_check_max_diff"] < 1e-6  # the scorecard's counts give back pass 2's IoU
    assert s["tests"] > 0 and s["holdout"]["images_held_out"] == 12
    assert (run / "cache" / "labels").is_dir()
    shutil.rmtree(tmp_path / "labels")  # score reads the labels the run kept, not the label cache
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["score", str(copy), "--quiet"]) == 0
    back = load(copy)
    assert back.summary["scorecard"]["by"] == "netdissect score"
    a, b = one["units"].scorecard, back["units"].scorecard
    for col in COLUMNS:
        np.testing.assert_allclose(np.asarray(b[col], float), np.asarray(a[col], float), rtol=1e-9, atol=1e-12,
                                   err_msg=col)
    assert list(b["holdout_label"]) == list(a["holdout_label"])
    assert np.isfinite(np.asarray(a["p"], float)).sum() >= 3  # not vacuous


def test_score_on_a_segmenter_run_without_kept_labels_says_what_to_rerun(folder, tmp_path, capsys):
    run = tmp_path / "run"
    dissect(_net(), ["units"], images=folder / "img", segmenter=f"{folder}/seg.py:make", quantile=0.05,
            label_cache=tmp_path / "labels", out=run, keep_cache=True, **KW)
    info = json.loads((run / "cache" / "cache.json").read_text())
    del info["segmenter"]  # as an older netdissect kept it
    (run / "cache" / "cache.json").write_text(json.dumps(info))
    assert main(["score", str(run)]) == 1
    err = capsys.readouterr().err
    assert "no copy of the segmenter's labels" in err and "netdissect dissect --model" in err
    assert err.count("\n") == 1


def test_merged_segmenter_chunks_give_the_scorecard_of_one_process(folder, tmp_path):
    """Two --chunk folders of a segmenter run, merged (labels read from the copies the chunks kept,
    their caches one chunk at a time): the scorecard of one process."""
    from netdissect.dissection.chunks import merge_chunks

    def run(**kw):
        return dissect(_net(), ["units"], images=folder / "img", segmenter=f"{folder}/seg.py:make", quantile=0.05,
                       **KW, **kw)

    one = run(label_cache=tmp_path / "labels")
    dirs = [tmp_path / f"c{i}" for i in range(2)]
    for i in (1, 0):
        assert run(out=dirs[i], chunk=f"{i}/2", label_cache=tmp_path / f"labels{i}") is None
    shutil.rmtree(tmp_path / "labels0")
    merged = merge_chunks(dirs, tmp_path / "merged", num_workers=0, progress=False)
    assert merged.summary["scorecard"]["computed"] and merged.summary["scorecard"]["by"] == "netdissect merge"
    a, b = one["units"].scorecard, merged["units"].scorecard
    for col in COLUMNS:
        np.testing.assert_allclose(np.asarray(b[col], float), np.asarray(a[col], float), rtol=1e-9, atol=1e-12,
                                   err_msg=col)
    np.testing.assert_allclose(merged["units"].scorecard_matrices["p"], one["units"].scorecard_matrices["p"],
                               rtol=1e-6, atol=1e-9)
    assert (merged["units"].units["detector"] == one["units"].units["detector"]).all()
