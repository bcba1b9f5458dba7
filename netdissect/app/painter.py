"""The paint app's engine: a loaded generator, a palette, and renders of painted strokes.

A sample's seed ``s`` is the latent ``z = numpy.random.RandomState(s).standard_normal(z_dim)``
(float32), i.e. row 0 of :func:`netdissect.probe.latent.latent_z` ``(1, s, z_dim)`` and row ``i`` of
seed ``s`` of ``netdissect dissect``'s latent probe when ``i = 0``.

A render applies the strokes in order at the painted layer, with the one edit rule of
:mod:`netdissect.interventions`, ``x <- x (1 - a) + v a``:

- ``a`` is the stroke's mask (nonzero pixels of the PNG) max-pooled to the layer's resolution,
  on the stroke's units (the concept's first ``n_units`` units, best IoU first; by default all of
  them, its ``max_units`` best: 20 as the PNAS paint app);
- ``v`` is 0 for ``erase`` and the unit's insertion value times ``strength`` for ``draw``;
  the insertion value is the 99% quantile of the unit's raw (not upsampled) map over
  ``VALUE_SAMPLES`` latents of seed ``VALUE_SEED`` (the paint app's policy in the PNAS reference),
  computed once when the painter is built.

Strokes are composited as the reference does (``a' = 1 - (1 - a_new)(1 - a_acc)``, the later
stroke's value where it paints), which with masks of 0 and 1 is exactly the rule applied stroke
after stroke; the composite goes through :func:`netdissect.interventions.edit` in one forward pass.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import io
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netdissect.errors import NetDissectError

__all__ = ["Painter", "PaintError", "Stroke", "VALUE_SAMPLES", "VALUE_SEED", "MAX_MASK_BYTES",
           "MAX_STROKES", "MAX_SEED", "decode_mask", "png_data_url"]

VALUE_SAMPLES = 200      # latents over which the insertion values are measured
VALUE_SEED = 1           # their seed (RandomState(1), the PNAS experiments' seed)
VALUE_QUANTILE = 0.99    # of each unit's raw map, over all samples and positions
MAX_MASK_BYTES = 64 * 1024   # a mask's PNG, decoded from base64
MAX_STROKES = 64
MAX_SEED = 2 ** 32 - 1
MAX_BATCH = 24           # samples per /api/samples call
DATA_URL = "data:image/png;base64,"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PaintError(NetDissectError, ValueError):
    """A request the painter cannot honour (bad mask, unknown concept, ...): the client's fault."""


@dataclass
class Stroke:
    concept: str
    mode: str            # "draw" | "erase"
    mask: np.ndarray     # bool (H, W) at the output image's size
    n_units: int | None = None
    strength: float = 1.0


def png_data_url(rgb: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a uint8 (H, W, 3) array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return DATA_URL + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_mask(url: str, size: tuple[int, int], what: str = "mask") -> np.ndarray:
    """A ``data:image/png;base64,`` mask as bool (H, W): True where any channel is nonzero.

    Raises :class:`PaintError` naming the problem: not a PNG data URL, bad base64, more than
    ``MAX_MASK_BYTES`` bytes, not a PNG, a PNG of another size than ``size`` (H, W).
    """
    from PIL import Image

    if not isinstance(url, str) or not url.startswith(DATA_URL):
        raise PaintError(f"{what}: expected a data URL starting with {DATA_URL!r}")
    body = url[len(DATA_URL):]
    if len(body) > (MAX_MASK_BYTES * 4) // 3 + 4:
        raise PaintError(f"{what}: larger than the limit of {MAX_MASK_BYTES} bytes")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise PaintError(f"{what}: not valid base64") from None
    if len(raw) > MAX_MASK_BYTES:
        raise PaintError(f"{what}: {len(raw)} bytes, larger than the limit of {MAX_MASK_BYTES} bytes")
    if not raw.startswith(PNG_MAGIC):
        raise PaintError(f"{what}: not a PNG image (it must start with the PNG signature)")
    h, w = size
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            if im.size != (w, h):
                raise PaintError(f"{what}: a {im.size[0]} x {im.size[1]} PNG; masks must be {w} x {h} "
                                 "(the output image's size)")
            im.load()
            if im.mode in ("P", "PA", "LA", "I;16", "1", "I", "F", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if im.mode in ("P", "PA", "LA") else "L")
            arr = np.asarray(im)
    except PaintError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL's many ways of refusing a corrupt file
        raise PaintError(f"{what}: not a readable PNG ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0


def latent(seed: int, dim: int) -> torch.Tensor:
    """``(1, dim)``: ``RandomState(seed).standard_normal(dim)`` as float32."""
    from netdissect.probe.latent import latent_z

    return torch.from_numpy(latent_z(1, int(seed), int(dim)))


class Painter:
    """A generator kept loaded, its painted layer, a palette, and :meth:`render`.

    ``generator``: an ``nn.Module`` mapping ``z`` (N, z_dim) to images in about [-1, 1] (N, 3, H, W);
    ``layer``: the name of the layer to paint (its output (N, C, h, w)); ``palette``: a list of
    :class:`netdissect.app.palette.Concept` whose units are units of that layer; ``to_image``: the
    output -> RGB in [0, 1] map the dissection used (:class:`netdissect.models.loading.GeneratorIO`'s);
    ``threads``: torch threads of a render (default 1: a 64 px generator gains little from more, and on
    a busy machine their spin-waiting costs several times the render; ``None``: torch's setting),
    set in the thread that renders (the server renders in worker threads).
    """

    def __init__(self, generator: torch.nn.Module, layer: str, palette, *, z_dim: int | None = None,
                 value_samples: int = VALUE_SAMPLES, value_seed: int = VALUE_SEED, max_units: int = 20,
                 to_image=None, threads: int | None = 1):
        from netdissect.errors import ActivationError
        from netdissect.hooks.trace import Trace
        from netdissect.models.loading import check_generated
        from netdissect.models.proggan import to_image as proggan_to_image

        self.generator = generator.eval()
        self.threads = threads
        self.to_image = to_image or proggan_to_image
        self.layer = layer
        self.z_dim = int(z_dim if z_dim is not None else getattr(generator, "z_dim"))
        self.lock = threading.Lock()
        self.max_units = int(max_units)
        from netdissect.probe.latent import latent_z

        z = torch.from_numpy(latent_z(value_samples, value_seed, self.z_dim))
        with torch.inference_mode():
            with Trace(self.generator, layer) as tr:
                maps, out = [], []
                for chunk in z.split(50):
                    y = self.generator(chunk)
                    if isinstance(y, torch.Tensor):
                        try:
                            check_generated(y)
                        except ActivationError as exc:
                            raise PaintError(f"{exc} (latents of seed {value_seed})") from None
                    out.append(y[:1])
                    maps.append(tr.output.float())
        maps = torch.cat(maps)
        if maps.dim() != 4 or out[0].dim() != 4 or out[0].shape[1] != 3:
            raise PaintError(f"layer {layer!r} gives {tuple(maps.shape[1:])} and the generator "
                             f"{tuple(out[0].shape[1:])}: the painter needs a (C, h, w) layer and RGB images")
        self.n_units, self.grid = int(maps.shape[1]), (int(maps.shape[2]), int(maps.shape[3]))
        self.size = (int(out[0].shape[2]), int(out[0].shape[3]))
        if self.size[0] % self.grid[0] or self.size[1] % self.grid[1]:
            raise PaintError(f"the image ({self.size}) is not a whole multiple of layer {layer}'s map {self.grid}")
        flat = maps.transpose(0, 1).reshape(self.n_units, -1)
        # one unit at a time: torch.quantile refuses inputs over 2**24 values (large layers)
        self.values = torch.stack([torch.quantile(row, VALUE_QUANTILE) for row in flat])
        self.value_policy = (f"{VALUE_QUANTILE:.0%} quantile of each unit's raw {self.grid[0]}x{self.grid[1]} map "
                             f"over {value_samples} latents of seed {value_seed} "
                             "(RandomState(seed).standard_normal((n, z_dim)))")
        self.palette = {}
        for c in palette:
            bad = [u for u in c.units if not 0 <= u < self.n_units]
            if bad:
                raise PaintError(f"concept {c.name!r}: units {bad[:5]} are not units of {layer} "
                                 f"({self.n_units} units): the run was made on another model or layer")
            c.values = [float(self.values[u]) for u in c.units]
            self.palette[c.name] = c
        self._warm_up()

    def _warm_up(self) -> None:
        """One edited render at startup: the first pass through the edit hook imports torch internals
        (about a second), which the first stroke of a user should not wait for."""
        from netdissect.interventions import edit

        alpha = torch.zeros(self.n_units, *self.grid)
        alpha[0] = 1
        with self._running(), edit(self.generator, self.layer, alpha=alpha, value=0.0):
            self.generator(self._z([0]))

    @contextlib.contextmanager
    def _running(self):
        """The lock (one render at a time: the edit hook is the model's), inference mode, the threads."""
        with self.lock, torch.inference_mode():
            if self.threads is not None and torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            yield

    # ---------------------------------------------------------------- rendering
    def _z(self, seeds) -> torch.Tensor:
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
                raise PaintError(f"seed {s!r} out of range: seeds are whole numbers 0..{MAX_SEED}")
        return torch.cat([latent(s, self.z_dim) for s in seeds])

    def to_uint8(self, x: torch.Tensor) -> np.ndarray:
        """The generator's output (N, 3, H, W) -> uint8 (N, H, W, 3): ``to_image`` (RGB in [0, 1], by
        default :func:`~netdissect.models.proggan.to_image`, ``(x + 1) / 2`` clamped), times 255, rounded."""
        from netdissect.errors import ActivationError
        from netdissect.models.loading import check_generated

        try:
            check_generated(x)
        except ActivationError as exc:
            raise PaintError(str(exc)) from None
        img = self.to_image(x.float())
        return (img * 255 + 0.5).floor_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    def samples(self, seeds: list[int]) -> np.ndarray:
        """Plain renders of several seeds, one batched forward pass: uint8 (N, H, W, 3)."""
        z = self._z(seeds)
        with self._running():
            return self.to_uint8(self.generator(z))

    def units_of(self, stroke: Stroke) -> list[int]:
        c = self.palette.get(stroke.concept)
        if c is None:
            known = ", ".join(sorted(self.palette)[:12])
            raise PaintError(f"unknown concept {stroke.concept!r}: the palette has {known}")
        n = len(c.units) if stroke.n_units is None else int(stroke.n_units)
        if n < 1:
            raise PaintError(f"n_units must be at least 1, got {n}")
        return c.units[:min(n, len(c.units), self.max_units)]

    def edit_of(self, strokes: list[Stroke]):
        """The composite ``(alpha, value)`` (C, h, w) of the strokes, and what each stroke switched."""
        C, (h, w) = self.n_units, self.grid
        alpha = torch.zeros(C, h, w)
        value = torch.zeros(C, h, w)
        report = []
        for i, s in enumerate(strokes):
            if s.mask.shape != self.size:
                raise PaintError(f"stroke {i}: mask of shape {s.mask.shape}, expected {self.size}")
            units = self.units_of(s)
            cell = F.adaptive_max_pool2d(torch.from_numpy(s.mask).float()[None, None], (h, w))[0, 0]
            idx = torch.as_tensor(units, dtype=torch.long)
            a = torch.zeros(C, h, w)
            a[idx] = cell
            v = torch.zeros(C, 1, 1)
            if s.mode == "draw":
                v[idx, 0, 0] = self.values[idx] * float(s.strength)
            # composite: a' = 1 - (1 - a)(1 - a_acc); value: the new stroke's where it paints
            value = value * (1 - a) + v * a
            alpha = 1 - (1 - alpha) * (1 - a)
            cells = torch.nonzero(cell > 0).tolist()
            report.append({"stroke": i, "concept": s.concept, "mode": s.mode, "units": units,
                           "values": [round(float(v[u, 0, 0]), 4) for u in units], "cells": cells})
        return alpha, value, report

    def render(self, seed: int, strokes: list[Stroke]):
        """``(uint8 (H, W, 3), report)``: the seed's image with the strokes painted, one forward pass."""
        from netdissect.interventions import edit

        z = self._z([seed])
        alpha, value, report = self.edit_of(strokes)
        t0 = time.perf_counter()
        with self._running():
            if strokes:
                with edit(self.generator, self.layer, alpha=alpha, value=value):
                    out = self.generator(z)
            else:
                out = self.generator(z)
        img = self.to_uint8(out)[0]
        return img, {"edits": report, "forward_ms": round((time.perf_counter() - t0) * 1000, 2)}

    def info(self) -> dict:
        return {"layer": self.layer, "units": self.n_units, "grid": list(self.grid),
                "image_size": list(self.size), "z_dim": self.z_dim, "value_policy": self.value_policy,
                "seed_rule": "z = numpy.random.RandomState(seed).standard_normal(z_dim), float32",
                "edit_rule": "x <- x * (1 - a) + v * a (a: mask max-pooled to the layer; v: 0 to erase, "
                             "strength x insertion value to draw)",
                "max_units": self.max_units}
