"""Pass 2: each unit's thresholded, upsampled mask counted against the concept labels, read
back from the activation cache (no model), visiting only the 2 x 2 cell blocks that exceed the
threshold (:mod:`netdissect.dissection.masks`; on the CPU the compiled kernel)."""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from netdissect.dissection.masks import UnitMasks
from netdissect.dissection.rows import LabelCollate, LabelRows, loader
from netdissect.errors import DatasetError


def run_iou_pass(state, checkpoint_every: float, progress: bool) -> None:
    st, cfg = state, state.cfg
    thr = {n: torch.from_numpy(st.thresholds[n]).to(st.device, torch.float64) for n in st.layers}
    lossy = cfg.cache_dtype != "float32"
    thr_cached = {n: t.to(torch.float32) for n, t in thr.items()}
    masks: dict[tuple, UnitMasks] = {}
    collate = LabelCollate(st.source.concepts, st.skipped)
    workers = 0 if st.source.loads_from_memory else cfg.num_workers  # see ConceptSource
    batches = loader(LabelRows(st.source, st.done, st.hi), cfg.batch_size, workers, collate)
    last = time.monotonic()
    bar = tqdm(total=st.hi - st.lo, initial=st.done - st.lo, desc="pass 2/2: IoU", unit="img",
               disable=not progress, dynamic_ncols=True)
    for start, stop, errors, built in batches:
        for i, err in sorted(errors.items()):
            if not cfg.skip_bad:
                raise DatasetError(f"{err} (pass --skip-bad to skip bad rows and count them)")
            st.skipped.setdefault(i, err)
        labels = {}
        for size, (lb, rows) in built.items():
            if st.presence is not None:  # image-level layers: which concepts each row holds
                st.presence.add(start - st.lo, rows, lb)
            st.unknown_labels += lb.unknown
            st.label_positions += int(lb.planes.numel())
            whole = rows == list(range(stop - start))  # every row of the batch: no copy of its activations
            labels[size] = (lb.to(st.device), None if whole else torch.tensor(rows, device=st.device))
        for name in st.layers:
            if name in st.image_level:  # no region to count (dissection.imagelevel)
                continue
            acts = torch.from_numpy(st.caches[name].read(start - st.lo, stop - st.lo)).to(st.device)
            for size, (lb, rows) in labels.items():
                key = (name, size)
                if key not in masks:
                    masks[key] = UnitMasks(*st.shapes[name][1:], *size, device=st.device)
                sel = (acts if rows is None else acts[rows]).float()
                if lossy:  # positions whose rounded value equals a nonzero threshold: ties the rounding made
                    t = thr_cached[name].view(1, -1, 1, 1)  # (zeros, e.g. after a ReLU, are exact in both dtypes)
                    st.tied[name] = st.tied.get(name, 0) + int(((sel == t) & (t != 0)).sum())
                area, inter = masks[key].count(sel, thr[name], lb)
                st.counts[name].add(lb, area, inter)
        st.done = stop
        bar.update(stop - start)
        if time.monotonic() - last >= checkpoint_every:
            st.save_checkpoint()
            last = time.monotonic()
    bar.close()
