"""Science checks of removal and insertion on the bundled generator ``zoo:world-gan`` (PNAS 2020 Fig. 4).

Thresholds fixed before any result was seen (issue 12; docs/gan-roles.md):

- the concept: the ``object`` concept labelling the most units of layer4 (a unit's label is its best concept
  over all categories, IoU >= 0.04) in a dissection of 800 samples of seed 1 with ``zoo:world-seg``; ties by
  the larger summed IoU, then by name;
- removal, on 200 other samples (seed 2): zeroing its top 20 units removes more than half of its pixels
  (share removed > 0.5; paper: 53% of tree pixels in LSUN church) and 20 random units (control seed 0) remove
  less than a third of what the top 20 remove;
- insertion, on 16 other samples (seed 3), its top 20 units at their 99.5% level at each of the 8 x 8 cells:
  the best context (at least 50 (sample, cell) pairs) gains on average at least 3x more of the concept than
  the context ``sky`` (if sky has fewer pairs: the worst context with enough), and gains something (> 0).

The generator's weights are bundled; if they are absent the checks fail (they do not skip).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import netdissect

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
    _main(["dissect", "--model", "zoo:world-gan", "--layer", LAYER, "--samples", "800", "--seed", "1",
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
           "--samples", "200", "--seed", "2", "--control-seed", "0", "--out", str(out), "--quiet", "--grid", "0",
           "--no-figures"])
    return list(csv.DictReader(open(out / "removal.csv")))


def test_removing_the_top_20_units_removes_most_of_the_concept(gan, removed):
    row = removed[0]
    assert row["n"] == "20"
    share = float(row["share_removed"])
    assert share > 0.5, (f"removing the top 20 {gan['concept']} units removed {share:.1%} of its pixels "
                         f"(99% CI {float(row['ci99_low']):.1%}..{float(row['ci99_high']):.1%}); expected > 50% "
                         f"(units per object concept: {gan['counts']})")


def test_random_units_remove_much_less(gan, removed):
    row = removed[0]
    share, control = float(row["share_removed"]), float(row["control_share_removed"])
    assert control < share / 3, (f"20 random units removed {control:.1%} of {gan['concept']}'s pixels, the top 20 "
                                 f"{share:.1%}: expected less than a third of it")


def test_insertion_depends_on_the_context(gan):
    out = gan["root"] / "insert"
    _main(["gan", "insert", "--run", str(gan["run"]), "--layer", LAYER, "--concept", gan["concept"], "--n", "20",
           "--value", "q99.5", "--samples", "16", "--seed", "3", "--min-samples", str(MIN_SAMPLES),
           "--out", str(out), "--quiet", "--no-figures"])
    s = json.loads((out / "insertion.json").read_text())
    assert s["cells"] == [8, 8]
    rows = {r["context"]: r for r in s["contexts"]}
    assert len(rows) >= 2, f"fewer than two contexts with {MIN_SAMPLES} (sample, cell) pairs: {s['all_contexts']}"
    best = max(rows.values(), key=lambda r: r["mean_added_pixels"])
    low = rows.get("sky") or min(rows.values(), key=lambda r: r["mean_added_pixels"])
    assert best["mean_added_pixels"] > 0, f"inserting {gan['concept']} added nothing in any context: {rows}"
    assert best["mean_added_pixels"] >= 3 * low["mean_added_pixels"], (
        f"inserting {gan['concept']} added {best['mean_added_pixels']:.2f} label pixels in {best['context']} but "
        f"{low['mean_added_pixels']:.2f} in {low['context']}: expected at least 3x more in the best context")
    assert np.isfinite([r["ci99_low"] for r in rows.values()]).all()
