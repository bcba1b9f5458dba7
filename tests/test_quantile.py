"""TopQuantile in both modes against np.quantile, to the last bit."""
import doctest

import numpy as np
import pytest
import torch

from netdissect.stats import DEFAULT_MEMORY, TopQuantile, kept_count, load_quantile_state, quantile_plan
from netdissect.stats import quantile as qmod


def _expected(data: np.ndarray, q: float) -> np.ndarray:
    return np.quantile(data.astype(np.float64), 1 - q, axis=1)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal values, and equal bits except for the sign of a zero (numpy's own order of
    -0.0 and 0.0 is its partition's)."""
    np.testing.assert_array_equal(got, want)
    nz = want != 0
    assert np.array_equal(got[nz].view(np.int64), want[nz].view(np.int64))


def _memory(units: int, q: float, total: int, mode: str) -> int:
    """The smallest budget of that mode ('exact': the tightest exact plan; 'radix': one
    below it, or the smallest radix plan)."""
    lo, hi = 1, 1 << 40
    while lo < hi:  # smallest memory with an exact plan
        mid = (lo + hi) // 2
        try:
            ok = quantile_plan(units, q, total, mid)["mode"] == "exact"
        except ValueError:
            ok = False
        lo, hi = (lo, mid) if ok else (mid + 1, hi)
    if mode == "exact":
        return lo
    m = lo - 1
    assert quantile_plan(units, q, total, m)["mode"] == "radix"
    return m


def _run(data: np.ndarray, q: float, memory: int, shards: int = 1, batches: int = 7, roundtrip: bool = False,
         total: int | None = None):
    """Feed ``data`` (units, n) in every pass the statistic asks for, over ``shards``
    disjoint shards merged after each pass; returns (thresholds, passes, first stat)."""
    U, n = data.shape
    total = n if total is None else total
    parts = np.array_split(np.arange(n), shards)
    stats = [TopQuantile(U, q, total=total, memory=memory) for _ in parts]
    first, passes = stats[0], 0
    while True:
        for s, (st, idx) in enumerate(zip(stats, parts)):
            chunks = np.array_split(idx, batches)
            for i, b in enumerate(chunks):
                st.add(torch.from_numpy(np.ascontiguousarray(data[:, b])))
                if roundtrip and i == len(chunks) // 2:  # a checkpoint in the middle of the pass
                    st = stats[s] = load_quantile_state(st.state_dict())
        merged = stats[0]
        for other in stats[1:]:
            merged.merge(other)
        passes += 1
        assert passes <= first.passes, "more passes than the plan's bound"
        if merged.exact:
            return merged.threshold(), passes, first
        nxt = merged.refinement()
        # every shard gets its own copy of the next pass (as each torchrun rank would make it)
        stats = [nxt] + [load_quantile_state(nxt.state_dict()) for _ in parts[1:]]


def _datasets(units_seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(units_seed)
    d = np.empty((8, n), np.float32)
    d[0] = rng.standard_normal(n)
    d[1] = np.round(rng.standard_normal(n) * 4) / 4  # many ties
    d[2] = 0.75  # a constant (dead) unit
    d[3] = np.maximum(rng.standard_normal(n) - 2.0, 0)  # ReLU: mostly zeros, the threshold may be 0
    d[4] = -np.abs(rng.standard_normal(n)) * 1e3  # all negative
    d[5] = np.where(rng.random(n) < 0.5, -0.0, 0.0)  # signed zeros only
    d[5, : n // 100] = rng.standard_normal(n // 100)  # and a few others
    d[6] = rng.standard_normal(n) * 1e-38  # subnormals and tiny normals
    d[7] = np.where(rng.random(n) < 0.97, 0.0, rng.exponential(1.0, n))  # ReLU, threshold in the zeros at q=0.05
    for u in range(8):
        rng.shuffle(d[u])
    return d


@pytest.mark.parametrize("q", [0.005, 0.01, 0.05])
@pytest.mark.parametrize("mode", ["default", "exact", "radix"])
def test_equals_np_quantile(q, mode):
    data = _datasets(int(q * 1000), 20_011)
    memory = DEFAULT_MEMORY if mode == "default" else _memory(8, q, 20_011, mode)
    got, passes, stat = _run(data, q, memory)
    assert stat.mode == ("radix" if mode == "radix" else "exact")
    assert stat.bound <= memory
    if mode == "radix":
        assert passes >= 2
    _same(got, _expected(data, q))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 200, 1999])
@pytest.mark.parametrize("mode", ["exact", "radix"])
def test_small_counts(n, mode):
    data = _datasets(n, n)
    for q in (0.005, 0.05, 0.5) + ((0.0,) if mode == "exact" else ()):  # q = 0 keeps 2 values: exact
        total = 100_000  # > n, as each shard's total is the whole dataset's
        memory = DEFAULT_MEMORY if mode == "exact" else _memory(8, q, total, "radix")
        got, _, stat = _run(data, q, memory, batches=min(n, 5), total=total)
        assert stat.mode == mode
        _same(got, _expected(data, q))


@pytest.mark.parametrize("mode", ["exact", "radix"])
def test_ties_straddling_the_positions(mode):
    """Runs of equal values across the two positions numpy interpolates between, and
    positions that fall on the last value of one run and the first of the next."""
    q, n = 0.01, 10_001  # (1 - q)(n - 1) = 9900 exactly: weight 0
    rows = []
    base = np.zeros(n, np.float32)
    base[-500:] = 2.0
    rows.append(base.copy())  # positions 9900, 9901 inside the run of 2.0
    b = np.zeros(n, np.float32)
    b[9901:] = 3.0
    rows.append(b)  # position 9900 is the last 0, 9901 the first 3
    c = np.ones(n, np.float32)
    c[9900:] = np.float32(np.nextafter(np.float32(1), np.float32(2)))  # neighbouring floats: 1 bit apart
    rows.append(c)
    d = np.full(n, -1.5, np.float32)
    d[9900:] = -0.0  # negative run, then signed zeros
    d[9950:] = 0.0
    rows.append(d)
    data = np.stack(rows)
    for q_ in (q, 0.0123):  # and a weight in (0, 1)
        memory = DEFAULT_MEMORY if mode == "exact" else _memory(len(rows), q_, n, "radix")
        for perm in range(2):  # sorted and shuffled orders
            x = data if perm == 0 else np.random.default_rng(3).permuted(data, axis=1)
            got, _, stat = _run(x, q_, memory)
            assert stat.mode == mode
            _same(got, _expected(x, q_))


@pytest.mark.parametrize("order", ["increasing", "decreasing"])
def test_exact_mode_every_value_passes_the_running_floor(order):
    """Increasing values survive every prefilter (the buffer is cut again and again);
    decreasing ones never pass it after the first cut."""
    n, q = 30_000, 0.05
    x = np.sort(np.random.default_rng(0).standard_normal((3, n)).astype(np.float32), axis=1)
    if order == "decreasing":
        x = x[:, ::-1].copy()
    memory = _memory(3, q, n, "exact")
    got, _, stat = _run(x, q, memory, batches=60)
    assert stat.mode == "exact" and stat._impl.cap < n
    _same(got, _expected(x, q))


@pytest.mark.parametrize("mode", ["exact", "radix"])
@pytest.mark.parametrize("roundtrip", [False, True])
def test_shards_merge(mode, roundtrip):
    q = 0.01
    data = _datasets(5, 12_345)
    memory = DEFAULT_MEMORY if mode == "exact" else _memory(8, q, 12_345, "radix")
    got, passes, stat = _run(data, q, memory, shards=3, roundtrip=roundtrip)
    assert stat.mode == mode
    _same(got, _expected(data, q))


def test_radix_default_budget_two_passes_for_64_units_at_full_broden_size():
    # VGG16 features.0 on the full Broden: 63,305 images of 224 x 224 positions
    plan = quantile_plan(64, 0.005, 63_305 * 224 * 224)
    assert plan["mode"] == "radix" and plan["passes"] == 2 and plan["bound"] <= DEFAULT_MEMORY
    # a resnet18 layer4 over the same images stays exact
    assert quantile_plan(512, 0.005, 63_305 * 7 * 7)["mode"] == "exact"


@pytest.mark.parametrize("units,q,total", [(1, 0.005, 10 ** 9), (64, 0.005, 63_305 * 224 * 224),
                                           (512, 0.01, 63_305 * 14 * 14), (2048, 0.005, 63_305 * 28 * 28),
                                           (3, 0.05, 100), (512, 0.005, 2000 * 49)])
@pytest.mark.parametrize("memory", [1 << 20, 16 << 20, DEFAULT_MEMORY, 4 << 30])
def test_plan_stays_within_budget(units, q, total, memory):
    try:
        plan = quantile_plan(units, q, total, memory)
    except ValueError as e:
        assert "too small" in str(e) and "give at least" in str(e)
        need = int(str(e).split("at least ")[1].split()[0])
        assert need > memory
        assert quantile_plan(units, q, total, 2 * need)  # the stated figure is (nearly) enough
        return
    assert plan["bound"] <= memory
    if plan["mode"] == "exact":
        assert plan["cap"] >= min(total, plan["keep"]) and 4 * units * plan["cap"] <= plan["bound"]
    else:
        assert (units * plan["csize"] << plan["bits0"]) <= memory // 2
        assert (2 * units * plan["csize"] << plan["bits"]) <= memory // 2


def test_state_sizes_match_the_plan():
    x = torch.randn(4, 50_000)
    ex = TopQuantile(4, 0.01, total=50_000, memory=_memory(4, 0.01, 50_000, "exact"))
    ex.add(x)
    assert ex._impl.buf.numel() * 4 <= ex.bound <= ex.memory
    rx = TopQuantile(4, 0.01, total=50_000, memory=_memory(4, 0.01, 50_000, "radix"))
    rx.add(x)
    r2 = rx.refinement()
    for st in (rx, r2):
        assert st._impl.hist.numel() * st._impl.hist.element_size() <= st.memory // 2


def test_keys_preserve_order_and_invert():
    special = np.array([-np.inf, -3e38, -1.0, -1e-38, -1e-45, -0.0, 0.0, 1e-45, 1e-38, 1.0,
                        np.float32(np.nextafter(np.float32(1), np.float32(2))), 3e38, np.inf], np.float32)
    rnd = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 10.0 ** np.random.default_rng(
        1).integers(-40, 38, 1000)
    v = np.concatenate([special, rnd.astype(np.float32)])
    k = qmod._keys(torch.from_numpy(v)).numpy().astype(np.int64)
    order_f = np.argsort(v, kind="stable")
    assert np.all(np.diff(k[order_f]) >= 0)  # keys sorted where the floats are
    assert k[5] == k[6] == 0  # -0.0 and 0.0 share a key
    assert len(np.unique(k)) == len(np.unique(v))
    back = qmod._values(k + (1 << 31))
    np.testing.assert_array_equal(back, v.astype(np.float64))


def test_infinite_values_as_numpy():
    x = np.array([[1.0] * 98 + [np.inf] * 2, [-np.inf] * 100, [0.0] * 50 + [np.inf] * 50], np.float32)
    for memory in (DEFAULT_MEMORY, _memory(3, 0.01, 200_000, "radix")):
        with np.errstate(invalid="ignore"):
            want = _expected(x, 0.01)
        got, _, stat = _run(x, 0.01, memory, batches=3, total=200_000)
        np.testing.assert_array_equal(got, want)


def test_errors_are_clear():
    x = torch.randn(2, 50_000)
    rx = TopQuantile(2, 0.01, total=50_000, memory=_memory(2, 0.01, 50_000, "radix"))
    assert rx.mode == "radix" and rx.exact  # no value yet: NaN thresholds
    rx.add(x)
    assert not rx.exact
    with pytest.raises(ValueError, match=r"more pass\(es\) over the same values"):
        rx.threshold()
    r2 = rx.refinement()
    r2.add(x[:, :100])
    assert not r2.exact
    with pytest.raises(ValueError):
        r2.threshold()
    with pytest.raises(ValueError, match="takes the 50000 values of pass 1 again"):
        r2.add(x)
    with pytest.raises(ValueError, match="different stages"):
        r2.merge(rx)
    ex = TopQuantile(2, 0.01, total=50_000)
    ex.add(x)
    with pytest.raises(ValueError, match="needs no refinement"):
        ex.refinement()
    with pytest.raises(ValueError, match="radix-mode"):
        ex.merge(rx)
    with pytest.raises(AttributeError, match="keeps counts"):
        rx.top
    with pytest.raises(ValueError, match="too small for 2 units"):
        TopQuantile(2, 0.01, total=10 ** 9, memory=1000)
    with pytest.raises(ValueError, match="declared total"):
        TopQuantile(1, 0.1, total=5).add(torch.zeros(1, 6))
    for st in (TopQuantile(2, 0.01, total=50_000), TopQuantile(2, 0.01, total=50_000, memory=rx.memory)):
        bad = x.clone()
        bad[1, 7] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            st.add(bad)
            st.threshold()


def test_no_values_gives_nan_in_both_modes():
    for memory in (DEFAULT_MEMORY, _memory(3, 0.01, 50_000, "radix")):
        st = TopQuantile(3, 0.01, total=50_000, memory=memory)
        assert st.exact
        assert np.isnan(st.threshold()).all()


def test_legacy_state_and_load_state_dict_switch_modes():
    x = np.random.default_rng(2).standard_normal((3, 40_000)).astype(np.float32)
    # the state dict the engine's distributed merge builds by hand (no mode, no memory)
    legacy = {"top": np.sort(x, axis=1)[:, ::-1][:, :kept_count(0.01, 40_000)].copy(), "count": 40_000,
              "q": 0.01, "total": 40_000}
    st = TopQuantile(3, 0.01, total=1).load_state_dict(legacy)
    assert st.mode == "exact"
    _same(st.threshold(), _expected(x, 0.01))
    # a fresh statistic restores a radix checkpoint in the middle of its second pass
    memory = _memory(3, 0.01, 40_000, "radix")
    rx = TopQuantile(3, 0.01, total=40_000, memory=memory)
    rx.add(torch.from_numpy(x))
    r2 = rx.refinement()
    r2.add(torch.from_numpy(x[:, :1000]))
    saved = r2.state_dict()
    assert all(isinstance(v, (np.ndarray, np.generic)) for v in saved.values())
    back = TopQuantile(3, 0.01, total=40_000, memory=memory).load_state_dict(saved)
    back.add(torch.from_numpy(x[:, 1000:]))
    while not back.exact:
        back = back.refinement()
        back.add(torch.from_numpy(x))
    _same(back.threshold(), _expected(x, 0.01))


def test_reduce_sum_merges_like_merge():
    x = np.random.default_rng(4).standard_normal((2, 60_000)).astype(np.float32)
    memory = _memory(2, 0.05, 60_000, "radix")
    a, b = (TopQuantile(2, 0.05, total=60_000, memory=memory) for _ in range(2))
    a.add(torch.from_numpy(x[:, :25_000]))
    b.add(torch.from_numpy(x[:, 25_000:]))
    other = b._impl.hist.clone(), b.count

    def allreduce(t):  # a two-rank all_reduce, as rank a sees it
        t += other[0] if t.ndim == 3 else other[1]

    a.reduce_sum(allreduce)
    assert a.count == 60_000
    stat = a
    while not stat.exact:
        stat = stat.refinement()
        stat.add(torch.from_numpy(x))
    _same(stat.threshold(), _expected(x, 0.05))


def test_module_doctest():
    assert doctest.testmod(qmod).failed == 0
