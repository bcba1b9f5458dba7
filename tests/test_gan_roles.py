"""Removal and insertion in a generator (netdissect.roles.generator) on a hand-built generator whose units
are known painters, segmented by the ``color`` segmenter.

The painter (``Painter``): ``layer1`` maps z to an 8-unit 4 x 4 map; units 0-3 are "red painters" (the same
on/off pattern, magnitudes 1.0-1.3), unit 4 says "ground" (rows at or below a horizon set by z), units 5-7
are noise the output ignores.  ``layer2`` paints each cell red where units 0-3 sum above 1.5 *and* unit 4
says ground, else green on ground and blue in the sky; nearest upsampling to 16 x 16.  So removing three or
more of units 0-3 removes every red pixel, removing fewer removes none, and inserting units 0-3 at a cell
adds red exactly where the cell is ground and not red already.
"""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from torch import nn

from netdissect.errors import LayerError
from netdissect.interventions import ablate, edit
from netdissect.models.proggan import to_image
from netdissect.roles import generator as G
from netdissect.segment import checked_segment, load_segmenter

RED, GREEN, BLUE = (0.8, 0.1, 0.1), (0.1, 0.6, 0.1), (0.2, 0.3, 0.9)
SEG = (8, 8)          # 2 x 2 label pixels per cell of the 4 x 4 layer


class Painter1(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(16, 4, generator=g))
        self.register_buffer("noise", torch.randn(3, 16, 4, generator=g))

    def forward(self, z):
        N = z.shape[0]
        score = z @ self.w.T
        # the red pattern, graded a little (1.0-1.05) so that a dissection's top quantile falls inside it
        on = ((score > 0.6).float() * (1 + 0.05 * torch.sigmoid(score))).view(N, 1, 4, 4)
        scale = torch.tensor([1.0, 1.1, 1.2, 1.3]).view(1, 4, 1, 1)
        rows = torch.arange(4).view(1, 4, 1).float()
        horizon = 1 + (z[:, 0] > 0).float().view(N, 1, 1)                     # ground from row 1 or 2
        ground = (rows >= horizon).float().expand(N, 4, 4).unsqueeze(1)
        noise = torch.tanh(torch.einsum("kcd,nd->nkc", self.noise, z)).view(N, 3, 4, 4)
        return torch.cat([on * scale, ground, noise], 1)


class Painter2(nn.Module):
    def forward(self, x):
        red = (x[:, :4].sum(1) > 1.5) & (x[:, 4] > 0.5)
        ground = x[:, 4] > 0.5
        colour = torch.empty(x.shape[0], 3, 4, 4)
        for c in range(3):
            colour[:, c] = torch.where(red, RED[c], torch.where(ground, GREEN[c], BLUE[c]))
        return nn.functional.interpolate(colour * 2 - 1, size=(16, 16), mode="nearest")


class Painter(nn.Module):
    layer_names = ["layer1", "layer2"]
    z_dim = 4

    def __init__(self):
        super().__init__()
        self.layer1 = Painter1()
        self.layer2 = Painter2()

    def forward(self, z):
        return self.layer2(self.layer1(z))


class Mirrored(Painter):
    """A forward that is not its children in order (it mirrors the image): the cut must fall back to full passes."""

    def forward(self, z):
        return self.layer2(self.layer1(z)).flip(3)


@pytest.fixture(scope="module")
def seg():
    return load_segmenter("color")


@pytest.fixture(scope="module")
def z():
    return torch.from_numpy(np.random.RandomState(5).standard_normal((37, 4)).astype(np.float32))


def red(seg):
    return seg.concepts.index("red-c") + 1


def _fractions_slow(model, seg, z, units):
    """Per image red fraction with ``units`` ablated: one full forward pass per image, hooks from interventions."""
    out = []
    for i in range(len(z)):
        with ablate(model, "layer1", units=list(units)):
            img = to_image(model(z[i:i + 1]))
        lab = checked_segment(seg, img, SEG)[0]
        out.append(sum(1 for r in range(SEG[0]) for c in range(SEG[1])
                       if any(int(lab[p, r, c]) == red(seg) for p in range(lab.shape[0]))) / (SEG[0] * SEG[1]))
    return np.asarray(out)


def _share_slow(base, after):
    d = [a - b for a, b in zip(after, base)]
    mb = statistics.fmean(base)
    se = statistics.stdev(d) / math.sqrt(len(d))
    m = statistics.fmean(d)
    return -m / mb, -(m + 2.58 * se) / mb, -(m - 2.58 * se) / mb


def test_removal_matches_a_slow_reference_and_the_painters_design(seg, z):
    model = Painter()
    ranked = [0, 1, 2, 3, 4, 5, 6, 7]
    r = G.removal(model, "layer1", ranked, seg, red(seg), [1, 2, 3, 4, 8], z, batch_size=8, seg_size=SEG,
                  control_seed=3, progress=False)
    assert r["mode"] == "suffix"
    base = _fractions_slow(model, seg, z, [])
    assert base.mean() > 0.05, "the painter must paint some red for the test to mean anything"
    np.testing.assert_array_equal(r["baseline"], base)
    for i, n in enumerate(r["sizes"]):
        np.testing.assert_array_equal(r["after"][i], _fractions_slow(model, seg, z, ranked[:n]))
        np.testing.assert_array_equal(r["control"][i], _fractions_slow(model, seg, z, r["control_units"][i]))
    # the design: fewer than 3 painters removed leaves every red pixel, 3 or more remove all of them
    rows = G.removal_rows(r, "red-c")
    by_n = {row["n"]: row for row in rows}
    assert by_n[1]["share_removed"] == 0 and by_n[2]["share_removed"] == 0
    assert by_n[3]["share_removed"] == pytest.approx(1.0) and by_n[4]["share_removed"] == pytest.approx(1.0)
    # statistics against plain Python
    for i, n in enumerate(r["sizes"]):
        if n < 3:
            continue
        want = _share_slow(list(base), list(r["after"][i]))
        got = (by_n[n]["share_removed"], by_n[n]["ci99_low"], by_n[n]["ci99_high"])
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    want = _share_slow(list(base), list(r["control"][1]))
    assert by_n[2]["control_share_removed"] == pytest.approx(want[0], rel=1e-9, abs=1e-12)
    assert by_n[8]["baseline_fraction"] == pytest.approx(base.mean())
    assert by_n[8]["units"] == "0 1 2 3 4 5 6 7"
    # the control is seeded: the same seed draws the same units, another seed other ones
    again = G.removal(model, "layer1", ranked, seg, red(seg), [2], z[:4], seg_size=SEG, control_seed=3,
                      progress=False)
    assert again["control_units"][0] == r["control_units"][1]
    draws = {tuple(G.removal(model, "layer1", ranked, seg, red(seg), [2], z[:2], seg_size=SEG, control_seed=s,
                             progress=False)["control_units"][0]) for s in range(6)}
    assert len(draws) > 1


def test_share_interval_is_standard_errors_not_deviations():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 400)
    after = base * rng.uniform(0.3, 0.7, 400)
    share, lo, hi = G.share_removed(base, after)
    d = after - base
    sd_band = 2.58 * d.std(ddof=1) / base.mean()
    assert hi - lo == pytest.approx(2 * sd_band / math.sqrt(400))
    assert lo < share < hi
    assert math.isnan(G.share_removed(np.zeros(5), np.zeros(5))[0])


def test_full_pass_fallback(seg, z):
    """A generator the cut cannot reproduce runs full passes with the edit hooked in; ``fast=False`` forces them."""
    m = Mirrored()
    slow = G.removal(m, "layer1", list(range(8)), seg, red(seg), [3], z[:9], batch_size=4, seg_size=SEG,
                     control_seed=1, progress=False)
    assert slow["mode"] == "full" and "do not reproduce" in slow["why_full"]
    np.testing.assert_array_equal(slow["baseline"], _fractions_slow(m, seg, z[:9], []))
    np.testing.assert_array_equal(slow["after"][0], _fractions_slow(m, seg, z[:9], [0, 1, 2]))
    np.testing.assert_array_equal(slow["control"][0], _fractions_slow(m, seg, z[:9], slow["control_units"][0]))
    forced = G.removal(Painter(), "layer1", list(range(8)), seg, red(seg), [3], z[:9], batch_size=4,
                       seg_size=SEG, control_seed=1, progress=False, fast=False)
    fast = G.removal(Painter(), "layer1", list(range(8)), seg, red(seg), [3], z[:9], batch_size=4, seg_size=SEG,
                     control_seed=1, progress=False)
    assert forced["mode"] == "full" and fast["mode"] == "suffix"
    for k in ("baseline", "after", "control"):
        np.testing.assert_array_equal(fast[k], forced[k])
    # insertion through full passes: the mirrored image moves the red to the mirrored column
    ins = G.insertion(m, "layer1", [0, 1, 2, 3], seg, red(seg), z[:3], value=2.0, seg_size=SEG, progress=False)
    assert ins["mode"] == "full"
    np.testing.assert_array_equal(ins["added"], _design_added(m, z[:3])[0])
    ins_f = G.insertion(Painter(), "layer1", [0, 1, 2, 3], seg, red(seg), z[:3], value=2.0, seg_size=SEG,
                        progress=False, fast=False)
    np.testing.assert_array_equal(ins_f["added"], _design_added(Painter(), z[:3])[0])


def _design_added(model, z):
    """What inserting the red painters at each cell must add: 4 label pixels where the cell is ground and not
    red already, 0 elsewhere (read from the painter's own map, not from the segmenter)."""
    with torch.no_grad():
        x = model.layer1(z)
    isred = (x[:, :4].sum(1) > 1.5) & (x[:, 4] > 0.5)
    ground = x[:, 4] > 0.5
    return (4 * (ground & ~isred)).long().numpy(), ground.numpy(), isred.numpy()


def test_insertion_adds_red_only_where_the_context_allows(seg, z):
    model = Painter()
    r = G.insertion(model, "layer1", [0, 1, 2, 3], seg, red(seg), z, value="q99", batch_size=20, seg_size=SEG,
                    progress=False)
    want, ground, isred = _design_added(model, z)
    np.testing.assert_array_equal(r["added"], want)
    # contexts read from the original segmentation at each cell's centre
    names = seg.concepts
    ctx = np.vectorize(lambda lab: names[lab - 1] if lab else "(none)")(r["context"])
    assert set(ctx[isred]) == {"red-c"} and set(ctx[ground & ~isred]) == {"green-c"} and set(ctx[~ground]) == {"blue-c"}
    table = {row["context"]: row for row in G.context_table(r["added"], r["context"], names, min_samples=10)}
    assert table["green-c"]["mean_added"] == 4 and table["blue-c"]["mean_added"] == 0
    assert table["red-c"]["mean_added"] == 0
    assert table["green-c"]["samples"] == int((ground & ~isred).sum())
    # values: the 99% quantile of each painter's raw map over these samples
    with torch.no_grad():
        raw = model.layer1(z)[:, :4].numpy()
    np.testing.assert_allclose(r["values"], [np.quantile(raw[:, u].ravel(), 0.99) for u in range(4)])
    # a value too small to make the painters sum above 1.5 adds nothing, and erases the red cells it is set at
    weak = G.insertion(model, "layer1", [0, 1, 2, 3], seg, red(seg), z[:5], value=0.3, seg_size=SEG,
                       progress=False)
    assert isred[:5].any()
    np.testing.assert_array_equal(weak["added"], np.where(isred[:5], -4, 0))
    # one painter alone (at 1.3) cannot paint: the set is needed
    one = G.insertion(model, "layer1", [3], seg, red(seg), z[:5], value="q99", seg_size=SEG, progress=False)
    assert (one["added"] == 0).all()


def test_context_table_statistics():
    rng = np.random.default_rng(1)
    added = rng.integers(-2, 6, size=(30, 4, 4))
    context = rng.integers(0, 3, size=(30, 4, 4))
    rows = G.context_table(added, context, ["a", "b"], min_samples=1)
    for row in rows:
        v = [float(x) for x in added[context == row["label"]]]
        m, se = statistics.fmean(v), statistics.stdev(v) / math.sqrt(len(v))
        assert row["samples"] == len(v)
        assert (row["mean_added"], row["ci99_low"], row["ci99_high"]) == pytest.approx((m, m - 2.58 * se, m + 2.58 * se))
    assert [r["mean_added"] for r in rows] == sorted((r["mean_added"] for r in rows), reverse=True)
    assert {r["context"] for r in rows} == {"(none)", "a", "b"}
    few = np.zeros((30, 4, 4), int)
    few[0, 0, 0] = 1
    assert [r["context"] for r in G.context_table(added, few, ["a", "b"], min_samples=2)] == ["(none)"]


def test_insertion_levels_policies():
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(6, 2, 4, 4)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(raw), size=(8, 8), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(G.insertion_levels(raw, "q99.5", (8, 8)),
                               [np.quantile(up[:, u].numpy(), 0.995) for u in range(2)], rtol=1e-6)
    np.testing.assert_allclose(G.insertion_levels(raw, "q99"), [np.quantile(raw[:, u], 0.99) for u in range(2)])
    present = rng.uniform(size=(6, 8, 8)) > 0.7
    np.testing.assert_allclose(G.insertion_levels(raw, "mean-present", (8, 8), present),
                               [up[:, u].numpy()[present].mean() for u in range(2)], rtol=1e-5)
    assert G.insertion_levels(raw, "2.5").tolist() == [2.5, 2.5]
    with pytest.raises(G.GeneratorError, match="q99.5, q99, mean-present or a number"):
        G.insertion_levels(raw, "q98")
    with pytest.raises(G.GeneratorError, match="present in none"):
        G.insertion_levels(raw, "mean-present", (8, 8), np.zeros((6, 8, 8), bool))


def test_cell_centres():
    r, c = G.cell_centres(8, 4, 64, 16)
    assert r.tolist() == [4, 12, 20, 28, 36, 44, 52, 60] and c.tolist() == [2, 6, 10, 14]
    r, _ = G.cell_centres(4, 4, 4, 4)
    assert r.tolist() == [0, 1, 2, 3]


class _Counting:
    """The color segmenter, counting images; raises KeyboardInterrupt after ``limit`` calls (a kill)."""

    def __init__(self, limit=None):
        self.inner = load_segmenter("color")
        self.concepts, self.categories = self.inner.concepts, self.inner.categories
        self.calls, self.images, self.limit = 0, 0, limit

    def segment(self, images, size):
        if self.limit is not None and self.calls >= self.limit:
            raise KeyboardInterrupt
        self.calls += 1
        self.images += len(images)
        return self.inner.segment(images, size)


def test_removal_resumes_after_a_kill(tmp_path, z):
    ck = tmp_path / "removal.npz"
    args = dict(batch_size=5, seg_size=SEG, progress=False, checkpoint=ck, checkpoint_every=0)
    units = list(range(8))
    killed = _Counting(limit=14)          # 5 segmenter calls per batch (baseline + 2 sizes + 2 controls)
    with pytest.raises(KeyboardInterrupt):
        G.removal(Painter(), "layer1", units, killed, red(killed), [2, 4], z, **args)
    assert ck.exists()
    again = _Counting()
    r = G.removal(Painter(), "layer1", units, again, red(again), [2, 4], z, **args)
    fresh = G.removal(Painter(), "layer1", units, load_segmenter("color"), red(again), [2, 4], z,
                      batch_size=5, seg_size=SEG, progress=False)
    for k in ("baseline", "after", "control"):
        np.testing.assert_array_equal(r[k], fresh[k])
    # two batches (10 samples) were finished before the kill: only the other 27 samples ran again
    assert again.images == 5 * (len(z) - 10)
    # a checkpoint of other inputs is not used
    other = _Counting()
    G.removal(Painter(), "layer1", units, other, red(other), [2, 3], z, **args)
    assert other.images == 5 * len(z)


def test_insertion_resumes_after_a_kill(tmp_path, z):
    ck = tmp_path / "insertion.npz"
    zz = z[:7]
    args = dict(value="q99", batch_size=32, seg_size=SEG, progress=False, checkpoint=ck, checkpoint_every=0)
    # pass 1: 1 call (7 samples); pass 2: 2 samples (32 edits) per batch, one call each
    killed = _Counting(limit=1 + 2)
    with pytest.raises(KeyboardInterrupt):
        G.insertion(Painter(), "layer1", [0, 1, 2, 3], killed, red(killed), zz, **args)
    again = _Counting()
    r = G.insertion(Painter(), "layer1", [0, 1, 2, 3], again, red(again), zz, **args)
    np.testing.assert_array_equal(r["added"], _design_added(Painter(), zz)[0])
    assert again.images == 7 + 16 * (7 - 4)


def test_clear_errors(seg, z):
    model = Painter()
    with pytest.raises(LayerError, match="layer9.*layer1, layer2"):
        G.removal(model, "layer9", [0], seg, 1, [1], z[:2], progress=False)
    with pytest.raises(G.GeneratorError, match=r"larger than the layer's 8 units.*1 to 8"):
        G.removal(model, "layer1", list(range(8)), seg, red(seg), [2, 9], z[:2], seg_size=SEG, progress=False)
    with pytest.raises(G.GeneratorError, match="unknown concept 'rd-c'.*close names: red-c"):
        G.resolve_concept(seg.concepts, seg.categories, "rd-c")
    assert G.resolve_concept(["water", "water", "tree"], ["object", "material", "object"], "material/water") == 1
    with pytest.raises(G.GeneratorError, match="object/water or material/water"):
        G.resolve_concept(["water", "water", "tree"], ["object", "material", "object"], "water")
    iou = np.zeros((8, 3))
    iou[2, 1] = 0.03
    with pytest.raises(G.GeneratorError, match="no unit has IoU above 0.04 with concept 'tree'.*best 0.0300, unit 2"):
        G.rank_units(iou, 1, 0.04, "tree")
    iou[5, 1], iou[3, 1] = 0.2, 0.2
    order, vals, above = G.rank_units(iou, 1, 0.04, "tree")
    assert order[:3].tolist() == [3, 5, 2] and above == 2
    with pytest.raises(G.GeneratorError, match="distinct unit numbers"):
        G.insertion(model, "layer1", [0, 0], seg, red(seg), z[:2], seg_size=SEG, progress=False)


# ----------------------------------------------------------------------------- the command line
def _painter_run(root, seed=1, iou=None, kind="latent"):
    """A generator run folder as `netdissect dissect --samples` writes it, for the painter and the color segmenter,
    with a given IoU table (units 3, 1, 0, 2 best for red-c unless given)."""
    import json
    from pathlib import Path

    from netdissect.dissection.result import LayerResult

    seg = load_segmenter("color")
    K = len(seg.concepts)
    if iou is None:
        iou = np.zeros((8, K), np.float32)
        for u, v in zip([3, 1, 0, 2, 5], [0.30, 0.25, 0.20, 0.10, 0.01]):
            iou[u, seg.concepts.index("red-c")] = v
        iou[4, seg.concepts.index("green-c")] = 0.5
    lr = LayerResult(name="layer1", iou=iou, thresholds=np.zeros(8, np.float32),
                     concept_names=np.asarray(seg.concepts), concept_categories=np.asarray(seg.categories),
                     concept_numbers=np.arange(1, K + 1, dtype=np.int32), categories=["color"], iou_threshold=0.04,
                     shape=(8, 4, 4), mask_size=SEG)
    root = Path(root)
    lr.save(root / "layer1")
    summary = {"format_version": 1, "model": {"spec": f"{Path(__file__).resolve()}:Painter", "weights": None, "seed": 0},
               "dataset": {"kind": kind, "samples": 50, "seed": seed, "dim": 4, "categories": ["color"]},
               "labels": {"kind": "generated", "spec": "color", "segmenter": seg.identity(), "seg_size": list(SEG),
                          "iou": "pnas"},
               "config": {"iou_threshold": 0.04}, "layers": {"layer1": lr.summary()}}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def _main(argv):
    from netdissect.cli import main
    return main(argv)


def test_cli_remove_writes_the_tables_and_figures(tmp_path, capsys):
    import csv
    import json

    run = _painter_run(tmp_path / "run")
    out = tmp_path / "rem"
    code = _main(["gan", "remove", "--run", str(run), "--layer", "layer1", "--concept", "red-c", "--sizes", "1,2,3,4",
                  "--samples", "30", "--seed", "2", "--out", str(out), "--quiet", "--grid", "4"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "removal.csv")))
    assert list(rows[0])[:9] == ["concept", "n", "units", "baseline_fraction", "fraction", "share_removed",
                                 "ci99_low", "ci99_high", "control_share_removed"]
    assert [r["units"] for r in rows] == ["3", "3 1", "3 1 0", "3 1 0 2"]      # ranked by the run's IoU
    assert rows[0]["concept"] == "color/red-c"
    shares = [float(r["share_removed"]) for r in rows]
    assert shares[:2] == [0, 0] and shares[2:] == [pytest.approx(1.0), pytest.approx(1.0)]
    # the same numbers as the core on the same z
    from netdissect.probe.latent import latent_z
    seg = load_segmenter("color")
    z = torch.from_numpy(latent_z(30, 2, 4))
    base = _fractions_slow(Painter(), seg, z, [])
    assert float(rows[0]["baseline_fraction"]) == pytest.approx(base.mean(), abs=1e-6)
    s = json.loads((out / "removal.json").read_text())
    assert s["seed"] == 2 and s["mode"] == "suffix" and s["ranking"]["above_threshold"] == 4
    assert s["passes_per_sample"] == 9        # 1 baseline + 4 sizes + 4 controls
    for f in ("removal_curve.png", "removal_curve.svg", "removal_grid.png", "removal_grid.svg"):
        assert (out / "figures" / f).stat().st_size > 1000
    with np.load(out / "removal.npz") as npz:
        np.testing.assert_allclose(npz["baseline"], base, atol=1e-6)
    out_text = capsys.readouterr().out
    assert "n=3: 100.0%" in out_text


def test_cli_insert_writes_contexts_and_maps(tmp_path):
    import csv
    import json

    run = _painter_run(tmp_path / "run")
    out = tmp_path / "ins"
    code = _main(["gan", "insert", "--run", str(run), "--layer", "layer1", "--concept", "red-c", "--n", "4",
                  "--value", "q99", "--samples", "12", "--seed", "3", "--min-samples", "5", "--out", str(out),
                  "--quiet", "--examples", "3"])
    assert code == 0
    rows = {r["context"]: r for r in csv.DictReader(open(out / "insertion.csv"))}
    assert float(rows["green-c"]["mean_added_pixels"]) == 4 and float(rows["blue-c"]["mean_added_pixels"]) == 0
    assert float(rows["green-c"]["mean_added_fraction"]) == pytest.approx(4 / 64)
    s = json.loads((out / "insertion.json").read_text())
    assert sorted(s["units"]) == [0, 1, 2, 3] and s["value"]["policy"] == "q99"
    assert "12 insertion samples of seed 3" in s["value"]["computed_over"]
    from netdissect.probe.latent import latent_z
    want = _design_added(Painter(), torch.from_numpy(latent_z(12, 3, 4)))[0]
    np.testing.assert_allclose(s["cell_mean_added_pixels"], want.mean(0), atol=1e-3)
    for f in ("insertion_contexts", "insertion_map", "insertion_examples"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000


def test_cli_clear_messages(tmp_path, capsys):
    run = _painter_run(tmp_path / "run")
    base = ["--run", str(run), "--layer", "layer1", "--out", str(tmp_path / "o"), "--quiet", "--samples", "4"]

    def err(argv):
        assert _main(argv) == 1
        return capsys.readouterr().err

    assert "is the seed of the dissection" in err(["gan", "remove", *base, "--concept", "red-c", "--seed", "1"])
    assert "sizes [9] are larger than the layer's 8 units" in err(
        ["gan", "remove", *base, "--concept", "red-c", "--seed", "2", "--sizes", "2,9"])
    assert "unknown concept 'tree'" in err(["gan", "remove", *base, "--concept", "tree", "--seed", "2"])
    assert "no unit has IoU above 0.04 with concept 'color/blue-c'" in err(
        ["gan", "insert", *base, "--concept", "blue-c", "--seed", "2"])
    assert "has no dissection of layer 'layer2'" in err(
        ["gan", "remove", *base[:2], "--layer", "layer2", *base[4:], "--concept", "red-c", "--seed", "2"])
    other = _painter_run(tmp_path / "images", kind="images")
    assert "not of a generator's latent samples" in err(
        ["gan", "remove", "--run", str(other), *base[2:], "--concept", "red-c", "--seed", "2"])
    assert "summary.json: file not found (is" in err(
        ["gan", "remove", "--run", str(tmp_path / "nothing"), *base[2:], "--concept", "red-c", "--seed", "2"])


def test_end_to_end_on_a_real_generator_dissection(tmp_path):
    """`netdissect dissect --samples` on the painter, then `gan remove` and `gan insert` on its run folder."""
    import csv
    import json
    from pathlib import Path

    run = tmp_path / "dis"
    spec = f"{Path(__file__).resolve()}:Painter"
    assert _main(["dissect", "--model", spec, "--layer", "layer1", "--samples", "120", "--seed", "1",
                  "--segmenter", "color", "--seg-size", "8", "--iou-threshold", "0.02", "--out", str(run),
                  "--label-cache", str(tmp_path / "labels"), "--workers", "0", "--no-report", "--quiet"]) == 0
    out = tmp_path / "rem"
    assert _main(["gan", "remove", "--run", str(run), "--layer", "layer1", "--concept", "red-c", "--sizes", "2,3",
                  "--samples", "40", "--seed", "2", "--out", str(out), "--quiet", "--no-figures"]) == 0
    rows = list(csv.DictReader(open(out / "removal.csv")))
    # the dissection ranks the four painters first (their IoU ties; lower unit first)
    assert rows[1]["units"] == "0 1 2"
    assert float(rows[0]["share_removed"]) == 0 and float(rows[1]["share_removed"]) == pytest.approx(1.0)
    s = json.loads((out / "removal.json").read_text())
    assert "120 samples of seed 1" in s["ranking"]["source"] and s["segmenter_matches_run"]
    ins = tmp_path / "ins"
    assert _main(["gan", "insert", "--run", str(run), "--layer", "layer1", "--concept", "red-c", "--n", "4",
                  "--value", "q99.5", "--samples", "10", "--seed", "3", "--min-samples", "5", "--out", str(ins),
                  "--quiet", "--no-figures"]) == 0
    ctx = {r["context"]: float(r["mean_added_pixels"]) for r in csv.DictReader(open(ins / "insertion.csv"))}
    assert ctx["green-c"] == 4 and ctx["blue-c"] == 0


def test_cli_warns_when_the_segmenter_changed(tmp_path, capsys):
    import json

    run = _painter_run(tmp_path / "run")
    s = json.loads((run / "summary.json").read_text())
    s["labels"]["segmenter"] = {"kind": "color", "sha256": "0000"}
    (run / "summary.json").write_text(json.dumps(s))
    assert _main(["gan", "remove", "--run", str(run), "--layer", "layer1", "--concept", "red-c", "--sizes", "3",
                  "--samples", "5", "--seed", "2", "--out", str(tmp_path / "o"), "--quiet", "--no-figures"]) == 0
    assert "is not the one the dissection used" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "removal.json").read_text())["segmenter_matches_run"] is False
