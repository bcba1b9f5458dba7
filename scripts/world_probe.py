#!/usr/bin/env python
"""How separable a world's scene classes are from their ground-truth objects alone (no CNN).

    python scripts/world_probe.py --world 2 --n-train 2400 --n-test 1200 --size 64

Renders scene samples of two seeds (train ``--seed``, test ``--seed + 1``) with their masks and fits a
multinomial logistic regression (scikit-learn) on which objects, parts and materials are present
(``--areas``: also the share of the image each covers; the mean image brightness is always a
feature, so "night" is visible to it).  Its held-out accuracy approximates the accuracy of a perfect
object detector: a ceiling for a classifier that recognises scenes by their objects (docs/world.md,
"Pilot 2").  Prints overall, per group and per class accuracy, and the wall time.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from netdissect.data.synth.generate import make_sample
from netdissect.data.synth.worlds import get_world


def features(world: int, seed: int, n: int, size: int, areas: bool):
    w = get_world(world)
    cat = w.catalogue
    cols = {}
    for c in ("object", "part", "material"):
        for name in cat.lists[c]:
            cols.setdefault(cat.number(c, name), len(cols))
    X, y = [], []
    i = 0
    while len(y) < n:
        s = make_sample(seed, i, size, kind="scene", world=world)
        i += 1
        f = np.zeros(2 * len(cols) + 1, np.float32)
        for c in ("object", "part", "material"):
            for plane in s.masks.get(c, []):
                labels, counts = np.unique(plane, return_counts=True)
                for lab, cnt in zip(labels, counts):
                    if lab > 0 and int(lab) in cols:
                        f[cols[int(lab)]] = 1
                        f[len(cols) + cols[int(lab)]] += cnt / plane.size
        f[-1] = s.image.mean() / 255.0
        if not areas:
            f = np.concatenate([f[:len(cols)], f[-1:]])
        X.append(f)
        y.append(s.scene)
    return np.array(X), np.array(y)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--n-train", type=int, default=2400)
    p.add_argument("--n-test", type=int, default=1200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--areas", action="store_true")
    args = p.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    Xa, ya = features(args.world, args.seed, args.n_train, args.size, args.areas)
    Xb, yb = features(args.world, args.seed + 1, args.n_test, args.size, args.areas)
    t1 = time.time()
    clf = LogisticRegression(max_iter=3000, C=10.0).fit(Xa, ya)
    pred = clf.predict(Xb)
    w = get_world(args.world)
    print(f"world {args.world}: logistic regression on object/part/material presence"
          f"{' and areas' if args.areas else ''} (+ brightness), {len(ya)} train / {len(yb)} test scenes at "
          f"{args.size} px (seeds {args.seed}/{args.seed + 1})")
    print(f"held-out accuracy {np.mean(pred == yb):.3f} (train {clf.score(Xa, ya):.3f}; chance {1 / len(w.scenes):.3f})")
    gidx = {w.scenes.index(c): g for g, cs in w.groups.items() for c in cs}
    same_group = np.mean([gidx[a] == gidx[b] for a, b in zip(pred, yb)])
    print(f"group right: {same_group:.3f}")
    for g, cs in w.groups.items():
        accs = [f"{c[:-2]} " + (f"{np.mean(pred[yb == k] == k):.2f}" if (yb == k).any() else "-")
                for c in cs for k in [w.scenes.index(c)]]
        print(f"  {g:8s} " + ", ".join(accs))
    print(f"wall time: rendering {t1 - t0:.0f} s, fit {time.time() - t1:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
