"""Science check of the label scorecard on the bundled demo classifier (issue 29; thresholds fixed
before looking): its trained units predict held-out images better than its untrained twin's, and
the FDR rule keeps far more of the trained network's detectors than of the twin's."""
from __future__ import annotations

import numpy as np
import pytest

from heldout import TRUST_PROBE_SEED
from netdissect import dissect


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    from netdissect.data.synth.export import write_world

    root = tmp_path_factory.mktemp("trustworld") / "probe"
    write_world(root, n=160, seed=TRUST_PROBE_SEED, size=112, overwrite=True, progress=False)
    return root


def test_trained_units_predict_held_out_images_better_than_the_untrained_twin(probe):
    runs = {w: dissect("zoo:scene-cnn-wide", "conv5", probe, weights=w, progress=False, num_workers=0,
                       scorecard=True)["conv5"] for w in (None, "none")}
    trained, twin = runs[None].scorecard_summary, runs["none"].scorecard_summary
    assert trained["mean_r_image"] > twin["mean_r_image"]
    assert trained["mean_r_pixel"] > twin["mean_r_pixel"]
    # the share of IoU-rule detectors that the FDR rule keeps
    keep = lambda s: s["detectors_fdr_rule"] / max(1, s["detectors_iou_rule"])  # noqa: E731
    assert keep(trained) > keep(twin)
    print({k: {f: s[f] for f in ("detectors_iou_rule", "detectors_fdr_rule", "mean_r_image", "mean_r_pixel",
                                  "median_stability_detectors")} for k, s in (("trained", trained), ("twin", twin))})
    assert np.isfinite(trained["mean_r_image"])
