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
    for chunk in np.array_split(np.arange(n), 23):  # many chunks: most arrive with the buffer full
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
    acts[40] = acts[3]  # a tie across parts and batches
    acts[41] = acts[3] + 10  # a unit's best image arrives last
    idx = torch.arange(50)
    whole = TopImages(5, 4, (3, 3))
    whole.add(acts, idx)
    parts = [TopImages(5, 4, (3, 3)) for _ in range(3)]
    for p, chunk in zip(parts, torch.tensor_split(idx, 3)):
        for batch in torch.split(chunk, [2, len(chunk) - 2]):  # batches smaller and larger than k
            p.add(acts[batch], batch)
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    peaks = acts.flatten(2).amax(2).T.numpy()  # (units, images)
    for u in range(5):
        order = sorted(range(50), key=lambda i: (-peaks[u, i], i))[:4]
        assert list(whole.images[u]) == order
        assert list(parts[2].images[u]) == order
        for top in (whole, parts[2]):
            np.testing.assert_array_equal(top.maps[u], acts[order, u].half().numpy())


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


def _masks(rng, B, C=4, pixels=25):
    m = rng.random((B, C, pixels)) > 0.6
    m[:, 1] = False  # unit 1 never active
    return m


def _pixel_counts(m, labels, K=3):
    """(area (B, C), inter (C, K)) of boolean masks m (B, C, pixels), densely."""
    B, C, S = m.shape
    cols = labels.planes.numpy().reshape(-1, B, S)
    inter = np.zeros((C, K))
    for c in range(K):
        on = (cols == c).any(0)  # (B, S)
        inter[:, c] = (m & on[:, None, :]).sum((0, 2))
    return torch.from_numpy(m.sum(2).astype(np.float64)), torch.from_numpy(inter)


def _counted(samples, m) -> IoUCounts:
    """IoUCounts of 4 units over ``samples`` with boolean masks ``m`` (images, units, pixels)."""
    from netdissect.stats import LabelBatch

    counts = IoUCounts(4, 3, 2)
    labels = LabelBatch.from_samples(samples, _concepts())
    counts.add(labels, *_pixel_counts(m, labels))
    return counts


def test_iou_counts_against_dense_formula():
    rng = np.random.default_rng(0)
    samples = _samples(rng, 6)
    m = _masks(rng, 6)
    iou = _counted(samples, m).iou(_Cons.primary)
    for k in range(4):
        for c in range(3):
            inter = union = 0
            for b, s in enumerate(samples):
                if not s.has_category[_Cons.primary[c]]:
                    continue
                lab = np.ones(25, bool) if (c + 1) in s.image_labels else (s.planes.reshape(2, -1) == c + 1).any(0)
                inter += (m[b, k] & lab).sum()
                union += (m[b, k] | lab).sum()
            assert iou[k, c] == pytest.approx(inter / union if union else 0.0, abs=1e-12)
    assert iou[1].sum() == 0


def test_iou_counts_merge_equals_single():
    rng = np.random.default_rng(1)
    samples = _samples(rng, 6)
    m = _masks(rng, 6)
    single = _counted(samples, m)
    a, b = (_counted(samples[rows], m[rows]) for rows in (slice(0, 2), slice(2, 6)))
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


@pytest.mark.parametrize("h,w,sh,sw", [(7, 7, 112, 112), (7, 5, 113, 57), (13, 13, 56, 56), (56, 56, 28, 28),
                                       (1, 1, 5, 5), (3, 4, 3, 4)])
@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "torch"])
def test_mask_label_counts_equal_dense(h, w, sh, sw, use_kernel):
    """UnitMasks.count (compiled CPU kernel, and the torch path the GPU uses) against full
    upsampling and dense counting, with several label planes, a concept repeated across
    planes (counted once per pixel) and unlabelled pixels."""
    import torch.nn.functional as F

    from netdissect.dissection import kernel
    from netdissect.dissection.masks import UnitMasks
    from netdissect.stats import LabelBatch

    assert kernel.available(), "numba is a dependency: the compiled kernel must build"
    B, C, K = 3, 6, 3
    g = torch.Generator().manual_seed(h * 100 + sw)
    acts = torch.randn(B, C, h, w, generator=g).half().float()  # cached values are float16
    acts[:, 5] = 0.25  # a constant unit
    thr = torch.quantile(acts.transpose(0, 1).reshape(C, -1).double(), 0.9, dim=1)
    thr[5] = 0.25
    rng = np.random.default_rng(h + sw)
    planes = rng.integers(0, 4, size=(B, 3, sh, sw)).astype(np.int32)  # 0 = no label
    planes[:, 2] = np.where(rng.random((B, sh, sw)) < 0.5, planes[:, 0], planes[:, 2])  # repeats
    from netdissect.data import LabelSample

    samples = [LabelSample(b, planes[b], np.zeros(0, np.int32), np.array([True, True])) for b in range(B)]
    labels = LabelBatch.from_samples(samples, _concepts())
    um = UnitMasks(h, w, sh, sw, chunk_pixels=2000)
    um.use_kernel = use_kernel
    area, inter = um.count(acts, thr, labels)

    full = F.interpolate(acts.double(), size=(sh, sw), mode="bilinear", align_corners=False)
    dense = (full > thr.view(1, C, 1, 1)).flatten(2).numpy()
    dense[:, 5] = False  # see test_sparse_unit_masks_equal_full_upsampling
    want_area, want_inter = _pixel_counts(dense, labels, K)
    assert want_inter.sum() > 0
    np.testing.assert_array_equal(area.numpy(), want_area.numpy())
    np.testing.assert_array_equal(inter.numpy(), want_inter.numpy())


def test_label_columns_widen_for_huge_catalogues():
    """Beyond 32,766 concepts the columns are int32; counts stay the same in both paths."""
    from netdissect.data import ConceptSet, LabelSample
    from netdissect.dissection import kernel
    from netdissect.dissection.masks import UnitMasks
    from netdissect.stats import LabelBatch

    n = 40000
    big = ConceptSet(numbers=np.arange(1, n + 1, dtype=np.int32), names=[f"c{i}" for i in range(n)],
                     categories=["x"], primary=np.zeros(n, np.int32))
    rng = np.random.default_rng(3)
    planes = rng.choice([0, 5, 39999, 40000], size=(2, 2, 16, 16)).astype(np.int32)
    samples = [LabelSample(b, planes[b], np.zeros(0, np.int32), np.array([True])) for b in range(2)]
    labels = LabelBatch.from_samples(samples, big)
    assert labels.planes.dtype == torch.int32
    assert labels.label_area[39999] == (planes == 40000).any(1).sum()
    acts = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    thr = torch.zeros(3, dtype=torch.float64)
    um = UnitMasks(4, 4, 16, 16)
    um.use_kernel = False
    want = um.count(acts, thr, labels)
    assert want[1][:, [4, 39998, 39999]].sum() > 0
    assert kernel.available()
    um.use_kernel = True
    got = um.count(acts, thr, labels)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
