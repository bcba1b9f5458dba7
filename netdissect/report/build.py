"""Write a run's HTML report: ``RUN/report/index.html`` plus charts and image strips beside it.

    >>> from netdissect.report import write_report
    >>> index = write_report("runs/demo")             # doctest: +SKIP
    >>> index  # runs/demo/report/index.html  # doctest: +SKIP

The page works from the file system with no network access: CSS and
JavaScript are inline, unit data (activation maps included) is embedded
JSON, charts are SVG files, and the browser draws each unit's strip on a
canvas from a thumbnail per distinct top image and the unit's maps, only
for the cards on screen (see :mod:`netdissect.report.assets`).  The images
come from the source :func:`netdissect.report.images.open_source` picks by
summary.json (a Broden dataset, an image folder, or images the run holds).
Before any image of a dataset or image folder is drawn, its files are checked
against the ``files_digest`` the run recorded.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np

from netdissect.atomic import write_text
from netdissect.data.digest import changed_files, files_digest
from netdissect.errors import NetDissectError
from netdissect.report.images import ImageSource, open_source
from netdissect.report.palette import category_colors, ordered_categories
from netdissect.report.records import layer_stats, unit_records
from netdissect.report.run import load_run
from netdissect.report.assets import AssetWriter, check_out_dir
from netdissect.report.story import story_link


def safe_name(name: str) -> str:
    """A layer name usable as a file or folder name (``features.28`` stays as it is)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "layer"


_CHART_CODE = None


def _chart(chart_dir: Path, stem: str, key, make) -> Path:
    """An SVG chart named by a hash of its inputs and of the chart code: drawn once, then reused.

    ``make(charts)`` builds the figure; matplotlib is imported only when a chart must be drawn.
    """
    global _CHART_CODE
    if _CHART_CODE is None:
        _CHART_CODE = hashlib.sha256(Path(__file__).with_name("charts.py").read_bytes()).hexdigest()
    digest = hashlib.sha256(json.dumps([_CHART_CODE, key], sort_keys=True).encode()).hexdigest()[:10]
    path = chart_dir / f"{stem}-{digest}.svg"
    if not path.exists():
        from netdissect.report import charts

        charts.save(make(charts), [path])
    return path


def _formula_terms(layer, formula) -> tuple | None:
    """A unit card's formula (`netdissect explain`) as ((op, label number), ...), first op "";
    None when the unit has none or its text does not parse with the layer's concept names."""
    if not formula:
        return None
    from netdissect.explain.formula import Formula

    try:
        f = Formula.parse(formula[0], [str(n) for n in layer.concept_names])
    except NetDissectError:
        return None
    nums = [int(layer.concept_numbers[c]) for c in f.concepts]
    return (("", nums[0]),) + tuple((op, n) for (op, _), n in zip(f.rest, nums[1:]))


def _template(name: str) -> str:
    return (files("netdissect.report") / "templates" / name).read_text(encoding="utf-8")


def _json_for_script(obj) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class ReportWarning(UserWarning):
    """Something the report could not check or draw (it is still written)."""


def weights_text(model: dict) -> str:
    """What the header says was loaded: the engine's description, else spec/weights and sha256.

    Never "None": a bundled zoo model has no ``weights`` entry, only its spec and hash.
    """
    desc = model.get("weights_description")
    if isinstance(desc, str) and desc.strip():
        return desc.strip()
    weights, spec, sha = model.get("weights"), model.get("spec"), model.get("sha256")
    tag = f" (sha256 {sha[:12]}…)" if isinstance(sha, str) and sha else ""
    if isinstance(weights, str) and weights and weights.lower() != "none":
        return f"{weights}{tag}"
    if isinstance(weights, str) and weights.lower() == "none":
        return f"none: random initialisation{tag}"
    if isinstance(spec, str) and spec:
        return f"as loaded by {spec}{tag}"
    return f"unknown{tag}" if tag else "unknown (summary.json names no weights)"


def verify_images(run, source: ImageSource, verify: bool = True) -> list[str]:
    """Check the dataset's images against the run's ``files_digest``; returns notes for the page.

    Raises :class:`NetDissectError` when they changed (unless ``verify`` is False: then a warning).
    Images the run holds itself (``source.run_held``) are its own output: nothing to check.
    """
    if not source.available or source.run_held or not run.layers:
        return []
    dataset = run.summary.get("dataset") or {}
    expected = dataset.get("files_digest")
    image_dir = source.image_dir
    if not expected:
        warnings.warn(f"{run.root / 'summary.json'} records no files_digest of the dataset images (a run "
                      f"written by an older netdissect): the report cannot check that the images in "
                      f"{image_dir} are the ones the run saw; rerun `netdissect dissect` to record it",
                      ReportWarning, stacklevel=3)
        return []
    paths = run.layers[0].image_paths
    if files_digest(image_dir, paths) == expected:
        return []
    try:
        since = (run.root / "summary.json").stat().st_mtime_ns
    except OSError:
        since = 0
    changed = changed_files(image_dir, paths, since)
    example = f" (e.g. {', '.join(changed)})" if changed else ""
    what = (f"{image_dir}: {source.what} changed since the run {run.root} read them{example}, "
            "so the units' top images would show other pictures")
    if verify:
        raise NetDissectError(f"{what}; rerun `netdissect dissect` on the dataset as it is now, or pass "
                              "--no-verify (verify=False) to draw the current files anyway")
    warnings.warn(f"{what} (drawn anyway: --no-verify)", ReportWarning, stacklevel=3)
    return [f"Warning: {source.what} changed after this run{example}; the strips show the current "
            "files, which may not be the images the units responded to."]


def _maps_b64(maps: np.ndarray) -> tuple[str, str]:
    """Base64 of a unit's maps, little-endian float16 (as topk.npz stores them) or float32."""
    dt = "<f2" if maps.dtype == np.float16 else "<f4"
    return base64.b64encode(np.ascontiguousarray(maps, dtype=dt).tobytes()).decode("ascii"), dt[1:]


def write_report(run_dir, out=None, *, tile: int = 112, cols: int = 5, runners_up: int = 4,
                 progress: bool = False, workers: int | None = None, verify: bool = True) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default ``run_dir/report``); return index.html.

    ``workers``: processes that write the thumbnails and outlines (None: one per core, at most 8;
    0: none).  ``verify=False`` draws the dataset's images even when they changed since the run
    (with a warning); by default that is an error.
    """
    import jinja2

    if out is not None:
        check_out_dir(Path(out))
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.root / "report"
    check_out_dir(out)
    dataset = run.summary.get("dataset") or {}
    source = open_source(run.summary, run.root)
    notes = verify_images(run, source, verify)
    concept_cats = [str(c) for layer in run.layers for c in layer.concept_categories]
    categories = ordered_categories(run.categories + concept_cats)
    colors = category_colors(categories)
    writer = AssetWriter(out / "img", source, tile=tile)
    chart_dir = out / "charts"
    chart_files: set[Path] = set()

    layers, units = [], []
    for li, layer in enumerate(run.layers):
        folder = safe_name(layer.name)
        records = unit_records(layer, runners_up=runners_up)
        stats = layer_stats(layer, categories, records)
        for r in records:
            number = int(layer.concept_numbers[r["concept"]]) if r["concept"] >= 0 else 0
            terms = _formula_terms(layer, r.get("formula"))
            if terms is not None and len(terms) == 1 and terms[0][1] == number:
                terms = None  # the formula is the label itself: its cyan outline already shows it
            r["_plan"] = writer.plan_unit(layer, r["unit"], number, terms)
            r["m"], _ = _maps_b64(layer.top_maps[r["unit"]])
            thr = float(layer.thresholds[r["unit"]])
            r["th"] = thr if np.isfinite(thr) else None  # exact: the page compares with it
            r["layer"] = li
            r.pop("concept")
            units.append(r)
        k, h, w = (int(x) for x in layer.top_maps.shape[1:])
        layers.append({
            "name": layer.name, "id": folder, "stats": stats, "k": k, "mh": h, "mw": w,
            "dtype": "f2" if layer.top_maps.dtype == np.float16 else "f4", "_records": records,
            # image-level (no spatial map): top images drawn without a region outline
            **({"img": 1, "_thr": layer.auroc_threshold} if getattr(layer, "method", None) == "image-level" else {}),
        })

    def draw_charts():  # matplotlib, in this process while the workers draw the image sheets
        for l in layers:
            records, stats, folder = l.pop("_records"), l["stats"], l["id"]
            summary_svg = _chart(chart_dir, f"{folder}-summary", [stats, categories],
                                 lambda charts: charts.layer_summary(stats, categories))
            thr, metric = (l.pop("_thr"), ("AUROC", ">=")) if "_thr" in l else (run.iou_threshold, ("IoU", ">"))
            hist_key = [[(r["iou"], r["det"], r["cat"]) for r in records], categories, thr, *metric]
            hist_svg = _chart(chart_dir, f"{folder}-iou", hist_key,
                              lambda charts: charts.iou_histogram(records, categories, thr, *metric))
            chart_files.update([summary_svg, hist_svg])
            l["summary_chart"], l["iou_chart"] = f"charts/{summary_svg.name}", f"charts/{hist_svg.name}"

    writer.draw(workers=workers, progress=progress, meanwhile=draw_charts)
    for r in units:
        r.update(writer.resolve(r.pop("_plan")))

    overview = None
    if len(run.layers) > 1:
        bars_u = [(l["name"], l["stats"]["unique_detectors"]) for l in layers]
        bars_d = [(l["name"], l["stats"]["detector_units"]) for l in layers]
        a = _chart(chart_dir, "layers-unique", [bars_u, categories], lambda charts: charts.category_bars(
            bars_u, categories, "unique detectors", "Unique detectors per layer"))
        b = _chart(chart_dir, "layers-units", [bars_d, categories], lambda charts: charts.category_bars(
            bars_d, categories, "detector units", "Detector units per layer"))
        chart_files.update([a, b])
        overview = {"unique": f"charts/{a.name}", "units": f"charts/{b.name}"}

    if not source.available:
        what = "Images and ground-truth outlines are" if source.masks else "Images are"
        notes.append(f"{what} missing: {source.problem}. "
                     "The strips show each unit's activation map (grey) with the region above "
                     "threshold in amber.")
    notes += source.warnings
    data = {
        "layers": [{k: l[k] for k in ("name", "id", "k", "mh", "mw", "dtype", "img") if k in l} for l in layers],
        "tile": tile, "cols": cols, "gap": 2,
        "sheets": writer.sheets(),
        "categories": categories, "colors": colors,
        "max_iou": max([u["iou"] for u in units if "sc" not in u] + [0.05]),  # (AUROC bars: of 1)
        "units": units,
    }
    model = run.summary.get("model") or {}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    page = env.from_string(_template("report.html.j2")).render(
        run=run, summary=run.summary, dataset=dataset, config=run.summary.get("config") or {},
        model=model, weights=weights_text(model), layers=layers, overview=overview, notes=notes,
        categories=categories, colors=colors, n_units=len(units),
        n_detectors=sum(1 for u in units if u["det"]),
        css=_template("report.css"), js=_template("report.js"), data_json=_json_for_script(data),
        run_name=run.root.resolve().name, outlines=source.masks, labels=run.summary.get("labels") or {},
        home=story_link(out),
    )
    index = write_text(out / "index.html", page)
    # Only now that the new page is in place: drop files the old page used and the new one does not.
    for p in chart_dir.glob("*"):
        if p.is_file() and p not in chart_files:
            p.unlink()
    removed = writer.remove_unused()
    if progress:
        print(f"report: {index} ({writer.drawn} images drawn, {writer.reused} files reused, "
              f"{removed} stale files removed)", file=sys.stderr)
    return index
