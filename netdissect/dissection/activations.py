"""Pass 1: one forward pass per row; each layer's activations go to its on-disk cache while the
exact per-unit top quantile and each unit's top images are streamed."""
from __future__ import annotations

import threading
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from netdissect.dissection import kernel
from netdissect.dissection.config import CACHE_DTYPES, PRECISIONS
from netdissect.dissection.rows import InputRows, collate_inputs, loader
from netdissect.errors import ActivationError, DatasetError, LayerError, NetDissectError
from netdissect.hooks import TraceDict, run_to_layers


KEPT_IMAGE_BYTES = 512 << 20  # a generator's top images held in pass 1 (beyond: regenerated at the end)


def forward(model, traces, x, full: bool):
    """``(layer outputs, model output)`` of one forward pass of ``x``: with ``full`` the whole
    forward runs and its output is kept (the traces must not stop the pass); else the pass stops
    after the last traced layer and the output is None."""
    if not full:
        return run_to_layers(model, traces, x), None
    out = []
    outs = run_to_layers(lambda v: out.append(model(v)), traces, x)
    return outs, out[0]


class ActivationPass:
    """Runs pass 1 of ``state`` with ``model`` (already on the device, in eval mode) and ``prep``
    (the input normalisation).  ``explain(x_shape, exc)`` turns a failing first forward into a
    clear error.  ``keep_images``: hold a generator's top images for the run folder (``kept``)."""

    def __init__(self, state, model, prep, progress: bool, explain=None, keep_images: bool = True):
        self.state, self.model, self.prep, self.progress = state, model, prep, progress
        self.explain = explain
        self.warm: threading.Thread | None = None
        # a source that labels the model's output (a generator's images): the whole forward runs
        self.full = bool(getattr(state.source, "needs_output", False))
        # a generator's images of the rows now in some unit's top set (row -> uint8 (H, W, 3)), for the
        # run's top images; None once they would take more than KEPT_IMAGE_BYTES (then regenerated)
        self.kept: dict | None = {} if self.full and keep_images else None

    def run(self, checkpoint_every: float) -> None:
        st, cfg = self.state, self.state.cfg
        # with skip_bad, labels are read here as well: a row with a bad mask is skipped from the start
        rows = InputRows(st.probe, st.done, st.hi, check=st.source if cfg.skip_bad else None)
        if cfg.num_workers:
            kernel.wait_warm()  # the kernels started loading with the run: done before workers fork
        batches = iter(loader(rows, cfg.batch_size, cfg.num_workers, collate_inputs))
        if st.device.type == "cpu":  # else load them during the forward pass (workers forked: no lock leaks)
            self.warm = kernel.warm_in_background()
        last = time.monotonic()
        bar = tqdm(total=st.hi - st.lo, initial=st.done - st.lo, desc="pass 1/2: activations", unit="img",
                   disable=not self.progress, dynamic_ncols=True)
        # token layers and channels-last maps are traced as their (N, C, H, W) view (hooks.tokens)
        # (and image-level layers, e.g. NAME:cls, as (N, C, 1, 1) views of their module: dissection.imagelevel)
        from netdissect.dissection.imagelevel import trace_plan

        modules, views, self.split = trace_plan(st.layers, getattr(st, "layouts", {}), getattr(st, "image_level", {}))
        with TraceDict(self.model, modules, stop=not self.full, views=views) as traces, torch.inference_mode():
            for batch in batches:
                start = batch[0][0]
                good = [(i, p) for i, p, err in batch if err is None]
                for i, _, err in batch:
                    if err is not None:
                        if not cfg.skip_bad:
                            raise DatasetError(f"{err} (pass --skip-bad to skip bad rows and count them)")
                        st.skipped[i] = err
                if good:
                    self._forward_batch(traces, start, len(batch), good)
                st.done = start + len(batch)
                bar.update(len(batch))
                if time.monotonic() - last >= checkpoint_every:
                    st.save_checkpoint()
                    last = time.monotonic()
        if hasattr(st.source, "flush"):  # the labels it made and still holds, written
            st.source.flush()
        bar.close()

    def join(self) -> None:
        """Wait for the kernel-loading thread (never fork loader workers while it may hold locks)."""
        if self.warm is not None:
            self.warm.join()
            self.warm = None

    def _forward_batch(self, traces, start: int, n: int, good) -> None:
        st, cfg = self.state, self.state.cfg
        idx = torch.tensor([i for i, _ in good])
        try:
            x = st.probe.batch([p for _, p in good], st.device)
        except DatasetError as exc:
            raise DatasetError(f"{st.probe.where(int(idx[0]))}: {exc}") from None
        if not self.full:
            st.source.observe(idx.tolist(), x)  # a segmenter labels the images it is shown here
        x = self.prep(x)
        if cfg.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = PRECISIONS[cfg.precision]
        try:
            with torch.autocast(st.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                outs, y = forward(self.model, traces, x, self.full)
            outs = self.split(outs)
        except LayerError as exc:
            raise LayerError(f"{exc} (at {st.probe.where(int(idx[0]))}, batch of rows {int(idx[0])}.."
                             f"{int(idx[-1])})") from None
        except NetDissectError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's own failure, explained
            if self.explain is None:
                raise
            raise self.explain(tuple(x.shape), exc) from None
        rgb = None
        if self.full:  # the generated images, segmented (batched, on the device) in this same pass
            from netdissect.models.loading import check_generated

            check_generated(y, [st.probe.where(int(i)) for i in idx.tolist()])
            rgb = self.prep.to_image(y)
            st.source.observe(idx.tolist(), rgb)
        np_dtype = CACHE_DTYPES[cfg.cache_dtype]
        t_dtype = torch.float16 if np_dtype == np.float16 else torch.float32
        for name in st.layers:
            a = outs[name]
            if not isinstance(a, torch.Tensor) or a.ndim != 4:
                got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                raise LayerError(f"layer {name!r} outputs {got}; dissection needs 4-D (N, C, H, W) feature maps "
                                 "or token sequences (`netdissect layers` shows output shapes)")
            if name not in st.shapes:
                st.allocate(name, tuple(a.shape[1:]))
            elif tuple(a.shape[1:]) != st.shapes[name]:
                raise LayerError(f"layer {name!r} output changed shape from {st.shapes[name]} to "
                                 f"{tuple(a.shape[1:])} at {st.probe.where(int(idx[0]))}")
            ac = a.detach().to(t_dtype)
            # every value is finite exactly when their float64 sum is (a NaN or an infinity makes the sum
            # one; float32 values cannot overflow it): a seventh of isfinite(ac).all()'s cost
            if not torch.isfinite(ac.sum(dtype=torch.float64)):
                bad = (~torch.isfinite(ac.flatten(1))).any(1).nonzero()[:, 0]
                row = st.probe.where(int(idx[bad[0].cpu()]))
                if torch.isfinite(a[bad]).all():
                    raise ActivationError(f"layer {name!r}: activations overflow float16 at {row}; "
                                          "use cache_dtype='float32' (--cache-dtype float32, the default)")
                raise ActivationError(f"layer {name!r}: NaN or infinite activations at {row} "
                                      f"({len(bad)} image(s) in this batch)")
            values = np.ascontiguousarray(ac.cpu().numpy())
            stream = st.pnas_streams.get(name)
            if stream is not None:  # the PNAS threshold scan, on its thread (values are not changed below)
                stream.add(values if values.dtype == np.float32 else values.astype(np.float32))
            if len(good) < n:  # skipped rows keep zeros in the cache
                full = np.zeros((n, *st.shapes[name]), dtype=np_dtype)
                full[(idx - start).numpy()] = values
                values = full
            st.caches[name].write(start - st.lo, values)
            C = ac.shape[1]
            if name in st.quantiles:
                st.quantiles[name].add(ac.transpose(0, 1).reshape(C, -1))  # the cached values, as float32
            st.tops[name].add(ac, idx)
        if self.kept is not None:
            self._keep_top_images(idx, rgb)

    def _keep_top_images(self, idx, rgb) -> None:
        """Hold the generated images of this batch's rows that entered a top set; drop the images of
        rows that left every top set (they cannot come back: a top set's k-th value only rises)."""
        from netdissect.dissection.output import to_uint8

        st = self.state
        union = set()
        for name in st.layers:
            union.update(np.unique(st.tops[name].images).tolist())
        for i in [i for i in self.kept if i not in union]:
            del self.kept[i]
        sel = [j for j, i in enumerate(idx.tolist()) if i in union]
        if sel:
            for j, img in zip(sel, to_uint8(rgb[sel])):
                self.kept[int(idx[j])] = img
            if sum(v.nbytes for v in self.kept.values()) > KEPT_IMAGE_BYTES:
                self.kept = None  # too many or too large: regenerated at the end instead
