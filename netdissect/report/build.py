"""Write a run's HTML report: ``RUN/report/index.html`` plus charts and image strips beside it.

    >>> from netdissect.report import write_report
    >>> index = write_report("runs/demo")             # doctest: +SKIP
    >>> index                                         # runs/demo/report/index.html

The page works from the file system with no network access: CSS and
JavaScript are inline, unit data is embedded JSON, charts are SVG files and
strips JPEG/PNG files in the report folder, lazy-loaded.  Strips are cached
by content hash and images of earlier renders that are no longer used are
deleted (see :mod:`netdissect.report.strips`).
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib.resources import files
from pathlib import Path

from netdissect.report import charts
from netdissect.atomic import write_text
from netdissect.report.images import ImageSource
from netdissect.report.palette import category_colors, ordered_categories
from netdissect.report.records import layer_stats, unit_records
from netdissect.report.run import load_run
from netdissect.report.strips import StripWriter


def safe_name(name: str) -> str:
    """A layer name usable as a file or folder name (``features.28`` stays as it is)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "layer"


_CHART_CODE = None


def _chart(chart_dir: Path, stem: str, key, make) -> Path:
    """An SVG chart named by a hash of its inputs and of the chart code: drawn once, then reused."""
    global _CHART_CODE
    if _CHART_CODE is None:
        _CHART_CODE = hashlib.sha256(Path(charts.__file__).read_bytes()).hexdigest()
    digest = hashlib.sha256(json.dumps([_CHART_CODE, key], sort_keys=True).encode()).hexdigest()[:10]
    path = chart_dir / f"{stem}-{digest}.svg"
    if not path.exists():
        charts.save(make(), [path])
    return path


def _template(name: str) -> str:
    return (files("netdissect.report") / "templates" / name).read_text(encoding="utf-8")


def _json_for_script(obj) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(run_dir, out=None, *, tile: int = 112, cols: int = 5, runners_up: int = 4,
                 progress: bool = False, workers: int | None = None) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default ``run_dir/report``); return index.html.

    ``workers``: processes that draw the image strips (None: one per core, at most 8; 0: none).
    """
    import jinja2

    run = load_run(run_dir)
    out = Path(out) if out is not None else run.root / "report"
    dataset = run.summary.get("dataset") or {}
    source = ImageSource(dataset.get("path"))
    concept_cats = [c for layer in run.layers for c in layer.concept_categories]
    categories = ordered_categories(run.categories + concept_cats)
    colors = category_colors(categories)
    writer = StripWriter(out / "img", source, tile=tile, cols=cols)
    chart_dir = out / "charts"
    chart_files: set[Path] = set()

    layers, units, strips = [], [], []
    for li, layer in enumerate(run.layers):
        folder = safe_name(layer.name)
        records = unit_records(layer, runners_up=runners_up)
        stats = layer_stats(layer, categories, records)
        for r in records:
            number = int(layer.concept_numbers[r["concept"]]) if r["concept"] >= 0 else 0
            strips.append(writer.plan(layer, r["unit"], number, folder))
            r["layer"] = li
            r.pop("concept")
            units.append(r)
        summary_svg = _chart(chart_dir, f"{folder}-summary", [stats, categories],
                             lambda: charts.layer_summary(stats, categories))
        hist_key = [[(r["iou"], r["det"], r["cat"]) for r in records], categories, run.iou_threshold]
        hist_svg = _chart(chart_dir, f"{folder}-iou", hist_key,
                          lambda: charts.iou_histogram(records, categories, run.iou_threshold))
        chart_files.update([summary_svg, hist_svg])
        w, h = writer.size(layer.top_images.shape[1])
        layers.append({
            "name": layer.name, "id": folder, "stats": stats, "k": int(layer.top_images.shape[1]),
            "w": w, "h": h,
            "summary_chart": f"charts/{summary_svg.name}", "iou_chart": f"charts/{hist_svg.name}",
        })

    writer.draw(strips, workers=workers, progress=progress)
    for r, strip in zip(units, strips):
        r.update(strip.files())

    overview = None
    if len(run.layers) > 1:
        bars_u = [(l["name"], l["stats"]["unique_detectors"]) for l in layers]
        bars_d = [(l["name"], l["stats"]["detector_units"]) for l in layers]
        a = _chart(chart_dir, "layers-unique", [bars_u, categories], lambda: charts.category_bars(
            bars_u, categories, "unique detectors", "Unique detectors per layer"))
        b = _chart(chart_dir, "layers-units", [bars_d, categories], lambda: charts.category_bars(
            bars_d, categories, "detector units", "Detector units per layer"))
        chart_files.update([a, b])
        overview = {"unique": f"charts/{a.name}", "units": f"charts/{b.name}"}

    notes = []
    if not source.available:
        notes.append(f"Images and ground-truth outlines are missing: {source.problem}. "
                     "The strips show each unit's activation map (grey) with the region above "
                     "threshold in amber.")
    notes += source.warnings
    data = {
        "layers": [{k: l[k] for k in ("name", "id", "k", "w", "h")} for l in layers],
        "categories": categories, "colors": colors,
        "max_iou": max([u["iou"] for u in units] + [0.05]),
        "units": units,
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    page = env.from_string(_template("report.html.j2")).render(
        run=run, summary=run.summary, dataset=dataset, config=run.summary.get("config") or {},
        model=run.summary.get("model") or {}, layers=layers, overview=overview, notes=notes,
        categories=categories, colors=colors, n_units=len(units),
        n_detectors=sum(1 for u in units if u["det"]),
        css=_template("report.css"), js=_template("report.js"), data_json=_json_for_script(data),
        run_name=run.root.resolve().name,
    )
    index = write_text(out / "index.html", page)
    # Only now that the new page is in place: drop files the old page used and the new one does not.
    for p in chart_dir.glob("*"):
        if p.is_file() and p not in chart_files:
            p.unlink()
    removed = writer.remove_unused()
    if progress:
        print(f"report: {index} ({writer.rendered} strips drawn, {writer.reused} reused, "
              f"{removed} stale files removed)", file=sys.stderr)
    return index
