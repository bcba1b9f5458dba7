"""PNAS thresholds (netdissect.dissection.pnas): the compiled exact and bounded selections and the
torch path, against a plain slow reference (torch's bilinear interpolate in float64 + np.sort),
on random maps with ties and negative values; the masks they select; the memory plan."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from netdissect.dissection import kernel, pnas
from netdissect.dissection.cache import ActivationCache
from netdissect.dissection.masks import UnitMasks

# numba is a declared dependency: skip only where it is not installed at all (never on a kernel that
# fails to compile: test_the_pnas_kernels_build fails then, and the other tests run the torch path)
needs_numba = pytest.mark.skipif(kernel.numba_missing(), reason="numba is not installed")


@needs_numba
def test_the_pnas_kernels_build(recwarn):
    """A compile error in the PNAS kernels fails here (before issue 32 it turned 47 tests into skips)."""
    assert kernel.pnas_kernels() is not None, [str(w.message) for w in recwarn]
    assert kernel.available(), [str(w.message) for w in recwarn]


class _Group:
    """One process, or several simulated ranks whose gather returns every rank's object in order."""

    def __init__(self):
        self.parts = None

    def gather(self, obj):
        return [obj]


def _state(tmp_path, acts: np.ndarray, q: float, sh: int, sw: int, memory: int = 256 << 20, skipped=(),
           rows=None, device="cpu", name="L"):
    N = len(acts)
    lo, hi = rows if rows is not None else (0, N)
    cache = ActivationCache(tmp_path / f"{name}{lo}.acts", hi - lo, acts.shape[1:], acts.dtype)
    cache.write(0, acts[lo:hi])
    st = SimpleNamespace(probe=_Probe(N), skipped={i: "bad" for i in skipped}, lo=lo, hi=hi,
                         source=SimpleNamespace(mask_sizes=lambda used: [(sh, sw)] * len(used)),
                         shapes={name: acts.shape[1:]}, caches={name: cache}, device=torch.device(device),
                         cfg=SimpleNamespace(quantile=q, quantile_memory=memory))
    return st


class _Probe:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def describe(self):
        return "probe"


def _bilinear64(a: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """(N, C, h, w) -> float64 (N, C, sh, sw), align_corners=False, PyTorch's formula: source position
    ``scale * (dst + 0.5) - 0.5`` (``scale = in / out``, clamped at 0), weights ``l1 = src - i0`` and
    ``1 - l1``, the x-interpolation of the two source rows first."""
    def axis(n, m):
        src = np.maximum((np.arange(m) + 0.5) * (n / m) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n - 1)
        l1 = src - i0
        return i0, np.minimum(i0 + 1, n - 1), 1.0 - l1, l1

    y0, y1, h0, h1 = axis(a.shape[2], sh)
    x0, x1, w0, w1 = axis(a.shape[3], sw)
    a = a.astype(np.float64)
    top = w0 * a[:, :, y0][..., x0] + w1 * a[:, :, y0][..., x1]
    bot = w0 * a[:, :, y1][..., x0] + w1 * a[:, :, y1][..., x1]
    return h0[:, None] * top + h1[:, None] * bot


def _reference(acts: np.ndarray, q: float, sh: int, sw: int, skipped=()) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (C,), upsampled maps (N, C, sh, sw)): the upsampled maps in float64, then numpy's
    quantile, checked against its definition (sorted values, linear interpolation between two order
    statistics).

    The upsampling is torch's bilinear interpolate (align_corners=False) in float64 where its values
    are bit for bit those of PyTorch's documented formula (:func:`_bilinear64`, the one pass 2 counts
    with): when the scale h / sh is a power of two (7 -> 28, 7 -> 56: the usual layers).  At other
    ratios torch's CPU kernel rounds differently in the last bits (~1e-14 relative); there the maps are
    :func:`_bilinear64`'s, checked close to torch's."""
    h, w = acts.shape[2:]
    up = torch.nn.functional.interpolate(torch.from_numpy(acts.astype(np.float64)), size=(sh, sw), mode="bilinear",
                                         align_corners=False).numpy()
    mine = _bilinear64(acts, sh, sw)
    if all(r > 0 and math.log2(r).is_integer() for r in (sh / h, sw / w)):
        np.testing.assert_array_equal(mine, up)
    else:
        np.testing.assert_allclose(mine, up, rtol=1e-12, atol=1e-12)
        up = mine
    keep = [i for i in range(len(acts)) if i not in set(skipped)]
    vals = up[keep].transpose(1, 0, 2, 3).reshape(acts.shape[1], -1)
    n = vals.shape[1]
    pos = (n - 1) * (1 - q)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    srt = np.sort(vals, axis=1)
    thr = np.quantile(vals, 1 - q, axis=1)
    # the definition, by hand, agrees with numpy's quantile (the two order statistics bracket it)
    assert np.all(srt[:, lo] <= thr) and np.all(thr <= srt[:, hi])
    return thr, up


def _maps(seed: int, N=23, C=5, h=5, w=4, dtype=np.float32) -> np.ndarray:
    """Random maps with many ties (a coarse grid of values, zeros as after a ReLU), negative values,
    a constant (dead) unit and a unit of one value repeated except a few peaks."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, C, h, w)).astype(np.float32)
    a[:, 0] = np.round(a[:, 0] * 2) / 2  # ties on a grid, negative values
    a[:, 1] = np.maximum(a[:, 1], 0)  # ReLU: ties at zero
    if C > 2:
        a[:, 2] = -1.5  # dead unit, negative
    if C > 3:
        a[:, 3] = 0.25
        a[rng.integers(0, N, 3), 3, 1, 1] = 7.0
    if C > 4:
        a[:, 4] = -np.abs(a[:, 4]) * 1e-3  # all negative, small
    return a.astype(dtype)


def _same(got, want):
    np.testing.assert_array_equal(got, want)


@needs_numba
@pytest.mark.parametrize("q", [0.01, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("size", [(20, 16), (40, 32), (15, 12), (5, 4), (9, 7), (3, 2)])
def test_exact_mode_equals_reference(tmp_path, q, size):
    acts = _maps(1)
    st = _state(tmp_path, acts, q, *size)
    plan = pnas.pnas_plan(5, q, len(acts) * size[0] * size[1], st.cfg.quantile_memory)
    assert plan["mode"] == "exact"
    thr, _ = _reference(acts, q, *size)
    _same(pnas.pnas_thresholds(st, "L", _Group()), thr)


@needs_numba
@pytest.mark.parametrize("q", [0.01, 0.2])
def test_exact_mode_small_buffer_many_cuts(tmp_path, q, monkeypatch):
    """Rows cut many times (small keep, many images) and cached blocks of one image each."""
    acts = _maps(2, N=60, C=4, h=3, w=3)
    monkeypatch.setattr(pnas, "READ_BYTES", 4 * 4 * 9)
    st = _state(tmp_path, acts, q, 11, 11)
    thr, _ = _reference(acts, q, 11, 11)
    _same(pnas.pnas_thresholds(st, "L", _Group()), thr)


def _smallest_exact(units, q, total):
    lo, hi = 1, 1 << 40
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            ok = pnas.pnas_plan(units, q, total, mid)["mode"] == "exact"
        except ValueError:
            ok = False
        lo, hi = (lo, mid) if ok else (mid + 1, hi)
    return lo


@needs_numba
@pytest.mark.parametrize("q", [0.01, 0.05, 0.5])
@pytest.mark.parametrize("shrink", [1, 8, 64])
def test_bounded_mode_equals_reference(tmp_path, q, shrink):
    """Below the exact plan's memory: radix passes on the float64 keys (and a collecting pass)."""
    acts = _maps(3, N=30)
    sh, sw = 13, 10
    total = len(acts) * sh * sw
    memory = max((_smallest_exact(5, q, total) - 1) // shrink, 5000)
    plan = pnas.pnas_plan(5, q, total, memory)
    assert plan["mode"] == "bounded" and plan["bound"] <= memory
    st = _state(tmp_path, acts, q, sh, sw, memory=memory)
    thr, _ = _reference(acts, q, sh, sw)
    _same(pnas.pnas_thresholds(st, "L", _Group()), thr)


@needs_numba
def test_bounded_mode_all_64_bits(tmp_path, monkeypatch):
    """No collecting pass: the keys' bits alone (4 bits a pass, 16 passes) give the thresholds."""
    acts = _maps(4, N=9)
    st = _state(tmp_path, acts, 0.1, 7, 6, memory=1)
    monkeypatch.setattr(pnas, "pnas_plan", lambda *a, **k: {"mode": "bounded", "keep": 0, "bits": 4, "collect": 0,
                                                              "read_bytes": 1 << 20, "bound": 0})
    thr, _ = _reference(acts, 0.1, 7, 6)
    _same(pnas.pnas_thresholds(st, "L", _Group()), thr)


@needs_numba
def test_skipped_rows_float16_cache_and_ranks(tmp_path):
    """Skipped rows are left out; a float16 cache is read as the counting reads it (as float32); two
    ranks' shards merge to the thresholds of the whole, in both modes."""
    acts = _maps(5, N=20).astype(np.float16)
    skipped = (3, 11, 12)
    thr, _ = _reference(acts.astype(np.float32), 0.05, 9, 8, skipped=skipped)
    _same(pnas.pnas_thresholds(_state(tmp_path, acts, 0.05, 9, 8, skipped=skipped), "L", _Group()), thr)

    import threading

    for memory in (256 << 20, 20000):

        box: dict = {}
        barrier = threading.Barrier(2)
        shared: list = [None, None]

        class Rank:
            def __init__(self, r):
                self.r = r

            def gather(self, obj):
                shared[self.r] = obj
                barrier.wait()
                out = list(shared)
                barrier.wait()
                return out

        def go(r, rows):
            box[r] = pnas.pnas_thresholds(_state(tmp_path, acts, 0.05, 9, 8, skipped=skipped, rows=rows,
                                                 memory=memory, name=f"r{r}"), f"r{r}", Rank(r))

        ts = [threading.Thread(target=go, args=(0, (0, 8))), threading.Thread(target=go, args=(1, (8, 20)))]
        for t_ in ts:
            t_.start()
        for t_ in ts:
            t_.join()
        _same(box[0], thr)
        _same(box[1], thr)


def test_torch_path_equals_reference(tmp_path, monkeypatch):
    """The path a GPU (or a machine without numba) takes."""
    monkeypatch.setattr(kernel, "pnas_kernels", lambda: None)
    acts = _maps(6)
    thr, _ = _reference(acts, 0.05, 9, 7)
    _same(pnas.pnas_thresholds(_state(tmp_path, acts, 0.05, 9, 7), "L", _Group()), thr)


@needs_numba
@pytest.mark.parametrize("memory", [256 << 20, 6000])
def test_masks_at_the_thresholds_equal_reference_counts(tmp_path, memory):
    """The thresholds select, in pass 2's counting, exactly the reference's pixels S_k > T_k: areas
    and label intersections (hence IoU) equal, ties at the thresholds included."""
    acts = _maps(7, N=12)
    sh, sw = 10, 9
    st = _state(tmp_path, acts, 0.1, sh, sw, memory=memory)
    thr = pnas.pnas_thresholds(st, "L", _Group())
    ref_thr, up = _reference(acts, 0.1, sh, sw)
    _same(thr, ref_thr)
    K = 4
    rng = np.random.default_rng(0)
    planes = rng.integers(0, K + 1, (len(acts), sh, sw))  # K: no concept
    um = UnitMasks(acts.shape[2], acts.shape[3], sh, sw)
    lb = SimpleNamespace(planes=torch.from_numpy(planes.reshape(1, -1).astype(np.int16)), pixels=sh * sw,
                         label_area=torch.zeros(K))
    area, inter = um.count(torch.from_numpy(acts), torch.from_numpy(thr), lb)
    m = up > ref_thr[None, :, None, None]
    want_area = m.sum((2, 3))
    want_inter = np.stack([[(m[:, k] & (planes == c)).sum() for c in range(K)] for k in range(acts.shape[1])])
    np.testing.assert_array_equal(area.numpy(), want_area)
    np.testing.assert_array_equal(inter.numpy(), want_inter)
    lab = np.stack([(planes == c) for c in range(K)], 1)  # (N, K, sh, sw)
    union = np.stack([[(m[:, k] | lab[:, c]).sum() for c in range(K)] for k in range(acts.shape[1])])
    iou = want_inter / np.maximum(union, 1)
    got_union = want_area.sum(0)[:, None] + lab.sum((0, 2, 3))[None, :] - inter.numpy()
    np.testing.assert_array_equal(inter.numpy() / np.maximum(got_union, 1), iou)
    assert (want_area > 0).any() and (want_area == 0).any()  # dead units select nothing; others do


def test_plan_memory_bound():
    """The plan's bound is within the budget in both modes, bounded mode below the exact buffer's size,
    and a budget too small for the counts is refused with the figure to give."""
    units, q, total = 512, 0.01, 63_000 * 112 * 112  # Broden-size: the exact buffer would take ~250 GB
    for memory in (1 << 20, 64 << 20, 256 << 20, 1 << 30):
        plan = pnas.pnas_plan(units, q, total, memory)
        assert plan["mode"] == "bounded" and plan["bound"] <= memory
    small = pnas.pnas_plan(8, 0.01, 1000 * 56 * 56, 256 << 20)
    assert small["mode"] == "exact" and small["bound"] <= 256 << 20
    with pytest.raises(ValueError, match="at least"):
        pnas.pnas_plan(units, q, total, 1000)


@needs_numba
@pytest.mark.parametrize("mode", ["exact", "bounded"])
def test_selection_holds_its_bound(tmp_path, mode):
    """What the selection allocates (numpy reports its arrays to tracemalloc) stays within the plan's
    bound: the buffer, or the counts and collected values, and the block of activations read."""
    import tracemalloc

    acts = _maps(8, N=40, C=3)
    sh, sw = 16, 16
    total = len(acts) * sh * sw
    memory = _smallest_exact(3, 0.05, total)
    memory = memory if mode == "exact" else memory // 4
    plan = pnas.pnas_plan(3, 0.05, total, memory)
    assert plan["mode"] == mode
    st = _state(tmp_path, acts, 0.05, sh, sw, memory=memory)
    want = _reference(acts, 0.05, sh, sw)[0]
    tracemalloc.start()
    try:
        thr = pnas.pnas_thresholds(st, "L", _Group())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _same(thr, want)
    assert peak <= plan["bound"] + (64 << 10)  # + Python's own small objects


@needs_numba
def test_dissect_in_bounded_mode_equals_reference(tmp_path, monkeypatch):
    """Through the engine: a --quantile-memory too small for the exact buffer gives the same result
    as the default budget, and the plain reference's (tests/reference.py, as test_segment checks)."""
    from test_segment import _acts, _net, _run
    from netdissect.probe.folder import ImageFolder
    from netdissect.segment import load_segmenter
    from reference import reference_pnas

    root = tmp_path / "seg"
    _make_folder(root)
    q, size, memory = 0.2, (9, 7), 8000
    probe = ImageFolder(root / "img")
    assert pnas.pnas_plan(6, q, len(probe) * size[0] * size[1], memory)["mode"] == "bounded"
    modes = []
    for mode in ("_exact_finish", "_bounded"):  # (the exact mode's scan runs beside pass 1: pnas.ExactStream)
        real = getattr(pnas, mode)
        monkeypatch.setattr(pnas, mode, lambda *a, _real=real, _mode=mode, **k: modes.append(_mode) or _real(*a, **k))
    small = _run(root, tmp_path / "a", quantile=q, seg_size=size, quantile_memory=memory)
    big = _run(root, tmp_path / "b", quantile=q, seg_size=size)
    assert modes == ["_bounded", "_exact_finish"]
    seg = load_segmenter(f"{root}/seg.py:make")
    labels = [seg.segment(probe.batch([probe.load(i)], "cpu"), size)[0].numpy() for i in range(len(probe))]
    thr, iou = reference_pnas(_acts(_net(), probe, "units2"), labels, list(range(1, 6)), q)
    for res in (small, big):
        assert np.array_equal(res["units2"].thresholds, thr.astype(np.float32))
        np.testing.assert_allclose(res["units2"].iou, iou, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(small["units2"].iou, big["units2"].iou)
    assert (iou > 0).sum() >= 5


def _make_folder(root):
    """test_segment's image folder and segmenter file, in ``root``."""
    from PIL import Image

    from test_segment import SEGMENTER

    rng = np.random.default_rng(3)
    for k in range(14):
        cls = "cats" if k % 2 else "dogs"
        (root / "img" / cls).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(base).resize((32 + 8 * (k % 3), 32), Image.BILINEAR).save(root / "img" / cls / f"{k}.png")
    (root / "seg.py").write_text(SEGMENTER)


@needs_numba
@pytest.mark.parametrize("size", [(11, 11), (9, 13), (28, 28)])
def test_rounding_outside_the_cells_range(tmp_path, size):
    """Constant maps and constant rows of cells, thresholds at exactly a cell's value: thresholds and
    pass 2's counted masks both equal the full upsampled maps' (the pruning keeps a rounding margin)."""
    rng = np.random.default_rng(11)
    N, C, h, w = 16, 4, 7, 7
    acts = np.empty((N, C, h, w), np.float32)
    acts[:, 0] = rng.normal(size=(N, 1, 1)).astype(np.float32) * 3  # constant per image
    acts[:, 1] = np.float32(0.1 + rng.random())  # constant over the whole layer: a dead unit
    acts[:, 2] = np.float32(-1 / 3)
    acts[:, 3] = rng.normal(size=(N, h, w)).astype(np.float32)
    acts[:, 3, :, 3:] = acts[:, 3, :, 2:3]  # constant rows of cells: ties among blocks
    sh, sw = size
    for memory in (256 << 20, 4000):
        for q in (0.01, 0.3, 0.6):
            st = _state(tmp_path, acts, q, sh, sw, memory=memory)
            ref, up = _reference(acts, q, sh, sw)
            thr = pnas.pnas_thresholds(st, "L", _Group())
            _same(thr, ref)
            um = UnitMasks(h, w, sh, sw)
            lb = SimpleNamespace(planes=torch.zeros((1, N * sh * sw), dtype=torch.int16), pixels=sh * sw,
                                 label_area=torch.zeros(1))
            area, _ = um.count(torch.from_numpy(acts), torch.from_numpy(thr), lb)
            np.testing.assert_array_equal(area.numpy(), (up > ref[None, :, None, None]).sum((2, 3)))


@needs_numba
def test_pruning_keeps_a_rounding_margin():
    """With float64 cells of full mantissa, ~9% of a constant map's computed pixels round an ulp above
    or below the constant (with the cache's float32 cells no case was found in 1.7e8 tries, but that is
    no proof): the exact selection, fed such maps, still keeps exactly the largest computed values."""
    top_scan = kernel.pnas_kernels()[0]
    rng = np.random.default_rng(5)
    N, C, h, w, sh, sw = 6, 3, 5, 5, 17, 17
    cands = rng.normal(size=200) * 3
    above = [(_bilinear64(np.full((1, 1, h, w), c), sh, sw) > c).sum() for c in cands]
    best = cands[np.argsort(above)[::-1][:C]]  # the constants whose pixels round above them most
    acts = np.empty((N, C, h, w))
    acts[:] = best[None, :, None, None]  # each unit one value over every image
    up = _bilinear64(acts, sh, sw)
    per_image = (up[0] > acts[0, :, :1, :1]).sum((1, 2))
    assert per_image.min() >= 8  # the rounding this is about
    keep = int(per_image.min()) + 4  # after the first image the floor is the constant itself
    buf, fill, floor = np.empty((C, 2 * keep)), np.zeros(C, np.int64), np.full(C, -np.inf)
    for b in range(N):  # one image at a time: the floor prunes the later ones
        top_scan(np.ascontiguousarray(acts[b:b + 1]), *UnitMasks(h, w, sh, sw).tables, buf, fill, floor, keep)
    for k in range(C):
        got = np.sort(buf[k, :fill[k]])[::-1][:keep]
        np.testing.assert_array_equal(got, np.sort(up[:, k].ravel())[::-1][:keep])


def test_torch_masks_keep_the_rounding_margin():
    """The torch path of the masks (a GPU, no numba) prunes 2 x 2 blocks like the kernels, with their
    margin: constant maps of full-mantissa float64 cells, each thresholded at exactly its constant,
    count every pixel that rounds above it (blocks of at most 2 pixels a row: each one is computed).
    The constants round down to float32, so a block maximum taken in float32 would miss them too."""
    rng = np.random.default_rng(7)
    N, h, w, sh, sw = 2, 5, 5, 9, 9
    cands = rng.normal(size=400) * 3
    cands = cands[cands.astype(np.float32) < cands]
    above = [(_bilinear64(np.full((1, 1, h, w), c), sh, sw) > c).sum() for c in cands]
    best = cands[np.argsort(above)[::-1][:3]]  # the constants whose pixels round above them most
    acts = np.empty((N, len(best), h, w))
    acts[:] = best[None, :, None, None]
    want = (_bilinear64(acts, sh, sw) > best[None, :, None, None]).sum((2, 3))
    assert want.min() >= 4  # the rounding this is about
    um = UnitMasks(h, w, sh, sw)
    um.use_kernel = False
    assert max(int(um.x["size"]), int(um.y["size"])) <= 2
    hits = um.hits(torch.from_numpy(acts), torch.from_numpy(best))
    np.testing.assert_array_equal(hits.area.numpy(), want)
