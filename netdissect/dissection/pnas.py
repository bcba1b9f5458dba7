"""PNAS 2020 thresholds: the top quantile of the *upsampled* activation over every label pixel.

    T_k = numpy.quantile(S_k over every pixel of every image, 1 - q),
    S_k = bilinear(A_k, (sh, sw)), align_corners=False, in float64

(algorithms.md section 2).  Computed exactly after pass 1 from the
activation cache: every upsampled value is computed in float64 with the very
formula and association the mask counting uses (:mod:`.masks`), so
``S_k > T_k`` selects exactly the pixels pass 2 counts, and numpy's linear
interpolation gives the threshold to the last bit.

On the CPU the compiled kernels of :mod:`.kernel` do it without ever holding an
upsampled map, within ``--quantile-memory`` bytes per layer (:func:`pnas_plan`):

``exact``
    one pass over the cache keeping each unit's ``kept_count`` largest values
    (float64) in a buffer cut back when full; once cut, its smallest kept
    value is a floor, and only images whose peak and blocks of pixels whose
    2 x 2 source cells exceed it are upsampled (an upsampled value is a
    convex combination of its cells), so most of the map is never computed.
``bounded``
    when that buffer does not fit: exact radix selection on the 64-bit keys of
    the float64 values (the float order), ``bits`` bits a pass, then, once the
    two order statistics' bins hold few enough values, one pass collecting
    them; each pass after the first upsamples only blocks that can hold a
    value of the targets' bins.

Without numba, or on a GPU, a torch path upsamples blocks of images
(:func:`upsample64`) and keeps the largest values with ``topk``.
"""
from __future__ import annotations

import numpy as np
import torch

from netdissect.dissection import kernel
from netdissect.dissection.masks import UnitMasks, _axis
from netdissect.errors import DatasetError
from netdissect.stats.quantile import _interpolate, _positions, kept_count

READ_BYTES = 32 << 20  # float32 activations of one block of cached images, at most
MAX_BITS = 16  # radix bits of one bounded-mode pass, at most


def upsample64(acts: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """float64 (sh, sw, B, C): bilinear (align_corners=False) as :class:`UnitMasks` computes it,
    ``h0 * (w0 * a00 + w1 * a01) + h1 * (w0 * a10 + w1 * a11)``: the x-interpolation of every source
    row first (on the small map), then the rows combined.  Pixels lead (each gather copies whole
    (B, C) planes, the fast way on a CPU)."""
    B, C, h, w = acts.shape
    y0, y1, h0, h1 = (torch.as_tensor(v, device=acts.device) for v in _axis(h, sh))
    x0, x1, w0, w1 = (torch.as_tensor(v, device=acts.device) for v in _axis(w, sw))
    a = acts.double().permute(2, 3, 0, 1).contiguous()  # (h, w, B, C)
    rows = w0.view(1, -1, 1, 1) * a.index_select(1, x0) + w1.view(1, -1, 1, 1) * a.index_select(1, x1)
    return h0.view(-1, 1, 1, 1) * rows.index_select(0, y0) + h1.view(-1, 1, 1, 1) * rows.index_select(0, y1)


def pnas_thresholds(state, name: str, group, block_values: int = 1 << 22, memory: int | None = None,
                    parts=None) -> np.ndarray:
    """float64 (C,) PNAS thresholds of layer ``name`` over every rank's rows (not skipped).

    ``memory``: bytes for the selection (default ``--quantile-memory``); see :func:`pnas_plan`.
    ``parts``: the run states whose caches this process reads (default ``[state]``; a chunk merge
    passes every chunk's, ``state`` among them): one scan over all of them, as over one cache."""
    parts = [state] if parts is None else list(parts)
    skipped = {i for p in parts for i in p.skipped}
    used = [i for i in range(len(state.probe)) if i not in skipped]
    sizes = state.source.mask_sizes(used)
    sizes = sorted({tuple(s) for part in group.gather([list(map(tuple, sizes))]) for s in part[0]})
    if len(sizes) != 1:
        raise DatasetError(f"--iou pnas needs one label size for every image; {state.probe.describe()} has "
                           f"{len(sizes)} ({sizes[:4]}): use --iou broden, or resize the masks")
    sh, sw = sizes[0]
    streams = getattr(state, "pnas_streams", None)  # the scan made during pass 1 (every rank has the dict)
    if streams is not None and memory is None:
        stream = streams.get(name)
        if all(group.gather(stream is not None and stream.ready(sizes))):
            return stream.thresholds(group)
    kernels = kernel.pnas_kernels() if state.device.type == "cpu" else None
    if kernels is None:
        return _torch_thresholds(parts, name, group, sh, sw, block_values)
    C, h, w = state.shapes[name]
    memory = state.cfg.quantile_memory if memory is None else int(memory)
    plan = pnas_plan(C, state.cfg.quantile, len(state.probe) * sh * sw, memory)
    scan = _Scan(parts, name, sh, sw, plan["read_bytes"])
    if plan["mode"] == "exact":
        return _exact(scan, group, kernels[0], state.cfg.quantile, plan)
    return _bounded(scan, group, kernels[1], state.cfg.quantile, plan, kernels[2])


def pnas_plan(units: int, q: float, total: int, memory: int) -> dict:
    """How :func:`pnas_thresholds` selects on the CPU within ``memory`` bytes: ``mode`` 'exact' (one
    pass, a (units, cap) float64 buffer) or 'bounded' (radix passes of ``bits`` bits over the cache;
    the order statistics' bins are collected once they hold at most ``collect`` values per unit and
    target).  ``read_bytes``: the block of cached activations read at a time (as float32, the cache's
    own dtype included).  ``bound``: the bytes held at most by one process (the buffer or counts, their
    temporaries and the block read; under torchrun the gathered shards come on top)."""
    keep = kept_count(q, total)
    read = max(1, min(READ_BYTES, memory // 8))
    if memory <= 0:
        raise ValueError(f"quantile memory must be a positive number of bytes, got {memory}")
    # the buffer (room for 2 keep values per unit if it fits: fewer cuts), np.partition's copy of one
    # row, the merged rows of one rank (C x keep)
    for cap in dict.fromkeys(min(total, c) for c in (2 * keep, keep + keep // 2, keep + max(keep // 4, 64))):
        need = 8 * units * cap + 8 * cap + 8 * units * keep
        if need + read <= memory:
            return {"mode": "exact", "keep": keep, "cap": cap, "bound": need + read, "read_bytes": read}
    room = memory - read
    per = room // (2 * 2 * 8 * units)  # counts (2 targets, int64) and their cumulative sums
    bits = min(MAX_BITS, per.bit_length() - 1) if per > 0 else 0
    if bits < 4:
        raise ValueError(f"quantile memory of {memory} bytes is too small for {units} units: give at least "
                         f"{(2 * 2 * 8 * units << 4) + 8 * 2 * units} bytes")
    collect = max(1, room // (2 * 8 * units))  # values of the two targets' bins, per unit
    return {"mode": "bounded", "keep": keep, "bits": bits, "collect": collect, "read_bytes": read,
            "bound": read + max(2 * 2 * 8 * units << bits, 2 * 8 * units * collect)}


class _Scan:
    """This process's cached activations of one layer (rows not skipped) in the run states
    ``parts`` (one, or a merge's chunks), float32, block by block, with the block tables of the
    label size."""

    def __init__(self, parts, name, sh, sw, read_bytes):
        self.parts, self.name = [p for p in parts if name in p.caches], name
        C, h, w = self.parts[0].shapes[name] if self.parts else (0, 1, 1)
        self.units = C
        self.pixels = sh * sw
        self.tables = UnitMasks(h, w, sh, sw).tables if self.parts else None
        item = self.parts[0].caches[name].dtype.itemsize if self.parts else 4
        self.step = max(1, read_bytes // max(1, (4 if item == 4 else 4 + item) * C * h * w))  # + float32 copy
        self.count = sum(st.hi - st.lo - sum(1 for i in st.skipped if st.lo <= i < st.hi)
                         for st in self.parts) * self.pixels

    def blocks(self):
        for st in self.parts:  # (a state without a usable row has no cache)
            cache = st.caches[self.name]
            for s in range(0, st.hi - st.lo, self.step):
                e = min(s + self.step, st.hi - st.lo)
                rows = [j for j in range(e - s) if st.lo + s + j not in st.skipped]
                if not rows:
                    continue
                a = cache.read(s, e)
                if len(rows) < e - s:
                    a = a[rows]
                yield np.ascontiguousarray(a, np.float32)


def _exact(scan, group, top_scan, q, plan):
    keep, cap = plan["keep"], plan["cap"]
    C = scan.units
    buf = fill = None
    for a in scan.blocks():
        if buf is None:
            buf = np.empty((C, cap))
            fill = np.zeros(C, np.int64)
            floor = np.full(C, -np.inf)
        top_scan(a, *scan.tables, buf, fill, floor, keep)
    return _exact_finish(C, scan.count, buf, fill, group, q, keep)


def _exact_finish(C, n, buf, fill, group, q, keep):
    """The thresholds from this rank's buffers (each row holding at least its ``keep`` largest of
    ``n`` values) and every other rank's."""
    m = min(n, keep)  # every unit holds at least m values: all of them, until its first cut
    mine = np.empty((C, m))
    for k in range(C if m else 0):
        row = buf[k, :fill[k]]
        mine[k] = row if len(row) == m else np.partition(row, len(row) - m)[len(row) - m:]
    del buf
    parts = group.gather((n, mine))
    n = sum(p[0] for p in parts)
    if n == 0:
        return np.full(max(C, max(p[1].shape[0] for p in parts)), np.nan)
    allv = np.concatenate([p[1] for p in parts if p[0]], 1)
    lo, hi, t = _positions(q, n)
    m = allv.shape[1]
    a_at, b_at = m - 1 - (n - 1 - lo), m - 1 - (n - 1 - hi)  # ascending places in the kept values
    a, b = np.empty(len(allv)), np.empty(len(allv))
    for k in range(len(allv)):
        part = np.partition(allv[k], [a_at, b_at])
        a[k], b[k] = part[a_at], part[b_at]
    return _interpolate(a, b, t)


RAISE_AFTER = 0.05  # the share of a rank's rows an ExactStream scans before it raises its floors
RAISE_MIN_ROWS = 64  # ... and at least this many (fewer draws estimate too loosely)
RAISE_MARGIN = 2.0  # ... to leave about this many times the values the thresholds need above them


class ExactStream:
    """The exact mode's scan of layer ``name``, fed batch by batch during pass 1 (:meth:`add`, from the
    forward pass's own float32 activations) on a background thread, so that it overlaps the forward
    pass instead of reading the cache again after it.  The buffers keep every value above a floor
    that only rises, whatever the order and grouping of the batches, so :meth:`thresholds` are the
    very thresholds a scan of the cache gives.  :func:`pnas_thresholds` takes them from the stream
    when every rank's is :meth:`ready`; else (a resumed run saw only some rows; the bounded mode; no
    numba) it scans the cache as without one."""

    def __init__(self, state, name: str, size, worker):
        self.state, self.name, (self.sh, self.sw) = state, name, tuple(size)
        self.worker = worker
        self.rows = 0  # rows added
        self.buf = self.fill = self.floor = self.tables = None
        self.plan = None
        self.failed = False
        self.scanned = 0  # rows scanned
        self.raised = None  # the floors raised once (see _raise_floor), float64 (C,)

    def add(self, acts: np.ndarray) -> None:
        """Queue the float32 (B, C, h, w) activations of B rows not skipped (kept, not copied: the
        caller does not change them)."""
        self.rows += len(acts)
        self.worker.submit(self._scan, acts)

    def _scan(self, acts) -> None:
        if self.failed:
            return
        try:
            if self.buf is None:
                kernels = kernel.pnas_kernels()
                if kernels is None:
                    self.failed = True
                    return
                self.top_scan = kernels[0]
                B, C, h, w = acts.shape
                st = self.state
                plan = pnas_plan(C, st.cfg.quantile, len(st.probe) * self.sh * self.sw, st.cfg.quantile_memory)
                if plan["mode"] != "exact":
                    self.failed = True  # the bounded mode needs several passes over the cache
                    return
                self.plan = plan
                self.tables = UnitMasks(h, w, self.sh, self.sw).tables
                self.buf = np.empty((C, plan["cap"]))
                self.fill = np.zeros(C, np.int64)
                self.floor = np.full(C, -np.inf)
            self.top_scan(acts, *self.tables, self.buf, self.fill, self.floor, self.plan["keep"])
            self.scanned += len(acts)
            if self.raised is None and self.scanned >= max(RAISE_AFTER * self._rows(), RAISE_MIN_ROWS):
                self._raise_floor()
        except Exception:  # noqa: BLE001 - the scan of the cache after pass 1 reports it
            self.failed = True

    def _raise_floor(self) -> None:
        """Raise each unit's floor, once, to just below the value that RAISE_MARGIN x q of the values
        seen so far exceed (about twice as many as the thresholds need, the rows being draws of one
        distribution): far above the floor the buffer's cuts would reach by then, so most of the
        rest is never upsampled.  Only values at or below it are dropped from then on, and
        :meth:`ready` checks that enough values above it were kept for the thresholds to be exact
        (else the cache is scanned)."""
        want = int(np.ceil(RAISE_MARGIN * self.state.cfg.quantile * self.scanned * self.sh * self.sw))
        raised = np.full(len(self.fill), -np.inf)
        for k, n in enumerate(self.fill):
            if 1 <= want <= n:
                row = self.buf[k, :n]
                raised[k] = np.nextafter(np.partition(row, n - want)[n - want], -np.inf)
                if raised[k] > self.floor[k]:  # keep only the values above it: room, fewer cuts
                    above = row[row > raised[k]]
                    self.buf[k, :len(above)] = above
                    self.fill[k] = len(above)
                    self.floor[k] = raised[k]
        self.raised = raised

    def _rows(self) -> int:
        st = self.state
        return st.hi - st.lo - sum(1 for i in st.skipped if st.lo <= i < st.hi)

    def ready(self, sizes) -> bool:
        """Whether the scan is whole: it saw every row not skipped, at the run's one label size."""
        self.worker.join()
        if self.failed or self.buf is None or self.rows != self._rows() or \
                [tuple(s) for s in sizes] != [(self.sh, self.sw)]:
            return False
        if self.raised is not None:  # every value dropped is <= its unit's raised floor or below a cut:
            m = min(self._rows() * self.sh * self.sw, self.plan["keep"])  # exact when m kept values exceed it
            for k, n in enumerate(self.fill):
                if np.count_nonzero(self.buf[k, :n] > self.raised[k]) < m:
                    return False
        return True

    def thresholds(self, group) -> np.ndarray:
        """The thresholds over every rank (every rank's stream :meth:`ready`)."""
        out = _exact_finish(self.buf.shape[0], self._rows() * self.sh * self.sw, self.buf, self.fill, group,
                            self.state.cfg.quantile, self.plan["keep"])
        self.buf = None
        return out


class ScanWorker:
    """One background thread running the streams' scans in order (the compiled kernels release the
    GIL, so a scan runs beside the forward pass); at most ``backlog`` batches wait."""

    def __init__(self, backlog: int = 8):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="netdissect-pnas")
        self.pending, self.backlog = deque(), backlog

    def submit(self, fn, arg) -> None:
        self.pending.append(self.pool.submit(fn, arg))
        while len(self.pending) > self.backlog:
            self.pending.popleft().result()

    def join(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


_FLIP = 0x7FFFFFFFFFFFFFFF


def _key_values(keys: np.ndarray) -> np.ndarray:
    """float64 values of int64 keys (the kernel's order-preserving map, inverted)."""
    k = np.asarray(keys, np.int64)
    return np.where(k < 0, k ^ _FLIP, k).view(np.float64)


def _bounded(scan, group, bin_scan, q, plan, floor_scan=None):
    parts = group.gather((scan.units, scan.count))
    C = max(p[0] for p in parts)
    n = sum(p[1] for p in parts)
    if n == 0:
        return np.full(C, np.nan)
    lo_pos, hi_pos, t = _positions(q, n)
    rank = np.tile(np.array([[n - 1 - lo_pos], [n - 1 - hi_pos]], np.int64), (1, C))  # descending, in the bin
    prefix = np.zeros((2, C), np.int64)
    known, held = 0, None  # held: values of each target's bin (after a pass), (2, C)
    vlo, vhi = np.full(C, -np.inf), np.full(C, np.inf)
    if floor_scan is not None:  # a floor that still leaves the targets' ranks: the first pass skips below it
        fb = plan["bits"]
        fh = np.zeros((C, 1 << fb), np.int64)
        for a in scan.blocks():
            floor_scan(a, *scan.tables, fh, fb)
        fh = sum(g for g in group.gather(fh))
        cum = np.cumsum(fh[:, ::-1], axis=1)  # pixels whose lower bound is in this bin or above
        j = (cum < rank[0][:, None] + 1).sum(1)  # the first bin (from the top) holding enough of them
        del cum, fh
        vlo = np.nan_to_num(_key_values((((1 << fb) - 1 - j) - (1 << (fb - 1))) << (64 - fb)), nan=-np.inf)
    none = np.zeros((1, 1, 1), np.int64), np.zeros((1, 1, 1)), np.zeros((1, 1), np.int64)
    while True:
        if held is not None and int(held.max()) <= plan["collect"]:  # the targets' bins fit: collect them
            width = int(held.max())
            buf = np.empty((2, C, width))
            fill = np.zeros((2, C), np.int64)
            for a in scan.blocks():
                bin_scan(a, *scan.tables, vlo, vhi, prefix, known, 1, none[0], buf, fill, True)
            got = group.gather((buf, fill))
            out = np.empty((2, C))
            for i in range(2):
                for k in range(C):
                    vals = np.concatenate([g[0][i, k, :g[1][i, k]] for g in got])
                    r = rank[i, k]
                    out[i, k] = np.partition(vals, len(vals) - 1 - r)[len(vals) - 1 - r]
            return _interpolate(out[0], out[1], t)
        bits = min(plan["bits"], 64 - known)
        hist = np.zeros((2, C, 1 << bits), np.int64)
        for a in scan.blocks():
            bin_scan(a, *scan.tables, vlo, vhi, prefix, known, bits, hist, none[1], none[2], False)
        hist = sum(g for g in group.gather(hist))
        cum = np.cumsum(hist[:, :, ::-1], axis=2)  # from the top bin down
        j = (cum <= rank[:, :, None]).sum(2)  # descending index of the bin holding each target
        if int(j.max()) >= hist.shape[2]:
            raise RuntimeError("PNAS threshold selection: a pass saw fewer values than the ranks need")
        desc = np.take_along_axis(cum, j[:, :, None], 2)[:, :, 0]
        held = np.take_along_axis(hist[:, :, ::-1], j[:, :, None], 2)[:, :, 0]
        rank = rank - (desc - held)
        del cum
        b = (1 << bits) - 1 - j  # the bin's number
        prefix = b - (1 << (bits - 1)) if known == 0 else (prefix << bits) | b
        known += bits
        if known == 64:
            v = _key_values(prefix)
            return _interpolate(v[0], v[1], t)
        s = 64 - known
        low = _key_values(prefix << s)
        high = _key_values((prefix << s) | ((1 << s) - 1))
        vlo = np.nan_to_num(low.min(0), nan=-np.inf)
        vhi = np.nan_to_num(high.max(0), nan=np.inf)


def _torch_thresholds(states, name: str, group, sh: int, sw: int, block_values: int) -> np.ndarray:
    """The torch path (a GPU, or no numba): upsampled blocks of images, the largest values kept."""
    state = states[0]
    C, h, w = state.shapes[name]
    S = sh * sw
    keep = kept_count(state.cfg.quantile, len(state.probe) * S)
    dev = state.device
    top = torch.empty((C, 0), dtype=torch.float64, device=dev)
    n = 0
    for st in (st for st in states if name in st.caches):
        cache = st.caches[name]
        step = max(1, block_values // max(1, C * S))
        for s in range(0, st.hi - st.lo, step):
            e = min(s + step, st.hi - st.lo)
            rows = [j for j in range(e - s) if st.lo + s + j not in st.skipped]
            if not rows:
                continue
            a = torch.from_numpy(cache.read(s, e)).to(dev)
            if len(rows) < e - s:
                a = a[rows]
            n += len(a) * S
            if top.shape[1] >= keep:  # only images that can still enter some unit's top values
                floor = top.min(1).values
                flat = a.flatten(2)  # (the kernels' rounding margin: a pixel may round above its peak)
                a = a[(flat.amax(2).double() + kernel._SLACK * flat.abs().amax(2).double() > floor).any(1)]
                if not len(a):
                    continue
            up = upsample64(a.float(), sh, sw).view(-1, C).T
            both = torch.cat([top, up], 1)
            top = both.topk(min(keep, both.shape[1]), dim=1, sorted=False).values if both.shape[1] > keep else both
    parts = group.gather((n, top.cpu().numpy()))
    n = sum(p[0] for p in parts)
    if n == 0:
        return np.full(C, np.nan)
    allv = torch.from_numpy(np.concatenate([p[1] for p in parts], 1))
    lo, hi, t = _positions(state.cfg.quantile, n)
    d_lo, d_hi = n - 1 - lo, n - 1 - hi
    srt = allv.topk(d_lo + 1, dim=1, sorted=True).values
    return _interpolate(srt[:, d_lo].numpy(), srt[:, d_hi].numpy(), t)
