"""Q and Q^alpha: uniformly random rotations of SO(C) and the geodesic from I to Q."""
import numpy as np
import pytest

from netdissect.errors import NetDissectError
from netdissect.experiments.rotation import check_alphas, random_rotation, rotation_power

SIZES = [1, 2, 3, 7, 64, 128]


@pytest.mark.parametrize("C", SIZES)
def test_random_rotation_is_in_SO_C(C):
    Q = random_rotation(C, seed=5)
    assert Q.shape == (C, C)
    np.testing.assert_allclose(Q @ Q.T, np.eye(C), atol=1e-12)
    assert np.linalg.det(Q) == pytest.approx(1.0, abs=1e-9)


def test_random_rotation_is_seeded_and_varies():
    a, b, c = random_rotation(16, 1), random_rotation(16, 1), random_rotation(16, 2)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_random_rotation_is_uniform_first_moments():
    # Haar measure: E[Q] = 0 and E[Q_ij^2] = 1/C (tolerances from the spread of 400 draws, set beforehand)
    C, n = 4, 400
    Qs = np.stack([random_rotation(C, s) for s in range(n)])
    assert np.abs(Qs.mean(0)).max() < 0.15
    np.testing.assert_allclose((Qs ** 2).mean(0), 1 / C, atol=0.06)


@pytest.mark.parametrize("C", SIZES)
def test_power_endpoints(C):
    Q = random_rotation(C, seed=3)
    assert np.array_equal(rotation_power(Q, 0), np.eye(C))
    assert np.array_equal(rotation_power(Q, 1), Q)
    np.testing.assert_allclose(rotation_power(Q, 1 - 1e-12), Q, atol=1e-9)  # the Schur path reaches Q too
    np.testing.assert_allclose(rotation_power(Q, 1e-12), np.eye(C), atol=1e-9)


@pytest.mark.parametrize("C", SIZES)
@pytest.mark.parametrize("a,b", [(0.2, 0.3), (0.5, 0.5), (0.25, 0.7), (0.1, 0.9)])
def test_powers_add(C, a, b):
    Q = random_rotation(C, seed=11)
    np.testing.assert_allclose(rotation_power(Q, a) @ rotation_power(Q, b), rotation_power(Q, a + b), atol=1e-10)


@pytest.mark.parametrize("C", SIZES)
@pytest.mark.parametrize("alpha", [0.1, 0.37, 0.5, 0.9])
def test_powers_are_rotations(C, alpha):
    P = rotation_power(random_rotation(C, seed=7), alpha)
    np.testing.assert_allclose(P @ P.T, np.eye(C), atol=1e-12)
    assert np.linalg.det(P) == pytest.approx(1.0, abs=1e-9)


def test_power_handles_a_half_turn():
    # eigenvalues -1 (a pair of 1 x 1 Schur blocks): the geodesic turns by pi
    Q = np.diag([-1.0, -1.0, 1.0])
    H = rotation_power(Q, 0.5)
    np.testing.assert_allclose(H @ H, Q, atol=1e-12)
    np.testing.assert_allclose(H @ H.T, np.eye(3), atol=1e-12)


def test_power_refuses_non_rotations():
    with pytest.raises(NetDissectError, match="reflection"):
        rotation_power(np.diag([-1.0, 1.0]), 0.5)
    with pytest.raises(NetDissectError, match="orthogonal"):
        rotation_power(np.ones((3, 3)), 0.5)
    with pytest.raises(NetDissectError, match="square"):
        rotation_power(np.ones((3, 2)), 0.5)
    with pytest.raises(NetDissectError, match="positive"):
        random_rotation(0)


def test_alphas_are_checked():
    assert check_alphas("1,0, 0.5,0.5") == [0.0, 0.5, 1.0]
    for bad, msg in [("", "no alphas"), ("a,b", "numbers"), ("0,1.5", r"\[0, 1\]"), ([-0.1], r"\[0, 1\]")]:
        with pytest.raises(NetDissectError, match=msg):
            check_alphas(bad)
