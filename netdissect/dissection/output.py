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


def write_run(run_dir: Path, probe, layer_results: dict, summary: dict) -> None:
    """The run directory's files (each written atomically; summary.json last)."""
    names = probe.row_names()
    for name, lr in layer_results.items():
        lr.save(layer_folder(run_dir, name), names)
    atomic_write_bytes(Path(run_dir) / "summary.json", json.dumps(summary, indent=2).encode())
