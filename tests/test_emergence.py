"""The bundled scene classifier still shows emergent object and part detectors.

zoo:scene-cnn (and the demo's zoo:scene-cnn-wide) never saw an object or part label, only scene labels; Network
Dissection of its conv5 on a probe set of a seed never used to train or choose a model
(tests/heldout.py; docs/world.md, "Seeds") must
still find units that detect objects and parts, and the layers must follow
the trend of the CVPR 2017 paper's Fig. 5 (colour and texture detectors in
the lowest layer, object and part detectors in the highest).
"""
import numpy as np
import pytest

from heldout import PROBE_SEED
from netdissect import dissect
from netdissect.data.synth.export import write_world


@pytest.fixture(scope="module")
def scene_cnn_run(tmp_path_factory):
    probe = write_world(tmp_path_factory.mktemp("probe") / "world", n=400, seed=PROBE_SEED, size=112, progress=False)
    return dissect("zoo:scene-cnn", ["conv1", "conv5"], probe, progress=False)


def _share(layer, categories):
    u = layer.units[layer.units["detector"]]
    return np.isin(u["category"], categories).mean()


def test_conv5_has_emergent_object_and_part_detectors(scene_cnn_run):
    conv5 = scene_cnn_run["conv5"]
    det = conv5.units[conv5.units["detector"]]
    concepts = set(det["label"][np.isin(det["category"], ["object", "part"])])
    assert len(concepts) >= 4, concepts
    assert conv5.unique_detectors["part"] >= 2 and conv5.unique_detectors["object"] >= 1


def test_layers_follow_the_papers_trend(scene_cnn_run):
    conv1, conv5 = scene_cnn_run["conv1"], scene_cnn_run["conv5"]
    assert _share(conv1, ["color", "texture"]) > _share(conv5, ["color", "texture"])
    assert _share(conv5, ["object", "part"]) > _share(conv1, ["object", "part"])


@pytest.fixture(scope="module")
def demo_probe(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("demo-probe") / "world", n=1000, seed=PROBE_SEED, size=112,
                       progress=False)


def _object_part_concepts(layer):
    det = layer.units[layer.units["detector"]]
    return set(det["label"][np.isin(det["category"], ["object", "part"])])


def test_demo_model_shows_emergence_beyond_doubt(demo_probe):
    """The issue's target for the demo's model, on a probe of the demo's size (1000 images, q = 0.005) of the
    held-out seed (the model was chosen on the demo's own probe):
    at least 12 distinct object/part detector concepts in conv5, at most half as many in its untrained
    twin (same architecture, ``--weights none --seed 0``)."""
    trained = _object_part_concepts(dissect("zoo:scene-cnn-wide", "conv5", demo_probe, progress=False)["conv5"])
    twin = _object_part_concepts(dissect("zoo:scene-cnn-wide", "conv5", demo_probe, weights="none", seed=0,
                                         progress=False)["conv5"])
    assert len(trained) >= 12, sorted(trained)
    assert len(twin) <= len(trained) / 2, (sorted(trained), sorted(twin))
