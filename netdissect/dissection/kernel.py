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


def numba_missing(exc: ImportError | None = None) -> bool:
    """Whether numba itself is not installed (``exc``: an ImportError just caught; else look it up).

    Only then is the torch path the quiet, expected fallback: a numba that is installed but fails
    to import or to compile a kernel is a fault, reported by a warning (and failed by the tests).

    >>> numba_missing(ModuleNotFoundError("No module named 'numba'", name="numba"))
    True
    >>> numba_missing(ImportError("libllvmlite.so: cannot open shared object file"))
    False
    >>> numba_missing()  # a declared dependency
    False
    """
    if exc is not None:
        return isinstance(exc, ModuleNotFoundError) and exc.name == "numba"
    import importlib.util

    return importlib.util.find_spec("numba") is None


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
            except ImportError as exc:
                if not numba_missing(exc):  # numba is there but broken (llvmlite, ...): say so
                    warnings.warn(f"netdissect: the compiled IoU kernel could not be built ({type(exc).__name__}: "
                                  f"{exc}); counting with torch instead, which is slower", RuntimeWarning, stacklevel=2)
                _state = False
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so
                warnings.warn(f"netdissect: the compiled IoU kernel could not be built ({type(exc).__name__}: "
                              f"{exc}); counting with torch instead, which is slower", RuntimeWarning, stacklevel=2)
                _state = False
        return _state is not False


def warm() -> None:
    """Compile or load the kernels now (e.g. in a thread while the forward pass runs): pass 2's and
    the PNAS thresholds' (:func:`pnas_kernels`; loading them from numba's cache takes ~0.03 s)."""
    available()
    pnas_kernels()


_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def warm_in_background() -> threading.Thread | None:
    """Start :func:`warm` on a thread, once per process (a no-op once the kernels are loaded), so
    that importing numba and loading the kernels (~0.8 s of CPU, measured) overlaps what comes
    before the forward pass (loading the model and the data).  A process about to fork must
    :func:`wait_warm` first: a thread in the middle of an import holds locks a child would inherit."""
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None and (_state is None or _pnas_state is None):
            def run():
                try:
                    warm()
                except Exception:  # noqa: BLE001 - the same call where the kernel is used reports it
                    pass

            _warm_thread = threading.Thread(target=run, name="netdissect-warm", daemon=True)
            _warm_thread.start()
        return _warm_thread


def wait_warm() -> None:
    """Wait for the thread :func:`warm_in_background` started, if any."""
    t = _warm_thread
    if t is not None:
        t.join()


_SLACK = 16 * 2.220446049250313e-16
"""A bilinear value computed in float64 (weights that sum to 1 within rounding, three roundings) lies
within ``_SLACK * max|cell|`` of its 2 x 2 cells' range, not always inside it (for ~9% of the pixels
of a constant map of full-mantissa values it rounds an ulp outside): the pruning tests keep that
margin, here and in the torch paths (:meth:`.masks.UnitMasks.hits`, the PNAS thresholds' image
pruning), so that they never skip a pixel the full upsampled map would count."""


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
            big = abs(peak)
            for i in range(h):
                for j in range(w):
                    peak = max(peak, acts[b, k, i, j])
                    big = max(big, abs(acts[b, k, i, j]))
            slack = _SLACK * np.float64(big)  # a computed pixel may round a little above its cells' max
            if np.float64(peak) + slack <= t:  # no pixel of this map can exceed its peak (and the rounding)
                continue
            for jy in range(ny):
                r0, r1 = ycell[jy], ycell1[jy]
                for jx in range(nx):
                    c0, c1 = xcell[jx], xcell1[jx]
                    a00 = np.float64(acts[b, k, r0, c0])
                    a01 = np.float64(acts[b, k, r0, c1])
                    a10 = np.float64(acts[b, k, r1, c0])
                    a11 = np.float64(acts[b, k, r1, c1])
                    if max(max(a00, a01), max(a10, a11)) + _SLACK * max(max(abs(a00), abs(a01)), max(abs(a10), abs(a11))) <= t:
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


# ------------------------------------------------------------------------------ PNAS thresholds
# The upsampled values of every pixel, computed as _count computes them (the same float64 formula
# and association), so that a threshold taken from them selects exactly the pixels pass 2 counts.

def _top_scan(acts, ycell, ycell1, ystart, ycount, hy0, hy1, xcell, xcell1, xstart, xcount, wx0, wx1,
              buf, fill, floor, keep):
    """Exact mode: add the upsampled values of ``acts`` float32 (B, C, h, w) to each unit's
    float64 buffer row ``buf[k, :fill[k]]``, which keeps (at least) the ``keep`` largest values.

    Once a row has been cut back to its ``keep`` largest values, ``floor[k]`` is its smallest
    kept value (-inf before): a value ``<= floor[k]`` cannot change the ``keep`` largest, so an
    image whose peak, or a block whose 2 x 2 cells, do not exceed it is not upsampled at all."""
    B, C, h, w = acts.shape
    cap = buf.shape[1]
    ny, nx = ycell.shape[0], xcell.shape[0]
    for k in range(C):
        f = floor[k]
        n = fill[k]
        for b in range(B):
            peak = acts[b, k, 0, 0]
            big = abs(peak)
            for i in range(h):
                for j in range(w):
                    peak = max(peak, acts[b, k, i, j])
                    big = max(big, abs(acts[b, k, i, j]))
            slack = _SLACK * np.float64(big)  # a computed pixel may round a little above its cells' max
            if np.float64(peak) + slack <= f:
                continue
            for jy in range(ny):
                r0, r1 = ycell[jy], ycell1[jy]
                for jx in range(nx):
                    c0, c1 = xcell[jx], xcell1[jx]
                    a00 = np.float64(acts[b, k, r0, c0])
                    a01 = np.float64(acts[b, k, r0, c1])
                    a10 = np.float64(acts[b, k, r1, c0])
                    a11 = np.float64(acts[b, k, r1, c1])
                    if max(max(a00, a01), max(a10, a11)) + _SLACK * max(max(abs(a00), abs(a01)), max(abs(a10), abs(a11))) <= f:
                        continue
                    xf = xstart[jx]
                    for oy in range(ycount[jy]):
                        y = ystart[jy] + oy
                        h0, h1 = hy0[y], hy1[y]
                        for ox in range(xcount[jx]):
                            x = xf + ox
                            v = h0 * (wx0[x] * a00 + wx1[x] * a01) + h1 * (wx0[x] * a10 + wx1[x] * a11)
                            if v <= f:
                                continue
                            if n == cap:  # full: keep the keep largest (ascending partition)
                                part = np.partition(buf[k], cap - keep)
                                buf[k, :keep] = part[cap - keep:]
                                n = keep
                                f = part[cap - keep]
                                if v <= f:
                                    continue
                            buf[k, n] = v
                            n += 1
        fill[k] = n
        floor[k] = f


def _bin_scan(acts, ycell, ycell1, ystart, ycount, hy0, hy1, xcell, xcell1, xstart, xcount, wx0, wx1,
              lo, hi, prefix, known, bits, hist, buf, fill, collect):
    """Bounded mode, one pass over the upsampled values of ``acts`` float32 (B, C, h, w).

    For target ``t`` of unit ``k`` (``prefix`` int64 (T, C): the top ``known`` bits of the
    targets' keys, arithmetic-shifted; every key matches when ``known == 0``), take the values
    whose key starts with ``prefix[t, k]``: ``collect`` False adds them to ``hist[t, k]`` (int64,
    ``2 ** bits`` bins of the next ``bits`` bits), ``collect`` True appends them to
    ``buf[t, k, :fill[t, k]]``.  ``lo``/``hi`` float64 (C,): every such value lies in [lo, hi];
    images and blocks wholly outside are skipped."""
    B, C, h, w = acts.shape
    T = prefix.shape[0]
    ny, nx = ycell.shape[0], xcell.shape[0]
    scratch = np.empty(1, np.float64)
    kbits = scratch.view(np.int64)
    shift = 64 - known
    low = shift - bits
    mask = (1 << bits) - 1
    for k in range(C):
        vlo, vhi = lo[k], hi[k]
        for b in range(B):
            peak = acts[b, k, 0, 0]
            big = abs(peak)
            for i in range(h):
                for j in range(w):
                    peak = max(peak, acts[b, k, i, j])
                    big = max(big, abs(acts[b, k, i, j]))
            slack = _SLACK * np.float64(big)  # a computed pixel may round a little above its cells' max
            if np.float64(peak) + slack < vlo:
                continue
            for jy in range(ny):
                r0, r1 = ycell[jy], ycell1[jy]
                for jx in range(nx):
                    c0, c1 = xcell[jx], xcell1[jx]
                    a00 = np.float64(acts[b, k, r0, c0])
                    a01 = np.float64(acts[b, k, r0, c1])
                    a10 = np.float64(acts[b, k, r1, c0])
                    a11 = np.float64(acts[b, k, r1, c1])
                    e = _SLACK * max(max(abs(a00), abs(a01)), max(abs(a10), abs(a11)))
                    if max(max(a00, a01), max(a10, a11)) + e < vlo or min(min(a00, a01), min(a10, a11)) - e > vhi:
                        continue
                    xf = xstart[jx]
                    for oy in range(ycount[jy]):
                        y = ystart[jy] + oy
                        h0, h1 = hy0[y], hy1[y]
                        for ox in range(xcount[jx]):
                            x = xf + ox
                            v = h0 * (wx0[x] * a00 + wx1[x] * a01) + h1 * (wx0[x] * a10 + wx1[x] * a11)
                            if v < vlo or v > vhi:
                                continue
                            scratch[0] = v + 0.0  # the int64 key, in the float order; -0.0 + 0.0 == +0.0
                            key = kbits[0]
                            if key < 0:
                                key ^= 0x7FFFFFFFFFFFFFFF
                            for t in range(T):
                                if known > 0 and (key >> shift) != prefix[t, k]:
                                    continue
                                if collect:
                                    buf[t, k, fill[t, k]] = v
                                    fill[t, k] += 1
                                elif known == 0:
                                    hist[t, k, (key >> low) + (1 << (bits - 1))] += 1
                                else:
                                    hist[t, k, (key >> low) & mask] += 1


def _floor_scan(acts, ycell, ycell1, ystart, ycount, hy0, hy1, xcell, xcell1, xstart, xcount, wx0, wx1,
                hist, bits):
    """Bounded mode's floor: counts of pixels per bin of the top ``bits`` bits of a lower bound of
    their value, each block's 2 x 2 cells' minimum less the rounding margin, added to ``hist``
    int64 (C, 2 ** bits).  From the layer's cells only: no pixel is computed."""
    B, C, h, w = acts.shape
    ny, nx = ycell.shape[0], xcell.shape[0]
    scratch = np.empty(1, np.float64)
    kbits = scratch.view(np.int64)
    low = 64 - bits
    half = 1 << (bits - 1)
    for k in range(C):
        for b in range(B):
            for jy in range(ny):
                r0, r1 = ycell[jy], ycell1[jy]
                for jx in range(nx):
                    c0, c1 = xcell[jx], xcell1[jx]
                    a00 = np.float64(acts[b, k, r0, c0])
                    a01 = np.float64(acts[b, k, r0, c1])
                    a10 = np.float64(acts[b, k, r1, c0])
                    a11 = np.float64(acts[b, k, r1, c1])
                    v = min(min(a00, a01), min(a10, a11)) - \
                        _SLACK * max(max(abs(a00), abs(a01)), max(abs(a10), abs(a11)))
                    scratch[0] = v + 0.0
                    key = kbits[0]
                    if key < 0:
                        key ^= 0x7FFFFFFFFFFFFFFF
                    hist[k, (key >> low) + half] += ycount[jy] * xcount[jx]


_pnas_lock = threading.Lock()
_pnas_state = None


def _compile_pnas():
    import numba

    try:
        top = numba.njit(cache=True, nogil=True)(_top_scan)
        bins = numba.njit(cache=True, nogil=True)(_bin_scan)
        floors = numba.njit(cache=True, nogil=True)(_floor_scan)
    except RuntimeError:  # no writable cache folder
        top = numba.njit(nogil=True)(_top_scan)
        bins = numba.njit(nogil=True)(_bin_scan)
        floors = numba.njit(nogil=True)(_floor_scan)
    i, f = np.zeros(1, np.int64), np.ones(1, np.float64)
    tables = (i, i, i, i + 1, f, f - 1) * 2
    a = np.ones((1, 1, 1, 1), np.float32)
    top(a, *tables, np.zeros((1, 2)), np.zeros(1, np.int64), np.full(1, -np.inf), 1)
    z = np.zeros((1, 1), np.int64)
    bins(a, *tables, np.full(1, -np.inf), np.full(1, np.inf), z, 0, 2, np.zeros((1, 1, 4), np.int64),
         np.zeros((1, 1, 1)), z, False)
    floors(a, *tables, np.zeros((1, 4), np.int64), 2)
    return top, bins, floors


def pnas_kernels():
    """(top_scan, bin_scan, floor_scan) compiled, or None when numba cannot be had (the torch path is used)."""
    global _pnas_state
    with _pnas_lock:
        if _pnas_state is None:
            try:
                _pnas_state = _compile_pnas()
            except ImportError as exc:
                if not numba_missing(exc):
                    warnings.warn(f"netdissect: the compiled PNAS threshold kernel could not be built "
                                  f"({type(exc).__name__}: {exc}); using torch instead, which is slower",
                                  RuntimeWarning, stacklevel=2)
                _pnas_state = False
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so
                warnings.warn(f"netdissect: the compiled PNAS threshold kernel could not be built "
                              f"({type(exc).__name__}: {exc}); using torch instead, which is slower",
                              RuntimeWarning, stacklevel=2)
                _pnas_state = False
        return _pnas_state or None
