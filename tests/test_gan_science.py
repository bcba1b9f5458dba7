"""Science checks of removal and insertion on the bundled generator ``zoo:world-gan`` (PNAS 2020 Fig. 4).

Thresholds fixed before any result was seen (issue 12; docs/gan-roles.md); the latent seeds are held out
(tests/heldout.py; docs/world.md, "Seeds"): the bundled weights were picked among fine-tunings on seeds 1-3,
so the checks no longer run there (issue 32).

- the concept: the ``object`` concept labelling the most units of layer4 (a unit's label is its best concept
  over all categories, IoU >= 0.04) in a dissection of 800 samples with ``zoo:world-seg``; ties by the
  larger summed IoU, then by name;
- removal, on 200 other samples: zeroing its top 20 units removes more than half of its pixels (share
  removed > 0.5; paper: 53% of tree pixels in LSUN church).  The claim is checked at 99% confidence: the
  lower end of the share's 99% interval is above 0.5 (the point estimate above 0.5 is checked apart, as a
  weaker guard).  20 random units remove less than a third of what the top 20 remove (point estimates);
- insertion, on 16 other samples, its top 20 units at their 99.5% level at each of the 8 x 8 cells: the best
  context (at least 50 (sample, cell) pairs) gains on average at least 3x more of the concept than the
  context ``sky`` (if sky has fewer pairs: the worst context with enough) could: 3x the upper end of sky's
  99% interval, taken as 0 when below 0 (a loss is no gain; before issue 32 a negative sky mean, -0.036,
  made the check unable to fail); and the best context gains something at 99% confidence (interval above 0).

The generator's weights are bundled; if they are absent the checks fail (they do not skip).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import netdissect
from heldout import GAN_CONTROL_SEED, GAN_DISSECT_SEED, GAN_INSERT_SEED, GAN_REMOVE_SEED

WEIGHTS = Path(netdissect.__file__).parent / "models" / "zoo" / "weights" / "world-gan.safetensors"
LAYER = "layer4"
IOU = 0.04
MIN_SAMPLES = 50


def _main(argv):
    from netdissect.cli import main

    code = main(argv)
    assert code == 0, f"netdissect {' '.join(argv[:2])} failed with exit code {code} (see the captured stderr)"


def test_world_gan_weights_are_bundled():
    assert WEIGHTS.is_file(), (f"zoo:world-gan weights are missing ({WEIGHTS}): the science checks below need the "
                               "bundled generator; train it with `python scripts/train_world_gan.py`")


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    assert WEIGHTS.is_file(), (f"zoo:world-gan weights are missing ({WEIGHTS}): the science checks need the bundled "
                               "generator; train it with `python scripts/train_world_gan.py`")
    root = tmp_path_factory.mktemp("gan-science")
    run = root / "dissection"
    _main(["dissect", "--model", "zoo:world-gan", "--layer", LAYER, "--samples", "800", "--seed", str(GAN_DISSECT_SEED),
           "--segmenter", "zoo:world-seg", "--out", str(run), "--label-cache", str(root / "labels"),
           "--workers", "0", "--no-report", "--quiet"])
    layer = netdissect.load(run)[LAYER]
    u = layer.units
    obj = u[(u["category"] == "object") & (u["iou"] >= IOU)]
    assert len(obj), f"no object units with IoU >= {IOU} at {LAYER}: {sorted(set(u['label']))}"
    counts = {}
    for lab, v in zip(obj["label"], obj["iou"]):
        c, s = counts.get(lab, (0, 0.0))
        counts[lab] = (c + 1, s + float(v))
    concept = sorted(counts, key=lambda k: (-counts[k][0], -counts[k][1], k))[0]
    return {"root": root, "run": run, "concept": f"object/{concept}", "counts": counts}


@pytest.fixture(scope="module")
def removed(gan):
    out = gan["root"] / "remove"
    _main(["gan", "remove", "--run", str(gan["run"]), "--layer", LAYER, "--concept", gan["concept"], "--sizes", "20",
           "--samples", "200", "--seed", str(GAN_REMOVE_SEED), "--control-seed", str(GAN_CONTROL_SEED), "--out", str(out), "--quiet", "--grid", "0",
           "--no-figures"])
    return list(csv.DictReader(open(out / "removal.csv")))


def _removal(gan, row) -> str:
    return (f"removing the top 20 {gan['concept']} units removed {float(row['share_removed']):.1%} of its pixels "
            f"(99% CI {float(row['ci99_low']):.1%}..{float(row['ci99_high']):.1%}; units per object concept: "
            f"{gan['counts']})")


HELD_OUT_REMOVAL = (
    "measured 2026-12-07 on the held-out latent seeds (dissection 7011, removal 7012): the 800-sample dissection "
    "picks object/water (16 units at IoU >= 0.04, sand 15, wall 15) and its top 20 units remove 34.6% of its "
    "pixels (99% CI 23.3-45.8%; 20 random units -0.7%); on seeds 1-2, where the bundled weights were picked, it "
    "picked sand (84.2%, CI 45.1-123.3%); docs/gan-roles.md: water is spread over more units than 20")


@pytest.mark.xfail(strict=True, reason=HELD_OUT_REMOVAL)
def test_removing_the_top_20_units_removes_most_of_the_concept(gan, removed):
    """The claim, at 99% confidence: the whole 99% interval of the share removed lies above one half."""
    row = removed[0]
    assert row["n"] == "20"
    assert float(row["ci99_low"]) > 0.5, f"{_removal(gan, row)}: expected the 99% interval above 50%"


@pytest.mark.xfail(strict=True, reason=HELD_OUT_REMOVAL)
def test_removing_the_top_20_units_removes_most_of_the_concept_on_average(gan, removed):
    """The weaker guard: the point estimate above one half."""
    row = removed[0]
    assert float(row["share_removed"]) > 0.5, f"{_removal(gan, row)}: expected > 50% on average"


def test_random_units_remove_much_less(gan, removed):
    row = removed[0]
    share, control = float(row["share_removed"]), float(row["control_share_removed"])
    assert control < share / 3, (f"20 random units removed {control:.1%} of {gan['concept']}'s pixels, the top 20 "
                                 f"{share:.1%}: expected less than a third of it")


def test_insertion_depends_on_the_context(gan):
    out = gan["root"] / "insert"
    _main(["gan", "insert", "--run", str(gan["run"]), "--layer", LAYER, "--concept", gan["concept"], "--n", "20",
           "--value", "q99.5", "--samples", "16", "--seed", str(GAN_INSERT_SEED), "--min-samples", str(MIN_SAMPLES),
           "--out", str(out), "--quiet", "--no-figures"])
    s = json.loads((out / "insertion.json").read_text())
    assert s["cells"] == [8, 8]
    rows = {r["context"]: r for r in s["contexts"]}
    assert len(rows) >= 2, f"fewer than two contexts with {MIN_SAMPLES} (sample, cell) pairs: {s['all_contexts']}"
    assert np.isfinite([r["ci99_low"] for r in rows.values()]).all()
    check_insertion(rows, gan["concept"])


def check_insertion(rows: dict, concept: str) -> None:
    """The insertion check on ``{context: row of insertion.json}`` (the docstring at the top says what)."""
    best = max(rows.values(), key=lambda r: r["mean_added_pixels"])
    low = rows.get("sky") or min(rows.values(), key=lambda r: r["mean_added_pixels"])
    table = {k: (round(r["mean_added_pixels"], 3), round(r["ci99_low"], 3), round(r["ci99_high"], 3), r["samples"])
             for k, r in rows.items()}
    assert best["ci99_low"] > 0, (f"inserting {concept} added nothing for sure in any context (context: "
                                  f"mean, 99% CI, pairs): {table}")
    most_low = max(low["ci99_high"], 0.0)  # the most the low context could gain (a loss is no gain)
    assert best["mean_added_pixels"] >= 3 * most_low, (
        f"inserting {concept} added {best['mean_added_pixels']:.3f} label pixels in {best['context']}; "
        f"{low['context']} could gain up to {most_low:.3f} (99% CI {low['ci99_low']:.3f}..{low['ci99_high']:.3f}): "
        f"expected at least 3x more in the best context; (context: mean, 99% CI, pairs) {table}")


def _ctx(context, mean, low, high, n=100):
    return {"context": context, "mean_added_pixels": mean, "ci99_low": low, "ci99_high": high, "samples": n}


def test_the_insertion_check_can_fail_when_sky_loses():
    """Before issue 32 the check was ``best >= 3 * sky mean``: with a negative sky mean it could not fail."""
    def check(*ctxs):
        check_insertion({c["context"]: c for c in ctxs}, "sand")

    check(_ctx("sand", 0.84, 0.12, 1.56), _ctx("sky", -0.036, -0.16, 0.088))  # as measured on seed 3
    with pytest.raises(AssertionError, match="could gain up to 0.400"):  # sky might gain half of what sand does
        check(_ctx("sand", 0.8, 0.3, 1.3), _ctx("sky", -0.036, -0.47, 0.4))
    with pytest.raises(AssertionError, match="added nothing for sure"):  # the best context's gain may be 0
        check(_ctx("sand", 0.2, -0.1, 0.5), _ctx("sky", -0.036, -0.1, -0.01))
