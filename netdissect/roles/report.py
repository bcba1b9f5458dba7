"""An offline HTML page of the classifier experiment (``RUN/index.html``)."""
from __future__ import annotations

import html
import os
from pathlib import Path

from netdissect.atomic import write_text
from netdissect.report.story import PAGE_CSS, ZOOM_HTML, figure_html, story_link


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
    home = story_link(final if final is not None else out)  # staged: link from where it lands
    back = f' · <a href="{esc(home)}">&larr; back to the demo story</a>' if home else ""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>Role of units: {esc(summary['model'])} {esc(summary['layer'])}</title>"
             f"<style>{PAGE_CSS}</style></head><body>",
             f"<header class='top'><div class='wrap'><div class='eyebrow'>netdissect ablate · the role of units"
             f"{back}</div><h1>Role of units in {esc(summary['model'])} layer {esc(summary['layer'])}</h1>"
             f"<p>{summary['units']} units, {len(classes)} classes; train {summary['train']['images']} images, "
             f"val {summary['val']['images']}; evaluation: {esc(summary['mode'])}"
             + (f" ({esc(summary['why_full_passes'])})" if summary.get("why_full_passes") else "")
             + f". All-class accuracy on val: {base['all_class_accuracy']:.3f}.</p></div></header>"
             "<main class='wrap'><section class='panel'>"]
    if link:
        parts.append(f'<p>Dissection: <a href="{esc(link)}">report of {esc(summary["dissection"])}</a> '
                     "(unit numbers below open their cards). Click a figure to see it at full size.</p>")
    for name, files in summary.get("figures", {}).items():
        png = next((f for f in files if f.endswith(".png")), files[0])
        parts.append(f"<h2>{esc(name.replace('_', ' '))}</h2>" + figure_html(Path(out), png, name.replace("_", " ")))
    parts.append("</section><section class='panel'><h2>Removal on val (ranked on train)</h2>"
                 "<p>Balanced accuracy of each class with its most important units removed (&minus;n) or with only "
                 "them kept (only n).</p><div class='scroll-x'><table><tr><th>class</th><th>baseline</th>"
                 + "".join(f"<th>-{n}</th>" for n in sizes) + "".join(f"<th>only {n}</th>" for n in sizes) + "</tr>")
    for y, c in enumerate(classes):
        parts.append(f"<tr><td>{esc(c)}</td><td>{base['balanced_accuracy'][c]:.3f}</td>"
                     + "".join(f"<td>{rem[(y, 'most_important', n)][0]:.3f}</td>" for n in sizes)
                     + "".join(f"<td>{rem[(y, 'all_but_most_important', n)][0]:.3f}</td>" for n in sizes)
                     + "</tr>")
    parts.append("</table></div></section><section class='panel'><h2>Most important units per class (train)</h2>"
                 "<table><tr><th>class</th>"
                 f"<th>top {summary['top_k']}</th><th>best single-unit classifier (val balanced accuracy)</th></tr>")
    for y, c in enumerate(classes):
        u, t, tr, va = best[y]
        parts.append(f"<tr><td>{esc(c)}</td><td>{', '.join(unit(int(v)) for v in order[y, :summary['top_k']])}"
                     f"</td><td>{unit(u)}: peak &gt; {t:.3g}, train {tr:.3f}, val {va:.3f}</td></tr>")
    parts.append(f"</table></section></main>{ZOOM_HTML}</body></html>\n")
    return write_text(out / "index.html", "\n".join(parts))
