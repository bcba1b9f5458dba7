"""The bundled scene classifier still shows emergent object and part detectors.

zoo:scene-cnn never saw an object or part label, only scene labels; Network
Dissection of its conv5 on a probe set of a seed never used in training must
still find units that detect objects and parts, and the layers must follow
the trend of the CVPR 2017 paper's Fig. 5 (colour and texture detectors in
the lowest layer, object and part detectors in the highest).
"""
import numpy as np
import pytest

from netdissect import dissect
from netdissect.data.synth.export import write_world


@pytest.fixture(scope="module")
def scene_cnn_run(tmp_path_factory):
    probe = write_world(tmp_path_factory.mktemp("probe") / "world", n=400, seed=2017, size=112, progress=False)
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
