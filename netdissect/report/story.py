"""One page that links every step of ``netdissect demo``: ``index.html`` in the demo's folder.

    >>> from netdissect.report.story import write_story
    >>> write_story("runs/demo", {"dissect": {...}, "gan": {...}})   # doctest: +SKIP

The page holds no numbers of its own: it quotes the steps' own files (the dissection's
table, ``roles.json``, ``removal.json``, ``insertion.json``) and links their reports and figures
by relative paths, so the folder can be moved or served as it is.  A step that did not run (or
whose files are missing) is said to be missing, never drawn from stale data.  Where a measurement
differs from the paper's, the page says so beside it and gives the facts that bear on why.

Figures are shown at their own size (no larger than the column) and open at full size on a click;
the page prints the command line of every step as the demo ran it.  Reports written inside the
demo's folder find the page (:func:`story_link`) and link back to it.
"""
from __future__ import annotations

import html
import json
import os
import shlex
from pathlib import Path

import numpy as np

from netdissect.atomic import write_text

__all__ = ["write_story", "story_link", "PAGE_CSS", "ZOOM_HTML", "figure_html"]

STORY_MARK = '<meta name="netdissect-story" content="1">'

# The look shared by the story page and the unit-roles page (the report's palette and type).
PAGE_CSS = """:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2127;--muted:#626a75;--line:#e2e5ea;--accent:#2f6fdf}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.top{background:#1c2330;color:#eef1f6;padding:20px 0 16px}.top a{color:#cfe0ff}
.eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:11px;color:#9fb0c8}
.top h1{font-size:24px;margin:4px 0 6px;font-weight:650;line-height:1.25}.top p{margin:0;color:#c9d3e2}
.top code{background:#2c3546;color:#eef1f6}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
nav.toc{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:10px;font-size:14px}
section.panel{background:var(--card);border-radius:10px;box-shadow:0 1px 3px rgba(16,24,40,.08);padding:4px 22px 18px;
margin:18px 0}
h2{font-size:20px;margin:18px 0 8px}h3{font-size:16px;margin:18px 0 6px}
a{color:var(--accent)}figure{margin:12px 0 16px}figure a{display:inline-block;cursor:zoom-in;max-width:100%}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff}
figcaption{font-size:13.5px;color:var(--muted);margin-top:4px;max-width:980px}
.note{background:#fff7e0;border:1px solid #f2d98b;border-radius:8px;padding:8px 12px;margin:10px 0}
.agree{background:#eaf6ec;border:1px solid #b5dcbc;border-radius:8px;padding:8px 12px;margin:10px 0}
pre{background:#f6f6f8;padding:.8em;overflow:auto;font-size:13px}.missing{color:#a33}
code{background:#f2f2f4;padding:0 .2em;font-size:13.5px}
pre.cmd{white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0 12px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0}td,th{border:1px solid var(--line);padding:3px 7px;
text-align:left}th{background:#f6f7f9}tr:nth-child(even) td{background:#fbfbfc}
.scroll-x{overflow-x:auto}
dialog.zoom{border:0;border-radius:10px;padding:0;max-width:96vw;max-height:94vh;box-shadow:0 10px 40px rgba(0,0,0,.35)}
dialog.zoom::backdrop{background:rgba(14,18,26,.72)}
.zoom-bar{display:flex;justify-content:space-between;align-items:center;gap:16px;padding:8px 12px;position:sticky;
top:0;background:#fff;border-bottom:1px solid var(--line);font-weight:600}
.zoom-bar button{font:inherit;font-weight:400;border:1px solid #cfd4db;border-radius:6px;padding:3px 10px;
background:#fff;cursor:pointer}.zoom-body{padding:10px;overflow:auto;max-height:calc(94vh - 50px)}
.zoom-body img{display:block;max-width:none}"""

# A figure opens at its full size in a dialog on a click (without script the link opens the PNG itself).
ZOOM_HTML = """<dialog id="zoom" class="zoom" aria-label="figure at full size">
<form method="dialog" class="zoom-bar"><span id="zoom-title"></span><button type="submit">Close (Esc)</button></form>
<div class="zoom-body" id="zoom-body"></div></dialog>
<script>
(function () {
  var d = document.getElementById("zoom");
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a.fig");
    if (!a || !d.showModal) return;
    e.preventDefault();
    var img = document.createElement("img"), small = a.querySelector("img");
    img.src = a.getAttribute("href"); img.alt = small.alt;
    img.onload = function () { img.style.width = img.naturalWidth + "px"; };
    document.getElementById("zoom-title").textContent = small.alt + " (full size)";
    document.getElementById("zoom-body").replaceChildren(img);
    d.showModal();
  });
  d.addEventListener("click", function (e) { if (e.target === d) d.close(); });
})();
</script>"""


def story_link(folder) -> str | None:
    """The relative link from ``folder`` to the demo story page above it (up to three levels), if any.

    A story page is an ``index.html`` written by :func:`write_story` (it carries a marker)."""
    folder = Path(folder).resolve()
    for up in list(folder.parents)[:3]:
        page = up / "index.html"
        try:
            if STORY_MARK in page.read_text(encoding="utf-8", errors="replace")[:4000]:
                return Path(os.path.relpath(page, folder)).as_posix()
        except OSError:
            continue
    return None


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _png_size(path: Path) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - a size is a layout hint only
        return None


def figure_html(root: Path, rel: str, alt: str, caption: str = "") -> str:
    """A figure shown at its own size (at most the column's width) that opens at full size on a click."""
    if not (root / rel).exists():
        return f'<p class="missing">figure {html.escape(rel)} was not written</p>'
    size = _png_size(root / rel)
    wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure><a class="fig" href="{html.escape(rel)}" title="click to see it at full size">'
            f'<img src="{html.escape(rel)}" alt="{html.escape(alt)}"{wh}></a>{cap}</figure>')


def _link(root: Path, rel: str, text: str) -> str:
    if not (root / rel).exists():
        return f'<span class="missing">{html.escape(text)} (not written)</span>'
    return f'<a href="{html.escape(rel)}">{html.escape(text)}</a>'


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.0f}%"


def importance_trend(counts, ious, resamples: int = 2000, seed: int = 0) -> dict | None:
    """Spearman's rank correlation of a unit's importance count with its best IoU, with a 95% bootstrap
    interval over units (``resamples`` draws of numpy ``default_rng(seed)``), and the units per count.

    >>> t = importance_trend([0, 0, 1, 1, 2, 2, 3], [.01, .02, .03, .05, .04, .06, .07])
    >>> round(t["rho"], 2), t["verdict"]
    (0.9, 'rising')
    """
    from scipy.stats import rankdata

    c, v = np.asarray(counts, float), np.asarray(ious, float)
    ok = np.isfinite(v)
    c, v = c[ok], v[ok]
    if len(c) < 3 or np.ptp(c) == 0 or np.ptp(v) == 0:
        return None

    def rho(idx):
        a, b = rankdata(c[idx]), rankdata(v[idx])
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return np.nan
        return float(np.corrcoef(a, b)[0, 1])

    r = rho(np.arange(len(c)))
    rng = np.random.default_rng(seed)
    boot = np.array([rho(rng.integers(0, len(c), len(c))) for _ in range(resamples)])
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    verdict = "rising" if lo > 0 else "falling" if hi < 0 else "flat"
    bins = {int(k): int((c == k).sum()) for k in np.unique(c)}
    means = {int(k): float(v[c == k].mean()) for k in np.unique(c)}
    return {"rho": r, "low": float(lo), "high": float(hi), "verdict": verdict, "units": int(len(c)),
            "per_count": bins, "mean_iou": means}


def _dissect(root: Path, info: dict) -> str:
    return f"""<section class="panel" id="dissect"><h2>1. What the units of a scene classifier learned</h2>
<p>Network Dissection (CVPR 2017) of every conv stage of <code>{html.escape(info['model'])}</code> on
{info['n']} images of the synthetic world ({html.escape(info['probe'])}, never used in training): each unit is
scored as a segmenter of every concept by the IoU of its top-quantile region.</p>
<pre>{html.escape(info['table'])}</pre>
<p>{_link(root, info['run'] + '/report/index.html', 'The dissection report: every unit, its label and top images')}
(one layer at a time; links such as <code>report/index.html#conv5-12</code> open at a unit).</p>
</section>"""


def _trend_note(roles: dict) -> str:
    counts, ious = roles.get("importance_count"), roles.get("best_iou")
    if counts is None or ious is None:
        return '<p class="note">No dissection was given to the roles step, so no IoU to compare with.</p>'
    t = importance_trend(counts, ious)
    if t is None:
        return '<p class="note">Too few units or no spread of importance: no trend to measure.</p>'
    k = roles.get("top_k", 4)
    bins = ", ".join(f"{n} unit{'s' if n != 1 else ''} important to {c} class{'es' if c != 1 else ''} "
                     f"(mean IoU {t['mean_iou'][c]:.3f})" for c, n in t["per_count"].items())
    n_classes = len(roles.get("classes", []))
    ours = (f"Here Spearman's rank correlation of a unit's importance count with its best IoU is "
            f"&rho; = {t['rho']:.2f} (95% bootstrap interval over the {t['units']} units: {t['low']:.2f} to "
            f"{t['high']:.2f}): {bins}.")
    if t["verdict"] == "rising":
        return f'<p class="agree">{ours} As in the paper, the trend rises.</p>'
    what = "falls: the opposite of the paper" if t["verdict"] == "falling" else \
        "is not measurably rising: the interval includes no trend at all"
    top = max(t["per_count"])
    small = (top, t["per_count"][top])
    return (f'<p class="note"><b>Our measurement differs from the paper.</b> {ours} The trend {what}. '
            f"Why it may differ: the paper ranked 512 units of VGG-16 conv5_3 against 365 scene classes, so many "
            f"units are important to several classes; here {n_classes} classes with their top {k} units each fill "
            f"at most {n_classes * k} places, and only {small[1]} unit{'s' if small[1] != 1 else ''} "
            f"{'are' if small[1] != 1 else 'is'} important to {small[0]} classes, so that point rests on very few "
            f"units; the model is a small "
            f"network trained on our synthetic world, whose concepts are not the paper's; and we measured one "
            f"training seed, so how much the trend moves from seed to seed is not measured here.</p>")


def _roles(root: Path, info: dict) -> str:
    d = root / info["dir"]
    roles = _read(d / "roles.json") or {}
    rel = info["dir"] + "/figures/"
    return f"""<section class="panel" id="roles"><h2>2. What the units do in the classifier</h2>
<p>The role of units (PNAS 2020): conv5's units are ranked, per scene class, by how much removing each one
alone lowers that class's balanced accuracy on one world set; the most important are then removed together on
another set.</p>
{figure_html(root, rel + 'removal.png', 'removal of the most important units, per class',
             'Per scene class: its balanced accuracy (blue) and the accuracy over all classes (orange) as its most '
             'important units are removed (solid) or as only they are kept (dashed). Click to enlarge.')}
<p>The paper (PNAS Fig. 2) finds that units important to more classes are the better detectors: their mean
best IoU rises with the number of classes for which they are among the {roles.get('top_k', 4)} most important.</p>
{figure_html(root, rel + 'importance_vs_iou.png', 'best IoU against importance',
             "A unit's best IoU (mean and standard error) against the number of classes for which it is among the "
             "most important; each point is labelled with its number of units.")}
{_trend_note(roles) if roles else ''}
<p>{_link(root, info['dir'] + '/index.html', 'The unit-roles report: per-class removals, unit classifiers')}
{'' if roles else '<span class="missing">(roles.json missing)</span>'}</p>
</section>"""


def _removal_note(rem: dict, r: dict) -> str:
    paper = rem.get("paper") or {}
    if not paper or r.get("ci99_low") is None:
        return ""
    p, lo, hi = float(paper["share_removed"]), float(r["ci99_low"]), float(r["ci99_high"])
    rel = "within" if lo <= p <= hi else "outside"
    concept = rem["concept"].split("/")[-1]
    head = ("agrees with" if rel == "within" else "<b>differs from</b>")
    return (f'<p class="{"agree" if rel == "within" else "note"}">Our {_pct(r["share_removed"])} {head} the '
            f"paper's {_pct(p)} (its 53% lies {rel} our 99% interval). The settings differ: the paper removed 20 "
            f"<i>tree</i> units of a Progressive GAN of LSUN churches (256 px, 512 units at layer4); here "
            f"{r['n']} <i>{html.escape(concept)}</i> units of {rem['units']} in a small generator of our synthetic "
            f"world, on {rem['samples']} samples (the width of the interval), counted by our segmenter. Neither "
            f"number says what the other setting would give.</p>")


def _gan(root: Path, info: dict) -> str:
    rem = _read(root / "gan-remove" / "removal.json")
    ins = _read(root / "gan-insert" / "insertion.json")
    concept = html.escape(info["concept"])
    line, note, grid_cap, size_line = '<span class="missing">removal.json missing</span>', "", "", ""
    if rem:
        rows = {r["n"]: r for r in rem.get("rows", [])}
        r = rows.get(20) or (rows[max(rows)] if rows else None)
        if r:
            line = (f"switching off its top {r['n']} of {rem['units']} units removes {_pct(r['share_removed'])} of "
                    f"its pixels (99% interval {_pct(r['ci99_low'])} to {_pct(r['ci99_high'])}) on "
                    f"{rem['samples']} samples of seed {rem['seed']}; {r['n']} random units: "
                    f"{_pct(r['control_share_removed'])} (the paper: 53% for trees in LSUN churches).")
            note = _removal_note(rem, r)
        sh, sw = rem.get("seg_size") or [None, None]
        if sh:
            size_line = (f"<p>Pixels are counted on the segmenter's label map, {sh} &times; {sw} per image "
                         f"({sh * sw} label pixels), not on the generated image itself.</p>")
        g = rem.get("grid") or {}
        grid_cap = (f"Each column is one sample: the original, its top units removed, as many random units removed; "
                    f"the caption under each image is the share of its label map labelled {concept}. "
                    + html.escape(g.get("rule", "The samples are the first of the seed.")))
    ins_line = '<span class="missing">insertion.json missing</span>'
    ex_cap = ""
    if ins:
        sh, sw = ins.get("seg_size") or [0, 0]
        ins_line = (f"Switching its top {ins.get('n', '?')} units on, one cell of the layer's "
                    f"{'&times;'.join(str(v) for v in ins.get('cells', []))} grid at a time, on {ins.get('samples')} "
                    f"samples of seed {ins.get('seed')}: where it adds the concept depends on what the scene holds "
                    f"there. Added pixels are label pixels of the {sh} &times; {sw} label map ({sh * sw} per image).")
        ex_cap = html.escape(ins.get("examples_rule") or "The first samples of the seed, each at the cell where "
                             "switching the units on adds the most.")
    rel = "gan-remove/figures/"
    reli = "gan-insert/figures/"
    curve = figure_html(root, rel + "removal_curve.png", f"share of {info['concept']} removed against units removed",
                        "Share of the concept's label pixels removed as its top units (blue) or as many random "
                        "units (grey) are switched off; bands: 99% intervals.")
    return f"""<section class="panel" id="gan"><h2>3. Units in a generator</h2>
<p><code>zoo:world-gan</code> dissected at layer4 and layer6 on latent samples of seed 1, its generated images
labelled by the bundled segmenter <code>zoo:world-seg</code>.
{_link(root, info['dir'] + '/report/index.html', 'The generator dissection report')}.</p>
{size_line}
<h3>Removing {concept}</h3><p>The object with the most layer4 detectors is <b>{concept}</b> ({info['detectors']}
detector units): {line}</p>{note}
{curve}
{figure_html(root, rel + 'removal_grid.png', f'samples with {info["concept"]} units removed', grid_cap)}
<h3>Inserting {concept}</h3><p>{ins_line}</p>
{figure_html(root, reli + 'insertion_examples.png', f'examples of {info["concept"]} inserted', ex_cap)}
{figure_html(root, reli + 'insertion_contexts.png', f'{info["concept"]} added per context',
             'Mean label pixels added per context (the label at the cell before the edit), 99% intervals; n: the '
             'number of (sample, cell) pairs.')}
{figure_html(root, reli + 'insertion_map.png', f'{info["concept"]} added per cell',
             'Mean label pixels added when the units are switched on at each cell of the layer.')}
</section>"""


def _commands(root: Path, commands: list) -> str:
    if not commands:
        return ""
    items = []
    for what, argv in commands:
        line = shlex.join(["netdissect", *[str(a) for a in argv]])
        items.append(f"<h3>{html.escape(what)}</h3><pre class=\"cmd\"><code>{html.escape(line)}</code></pre>")
    return f"""<section class="panel" id="commands"><h2>4. The commands, as the demo ran them</h2>
<p>Each step of the demo ran one of these command lines (paths as given to <code>netdissect demo --out</code>;
run them from the folder the demo was started in). Each writes into its <code>--out</code> folder: give a new
folder to run one again beside the demo's results. The last one starts the paint app on the generator's
dissection.</p>
{''.join(items)}
</section>"""


def write_story(out, story: dict, running: bool = False) -> Path:
    """Write ``out/index.html`` for the demo steps in ``story`` (keys dissect, roles, gan, commands); return
    its path.  ``running``: a first page written before the steps, that says the demo is under way."""
    root = Path(out)
    parts = []
    if running:
        parts.append('<section class="panel"><p>The demo is running (or stopped before it finished): this '
                     'page is rewritten with every step\'s results when it finishes.</p></section>')
    toc = []
    if "dissect" in story:
        parts.append(_dissect(root, story["dissect"]))
        toc.append(("dissect", "1. What units learned"))
    if "roles" in story:
        parts.append(_roles(root, story["roles"]))
        toc.append(("roles", "2. What units do"))
    if "gan" in story:
        parts.append(_gan(root, story["gan"]))
        toc.append(("gan", "3. Units in a generator"))
    if story.get("commands"):
        parts.append(_commands(root, story["commands"]))
        toc.append(("commands", "4. The commands"))
    nav = "".join(f'<a href="#{k}">{html.escape(t)}</a>' for k, t in toc)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
{STORY_MARK}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>netdissect demo</title><style>{PAGE_CSS}</style></head><body>
<header class="top"><div class="wrap"><div class="eyebrow">netdissect demo</div>
<h1>What units learn, and what they do</h1>
<p>Everything below was computed by <code>netdissect demo</code> on the embedded synthetic world and the
bundled models, with nothing downloaded. Click a figure to see it at full size.</p>
<nav class="toc">{nav}</nav></div></header>
<main class="wrap">
{''.join(parts)}
</main>
{ZOOM_HTML}
</body></html>
"""
    return write_text(root / "index.html", page)
