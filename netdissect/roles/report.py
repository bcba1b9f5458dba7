"""An offline HTML page of the classifier experiment (``RUN/index.html``)."""
from __future__ import annotations

import html
import os
from pathlib import Path

from netdissect.atomic import write_text


def _dissection_link(out: Path, summary: dict, final: Path | None = None) -> str | None:
    d = summary.get("dissection")
    if not d:
        return None
    page = Path(d) / "report" / "index.html"
    if not page.exists():
        return None
    return os.path.relpath(page, final or out)


def _card_prefix(layer: str) -> str:
    """The dissection report's card id of a unit is ``<layer id>-<unit>`` (``index.html#layer4-123``)."""
    from netdissect.report.build import safe_name

    return safe_name(layer)


def ablation_report(out: Path, summary: dict, removal, order, uc, final: Path | None = None) -> Path:
    """``out/index.html``; links to the dissection are relative to ``final`` (the run folder the page
    ends up in, when ``out`` is where it is staged)."""
    classes = summary["classes"]
    esc = html.escape
    link = _dissection_link(out, summary, final)
    card = _card_prefix(summary["layer"])
    labels = summary.get("unit_labels")
    ious = summary.get("best_iou")

    def unit(u: int) -> str:
        text = f"unit {u}"
        if labels is not None:
            text += f" ({esc(labels[u] or 'no label')}, IoU {ious[u]:.3f})"
        if link:
            return f'<a href="{esc(link)}#{esc(card)}-{u}">{text}</a>'
        return text

    rem = {(y, m, n): (b, a) for y, m, n, b, a in removal}
    sizes = summary["sizes"]
    best = {}
    for y, u, t, tr, va in uc:
        best.setdefault(y, (u, t, tr, va))
    base = summary["baseline_val"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Role of units: {esc(summary['model'])} "
             f"{esc(summary['layer'])}</title><style>body{{font-family:sans-serif;margin:2em;max-width:80em}}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
             "img{max-width:100%}</style></head><body>",
             f"<h1>Role of units in {esc(summary['model'])} layer {esc(summary['layer'])}</h1>",
             f"<p>{summary['units']} units, {len(classes)} classes; train {summary['train']['images']} images, "
             f"val {summary['val']['images']}; evaluation: {esc(summary['mode'])}"
             + (f" ({esc(summary['why_full_passes'])})" if summary.get("why_full_passes") else "")
             + f". All-class accuracy on val: {base['all_class_accuracy']:.3f}.</p>"]
    if link:
        parts.append(f'<p>Dissection: <a href="{esc(link)}">report of {esc(summary["dissection"])}</a></p>')
    for name, files in summary.get("figures", {}).items():
        parts.append(f"<h2>{esc(name.replace('_', ' '))}</h2><img src='{esc(files[1])}' alt='{esc(name)}'>")
    parts.append("<h2>Removal on val (ranked on train)</h2><table><tr><th>class</th><th>baseline</th>"
                 + "".join(f"<th>-{n}</th>" for n in sizes) + "".join(f"<th>only {n}</th>" for n in sizes) + "</tr>")
    for y, c in enumerate(classes):
        parts.append(f"<tr><td>{esc(c)}</td><td>{base['balanced_accuracy'][c]:.3f}</td>"
                     + "".join(f"<td>{rem[(y, 'most_important', n)][0]:.3f}</td>" for n in sizes)
                     + "".join(f"<td>{rem[(y, 'all_but_most_important', n)][0]:.3f}</td>" for n in sizes)
                     + "</tr>")
    parts.append("</table><h2>Most important units per class (train)</h2><table><tr><th>class</th>"
                 f"<th>top {summary['top_k']}</th><th>best single-unit classifier (val balanced accuracy)</th></tr>")
    for y, c in enumerate(classes):
        u, t, tr, va = best[y]
        parts.append(f"<tr><td>{esc(c)}</td><td>{', '.join(unit(int(v)) for v in order[y, :summary['top_k']])}"
                     f"</td><td>{unit(u)}: peak &gt; {t:.3g}, train {tr:.3f}, val {va:.3f}</td></tr>")
    parts.append("</table></body></html>\n")
    return write_text(out / "index.html", "\n".join(parts))
