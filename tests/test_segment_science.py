"""Science check of segmenter labels (issue 10, docs/segmenters.md): zoo:scene-cnn conv5 on a world
probe set of the held-out seed (tests/heldout.py: never used to train or choose a model), dissected with the ground-truth masks
(--iou pnas) and with zoo:world-seg+color (no mask read).  About a minute; it runs in the suite
(a science check that does not run checks nothing)."""
import collections

import numpy as np
import pytest

from heldout import PROBE_SEED
from netdissect import dissect
from netdissect.data.synth.export import write_world


def test_segmenter_labels_agree_with_ground_truth(tmp_path):
    probe = write_world(tmp_path / "world", n=400, seed=PROBE_SEED, size=112, progress=False)
    gt = dissect("zoo:scene-cnn", ["conv5"], probe, iou="pnas", progress=False)["conv5"].units
    seg = dissect("zoo:scene-cnn", ["conv5"], probe, segmenter="zoo:world-seg+color",
                  label_cache=tmp_path / "cache", progress=False)["conv5"].units
    both = gt["detector"] & seg["detector"]
    nameable = both & ~np.isin(gt["category"], ["scene", "texture"])  # what a segmenter can name
    same = (gt["label"] == seg["label"])
    print("confusion", collections.Counter(zip(gt["label"][both], seg["label"][both])).most_common())
    print(f"both {both.sum()}, same {same[both].mean():.3f}; nameable {nameable.sum()}, same {same[nameable].mean():.3f}")
    assert both.sum() >= 40
    assert same[nameable].mean() >= 0.75
