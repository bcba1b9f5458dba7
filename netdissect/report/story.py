"""One page that links every step of ``netdissect demo``: ``index.html`` in the demo's folder.

    >>> from netdissect.report.story import write_story
    >>> write_story("runs/demo", {"dissect": {...}, "gan": {...}})   # doctest: +SKIP

The page holds no numbers of its own: it quotes the steps' own files (the dissection's
table, ``roles.json``, ``removal.json``, ``insertion.json``) and links their reports and figures
by relative paths, so the folder can be moved or served as it is.  A step that did not run (or
whose files are missing) is said to be missing, never drawn from stale data.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from netdissect.atomic import write_text

__all__ = ["write_story"]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fig(root: Path, rel: str, alt: str) -> str:
    if not (root / rel).exists():
        return f'<p class="missing">figure {html.escape(rel)} was not written</p>'
    return f'<a href="{html.escape(rel)}"><img src="{html.escape(rel)}" alt="{html.escape(alt)}"></a>'


def _link(root: Path, rel: str, text: str) -> str:
    if not (root / rel).exists():
        return f'<span class="missing">{html.escape(text)} (not written)</span>'
    return f'<a href="{html.escape(rel)}">{html.escape(text)}</a>'


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.0f}%"


def _dissect(root: Path, info: dict) -> str:
    return f"""<section><h2>1. What the units of a scene classifier learned</h2>
<p>Network Dissection (CVPR 2017) of every conv stage of <code>{html.escape(info['model'])}</code> on
{info['n']} images of the synthetic world ({html.escape(info['probe'])}, never used in training): each unit is
scored as a segmenter of every concept by the IoU of its top-quantile region.</p>
<pre>{html.escape(info['table'])}</pre>
<p>{_link(root, info['run'] + '/report/index.html', 'The dissection report: every unit, its label and top images')}</p>
</section>"""


def _roles(root: Path, info: dict) -> str:
    d = root / info["dir"]
    roles = _read(d / "roles.json") or {}
    figs = "".join(_fig(root, f"{info['dir']}/figures/{n}.png", n) for n in ("removal", "importance_vs_iou"))
    return f"""<section><h2>2. What the units do in the classifier</h2>
<p>The role of units (PNAS 2020): conv5's units are ranked, per scene class, by how much removing each one
alone lowers that class's balanced accuracy on one world set; the most important are then removed together on
another set. The second figure plots a unit's best IoU against the number of classes for which it is one of
the 4 most important (PNAS Fig. 2; there, units important to more classes are the better detectors).</p>
{figs}
<p>{_link(root, info['dir'] + '/index.html', 'The unit-roles report: per-class removals, unit classifiers')}
{'' if roles else '<span class="missing">(roles.json missing)</span>'}</p>
</section>"""


def _gan(root: Path, info: dict) -> str:
    rem = _read(root / "gan-remove" / "removal.json")
    ins = _read(root / "gan-insert" / "insertion.json")
    concept = html.escape(info["concept"])
    line = '<span class="missing">removal.json missing</span>'
    if rem:
        rows = {r["n"]: r for r in rem.get("rows", [])}
        r = rows.get(20) or (rows[max(rows)] if rows else None)
        if r:
            line = (f"switching off its top {r['n']} of {rem['units']} units removes {_pct(r['share_removed'])} of "
                    f"its pixels (99% interval {_pct(r['ci99_low'])} to {_pct(r['ci99_high'])}) on "
                    f"{rem['samples']} samples of seed {rem['seed']}; {r['n']} random units: "
                    f"{_pct(r['control_share_removed'])} (the paper: 53% for trees in LSUN churches).")
    ins_line = '<span class="missing">insertion.json missing</span>' if not ins else (
        f"Switching its top {ins.get('n', '?')} units on, one cell of the layer at a time, on {ins.get('samples')} "
        f"samples of seed {ins.get('seed')}: where it adds the concept depends on what the scene holds there.")
    figs_r = "".join(_fig(root, f"gan-remove/figures/{n}.png", n) for n in ("removal_curve", "removal_grid"))
    figs_i = "".join(_fig(root, f"gan-insert/figures/{n}.png", n) for n in ("insertion_contexts", "insertion_map"))
    return f"""<section><h2>3. Units in a generator</h2>
<p><code>zoo:world-gan</code> dissected at layer4 and layer6 on latent samples of seed 1, its generated images
labelled by the bundled segmenter <code>zoo:world-seg</code>.
{_link(root, info['dir'] + '/report/index.html', 'The generator dissection report')}.</p>
<h3>Removing {concept}</h3><p>The object with the most layer4 detectors is <b>{concept}</b> ({info['detectors']}
detector units): {line}</p>{figs_r}
<h3>Inserting {concept}</h3><p>{ins_line}</p>{figs_i}
<p>Paint with the same units yourself: <code>netdissect paint --model zoo:world-gan --run {html.escape(str(root / info['dir']))}</code></p>
</section>"""


_CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d1d1f}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;max-height:380px;margin:.4em .8em .4em 0;border:1px solid #eee;vertical-align:top}
pre{background:#f6f6f8;padding:.8em;overflow:auto}.missing{color:#a33}code{background:#f2f2f4;padding:0 .2em}"""


def write_story(out, story: dict) -> Path:
    """Write ``out/index.html`` for the demo steps in ``story`` (keys dissect, roles, gan); return its path."""
    root = Path(out)
    parts = []
    if "dissect" in story:
        parts.append(_dissect(root, story["dissect"]))
    if "roles" in story:
        parts.append(_roles(root, story["roles"]))
    if "gan" in story:
        parts.append(_gan(root, story["gan"]))
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>netdissect demo</title><style>{_CSS}</style></head><body>
<h1>netdissect: what units learn, and what they do</h1>
<p>Everything below was computed by <code>netdissect demo</code> on the embedded synthetic world and the
bundled models, with nothing downloaded.</p>
{''.join(parts)}
</body></html>
"""
    return write_text(root / "index.html", page)
