"""Streaming statistics against exact batch results."""
import numpy as np
import pytest
import torch

from netdissect.stats import IoUCounts, TopImages, TopQuantile


@pytest.mark.parametrize("q", [0.005, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("n", [1, 7, 200, 1999])
def test_top_quantile_is_exact(q, n):
    rng = np.random.default_rng(n)
    data = rng.standard_normal((3, n)).astype(np.float32)
    data[1] = np.round(data[1] * 4) / 4  # many ties
    tq = TopQuantile(3, q, total=n)
    for chunk in np.array_split(np.arange(n), 5):
        tq.add(torch.from_numpy(data[:, chunk]))
    expected = np.quantile(data.astype(np.float64), 1 - q, axis=1)
    np.testing.assert_array_equal(tq.threshold(), expected)


def test_top_quantile_merge_and_state_roundtrip():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((4, 3000)).astype(np.float32)
    a, b = TopQuantile(4, 0.01, total=3000), TopQuantile(4, 0.01, total=3000)
    a.add(torch.from_numpy(data[:, :1234]))
    b.add(torch.from_numpy(data[:, 1234:]))
    c = TopQuantile(4, 0.01, total=1).load_state_dict(a.state_dict())
    c.merge(b)
    np.testing.assert_array_equal(c.threshold(), np.quantile(data.astype(np.float64), 0.99, axis=1))
    assert c.count == 3000


def test_top_quantile_memory_is_q_times_total():
    tq = TopQuantile(2, 0.005, total=100_000)
    for _ in range(10):
        tq.add(torch.randn(2, 10_000))
    assert tq.top.shape[1] <= 0.005 * 100_000 + 2


def test_top_quantile_rejects_more_than_total():
    tq = TopQuantile(1, 0.1, total=5)
    with pytest.raises(ValueError, match="declared total"):
        tq.add(torch.zeros(1, 6))


def test_top_images_streaming_equals_batch_and_merges():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(50, 5, 3, 3, generator=g)
    acts[7] = acts[8]  # a tie: lower image index must win
    idx = torch.arange(50)
    whole = TopImages(5, 4, (3, 3))
    whole.add(acts, idx)
    parts = [TopImages(5, 4, (3, 3)) for _ in range(3)]
    for p, chunk in zip(parts, torch.tensor_split(idx, 3)):
        p.add(acts[chunk], chunk)
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    peaks = acts.flatten(2).amax(2).T.numpy()  # (units, images)
    for u in range(5):
        order = sorted(range(50), key=lambda i: (-peaks[u, i], i))[:4]
        assert list(whole.images[u]) == order
        assert list(parts[2].images[u]) == order
        np.testing.assert_array_equal(whole.maps[u, 0], acts[order[0], u].half().numpy())


def test_iou_counts_merge_equals_single():
    from netdissect.stats import ConceptMasks

    class Cons:
        primary = np.array([0, 0, 1])
        numbers = np.array([1, 2, 3])

        def index_of(self, n):
            n = np.asarray(n)
            return np.where((n >= 1) & (n <= 3), n - 1, -1)

    rng = np.random.default_rng(0)
    single, a, b = (IoUCounts(4, 3, 2) for _ in range(3))
    for i in range(6):
        planes = rng.integers(0, 4, size=(1, 5, 5)).astype(np.int32)
        cm = ConceptMasks.from_planes(planes, np.array([3] if i % 2 else [], np.int32), np.array([True, i % 2 == 1]), Cons())
        units = torch.tensor([0, 2])
        masks = torch.from_numpy(rng.random((2, 25)) > 0.5)
        single.add(units, masks, cm)
        (a if i < 3 else b).add(units, masks, cm)
    a.merge(b)
    np.testing.assert_array_equal(a.iou(Cons.primary), single.iou(Cons.primary))
    assert single.iou(Cons.primary)[1].sum() == 0  # unit 1 never active
