"""The rotation finding (CVPR 2017 Sec. 3.2) on the embedded world, with thresholds set before
measuring.

The paper: at alpha = 1 (a full random rotation of conv5 of AlexNet-Places) the number of unique
detectors falls by about 80%.  The issue's criterion for this project: it falls by at least half
on zoo:scene-cnn conv5.  Measured (docs/experiments.md) it falls by about a third: the check is
kept, marked as an expected failure (strict, so that a model for which it holds turns it into an
ordinary test).  The second test asserts only the direction (fewer unique detectors after a
full rotation, on every seed); it was written after the measurement, so it is a regression
guard, not a preregistered check.
"""
import pytest

from netdissect.data.synth.export import write_world
from netdissect.experiments.sweep import rotation_sweep

SEEDS = [1, 2]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    probe = write_world(tmp_path_factory.mktemp("probe") / "world", n=400, seed=2017, size=112, progress=False)
    return rotation_sweep("zoo:scene-cnn", "conv5", probe, alphas=[0, 1], seeds=SEEDS)


def _totals(table, alpha):
    return [r["total"] for r in table.rows if r["alpha"] == alpha]


@pytest.mark.xfail(strict=True, reason="measured on the embedded world: about a third fewer unique detectors "
                   "at alpha = 1, not half (docs/experiments.md, 'Random rotation')")
def test_full_rotation_halves_unique_detectors(sweep):
    base = _totals(sweep, 0)[0]
    rotated = sum(_totals(sweep, 1)) / len(SEEDS)
    assert rotated <= base / 2, (base, _totals(sweep, 1))


def test_full_rotation_never_adds_unique_detectors(sweep):
    base = _totals(sweep, 0)[0]
    assert base >= 8  # the unit basis has its emergent detectors (test_emergence.py asks for the labels)
    assert all(t < base for t in _totals(sweep, 1)), (base, _totals(sweep, 1))
