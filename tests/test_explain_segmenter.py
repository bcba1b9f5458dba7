"""`netdissect explain` on segmenter runs: with the label planes `dissect --keep-cache` kept in
RUN/cache/labels it explains the run (no segmenter runs); without them it says what to rerun."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from netdissect import dissect, load
from netdissect.cli import main
from test_segment import _net
from test_trust_segmenter import band_folder

KW = dict(num_workers=0, batch_size=16, progress=False, normalize="none", topk=3, seg_size=(9, 7), quantile=0.05)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return band_folder(tmp_path_factory.mktemp("explainseg"))


@pytest.mark.parametrize("iou", ["broden", "pnas"])
def test_a_segmenter_run_with_kept_labels_is_explained(folder, tmp_path, iou):
    from netdissect.explain import run as xr

    run = tmp_path / "run"
    dissect(_net(), ["units"], images=folder / "img", segmenter=f"{folder}/seg.py:make", iou=iou,
            label_cache=tmp_path / "labels", out=run, keep_cache=True, **KW)
    shutil.rmtree(tmp_path / "labels")  # explain reads the labels the run kept, not the label cache
    assert main(["explain", str(run), "--length", "2", "--quiet"]) == 0
    lr = load(run)["units"]
    f = lr.formulas
    live = lr.units["iou"] > 0
    assert live.sum() >= 2  # not vacuous
    # the single-concept IoU from the swept labels is the run's IoU, unit by unit
    np.testing.assert_allclose(f["iou_single_best"], lr.units["iou"], atol=1e-6)
    assert (f["iou"] >= f["iou_single_best"]).all() and f["certified"].all()
    assert (f["formula"][live] != "").all()
    assert np.isfinite(f["p"][live]).all()
    assert json.loads((run / "units" / "formulas.json").read_text())["formulas.csv"]["signatures"] > 0
    # a single concept as the formula gets the single-label scorecard's p (the same null, computed again)
    from netdissect.explain.data import null_run
    from netdissect.explain.formula import Formula
    from netdissect.explain.null import scorecard

    summary = json.loads((run / "summary.json").read_text())
    _, source = xr._source(summary, run)
    st, thr = xr._activations(run, summary, "units", False)
    names = [str(n) for n in lr.concept_names]
    label = [str(x) for x in lr.units["label"]]
    fs = [Formula(names.index(label[k])) if live[k] else None for k in range(len(label))]
    try:
        sums = null_run(source, st.caches["units"], st.shapes["units"], thr, fs, progress=False)
    finally:
        st.close()
    prim = {g: i for i, g in enumerate(lr.categories)}
    cats = [str(c) for c in lr.concept_categories]
    p, _ = scorecard(sums, [0 if f is None else 1 << prim[cats[f.first]] for f in fs], live)
    ref = np.asarray(lr.scorecard["p"], float)
    assert np.isfinite(ref[live]).all() and (ref[live] < 1).any()
    np.testing.assert_allclose(p[live], ref[live], rtol=1e-4)


def test_a_segmenter_run_without_kept_labels_says_what_to_rerun(folder, tmp_path, capsys):
    run = tmp_path / "run"
    dissect(_net(), ["units"], images=folder / "img", segmenter=f"{folder}/seg.py:make",
            label_cache=tmp_path / "labels", out=run, **KW)
    assert main(["explain", str(run), "--length", "2"]) == 1
    err = capsys.readouterr().err
    assert "its labels come from a segmenter" in err and "--keep-cache" in err and "netdissect dissect --model" in err
    assert err.count("\n") == 1
