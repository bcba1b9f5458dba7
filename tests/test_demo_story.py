"""`netdissect demo` tells the whole story: dissection, unit roles, generator edits, linked from one page."""
from __future__ import annotations

import csv
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
