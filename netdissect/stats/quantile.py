"""Exact, streaming, mergeable upper quantiles per unit, in a fixed memory budget.

    >>> import numpy as np, torch
    >>> from netdissect.stats import TopQuantile
    >>> values = torch.randn(2, 100_000)                  # (units, values)
    >>> tq = TopQuantile(units=2, q=0.01, total=100_000)
    >>> for part in values.split(10_000, dim=1):
    ...     tq.add(part)
    >>> tq.mode, tq.exact
    ('exact', True)
    >>> bool((tq.threshold() == np.quantile(values.double().numpy(), 0.99, axis=1)).all())
    True

The threshold of a unit is numpy's ``quantile(a, 1 - q)`` (linear interpolation) of its
values, computed in float64 from the float32 values, to the last bit.  It needs only the
``k = ceil(q (n - 1)) + 2`` largest values (:func:`kept_count`; ``total``, an upper bound
on ``n`` known before the pass, fixes ``k``).  Two modes, chosen from ``memory`` (bytes,
:data:`DEFAULT_MEMORY` = 256 MiB) when the statistic is made:

``exact``
    keeps the ``k`` largest values per unit, in one pass, when they fit the budget.
    Incoming values are appended to a buffer of ``cap`` (up to ``2 k``) columns and cut
    back to ``k`` (``topk``) only when it is full; once it has been cut, only values above
    the running ``k``-th largest value are appended.  ``threshold()`` is available at any
    time.

``radix``
    when ``k`` values per unit do not fit: exact selection over several passes over the
    same values.  Each float32 is mapped to an order-preserving 32-bit key (``-0.0`` and
    ``0.0`` share one key, as numpy treats them as equal).  Pass 1 counts each unit's
    values per bin of the key's highest ``b0`` bits; :meth:`TopQuantile.refinement`
    returns a statistic that, fed *all the same values again*, counts the next ``b`` bits
    of the values inside the two bins that hold the order statistics numpy interpolates
    between (ascending positions ``floor((1 - q)(n - 1))`` and the next one), and so on
    until all 32 bits of both are known.  At most ``1 + ceil((32 - b0) / b)`` passes in
    all (:attr:`TopQuantile.passes`; 2 for 64 units and the default budget).

    >>> tq = TopQuantile(units=2, q=0.01, total=100_000, memory=48 << 10)  # too small: radix
    >>> tq.mode, tq.passes
    ('radix', 4)
    >>> stat, passes = tq, 0
    >>> while True:
    ...     for part in values.split(30_000, dim=1):      # every value, again, in any batches
    ...         stat.add(part)
    ...     passes += 1
    ...     if stat.exact:
    ...         break
    ...     stat = stat.refinement()                   # the next pass
    >>> passes <= tq.passes
    True
    >>> bool((stat.threshold() == np.quantile(values.double().numpy(), 0.99, axis=1)).all())
    True

Both modes merge exactly (``merge``: shards or chunks over disjoint values; in radix mode
the counts add) and round-trip through ``state_dict()`` (plain numpy arrays, with the
mode) and :func:`load_quantile_state`.  Memory, state and the temporaries of ``add``,
``merge`` and ``threshold`` together, stays below ``memory`` (:attr:`TopQuantile.bound`
states the figure; the values passed to ``add`` are the caller's and not counted).
"""
from __future__ import annotations

import math

import numpy as np
import torch

DEFAULT_MEMORY = 256 << 20
"""The default budget of one statistic, in bytes (``--quantile-memory``)."""

_MAX_BITS = 24  # at most 2**24 bins per unit and target
_EXACT_SLICE_BYTES = 48  # per (unit, value) of a slice in exact-mode add: mask, survivors and their indices
_RADIX_SLICE_BYTES = 56  # per (unit, value) of a slice in radix-mode add: keys, masks, bin indices
_SLICE_VALUES = 1 << 21  # values of one slice of add() at most: enough to amortise the per-slice overhead
_TOPK_BYTES = 16  # torch's CPU topk: one (value, index) pair per input element (of each row in flight)


def kept_count(q: float, total: int) -> int:
    """How many of the largest values the exact mode keeps per unit."""
    return min(int(total), int(math.ceil(q * max(total - 1, 0))) + 2)


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    # numpy's own formulation (numpy/lib/_function_base_impl.py::_lerp)
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def _positions(q: float, n: int) -> tuple[int, int, float]:
    """numpy's ascending positions (previous, next) and weight for ``quantile(a, 1 - q)``
    of ``n`` values (``_QuantileMethods['linear']`` and ``_get_indexes``)."""
    pos = (n - 1) * np.float64(1.0 - q)
    if pos >= n - 1:
        return n - 1, n - 1, float(pos - math.floor(pos))
    lo = int(math.floor(pos))
    return lo, lo + 1, float(pos - lo)


def _keys(x: torch.Tensor) -> torch.Tensor:
    """int32 keys with the order of the float32 values ``x``; ``-0.0`` gets 0.0's key.

    Non-negative floats keep their bits; negative ones flip all but the sign bit, so the
    signed integer order is the float order.  The unsigned key is ``key + 2**31``."""
    b = x.contiguous().view(torch.int32)
    k = b ^ ((b >> 31) & 0x7FFFFFFF)
    return k.masked_fill_(k == -1, 0)  # -1 is -0.0


def _values(ukeys: np.ndarray) -> np.ndarray:
    """float64 values of unsigned keys (the inverse of :func:`_keys`)."""
    k = (np.asarray(ukeys, np.int64) - (1 << 31)).astype(np.int32)
    b = k ^ ((k >> 31) & 0x7FFFFFFF)
    return b.view(np.float32).astype(np.float64)


def _interpolate(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("NaN among the values of a quantile statistic (of unit(s) "
                         f"{np.flatnonzero(np.isnan(a) | np.isnan(b))[:5].tolist()})")
    with np.errstate(invalid="ignore"):  # inf - inf, inf * 0: NaN, as numpy gives
        return _lerp(a, b, t)


# ------------------------------------------------------------------------------ planning
def _exact_plan(units: int, keep: int, total: int, memory: int) -> dict | None:
    """Buffer columns, slice width and unit block of the exact mode within ``memory``
    (independent of the thread count, so that every rank and machine makes the same plan)."""
    wide = keep + max(keep, min(1 << 12, memory // (32 * units)))  # room for whole batches of small keeps
    for cap in dict.fromkeys([min(total, wide), min(total, 2 * keep), min(total, keep + keep // 2),
                              min(total, keep + max(1, keep // 4)), min(total, keep + max(1, keep // 8))]):
        pend = cap - keep if cap < total else cap  # values taken between two cuts
        state = 4 * units * cap
        row = 12 * keep + _TOPK_BYTES * cap  # topk of one unit's buffer: output and scratch
        free = memory - state - row
        slice_cols = min(pend, _SLICE_VALUES // units + 1, free // ((_EXACT_SLICE_BYTES + 4) * units)) if free > 0 else 0
        if slice_cols < min(pend, 1024):
            continue
        block = int(max(1, min(units, (memory - state - 4 * units * slice_cols) // row)))
        bound = state + max(_EXACT_SLICE_BYTES * units * slice_cols, 4 * units * slice_cols + block * row)
        return {"mode": "exact", "cap": int(cap), "slice": int(max(1, slice_cols)), "block": block,
                "bound": int(bound)}
    return None


def _radix_bits(units: int, targets: int, csize: int, memory: int) -> int:
    per = (memory // 2) // (targets * units * csize)
    return min(_MAX_BITS, per.bit_length() - 1) if per > 0 else 0


def _radix_plan(units: int, total: int, memory: int) -> dict:
    csize = 4 if total < (1 << 31) else 8
    room = max(0, memory - 16 * _RADIX_SLICE_BYTES * units)  # the counts leave room for a slice of 16 values
    hist_memory = min(memory, 2 * room)
    b0, b = _radix_bits(units, 1, csize, hist_memory), _radix_bits(units, 2, csize, hist_memory)
    hist = max(units * csize << b0, 2 * units * csize << b)
    slice_cols = min(_SLICE_VALUES // units + 1, (memory - hist) // (_RADIX_SLICE_BYTES * units))
    if b < 2 or slice_cols < 16:
        need = (2 * units * csize << 3) + 16 * _RADIX_SLICE_BYTES * units
        raise ValueError(f"quantile memory of {memory} bytes is too small for {units} units: "
                         f"give at least {need} bytes")
    return {"mode": "radix", "bits0": b0, "bits": b, "csize": csize, "slice": int(slice_cols),
            "passes": 1 + -(-(32 - b0) // b), "bound": int(hist + _RADIX_SLICE_BYTES * units * slice_cols)}


def quantile_plan(units: int, q: float, total: int, memory: int = DEFAULT_MEMORY) -> dict:
    """How :class:`TopQuantile` will work for these sizes, without allocating anything:
    ``mode`` ('exact' or 'radix'), ``passes`` (at most), ``bound`` (bytes, at most)."""
    if memory <= 0:
        raise ValueError(f"quantile memory must be a positive number of bytes, got {memory}")
    keep = kept_count(q, total)
    plan = _exact_plan(int(units), keep, int(total), int(memory))
    if plan is None:
        plan = _radix_plan(int(units), int(total), int(memory))
    else:
        plan["passes"] = 1
    plan["keep"] = keep
    return plan


# ------------------------------------------------------------------------------ exact mode
class _Exact:
    """The ``keep`` largest values of each unit, in a (units, cap) buffer."""

    mode = "exact"

    def __init__(self, units: int, q: float, total: int, memory: int, device, plan: dict):
        self.units, self.q, self.total, self.memory = units, q, total, memory
        self.device = torch.device(device)
        self.keep, self.cap, self.slice, self.block = kept_count(q, total), plan["cap"], plan["slice"], plan["block"]
        self.bound = plan["bound"]
        self.count = 0
        self.buf: torch.Tensor | None = None  # (units, cap), -inf beyond each unit's fill
        self.fill: torch.Tensor | None = None  # (units,) int64
        self.floor: torch.Tensor | None = None  # (units,) the keep-th largest value, once cut
        self.width = 0  # columns of buf in use (max of fill)

    # -- buffer
    def _alloc(self) -> None:
        if self.buf is None:
            self.buf = torch.full((self.units, self.cap), -math.inf, device=self.device)
            self.fill = torch.zeros(self.units, dtype=torch.int64, device=self.device)

    def _cut(self) -> None:
        """Keep the ``keep`` largest values of each unit (unit blocks bound the temporaries)."""
        if self.width <= self.keep:
            return
        k = self.keep
        for s in range(0, self.units, self.block):
            top = self.buf[s:s + self.block, :self.width].topk(k, dim=1, sorted=False).values
            self.buf[s:s + self.block, :k] = top
            del top
        self.buf[:, k:self.width] = -math.inf
        self.fill.fill_(k)
        self.width = k
        self.floor = self.buf[:, :k].amin(1)
        self._check_nan(self.floor)

    def _check_nan(self, v: torch.Tensor) -> None:
        bad = torch.isnan(v)
        if bool(bad.any()):
            units = bad.reshape(self.units, -1).any(1).nonzero()[:5, 0].tolist()
            raise ValueError(f"NaN among the values of a quantile statistic (of unit(s) {units})")

    def _survivors(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values above the running floor (NaN too: threshold() reports it), and their count per unit."""
        keep = (xs <= self.floor[:, None]).logical_not_()
        return keep, keep.view(torch.uint8).sum(1, dtype=torch.int64)

    def _ingest(self, x: torch.Tensor) -> None:
        """Take the (units, m) values ``x`` (count not updated)."""
        self._alloc()
        for s in range(0, x.shape[1], self.slice):
            xs = x[:, s:s + self.slice].to(self.device, torch.float32)
            m = xs.shape[1]
            if self.floor is None:  # never cut: every unit holds the same number of values
                if self.width + m > self.cap:
                    self._cut()
                else:
                    self.buf[:, self.width:self.width + m] = xs
                    self.width += m
                    self.fill += m
                    continue
            keep, counts = self._survivors(xs)
            if int((self.fill + counts).max()) > self.cap:
                del keep
                self._cut()  # slice <= cap - keep: everything now fits
                keep, counts = self._survivors(xs)
            n = int(counts.sum())
            if n:
                rows = torch.repeat_interleave(torch.arange(self.units, device=self.device), counts)
                first = torch.cumsum(counts, 0) - counts
                cols = torch.arange(n, device=self.device).sub_(first[rows]).add_(self.fill[rows])
                self.buf[rows, cols] = xs[keep]
                del rows, cols
                self.fill += counts
                self.width = int(self.fill.max())

    def add(self, x: torch.Tensor) -> None:
        self._ingest(x)
        self.count += x.shape[1]

    def top(self) -> torch.Tensor:
        """(units, min(count, keep)) the largest values of each unit, unordered."""
        if self.buf is None:
            return torch.full((self.units, 0), -math.inf, device=self.device)
        self._cut()
        return self.buf[:, :min(self.width, self.keep)]

    def merge(self, other: "_Exact") -> None:
        if other.keep > self.cap or other.count + self.count > self.total:
            raise ValueError(f"cannot merge an exact quantile of {other.count} values (total {other.total}) "
                             f"into one of {self.count} values (total {self.total}): make every shard "
                             "with the total of the whole dataset")
        self._ingest(other.top())
        self.count += other.count

    def threshold(self) -> np.ndarray:
        n = self.count
        if n == 0:
            return np.full(self.units, np.nan)
        lo, hi, t = _positions(self.q, n)
        d_lo, d_hi = n - 1 - lo, n - 1 - hi  # descending indices, d_hi <= d_lo
        if d_lo >= self.keep:
            raise ValueError(f"{n} values need {d_lo + 1} kept values, more than {self.keep} "
                             f"(the total {self.total} was too small)")
        self._cut()
        self._check_nan(self.buf[:, :self.width])  # topk ranks NaN above every number
        a, b = np.empty(self.units), np.empty(self.units)
        for s in range(0, self.units, self.block):
            top = self.buf[s:s + self.block, :self.width].topk(d_lo + 1, dim=1, sorted=True).values
            a[s:s + self.block] = top[:, d_lo].double().cpu().numpy()
            b[s:s + self.block] = top[:, d_hi].double().cpu().numpy()
            del top
        return _interpolate(a, b, t)

    def state_dict(self) -> dict:
        return {"mode": np.str_("exact"), "top": self.top().cpu().numpy().copy(), "count": np.int64(self.count),
                "q": np.float64(self.q), "total": np.int64(self.total), "memory": np.int64(self.memory)}


# ------------------------------------------------------------------------------ radix mode
class _Radix:
    """One pass of the radix selection: per unit and target, counts of the next ``bits``
    bits of the keys whose ``known`` highest bits equal the target's ``prefix``.

    Stage 0 (``known == 0``) has one target, every value; later stages have two (the
    order statistics at ascending positions lo and hi), with ``rank`` the position of each
    among the values of its bin and ``n`` the number of values of pass 1."""

    mode = "radix"

    def __init__(self, units: int, q: float, total: int, memory: int, device, plan: dict,
                 known: int = 0, prefix: np.ndarray | None = None, rank: np.ndarray | None = None,
                 n: int = -1):
        self.units, self.q, self.total, self.memory = units, q, total, memory
        self.device = torch.device(device)
        self.plan = plan
        self.known, self.n = known, n
        self.bits = min(plan["bits0"] if known == 0 else plan["bits"], 32 - known)
        self.slice, self.bound = plan["slice"], plan["bound"]
        self.count = 0
        self.prefix = np.zeros((units, 2), np.int64) if prefix is None else np.asarray(prefix, np.int64)
        self.rank = np.zeros((units, 2), np.int64) if rank is None else np.asarray(rank, np.int64)
        self.targets = 1 if known == 0 else 2
        self.shared = known > 0 and bool((self.prefix[:, 0] == self.prefix[:, 1]).all())
        dtype = torch.int32 if plan["csize"] == 4 else torch.int64
        self.hist = torch.zeros((self.targets, units, 1 << self.bits), dtype=dtype, device=self.device)
        if known:
            sp = self.prefix - (1 << (known - 1))  # the prefix in the signed key's terms
            self._sprefix = torch.from_numpy(sp.astype(np.int32)).to(self.device)

    @property
    def exact(self) -> bool:
        if self.known == 0:
            return self.count == 0  # no value: the threshold is NaN
        return self.known + self.bits == 32 and self.count == self.n

    def passes_left(self) -> int:
        rest = 32 - self.known - self.bits
        return -(-rest // self.plan["bits"])

    def add(self, x: torch.Tensor) -> None:
        if self.n >= 0 and self.count + x.shape[1] > self.n:
            raise ValueError(f"a refinement pass takes the {self.n} values of pass 1 again; "
                             f"got {self.count + x.shape[1]}")
        b, nb = self.bits, 1 << self.bits
        ones = torch.ones(1, dtype=self.hist.dtype, device=self.device)
        for s in range(0, x.shape[1], self.slice):
            xs = x[:, s:s + self.slice].to(self.device, torch.float32)
            if torch.isnan(xs).any():
                raise ValueError("NaN among the values of a quantile statistic")
            k = _keys(xs)
            del xs
            if self.known == 0:
                bins = ((k >> (32 - b)) + (1 << (b - 1))).long()
                self.hist[0].scatter_add_(1, bins, ones.expand(bins.shape))
                continue
            high = k >> (32 - self.known)
            low = 32 - self.known - b
            for t in range(1 if self.shared else 2):
                rows, cols = (high == self._sprefix[:, t:t + 1]).nonzero(as_tuple=True)
                if len(rows):
                    sub = ((k[rows, cols] >> low) & (nb - 1)).long()
                    flat = rows * nb + sub
                    self.hist[t].view(-1).index_add_(0, flat, ones.expand(flat.shape))
        self.count += x.shape[1]

    def merge(self, other: "_Radix") -> None:
        if (other.known, other.bits, other.n) != (self.known, self.bits, self.n) or not (
                np.array_equal(other.prefix, self.prefix) and np.array_equal(other.rank, self.rank)):
            raise ValueError("cannot merge radix quantile passes of different stages: every shard's "
                             "refinement must come from the same merged statistic")
        if self.n >= 0 and self.count + other.count > self.n:
            raise ValueError(f"merged refinement passes hold {self.count + other.count} values, "
                             f"more than the {self.n} of pass 1")
        self.hist += other.hist.to(self.device)
        self.count += other.count

    def _locate(self) -> tuple[np.ndarray, np.ndarray]:
        """Per unit and target: the bin holding the target's rank, and its rank inside it."""
        if self.known == 0:
            n = self.count
            lo, hi, _ = _positions(self.q, n)
            rank = np.tile(np.array([lo, hi], np.int64), (self.units, 1))
        else:
            if self.count != self.n:
                raise ValueError(f"a refinement pass must see all {self.n} values again; it saw {self.count}")
            rank = self.rank
        bins, inner = np.empty((self.units, 2), np.int64), np.empty((self.units, 2), np.int64)
        for u in range(self.units):  # one row at a time: the cumulative counts stay small
            for t in range(2):
                h = self.hist[0 if (self.targets == 1 or self.shared) else t, u].cpu().numpy().astype(np.int64)
                cum = np.cumsum(h)
                j = int(np.searchsorted(cum, rank[u, t], side="right"))
                if j >= len(h):
                    raise ValueError(f"unit {u}: the pass saw fewer values than the ranks need "
                                     "(were all values fed again?)")
                bins[u, t], inner[u, t] = j, rank[u, t] - (cum[j] - h[j])
        return bins, inner

    def refinement(self) -> "_Radix":
        if self.known + self.bits == 32:
            raise ValueError("this pass already determines the threshold exactly: call threshold()")
        if self.known == 0 and self.count == 0:
            raise ValueError("no value was added: the threshold is NaN, there is nothing to refine")
        bins, inner = self._locate()
        prefix = (self.prefix << self.bits) | bins
        n = self.count if self.known == 0 else self.n
        return _Radix(self.units, self.q, self.total, self.memory, self.device, self.plan,
                      known=self.known + self.bits, prefix=prefix, rank=inner, n=n)

    def threshold(self) -> np.ndarray:
        if self.known == 0 and self.count == 0:
            return np.full(self.units, np.nan)
        if not self.exact:
            if self.known + self.bits < 32:
                raise ValueError(f"radix quantile pass {self.known // self.plan['bits'] + 1 if self.known else 1}: "
                                 f"the threshold needs {self.passes_left()} more pass(es) over the same "
                                 "values (stat = stat.refinement(), then add them all again)")
            raise ValueError(f"the last radix pass saw {self.count} of the {self.n} values: add them all")
        bins, _ = self._locate()
        keys = (self.prefix << self.bits) | bins
        lo, hi, t = _positions(self.q, self.n)
        return _interpolate(_values(keys[:, 0]), _values(keys[:, 1]), t)

    def state_dict(self) -> dict:
        return {"mode": np.str_("radix"), "count": np.int64(self.count), "q": np.float64(self.q),
                "total": np.int64(self.total), "memory": np.int64(self.memory),
                "known": np.int64(self.known), "n": np.int64(self.n), "prefix": self.prefix.copy(),
                "rank": self.rank.copy(), "hist": self.hist.cpu().numpy().copy()}


# ------------------------------------------------------------------------------ public class
class TopQuantile:
    """The ``1 - q`` quantile of each unit's values, exactly as ``np.quantile``.

    ``TopQuantile(units, q, total, device="cpu", memory=DEFAULT_MEMORY)``: ``total`` is an
    upper bound on the number of values per unit (images x positions of the *whole*
    dataset, so that shards merge); ``memory`` the budget in bytes.  The mode
    (:attr:`mode`: 'exact' or 'radix') follows from them (:func:`quantile_plan`).

    - ``add(x)``: a (units, m) tensor of values (any dtype and device; float32 is used).
    - ``exact``: ``threshold()`` is available now.  Always true in exact mode; in radix
      mode, true on the last pass once it has seen all the values again.
    - ``threshold()``: float64 (units,), ``np.quantile(values.astype(float64), 1 - q,
      axis=1)``; NaN for every unit when no value was added; ``ValueError`` when not exact.
    - ``refinement()``: radix mode only: the next pass, a new statistic to be fed *all*
      the same values again (each shard its own; merge the shards' refinements).
    - ``merge(other)``: add another shard's statistic (disjoint values; same mode, and in
      radix mode the same pass of the same merged statistic).
    - ``state_dict()`` / ``load_state_dict(state)`` / :func:`load_quantile_state`: plain
      numpy arrays, with the mode and the pass.

    Memory: at most :attr:`bound` bytes <= ``memory`` (state and temporaries; in exact
    mode ``4 * units * cap`` bytes of state with ``cap`` <= ``2 * kept_count(q, total)``,
    in radix mode ``units * 2**b0`` (pass 1) or ``2 * units * 2**b`` (later passes) counts
    of 4 bytes (8 when ``total >= 2**31``), where ``b0``, ``b`` are the largest bit counts
    that fit half the budget).  ``state_dict()`` returns a copy of the state.
    """

    @torch.inference_mode()
    def __init__(self, units: int, q: float, total: int, device="cpu", memory: int = DEFAULT_MEMORY):
        if not 0.0 <= q < 1.0:
            raise ValueError(f"quantile q must be in [0, 1), got {q}")
        if int(units) < 1 or int(total) < 0:
            raise ValueError(f"a quantile statistic needs units >= 1 and total >= 0, got {units}, {total}")
        units, total, memory = int(units), int(total), int(memory)
        plan = quantile_plan(units, q, total, memory)
        cls = _Exact if plan["mode"] == "exact" else _Radix
        self._impl = cls(units, float(q), total, memory, device, plan)
        self._plan = plan

    @classmethod
    def _wrap(cls, impl, plan) -> "TopQuantile":
        out = cls.__new__(cls)
        out._impl, out._plan = impl, plan
        return out

    # -- description
    units = property(lambda self: self._impl.units)
    q = property(lambda self: self._impl.q)
    total = property(lambda self: self._impl.total)
    memory = property(lambda self: self._impl.memory)
    count = property(lambda self: self._impl.count, doc="values added (in this pass)")
    mode = property(lambda self: self._impl.mode, doc="'exact' or 'radix'")
    device = property(lambda self: self._impl.device)
    bound = property(lambda self: self._impl.bound, doc="bytes at most, state and temporaries")
    passes = property(lambda self: self._plan["passes"], doc="passes over the values, at most")
    keep = property(lambda self: kept_count(self.q, self.total), doc="kept_count(q, total)")

    @property
    def exact(self) -> bool:
        return True if self.mode == "exact" else self._impl.exact

    @property
    @torch.inference_mode()
    def top(self) -> torch.Tensor:
        """Exact mode: (units, min(count, keep)) the largest values of each unit, unordered."""
        if self.mode != "exact":
            raise AttributeError("a radix-mode quantile statistic keeps counts, not values")
        return self._impl.top()

    def __repr__(self) -> str:
        where = "" if self.mode == "exact" else f", bits {self._impl.known}+{self._impl.bits} of 32"
        return (f"TopQuantile(units={self.units}, q={self.q}, total={self.total}, mode={self.mode!r}"
                f"{where}, count={self.count}, bound={self.bound} bytes)")

    # -- streaming
    @torch.inference_mode()
    def add(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[0] != self.units:
            raise ValueError(f"expected ({self.units}, n) values, got {tuple(x.shape)}")
        if self.mode == "exact" or self._impl.known == 0:
            if self.count + x.shape[1] > self.total:
                raise ValueError(f"more values ({self.count + x.shape[1]}) than the declared total {self.total}")
        self._impl.add(x)

    @torch.inference_mode()
    def merge(self, other: "TopQuantile") -> None:
        if (other.units, other.q) != (self.units, self.q):
            raise ValueError("cannot merge quantiles of different units or q")
        if other.mode != self.mode:
            raise ValueError(f"cannot merge a {other.mode}-mode quantile statistic into a {self.mode}-mode one: "
                             "make every shard with the same total and memory")
        self._impl.merge(other._impl)

    @torch.inference_mode()
    def threshold(self) -> np.ndarray:
        """float64 (units,) thresholds; NaN for every unit when no value was added."""
        return self._impl.threshold()

    @torch.inference_mode()
    def refinement(self) -> "TopQuantile":
        if self.mode == "exact":
            raise ValueError("an exact-mode quantile statistic needs no refinement: call threshold()")
        return TopQuantile._wrap(self._impl.refinement(), self._plan)

    @torch.inference_mode()
    def reduce_sum(self, allreduce) -> None:
        """Radix mode, under torch.distributed: ``allreduce(t)`` must sum the tensor ``t``
        in place over the ranks (e.g. ``dist.all_reduce``); the statistic then holds every
        rank's values.  Every rank must call it on the same pass of the same statistic."""
        if self.mode != "radix":
            raise ValueError("reduce_sum merges radix-mode statistics; exact mode keeps values "
                             "(all-gather `top` and merge)")
        imp = self._impl
        c = torch.tensor([imp.count], dtype=torch.int64, device=imp.hist.device)
        allreduce(imp.hist)
        allreduce(c)
        imp.count = int(c.item())

    # -- checkpoints
    @torch.inference_mode()
    def state_dict(self) -> dict:
        return self._impl.state_dict()

    @torch.inference_mode()
    def load_state_dict(self, state: dict) -> "TopQuantile":
        """Restore ``state`` (any mode or pass; a state without 'mode' is an exact one)."""
        other = load_quantile_state(state, self.device, memory=self.memory)
        self._impl, self._plan = other._impl, other._plan
        return self


def load_quantile_state(state: dict, device="cpu", memory: int | None = None) -> TopQuantile:
    """The :class:`TopQuantile` whose ``state_dict()`` is ``state`` (whatever its mode)."""
    mode = str(state.get("mode", "exact"))
    q, total, count = float(state["q"]), int(state["total"]), int(state["count"])
    if "memory" in state:
        memory = int(state["memory"])
    memory = DEFAULT_MEMORY if memory is None else int(memory)
    if mode == "exact":
        top = torch.from_numpy(np.asarray(state["top"], dtype=np.float32))
        out = TopQuantile(top.shape[0], q, total, device=device, memory=memory)
        if out.mode != "exact":
            raise ValueError(f"an exact quantile state of {top.shape[0]} units and total {total} does not fit "
                             f"its budget of {memory} bytes (pass the memory it was made with)")
        if top.shape[1] > out.keep:
            raise ValueError(f"quantile state holds {top.shape[1]} values per unit, more than {out.keep}")
        out._impl._ingest(top)
        out._impl.count = count
        return out
    if mode != "radix":
        raise ValueError(f"unknown quantile statistic mode {mode!r}")
    hist = torch.from_numpy(np.asarray(state["hist"]))
    units = hist.shape[1]
    plan = quantile_plan(units, q, total, memory)
    if plan["mode"] != "radix":
        raise ValueError("a radix quantile state with a budget that fits the exact mode (was it edited?)")
    known = int(state["known"])
    impl = _Radix(units, q, total, memory, device, plan, known=known, prefix=state["prefix"],
                  rank=state["rank"], n=int(state["n"]))
    if tuple(impl.hist.shape) != tuple(hist.shape):
        raise ValueError(f"radix quantile state of shape {tuple(hist.shape)}, expected {tuple(impl.hist.shape)}")
    impl.hist.copy_(hist.to(impl.hist.dtype))
    impl.count = count
    return TopQuantile._wrap(impl, plan)
