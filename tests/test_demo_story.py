"""`netdissect demo` tells the whole story: dissection, unit roles, generator edits, linked from one page."""
from __future__ import annotations

import csv
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from netdissect.cli import main
from netdissect.cli.demo import top_concept


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src"):
                self.refs.append(v)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import os

    if os.environ.get("DEMO_DIR"):   # a finished `netdissect demo --out DIR` (e.g. the full-size one): read only
        return Path(os.environ["DEMO_DIR"])
    out = tmp_path_factory.mktemp("demo") / "d"
    assert main(["demo", "--out", str(out), "--n", "100", "--gan-samples", "200", "--quiet"]) == 0
    return out


def test_the_story_page_links_every_step_and_every_link_resolves(demo):
    page = (demo / "index.html").read_text()
    parser = _Refs()
    parser.feed(page)
    refs = parser.refs
    for must in ("run/report/index.html", "roles/index.html", "gan/report/index.html",
                 "gan-remove/figures/removal_curve.png", "gan-insert/figures/insertion_contexts.png"):
        assert must in refs, must
    for ref in refs:
        assert not ref.startswith(("/", "http")), ref  # relative: the folder can be moved
        if ref.startswith("#"):                         # the page's own sections
            assert f'id="{ref[1:]}"' in page, ref
            continue
        assert (demo / ref).exists(), ref
    assert "not written" not in page and "missing" not in page.split("<style>")[1].split("</style>")[1]


def test_the_page_quotes_the_steps_own_numbers(demo):
    page = (demo / "index.html").read_text()
    rem = json.loads((demo / "gan-remove" / "removal.json").read_text())
    row = next(r for r in rem["rows"] if r["n"] == 20)
    assert f"removes {100 * row['share_removed']:.0f}% of its pixels" in page
    assert re.search(r"conv5\s+256", page)  # the dissection's own table (zoo:scene-cnn-wide: 256 conv5 units)


def test_the_edited_concept_is_the_object_with_most_layer4_detectors(demo):
    with open(demo / "gan" / "layer4" / "units.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["detector"] == "1" and r["category"] == "object"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    rem = json.loads((demo / "gan-remove" / "removal.json").read_text())
    edited = rem["concept"].split("/")[-1]
    assert counts[edited] == max(counts.values())


def test_top_concept_breaks_ties_by_summed_iou(tmp_path):
    p = tmp_path / "units.csv"
    p.write_text("unit,label,category,iou,detector\n0,tree,object,0.05,1\n1,tree,object,0.05,1\n"
                 "2,grass,object,0.09,1\n3,grass,object,0.08,1\n4,sky,object,0.5,0\n5,roof,part,0.3,1\n")
    assert top_concept(p) == ("grass", 2)
    assert top_concept(p, "part") == ("roof", 1)


def test_unknown_parts_are_refused_with_the_choices(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "x"), "--parts", "dissect,paint"])
    assert code != 0
    err = capsys.readouterr().err
    assert "dissect, roles, gan" in err


# Size flags the test turns down so that every printed command runs in seconds; nothing else changes
# (but --out, into a fresh folder: the demo's own results are the inputs of the later commands).
SMALL = {("synth", "--n"): "16", ("dissect", "--limit"): "24", ("dissect", "--samples"): "32",
         ("ablate", "--limit"): "40", ("remove", "--samples"): "12", ("insert", "--samples"): "6",
         ("insert", "--min-samples"): "2"}


def printed_commands(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<pre class="cmd"><code>(.*?)</code></pre>', page, re.S)]


def smaller(argv: list[str], out: Path) -> list[str]:
    """argv with --out in ``out`` and the SMALL sizes (a flag the command lacks is added)."""
    argv = list(argv)
    verb = argv[1] if argv[0] == "gan" else argv[0]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(out)
    for (v, flag), value in SMALL.items():
        if v != verb or (flag in ("--limit",) and "--samples" in argv):
            continue
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        elif flag == "--limit":
            argv += [flag, value]
    return argv + (["--quiet"] if verb not in ("paint",) else [])


def test_every_command_the_story_prints_runs(demo, tmp_path):
    """The story page prints the command line of every step; each runs as printed (sizes turned down by
    SMALL, output into a fresh folder), and the paint command starts the app on the demo's generator run."""
    import shlex

    from fastapi.testclient import TestClient

    from netdissect.cli import build_parser
    from netdissect.cli.paint import build

    cmds = printed_commands((demo / "index.html").read_text())
    verbs = [shlex.split(c)[1] for c in cmds]
    assert verbs.count("synth") == 2 and verbs.count("dissect") == 2 and {"ablate", "gan", "paint"} <= set(verbs)
    for i, cmd in enumerate(cmds):
        argv = shlex.split(cmd)
        assert argv[0] == "netdissect"
        if argv[1] == "paint":
            assert "--layer" in argv        # the demo's generator run has two layers
            app, painter, layer = build(build_parser().parse_args(argv[1:]))
            client = TestClient(app, base_url="http://127.0.0.1")   # the app serves loopback hosts only
            assert client.get("/api/info").json()["layer"] == layer == "layer4"
            assert client.post("/api/render", json={"seed": 0, "strokes": []}).status_code == 200
            continue
        small = smaller(argv[1:], tmp_path / f"step{i}")
        assert main(small) == 0, small


STORY_SIZES = [(1366, 768), (1920, 1080)]


@pytest.fixture(scope="module")
def browser():
    from browser_support import CHROMIUM, launch_chromium

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (run `make browser`)")
    from playwright import sync_api  # a declared test dependency: a broken install fails, not skips

    yield from launch_chromium(sync_api)


def figures_readable(page) -> list[dict]:
    """Each figure's shown width against its PNG's own width (img must have loaded)."""
    page.wait_for_function("() => Array.from(document.querySelectorAll('figure img'))"
                           ".every(i => i.complete && i.naturalWidth)")
    return page.evaluate("""() => Array.from(document.querySelectorAll('figure img')).map(i => ({
        src: i.getAttribute('src'), shown: i.getBoundingClientRect().width, natural: i.naturalWidth}))""")


@pytest.mark.parametrize("size", STORY_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_story_and_roles_pages_read_at_laptop_and_desktop_sizes(demo, browser, size):
    """No horizontal scroll; every figure shown large enough for its smallest text (8 pt at 110 dpi, 12 px at
    the PNG's size) to be 10 px or more; a click opens it at full size; the reports link back to the story."""
    from browser_support import PageWatch
    from netdissect.roles.figures import DPI, MIN_PT

    least = 10 / (MIN_PT * DPI / 72)   # the smallest scale at which MIN_PT text is still 10 px
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    watch = PageWatch(page)
    page.goto((demo / "index.html").as_uri(), wait_until="load")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    figs = figures_readable(page)
    srcs = [f["src"] for f in figs]
    for must in ("roles/figures/removal.png", "roles/figures/importance_vs_iou.png",
                 "gan-remove/figures/removal_grid.png", "gan-insert/figures/insertion_examples.png"):
        assert must in srcs, must
    small = [f for f in figs if f["shown"] < least * f["natural"] - 0.5]
    assert not small, small
    # click to enlarge: the figure at its own size
    page.click("figure a.fig >> nth=0")
    page.wait_for_function("() => { const i = document.querySelector('#zoom[open] #zoom-body img');"
                           " return i && i.complete && i.naturalWidth > 0 && i.style.width; }")
    z = page.evaluate("() => { const i = document.querySelector('#zoom-body img');"
                      " return {w: i.getBoundingClientRect().width, natural: i.naturalWidth}; }")
    assert abs(z["w"] - z["natural"]) <= 1, z
    page.keyboard.press("Escape")
    # the roles page: the same look, figures as readable, a link back to the story
    page.goto((demo / "roles" / "index.html").as_uri(), wait_until="load")
    assert page.evaluate("getComputedStyle(document.querySelector('header.top')).backgroundColor") == "rgb(28, 35, 48)"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    figs = figures_readable(page)
    assert figs and not [f for f in figs if f["shown"] < least * f["natural"] - 0.5], figs
    assert page.get_attribute("header a[href$='index.html']", "href") == "../index.html"
    # the dissection reports link back to the story page
    for rel in ("run/report/index.html", "gan/report/index.html"):
        page.goto((demo / rel).as_uri(), wait_until="load")
        href = page.get_attribute("a.home", "href")
        assert (demo / rel).parent.joinpath(href).resolve() == (demo / "index.html").resolve()
    watch.check()
    page.close()


def test_readable_raises_small_text():
    from netdissect.roles.figures import MIN_PT, _plt, readable

    plt = _plt()
    fig, ax = plt.subplots()
    ax.set_title("t", fontsize=5)
    ax.tick_params(labelsize=4)
    ax.set_xticks([0, 1])
    readable(fig)
    sizes = [t.get_fontsize() for t in [ax.title, *ax.get_xticklabels()]]
    plt.close(fig)
    assert min(sizes) >= MIN_PT
