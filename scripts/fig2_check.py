#!/usr/bin/env python
"""The PNAS Fig. 2 numbers of a `netdissect ablate` run folder, against the issue-26 targets.

    python scripts/fig2_check.py /work/exp/world2/ablate [--n 20]

Reads ``roles.json``, ``removal.csv`` and ``importance.npz`` and prints, per class: its val balanced
accuracy, with its ``n`` most important units removed, with only those ``n`` kept, and the all-class
accuracy drop beside the class's own drop; then the shares the issue asks for (removed -> at most 0.65
for at least half the classes; kept -> at least 0.70 for three quarters; all-class drop at most a
third of the class's drop) and the share of the top-``n`` ranking positions decided by ties of the
balanced-accuracy drop (the log-probability tie-break), on the train split.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np


def check(run: Path, n: int = 20) -> dict:
    s = json.loads((run / "roles.json").read_text())
    classes = s["classes"]
    base = s["baseline_val"]
    rem = {(r["class"], r["mode"], int(r["n"])): (float(r["balanced_accuracy"]), float(r["all_class_accuracy"]))
           for r in csv.DictReader(open(run / "removal.csv"))}
    z = np.load(run / "importance.npz")
    imp, order = z["train"], z["ranking"]
    rows = []
    for k, c in enumerate(classes):
        b = base["balanced_accuracy"][c]
        removed, all_removed = rem[(c, "most_important", n)]
        kept = rem[(c, "all_but_most_important", n)][0]
        drop_all = base["all_class_accuracy"] - all_removed
        top = order[k][: n + 1]
        ties = float(np.mean(imp[top[:-1], k] == imp[top[1:], k]))
        zero = float(np.mean(imp[top[:-1], k] <= 0))
        rows.append({"class": c, "baseline": b, "removed": removed, "kept": kept, "class_drop": b - removed,
                     "all_drop": drop_all, "tie_share": ties, "no_drop_share": zero})
    R = {k: np.array([r[k] for r in rows]) for k in rows[0] if k != "class"}
    third = R["all_drop"] <= R["class_drop"] / 3
    return {"n": n, "classes": len(classes), "rows": rows, "all_class_accuracy": base["all_class_accuracy"],
            "share_removed_le_065": float((R["removed"] <= 0.65).mean()),
            "share_kept_ge_070": float((R["kept"] >= 0.70).mean()),
            "share_all_drop_le_third": float(third.mean()),
            "tie_share": float(R["tie_share"].mean()), "no_drop_share": float(R["no_drop_share"].mean()),
            "mean_baseline": float(R["baseline"].mean()), "mean_removed": float(R["removed"].mean()),
            "mean_kept": float(R["kept"].mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args(argv)
    r = check(args.run, args.n)
    print(f"| class | val BA | {r['n']} removed | only {r['n']} kept | class drop | all-class drop | ties in top {r['n']} |")
    print("|---|---|---|---|---|---|---|")
    for x in r["rows"]:
        print(f"| {x['class']} | {x['baseline']:.3f} | {x['removed']:.3f} | {x['kept']:.3f} | {x['class_drop']:.3f} "
              f"| {x['all_drop']:.3f} | {x['tie_share']:.2f} |")
    print(f"\nall-class val accuracy {r['all_class_accuracy']:.3f} ({r['classes']} classes, chance {1 / r['classes']:.3f})")
    print(f"classes at <= 0.65 with their {r['n']} removed: {r['share_removed_le_065']:.2f} (target >= 0.5)")
    print(f"classes at >= 0.70 with only their {r['n']} kept: {r['share_kept_ge_070']:.2f} (target >= 0.75)")
    print(f"classes whose all-class drop <= 1/3 of their own drop: {r['share_all_drop_le_third']:.2f} (target: all)")
    print(f"top-{r['n']} ranking positions tied with the next unit (decided by the tie-break): {r['tie_share']:.2f}; "
          f"with no balanced-accuracy drop at all: {r['no_drop_share']:.2f}")
    print(f"mean val BA {r['mean_baseline']:.3f} -> {r['mean_removed']:.3f} removed, {r['mean_kept']:.3f} kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
