"""Images with class labels for the classifier experiments.

    >>> from netdissect.roles.data import load_labelled
    >>> from netdissect.data.synth import SCENES
    >>> classes = list(SCENES)                                               # street-s, forest-s, ...
    >>> images, labels, paths, skipped = load_labelled(world, classes, size=32, progress=False)  # e.g. "data/world-val"
    >>> images.shape, images.dtype, len(labels) == len(paths), skipped
    ((6, 32, 32, 3), dtype('uint8'), True, 0)

Two layouts: a Broden-format folder whose ``scene`` column holds each image's
class (the synthetic world writes it; rows without one, such as texture
images, are left out and counted), or an image folder with one sub-folder per
class (``val/forest/001.jpg``).  Class names match the model's classes with or
without Broden's ``-s`` suffix.  Images are resized (bilinear) to ``size`` if
they are not already square of that side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from netdissect.data.pixels import to_rgb
from netdissect.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _bare(name: str) -> str:
    return name[:-2] if name.endswith("-s") else name


def class_index(classes: list[str]) -> dict[str, int]:
    """Lookup of a class name (with or without ``-s``, on either side) to its index in ``classes``:
    the model's ``forest-s`` matches a folder ``forest`` and the model's ``forest`` a folder ``forest-s``."""
    out = {}
    for i, c in enumerate(classes):
        for name in (_bare(c), _bare(c) + "-s"):
            out.setdefault(name, i)
        out[c] = i
    return out


def _resize(img: np.ndarray, size: int | None, interpolation: str | None = None) -> np.ndarray:
    if size is None or img.shape[:2] == (size, size):
        return img
    from netdissect.probe import resized
    return resized(img, (size, size), interpolation)


def load_labelled(root, classes: list[str], size: int | None = None, split: str | None = None,
                  limit: int | None = None, progress: bool = True, world: int | None = None,
                  model: str = "the model", interpolation: str | None = None):
    """``(uint8 images (N, size, size, 3), int64 labels (N,), image paths, skipped count)``.

    ``interpolation``: how images are resized to ``size`` (the model's recorded one; None: bilinear).

    ``world``: the synthetic-world version the model was trained on; a synthetic dataset written from
    another version is refused (its class names may coincide but mean other scenes).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    lookup = class_index(classes)
    if (root / "index.csv").exists():
        from netdissect.data.synth.worlds import check_world
        check_world(root, world, model)
        return _from_broden(root, lookup, classes, size, split, limit, progress, interpolation)
    return _from_folders(root, lookup, classes, size, limit, progress, interpolation)


def _from_broden(root, lookup, classes, size, split, limit, progress, interpolation=None):
    from netdissect.data.broden import Broden

    ds = Broden(root, split=split)
    names = dict(zip(ds.concepts.numbers.tolist(), ds.concepts.names))
    picked, labels, unknown = [], [], {}
    for i, row in enumerate(ds.rows):
        nums = row.labels.get("scene", [])
        if not nums:
            continue
        name = names.get(nums[0], str(nums[0]))
        if name not in lookup:
            unknown[name] = unknown.get(name, 0) + 1
            continue
        picked.append(i)
        labels.append(lookup[name])
        if limit is not None and len(picked) >= limit:
            break
    if unknown:
        some = ", ".join(f"{k!r} ({v})" for k, v in sorted(unknown.items())[:6])
        raise DatasetError(f"{root}: class(es) {some} of the scene column are not among the model's classes "
                           f"({', '.join(classes)})")
    if not picked:
        raise DatasetError(f"{root}: no row has a class label (the 'scene' column is empty in every row"
                           f"{' of split ' + repr(split) if split else ''}); the classifier experiments need "
                           "images labelled with the model's classes")
    skipped = len(ds.rows) - len(picked) if limit is None else 0
    images = np.stack([_resize(ds.load_image(i), size, interpolation) for i in
                       tqdm(picked, desc=f"reading {root.name}", unit="img", disable=not progress)])
    return images, np.asarray(labels, np.int64), [ds.rows[i].image for i in picked], skipped


def _from_folders(root, lookup, classes, size, limit, progress, interpolation=None):
    subs = sorted(p for p in root.iterdir() if p.is_dir())
    if not subs:
        raise DatasetError(f"{root}: neither a Broden folder (no index.csv) nor an image folder with one "
                           "sub-folder per class")
    unknown = [p.name for p in subs if p.name not in lookup]
    if unknown:
        raise DatasetError(f"{root}: class folder(s) {', '.join(unknown[:6])} are not among the model's classes "
                           f"({', '.join(classes)})")
    files = [(f, lookup[p.name]) for p in subs for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if limit is not None:  # taken across the classes in turn (the first files of one folder are one class)
        per = {}
        for k, (_, y) in enumerate(files):
            per.setdefault(y, []).append(k)
        turns = sorted((j, y) for y, ks in per.items() for j in range(len(ks)))
        keep = sorted(per[y][j] for j, y in turns[:limit])
        files = [files[k] for k in keep]
    if not files:
        raise DatasetError(f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for f, _ in tqdm(files, desc=f"reading {root.name}", unit="img", disable=not progress):
        try:
            with Image.open(f) as im:
                images.append(_resize(np.asarray(to_rgb(im)), size, interpolation))
        except OSError as exc:
            raise DatasetError(f"{f}: not a readable image ({exc})") from None
    if size is None and len({im.shape for im in images}) > 1:
        raise DatasetError(f"{root}: images of different sizes; give a size to resize them to")
    return (np.stack(images), np.asarray([y for _, y in files], np.int64),
            [str(f.relative_to(root)) for f, _ in files], 0)
