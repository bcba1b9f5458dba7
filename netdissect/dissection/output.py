"""What a finished run writes: ``summary.json`` and each layer's files (``docs/run-format.md``)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from netdissect import __version__
from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.dissection.result import FORMAT_VERSION, layer_folder


def build_summary(identity: dict, probe, source, device: str, skipped: dict, unknown: int, timing: dict,
                  layer_results: dict, world: int = 1, chunks: int | None = None, extra: dict | None = None) -> dict:
    """summary.json of a finished run."""
    cons = source.concepts
    return {
        "format_version": FORMAT_VERSION,
        "netdissect_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": identity["model"],
        "dataset": {**identity["dataset"], "n_used": len(probe) - len(skipped),
                    "skipped": [{"row": i, "error": e} for i, e in sorted(skipped.items())],
                    "unknown_label_count": unknown,
                    "categories": list(cons.categories), "n_concepts": len(cons)},
        "config": {**identity["config"], "device": device, "world_size": world,
                   **({"chunks": chunks} if chunks else {})},
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "layers": {name: lr.summary() for name, lr in layer_results.items()},
        **(extra or {}),
        "identity": identity,
    }


IMAGES_IN_RUN = "images"  # a generator run's top images: <run>/images/<row name>.png


def generated_image_paths(probe) -> list[str]:
    """topk.npz's ``image_paths`` of a generator run: ``<row name>.png``, relative to
    ``<run>/images`` (summary.json ``dataset.images_in_run``), e.g. ``seed1/000123.png``."""
    return [f"{name}.png" for name in probe.row_names()]


def top_rows(layer_results: dict) -> list[int]:
    """The union of every unit's top rows over the layers, sorted."""
    import numpy as np

    rows = set()
    for lr in layer_results.values():
        if lr.top_images is not None:
            rows.update(int(i) for i in np.unique(lr.top_images) if i >= 0)
    return sorted(rows)


def write_generated_images(run_dir: Path, model, prep, probe, rows: list[int], device, batch_size: int,
                           progress: bool = False) -> list[str]:
    """Regenerate the latent ``rows`` of ``probe`` with ``model`` (batched, on ``device``) and save each
    as ``<run_dir>/images/<row name>.png`` (RGB, the generator's full size), atomically.  A PNG already
    there from an earlier attempt of the same run is written again (the same image).  Returns the paths
    written, relative to the images folder."""
    import numpy as np
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from netdissect.atomic import write_with

    root = Path(run_dir) / IMAGES_IN_RUN
    paths = generated_image_paths(probe)
    written = []
    bar = tqdm(total=len(rows), desc="top images: regenerating", unit="img", disable=not progress,
               dynamic_ncols=True)
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            part = rows[s:s + batch_size]
            z = probe.batch([probe.load(i) for i in part], device)
            rgb = prep.to_image(model(prep(z)))
            arr = (rgb * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for i, img in zip(part, arr):
                rel = paths[i]
                write_with(root / rel, lambda tmp, img=img: Image.fromarray(np.ascontiguousarray(img)).save(
                    tmp, format="PNG"))
                written.append(rel)
            bar.update(len(part))
    bar.close()
    return written


def write_run(run_dir: Path, probe, layer_results: dict, summary: dict, image_paths: list[str] | None = None) -> None:
    """The run directory's files (each written atomically; summary.json last).  ``image_paths``:
    topk.npz's paths of every row (default: the probe's row names)."""
    names = probe.row_names() if image_paths is None else image_paths
    for name, lr in layer_results.items():
        lr.save(layer_folder(run_dir, name), names)
    atomic_write_bytes(Path(run_dir) / "summary.json", json.dumps(summary, indent=2).encode())
