"""netdissect explain: exact formulas (branch and bound) against brute force, beam search, the command."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from netdissect.explain import OPS, Formula, pack, popcount, search_beam, search_exact
from netdissect.explain.data import problem_from_pixels

TESTS = Path(__file__).parent


# ----------------------------------------------------------------------------- a plain reference
def reference_iou(f: Formula, concepts, image, has, primary, unit) -> float:
    """IoU from the definition: pixels of the images holding a category of any concept of f."""
    g = f.evaluate(concepts)
    sel = has[image][:, sorted({int(primary[c]) for c in f.concepts})].any(1)
    inter = int((g & unit & sel).sum())
    union = int(((g | unit) & sel).sum())
    return inter / union if union else 0.0


def brute_force(concepts, image, has, primary, unit, length):
    """The best IoU over every left-deep formula of at most ``length`` concepts (repeats allowed)."""
    K = len(concepts)
    best = 0.0
    frontier = [Formula(c) for c in range(K)]
    for depth in range(length):
        nxt = []
        for f in frontier:
            best = max(best, reference_iou(f, concepts, image, has, primary, unit))
            if depth + 1 < length:
                nxt += [f.extend(op, c) for op in OPS for c in range(K)]
        frontier = nxt
    return best


def random_world(seed, K=6, images=8, px=24, G=3, units=5):
    """Overlapping concepts (one nested in another, one a copy of another: ties), images lacking categories."""
    rng = np.random.default_rng(seed)
    image = np.repeat(np.arange(images), px)
    has = rng.random((images, G)) < 0.75
    primary = rng.integers(0, G, K)
    raw = rng.random((K, images * px)) < rng.uniform(0.1, 0.5, (K, 1))
    raw[1] |= raw[0] & (rng.random(images * px) < 0.6)   # overlap
    raw[2] = raw[1] & (rng.random(images * px) < 0.5)    # nested in concept 1
    raw[K - 1] = raw[3]                                  # a copy: every formula with 3 ties one with K-1
    primary[K - 1] = primary[3]
    concepts = raw & has[image][:, primary].T             # a concept is only where its category is held
    unit = rng.random((units, images * px)) < 0.3
    unit[0] = concepts[0] | concepts[2]
    unit[1] = concepts[1] & ~concepts[3]
    return concepts, image, has, primary, unit


@pytest.mark.parametrize("seed", range(4))
def test_exact_search_agrees_with_brute_force(seed):
    concepts, image, has, primary, units = random_world(seed)
    problem, H = problem_from_pixels(concepts, image, has, primary, units)
    for length in (2, 3):
        for k in range(len(units)):
            found = search_exact(problem, H[k], length)
            best = brute_force(concepts, image, has, primary, units[k], length)
            assert found.certified
            assert found.iou == pytest.approx(best, abs=1e-12)
            assert len(found.formula) <= length
            # the formula returned really has that IoU, by the definition
            assert reference_iou(found.formula, concepts, image, has, primary, units[k]) == pytest.approx(found.iou,
                                                                                                           abs=1e-12)
            assert found.iou >= found.iou_single
            assert found.iou_single == pytest.approx(max(reference_iou(Formula(c), concepts, image, has, primary,
                                                                       units[k]) for c in range(len(concepts))))


def test_a_planted_red_or_blue_unit_gets_red_or_blue():
    rng = np.random.default_rng(7)
    names = ["red", "blue", "green", "sky", "tree", "wall", "road", "grass"]
    K, N = len(names), 4000
    image = np.repeat(np.arange(40), 100)
    has = np.ones((40, 1), bool)
    primary = np.zeros(K, int)
    concepts = rng.random((K, N)) < rng.uniform(0.05, 0.3, (K, 1))
    concepts[2] |= concepts[0] & (rng.random(N) < 0.5)  # green overlaps red: a decoy
    unit = concepts[0] | concepts[1]
    problem, H = problem_from_pixels(concepts, image, has, primary, unit[None])
    found = search_exact(problem, H[0], 3)
    assert found.iou == 1.0
    assert found.formula in (Formula(0).extend("OR", 1), Formula(1).extend("OR", 0))
    assert found.formula.render(names) in ("red OR blue", "blue OR red")
    assert found.iou_single < 1.0


def test_beam_search_returns_the_greedy_suboptimal_formula():
    """M = B + C (disjoint halves); A covers 35 px of each half and 5 px outside.  A is the best
    single concept (70/105), so a beam of width 1 extends A: A OR B (85/105, tied with A OR C, B
    first), then (A OR B) OR C (100/105).  The optimum is B OR C (1.0)."""
    n = 110
    A, B, C = (np.zeros(n, bool) for _ in range(3))
    B[:50] = True
    C[50:100] = True
    A[15:50] = A[50:85] = A[100:105] = True
    M = B | C
    concepts = np.stack([A, B, C])
    problem, H = problem_from_pixels(concepts, np.zeros(n, int), np.ones((1, 1), bool), np.zeros(3, int), M[None])
    beam = search_beam(problem, H[0], 3, width=1)
    assert beam.formula == Formula(0).extend("OR", 1).extend("OR", 2)
    assert beam.iou == pytest.approx(100 / 105)
    exact = search_exact(problem, H[0], 3)
    assert exact.iou == 1.0 and set(exact.formula.concepts) == {1, 2}
    assert search_beam(problem, H[0], 3, width=3).iou == 1.0  # a wider beam finds it here


def test_formulas_parse_and_evaluate_on_packed_bits():
    names = ["water", "sky", "tree top", "grass"]
    f = Formula(0).extend("OR", 1).extend("AND NOT", 3).extend("AND", 2)
    text = f.render(names)
    assert text == "((water OR sky) AND NOT grass) AND tree top"
    assert Formula.parse(text, names) == f
    rng = np.random.default_rng(0)
    masks = rng.random((4, 1000)) < 0.4
    bits = pack(masks)
    assert popcount(f.evaluate(bits)) == f.evaluate(masks).sum()
    assert popcount(bits, axis=-1).tolist() == masks.sum(1).tolist()


# ----------------------------------------------------------------------------- the command on a run
@pytest.fixture(scope="module")
def run(broden, tmp_path_factory):
    from netdissect import dissect

    out = tmp_path_factory.mktemp("explain") / "run"
    dissect(f"{TESTS}/nets.py:color_units", ["features"], broden, out=out, progress=False)
    return out


def test_length_one_reproduces_the_runs_iou_and_resumes_after_a_kill(run, monkeypatch):
    from netdissect import load
    from netdissect.explain import run as xr
    from netdissect.explain.search import Problem

    with pytest.raises(KeyboardInterrupt):  # killed after one unit
        xr.explain(run, length=2, progress=False, _stop_after=1)
    calls = []
    real = xr.search_exact
    monkeypatch.setattr(xr, "search_exact", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = xr.explain(run, length=2, progress=False)["features"]
    lr = load(run)["features"]
    live = int((~lr.dead).sum())
    assert len(calls) == live - 1  # the finished unit was not searched again
    # every concept's single IoU from the signatures equals the run's IoU matrix
    with np.load(run / ".explain" / "features.counts.npz") as z:
        prim = {g: i for i, g in enumerate(lr.categories)}
        problem = Problem(z["member"], z["n"], z["pattern"], [prim[str(c)] for c in lr.concept_categories])
        H = z["H"]
    for k in range(len(H)):
        iou1, _ = problem.unit(H[k]).singles()
        assert np.array_equal(iou1.astype(np.float32), lr.iou[k])
    f = lr.formulas
    assert f is not None and f.dtype.names == tuple(xr.COLUMNS)
    assert [r["formula"] for r in rows] == f["formula"].tolist()
    assert np.allclose(f["iou_single_best"], lr.units["iou"], atol=1e-6)
    assert (f["iou"] >= f["iou_single_best"]).all() and f["certified"].all()
    assert set(f["method"]) == {"exact"}
    for r in rows:
        if r["formula"]:
            g = Formula.parse(r["formula"], [str(n) for n in lr.concept_names])
            assert len(g) == r["length"] <= 2
    from netdissect.report.records import unit_records  # the report's unit cards show the formula

    recs = unit_records(lr)
    assert [rec.get("formula", [""])[0] for rec in recs] == [r["formula"] for r in rows]


def test_cli_writes_beam_formulas_beside_the_exact_ones(run, capsys):
    from netdissect.cli import main

    assert main(["explain", str(run), "--search", "beam", "--beam", "2", "--length", "2", "--quiet",
                 "--no-scorecard"]) == 0
    out = capsys.readouterr().out
    assert "formulas-beam2.csv" in out
    text = (run / "features" / "formulas-beam2.csv").read_text().splitlines()
    assert text[0] == "unit,formula,iou,iou_single_best,length,certified,nodes_searched,method,p,q,significant"
    assert all(line.split(",")[7:] == ["beam2", "", "", "0"] for line in text[1:])  # --no-scorecard: no p, q


def test_length_above_five_warns_with_an_estimate(run, monkeypatch, capsys):
    from netdissect.explain import run as xr

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(xr, "_counts", stop)
    with pytest.raises(Stop):
        xr.explain(run, length=6, progress=False)
    err = capsys.readouterr().err
    K = 11
    assert "--length 6" in err and f"{K * (3.0 * K) ** 5:.2g}" in err


def test_a_run_without_a_loadable_model_or_its_dataset_says_what_to_rerun(broden, tmp_path, capsys):
    import sys

    sys.path.insert(0, str(TESTS))
    from nets import ColorUnits

    from netdissect import dissect
    from netdissect.cli import main

    ds = tmp_path / "ds"
    shutil.copytree(broden, ds)
    out = tmp_path / "run"
    dissect(ColorUnits(), ["features"], ds, out=out, progress=False)
    assert main(["explain", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "python:ColorUnits" in err and "netdissect dissect --model" in err and "\n" == err[-1] and err.count("\n") == 1
    shutil.rmtree(ds)
    assert main(["explain", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert str(ds) in err and "put the dataset back" in err


def test_seventy_categories_do_not_overflow_the_category_bits():
    """Category sets are bit masks; `1 << g` overflows int64 at g >= 63.  (a) a dataset of 70
    categories whose concepts use categories 60..69; (b) 70 concepts of 70 distinct categories
    (more than an int64 mask can hold: Python-int masks).  Both against brute force."""
    rng = np.random.default_rng(70)
    concepts, image, has, primary, units = random_world(5, K=6, G=70)
    primary = rng.integers(60, 70, len(primary))
    primary[-1] = primary[3]
    has = rng.random((has.shape[0], 70)) < 0.75
    concepts = concepts & has[image][:, primary].T
    problem, H = problem_from_pixels(concepts, image, has, primary, units)
    assert problem.bits is np.int64
    for k in range(len(units)):
        found = search_exact(problem, H[k], 3)
        assert found.iou == pytest.approx(brute_force(concepts, image, has, primary, units[k], 3), abs=1e-12)
    K, images, px = 70, 10, 16
    image = np.repeat(np.arange(images), px)
    has = rng.random((images, K)) < 0.6
    primary = np.arange(K)
    concepts = (rng.random((K, images * px)) < 0.2) & has[image][:, primary].T
    unit = concepts[64] | concepts[3] | (rng.random(images * px) < 0.05)
    problem, H = problem_from_pixels(concepts, image, has, primary, unit[None])
    assert problem.bits is object
    found = search_exact(problem, H[0], 2)
    assert found.certified
    assert found.iou == pytest.approx(brute_force(concepts, image, has, primary, unit, 2), abs=1e-12)
    assert reference_iou(found.formula, concepts, image, has, primary, unit) == pytest.approx(found.iou, abs=1e-12)
    beam = search_beam(problem, H[0], 2, width=3)
    assert beam.iou <= found.iou + 1e-12


def test_explain_reads_the_cache_that_dissect_kept_instead_of_running_the_model(broden, run, tmp_path, monkeypatch):
    """No second pass over the model when the run kept its activations; counted here with the torch
    mask ops (the GPU's path, on the CPU), the formulas equal those of the compiled kernel's counts."""
    import netdissect
    from netdissect import dissect
    from netdissect.explain import run as xr

    out = tmp_path / "kept"
    dissect(f"{TESTS}/nets.py:color_units", ["features"], broden, out=out, progress=False, keep_cache=True)
    assert (out / "cache" / "cache.json").exists()

    def no_second_pass(*a, **k):
        raise AssertionError("explain ran the model again although the run kept its activations")

    monkeypatch.setattr(netdissect, "dissect", no_second_pass)
    from netdissect.dissection import kernel

    monkeypatch.setattr(kernel, "available", lambda: False)  # count with torch ops, the path a GPU takes
    rows = xr.explain(out, length=2, progress=False)["features"]
    assert not (out / ".explain" / "acts-features").exists()
    monkeypatch.undo()
    same = xr.explain(run, length=2, progress=False)["features"]  # the same model and data, via pass 1 again
    assert [(r["formula"], r["iou"]) for r in rows] == [(r["formula"], r["iou"]) for r in same]


def test_formulas_of_an_earlier_dissection_are_refused_and_explain_recomputes(broden, tmp_path, capsys):
    from netdissect import dissect, load
    from netdissect.explain import run as xr
    from netdissect.report.records import unit_records

    out = tmp_path / "again"
    dissect(f"{TESTS}/nets.py:color_units", ["features"], broden, out=out, progress=False)
    xr.explain(out, length=2, progress=False)
    assert load(out)["features"].formulas is not None
    dissect(f"{TESTS}/nets.py:color_units", ["features"], broden, out=out, progress=False, quantile=0.02)
    lr = load(out)["features"]
    with pytest.raises(xr.StaleFormulas, match="dissected again.*netdissect explain"):
        lr.formulas
    assert all("formula" not in r for r in unit_records(lr))  # the report does not show them
    capsys.readouterr()
    rows = xr.explain(out, length=2, progress=False)["features"]
    assert "dissected again since" in capsys.readouterr().err  # pass 1's activations were recomputed
    f = load(out)["features"].formulas
    assert f["formula"].tolist() == [r["formula"] for r in rows]
    assert np.allclose(f["iou_single_best"], load(out)["features"].units["iou"], atol=1e-6)


def test_the_report_outlines_each_units_formula_on_its_top_images(run, tmp_path):
    """The unit card carries the formula and, per top image, a magenta outline tile of the formula's
    mask, evaluated on the image's ground-truth masks (checked against Formula.evaluate)."""
    import json

    from PIL import Image

    from netdissect import load
    from netdissect.explain import run as xr
    from netdissect.report import write_report
    from netdissect.report.assets import FORMULA_OUTLINE, SHEET, SHEET_COLS, _resize_bool, formula_mask
    from netdissect.report.images import open_source

    xr.explain(run, length=2, progress=False)
    lr = load(run)["features"]
    out = tmp_path / "report"
    write_report(run, out, workers=0)
    html = (out / "index.html").read_text()
    import re

    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
                      .group(1).replace("<\\/", "</"))
    units = {u["unit"]: u for u in data["units"]}
    source = open_source(load(run).summary, run)
    names = [str(n) for n in lr.concept_names]
    checked = 0
    for k, text in enumerate(lr.formulas["formula"]):
        if not text:
            assert "f" not in units[k]
            continue
        assert units[k]["formula"][0] == text
        assert units[k]["formula"][2] == float(f"{lr.formulas['q'][k]:.2g}")  # the formula's q on the card
        f = Formula.parse(text, names)
        nums = [int(lr.concept_numbers[c]) for c in f.concepts]
        terms = (("", nums[0]),) + tuple((op, n) for (op, _), n in zip(f.rest, nums[1:]))
        if len(f) == 1 and names[f.first] == str(lr.units["label"][k]):
            assert "f" not in units[k]  # the formula is the label: its cyan outline shows it already
            continue
        for j, i in enumerate(lr.top_images[k]):
            if i < 0:
                continue
            path = lr.image_paths[i]
            masks = {}
            for c, n in zip(f.concepts, nums):
                m = source.concept_mask(path, n)
                masks[c] = m
            shape = next((m.shape for m in masks.values() if m is not None), None)
            want = None if shape is None else f.evaluate({c: (np.zeros(shape, bool) if m is None else m)
                                                           for c, m in masks.items()})
            got = formula_mask(source, path, terms)
            if want is None or not want.any():
                assert got is None and units[k]["f"][j] == -1
                continue
            assert np.array_equal(got, want)
            tid = units[k]["f"][j]
            assert tid >= 0
            sheet = Image.open(out / data["sheets"]["f"][tid // SHEET])
            assert tuple(sheet.getpalette()[6:9]) == FORMULA_OUTLINE
            c = tid % SHEET
            T = sheet.size[0] // SHEET_COLS
            tile = np.asarray(sheet)[(c // SHEET_COLS) * T:(c // SHEET_COLS + 1) * T, (c % SHEET_COLS) * T:(c % SHEET_COLS + 1) * T]
            line = tile == 2
            assert line.any() and not (line & ~_resize_bool(want, T)).any()  # the line lies inside the mask
            checked += 1
    assert checked > 0


def test_sparse_concept_columns_give_the_same_answers(monkeypatch):
    """At Broden scale the (signatures x concepts) matrix is not kept dense (columns are gathered
    from the sparse matrix) and the length-3 triple tables do not fit: that general path and the
    small one agree with each other and with brute force, exact and beam."""
    from netdissect.explain.search import Problem

    concepts, image, has, primary, units = random_world(2)
    monkeypatch.setattr(Problem, "DENSE_LIMIT", 0)
    monkeypatch.setattr(Problem, "TRIPLES_ALL", 0)  # and the general path of many concepts (no triple tables)
    problem, H = problem_from_pixels(concepts, image, has, primary, units)
    assert problem.BT is None and not problem.triples_fit
    monkeypatch.undo()
    dense, _ = problem_from_pixels(concepts, image, has, primary, units)
    assert dense.BT is not None and dense.triples_fit
    for k in range(len(units)):
        found = search_exact(problem, H[k], 3)
        assert found.iou == pytest.approx(brute_force(concepts, image, has, primary, units[k], 3), abs=1e-12)
        other = search_exact(dense, H[k], 3)
        assert other.iou == pytest.approx(found.iou, abs=1e-12) and other.formula == found.formula
        assert search_beam(problem, H[k], 3, 2) == search_beam(dense, H[k], 3, 2)


def test_the_torch_path_finds_the_same_formulas():
    """``Problem(device=...)`` runs the products over signatures with torch sparse matrices (the path
    a GPU takes; here on the CPU): the same optimum as scipy (tested against brute force above)."""
    concepts, image, has, primary, units = random_world(1)
    problem, H = problem_from_pixels(concepts, image, has, primary, units)
    on_torch, H2 = problem_from_pixels(concepts, image, has, primary, units, device="cpu")
    assert on_torch.device is not None and np.array_equal(H, H2)
    for k in range(len(units)):
        for length in (2, 3, 4):
            a, b = search_exact(problem, H[k], length), search_exact(on_torch, H[k], length)
            assert b.certified and b.iou == pytest.approx(a.iou, abs=1e-12) and len(b.formula) <= length
        assert search_beam(on_torch, H[k], 3, 2).iou == pytest.approx(search_beam(problem, H[k], 3, 2).iou, abs=1e-12)


def test_a_pnas_mode_run_is_explained_and_a_segmenter_run_without_kept_labels_is_refused(broden, tmp_path):
    """--iou pnas (every image holds every category: one pooled count) reproduces the run's single
    IoUs, from the cache the run kept; a segmenter run that kept no labels: one line naming the rerun."""
    from netdissect import dissect, load
    from netdissect.explain import run as xr

    out = tmp_path / "pnas"
    dissect(f"{TESTS}/nets.py:color_units", ["features"], broden, out=out, progress=False, iou="pnas", keep_cache=True)
    xr.explain(out, length=2, progress=False)
    lr = load(out)["features"]
    f = lr.formulas
    assert np.allclose(f["iou_single_best"], lr.units["iou"], atol=1e-6) and (f["iou"] >= f["iou_single_best"]).all()
    assert f["certified"].all() and (f["iou"] > 0).any()
    with pytest.raises(xr.ExplainError, match="its labels come from a segmenter.*kept no copy.*--keep-cache"):
        xr._source({"labels": {"kind": "segmenter", "spec": "color"}}, tmp_path)
