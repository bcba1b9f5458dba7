"""The rotation finding (CVPR 2017 Sec. 3.2) on the embedded world, with thresholds set before
measuring.

The paper: at alpha = 1 (a full random rotation of conv5 of AlexNet-Places) the number of unique
detectors falls by about 80%.  The issue's criterion for this project: it falls by at least half
on conv5 of the demo's model.  That model is now zoo:scene-cnn-wide (256 conv5 units; 22 unique
detectors in the unit basis of the seed-2017 probe it was chosen on, 9-10 after a full rotation; on the
held-out probe 16 and 10-12, so the first check is a strict expected failure).  On the older zoo:scene-cnn
(128 units, 11-12 unique detectors) it fell by only about a third, and the check was a strict
expected failure there (docs/experiments.md, "Random rotation", has both).  The second test
asserts only the direction (fewer unique detectors after a full rotation, on every seed); it was
written after the measurement, so it is a regression guard, not a preregistered check.
"""
import pytest

from heldout import PROBE_SEED, ROTATION_SEEDS
from netdissect.data.synth.export import write_world
from netdissect.experiments.sweep import rotation_sweep

SEEDS = ROTATION_SEEDS  # held out (docs/world.md, "Seeds"): the model was chosen on Q seeds 1-3 of probe 2017


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    probe = write_world(tmp_path_factory.mktemp("probe") / "world", n=400, seed=PROBE_SEED, size=112, progress=False)
    return rotation_sweep("zoo:scene-cnn-wide", "conv5", probe, alphas=[0, 1], seeds=SEEDS)


def _totals(table, alpha):
    return [r["total"] for r in table.rows if r["alpha"] == alpha]


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-07 on the held-out probe (400 images of seed 7001) and Q seeds 7021, 7022: 16 unique "
    "detectors in the unit basis, 10 and 12 after a full rotation (mean 11: a fall of 31%, not half); on the "
    "seed the model was chosen on (2017, Q 1-2) it was 22 and 9-10"))
def test_full_rotation_halves_unique_detectors(sweep):
    base = _totals(sweep, 0)[0]
    rotated = sum(_totals(sweep, 1)) / len(SEEDS)
    assert rotated <= base / 2, (base, _totals(sweep, 1))


def test_full_rotation_never_adds_unique_detectors(sweep):
    base = _totals(sweep, 0)[0]
    assert base >= 8  # the unit basis has its emergent detectors (test_emergence.py asks for the labels)
    assert all(t < base for t in _totals(sweep, 1)), (base, _totals(sweep, 1))
