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


def _concepts():
    from netdissect.data import ConceptSet

    return ConceptSet(numbers=np.array([1, 2, 3], np.int32), names=["a", "b", "c"], categories=["x", "y"],
                      primary=np.array([0, 0, 1], np.int32))


class _Cons:
    primary = np.array([0, 0, 1])


def _samples(rng, n):
    from netdissect.data import LabelSample

    return [LabelSample(i, rng.integers(0, 3, size=(2, 5, 5)).astype(np.int32),
                        np.array([3] if i % 2 else [], np.int32), np.array([True, i % 2 == 1]))
            for i in range(n)]


def _hits(rng, B, C=4, pixels=25):
    from netdissect.dissection.masks import Hits

    m = torch.from_numpy(rng.random((B, C, pixels)) > 0.6)
    m[:, 1] = False  # unit 1 never active
    b, k, p = m.nonzero().unbind(1)
    return Hits(m.sum(2).double(), b, k, p), m


def test_iou_counts_against_dense_formula():
    from netdissect.stats import LabelBatch

    rng = np.random.default_rng(0)
    samples = _samples(rng, 6)
    hits, m = _hits(rng, 6)
    counts = IoUCounts(4, 3, 2)
    counts.add(LabelBatch.from_samples(samples, _concepts()), hits)
    iou = counts.iou(_Cons.primary)
    for k in range(4):
        for c in range(3):
            inter = union = 0
            for b, s in enumerate(samples):
                if not s.has_category[_Cons.primary[c]]:
                    continue
                lab = np.ones(25, bool) if (c + 1) in s.image_labels else (s.planes.reshape(2, -1) == c + 1).any(0)
                inter += (m[b, k].numpy() & lab).sum()
                union += (m[b, k].numpy() | lab).sum()
            assert iou[k, c] == pytest.approx(inter / union if union else 0.0, abs=1e-12)
    assert iou[1].sum() == 0


def test_iou_counts_merge_equals_single():
    from netdissect.stats import LabelBatch

    rng = np.random.default_rng(1)
    samples = _samples(rng, 6)
    hits, m = _hits(rng, 6)
    single = IoUCounts(4, 3, 2)
    single.add(LabelBatch.from_samples(samples, _concepts()), hits)
    a, b = IoUCounts(4, 3, 2), IoUCounts(4, 3, 2)
    from netdissect.dissection.masks import Hits

    for part, rows in ((a, slice(0, 2)), (b, slice(2, 6))):
        mm = m[rows]
        ib, ik, ip = mm.nonzero().unbind(1)
        part.add(LabelBatch.from_samples(samples[rows], _concepts()), Hits(mm.sum(2).double(), ib, ik, ip))
    restored = IoUCounts(4, 3, 2).load_state_dict(a.state_dict())
    restored.merge(b)
    np.testing.assert_array_equal(restored.iou(_Cons.primary), single.iou(_Cons.primary))


@pytest.mark.parametrize("h,w,sh,sw", [(7, 7, 112, 112), (7, 5, 113, 57), (13, 13, 56, 56), (56, 56, 28, 28),
                                       (1, 1, 5, 5), (3, 4, 3, 4)])
def test_sparse_unit_masks_equal_full_upsampling(h, w, sh, sw):
    import torch.nn.functional as F

    from netdissect.dissection.masks import UnitMasks

    g = torch.Generator().manual_seed(h * 100 + sw)
    acts = torch.randn(3, 6, h, w, generator=g)
    acts[:, 5] = 0.25  # a constant unit
    thr = torch.quantile(acts.transpose(0, 1).reshape(6, -1).double(), 0.9, dim=1)
    thr[5] = 0.25
    hits = UnitMasks(h, w, sh, sw, chunk_pixels=2000).hits(acts, thr)  # several chunks
    full = F.interpolate(acts.double(), size=(sh, sw), mode="bilinear", align_corners=False)
    dense = (full > thr.view(1, 6, 1, 1)).flatten(2)
    # F.interpolate rounds a constant 0.25 up to 0.25000000000000006 at some pixels; a constant
    # unit must select nothing (a convex combination cannot exceed its inputs' max)
    dense[:, 5] = False
    got = torch.zeros_like(dense)
    got[hits.image, hits.unit, hits.pixel] = True
    assert torch.equal(got, dense)
    assert len(hits.pixel) == int(dense.sum())  # each pixel once
    np.testing.assert_array_equal(hits.area.numpy(), dense.sum(2).double().numpy())
