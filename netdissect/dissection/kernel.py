"""Compiled CPU kernel: unit masks and their overlap with the pixel labels, in one sweep.

The same computation as :meth:`UnitMasks.hits` followed by counting the hit
pixels per concept (the torch path, which the GPU uses), fused so that no hit
list is ever built: for every unit and image it visits only the blocks whose
2 x 2 source cells exceed the threshold, finds each pixel row's run with the
same float64 formula and the same binary search, and adds the run's label
columns to the unit's counts directly.

Compiled with numba on first use (cached on disk afterwards, so later runs
only load it); :func:`warm` does that ahead, e.g. in a thread while the
forward pass runs.  When numba cannot be imported or the kernel cannot be
compiled, :func:`available` is False and dissection uses the torch path.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np

_lock = threading.Lock()
_state = None  # None: not tried yet; then the compiled kernel, or False when it cannot be had


def _compile():
    """The jitted kernel, compiled (or loaded from numba's cache) and run once on a tiny batch."""
    import numba

    try:
        fn = numba.njit(cache=True, nogil=True)(_count)
    except RuntimeError:  # no writable cache folder: compile in every process instead
        fn = numba.njit(nogil=True)(_count)
    i, f = np.zeros(1, np.int64), np.ones(1, np.float64)
    tables = (i, i, i, i + 1, f, f - 1) * 2  # one 1 x 1 block along y and along x
    fn(np.ones((1, 1, 1, 1), np.float32), np.zeros(1), *tables, np.zeros((1, 1), np.int16), 1, 1,
       np.zeros((1, 1), np.int64), np.zeros((1, 2), np.int64))
    return fn


def available() -> bool:
    """Whether the compiled kernel can be used; the first call compiles or loads it.

    When numba is missing or compiling fails, dissection counts with torch instead
    (slower; a warning says why).
    """
    global _state
    with _lock:
        if _state is None:
            try:
                _state = _compile()
            except ImportError:
                _state = False
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so
                warnings.warn(f"netdissect: the compiled IoU kernel could not be built ({type(exc).__name__}: "
                              f"{exc}); counting with torch instead, which is slower", RuntimeWarning, stacklevel=2)
                _state = False
        return _state is not False


def warm() -> None:
    """Compile or load the kernel now (e.g. in a thread while the forward pass runs)."""
    available()


def _count(acts, thr, ycell, ycell1, ystart, ycount, hy0, hy1,
           xcell, xcell1, xstart, xcount, wx0, wx1, planes, pixels, sw, area, inter):
    """acts float32 (B, C, h, w); thr float64 (C,); y/x block tables and per-pixel weights;
    planes int16 or int32 (P, B * pixels) concept columns (K = none).  Adds mask areas to
    ``area`` (B, C) and label-column hits to ``inter`` (C, K + 1), both int64."""
    B, C, h, w = acts.shape
    P = planes.shape[0]
    ny, nx = ycell.shape[0], xcell.shape[0]
    for k in range(C):
        t = thr[k]
        for b in range(B):
            peak = acts[b, k, 0, 0]
            for i in range(h):
                for j in range(w):
                    peak = max(peak, acts[b, k, i, j])
            if np.float64(peak) <= t:  # no pixel of this map can exceed its peak
                continue
            for jy in range(ny):
                r0, r1 = ycell[jy], ycell1[jy]
                for jx in range(nx):
                    c0, c1 = xcell[jx], xcell1[jx]
                    a00 = np.float64(acts[b, k, r0, c0])
                    a01 = np.float64(acts[b, k, r0, c1])
                    a10 = np.float64(acts[b, k, r1, c0])
                    a11 = np.float64(acts[b, k, r1, c1])
                    if max(max(a00, a01), max(a10, a11)) <= t:
                        continue
                    n = xcount[jx]
                    xf = xstart[jx]
                    xl = xf + n - 1
                    for oy in range(ycount[jy]):
                        y = ystart[jy] + oy
                        h0, h1 = hy0[y], hy1[y]
                        # PyTorch's association: h0 * (w0 * a00 + w1 * a01) + h1 * (w0 * a10 + w1 * a11)
                        f_in = h0 * (wx0[xf] * a00 + wx1[xf] * a01) + h1 * (wx0[xf] * a10 + wx1[xf] * a11) > t
                        l_in = h0 * (wx0[xl] * a00 + wx1[xl] * a01) + h1 * (wx0[xl] * a10 + wx1[xl] * a11) > t
                        if f_in and l_in:
                            start, stop = 0, n
                        elif not f_in and not l_in:
                            continue
                        else:  # binary search for the first slot that differs from slot 0
                            lo, hi = 0, n - 1
                            while hi - lo > 1:
                                mid = (lo + hi) // 2
                                xm = xf + mid
                                above = h0 * (wx0[xm] * a00 + wx1[xm] * a01) + h1 * (wx0[xm] * a10 + wx1[xm] * a11) > t
                                if above != f_in:
                                    hi = mid
                                else:
                                    lo = mid
                            if f_in:
                                start, stop = 0, hi
                            else:
                                start, stop = hi, n
                        area[b, k] += stop - start
                        row = b * pixels + y * sw + xf
                        for s in range(start, stop):
                            for p in range(P):
                                inter[k, planes[p, row + s]] += 1


def count(tables, acts: np.ndarray, thresholds: np.ndarray, planes: np.ndarray, pixels: int, sw: int,
          concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask areas int64 (B, C) and pixel-label intersections int64 (C, concepts) of one batch.

    ``tables``: the block tables of a :class:`UnitMasks` (``UnitMasks.tables``); ``acts``
    (B, C, h, w) float32; ``thresholds`` float64 (C,); ``planes`` int16 or int32 (P, B * pixels).
    """
    B, C = acts.shape[:2]
    area = np.zeros((B, C), np.int64)
    inter = np.zeros((C, concepts + 1), np.int64)
    acts = np.ascontiguousarray(acts, np.float32)
    thresholds = np.ascontiguousarray(thresholds, np.float64)
    planes = np.ascontiguousarray(planes)
    if not available():
        raise RuntimeError("the compiled IoU kernel is not available (see netdissect.dissection.kernel.available)")
    _state(acts, thresholds, *tables, planes, pixels, sw, area, inter)
    return area, inter[:, :concepts]
