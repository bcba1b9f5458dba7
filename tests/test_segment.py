"""Segmenter labels (issue 10): image folders, segmenters, the label cache and the PNAS IoU, exact
against the plain reference implementation (tests/reference.py)."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from netdissect import dissect
from netdissect.errors import DatasetError, NetDissectError
from netdissect.probe.folder import ImageFolder
from netdissect.segment import QuadParts, load_segmenter, quad_planes
from reference import bilinear, reference_pnas, reference_quad, reference_segmenter_broden  # noqa: F401

SEGMENTER = textwrap.dedent('''
    import torch

    class Bands:
        """Two planes: red level in 3 bands (object), green level in 2 bands (material)."""
        concepts = ["low", "mid", "high", "dull", "bright"]
        categories = ["object", "object", "object", "material", "material"]

        def identity(self):
            return {"bands": 1}

        def segment(self, images, size):
            x = torch.nn.functional.interpolate(images, size=size, mode="area")
            red = (x[:, 0] * 3).long().clamp(0, 2) + 1
            red[x[:, 2] > 0.8] = 0          # some pixels unlabelled
            green = (x[:, 1] > 0.5).long() + 4
            return torch.stack([red, green], 1)

    def make():
        return Bands()

    def bad_shape():
        b = Bands()
        b.segment = lambda images, size: torch.zeros(len(images), 3, 3, dtype=torch.long)
        return b

    def bad_numbers():
        b = Bands()
        b.segment = lambda images, size: torch.full((len(images), 1, *size), 9)
        return b
''')


def _net():
    """Elementwise units (bit-identical whatever the batching: the reference recomputes them)."""
    from nets import ElementwiseNet

    return ElementwiseNet(units=6, seed=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(3)
    for k in range(14):
        cls = "cats" if k % 2 else "dogs"
        (root / "img" / cls).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        w = 32 + 8 * (k % 3)  # images of different sizes: resized to the first one's
        img = Image.fromarray(base).resize((w, 32), Image.BILINEAR)
        img.save(root / "img" / cls / (f"{k}.png" if k % 3 else f"{k}.jpg"))
    (root / "seg.py").write_text(SEGMENTER)
    return root


def _acts(model, probe, layer):
    from netdissect.hooks import Trace

    out = []
    with torch.inference_mode():
        for i in range(len(probe)):
            with Trace(model, layer, stop=True) as t:
                model(probe.batch([probe.load(i)], "cpu"))
            out.append(t.output[0].numpy())
    return np.stack(out)


def _run(folder, tmp_path, **kw):
    kw.setdefault("segmenter", f"{folder}/seg.py:make")
    return dissect(_net(), ["units2"], images=folder / "img", label_cache=tmp_path / "cache", num_workers=0, batch_size=5,
                   progress=False, normalize="none", **kw)


def test_image_folder_rows_classes_and_sizes(folder):
    p = ImageFolder(folder / "img")
    assert len(p) == 14 and p.classes == ["cats", "dogs"] and p.row_class(0) == "cats"
    assert p.shape == (32, 40) and all(p.load(i).shape == (32, 40, 3) for i in range(len(p)))  # the first one's size
    c = ImageFolder(folder / "img", size=24, crop=True)
    assert c.load(2).shape == (24, 24, 3)


@pytest.mark.parametrize("q", [0.01, 0.2])
def test_pnas_mode_exact_against_reference(folder, tmp_path, q):
    res = _run(folder, tmp_path, quantile=q, seg_size=(9, 7))
    assert res.summary["labels"]["iou"] == "pnas"
    probe = ImageFolder(folder / "img")
    seg = load_segmenter(f"{folder}/seg.py:make")
    labels = [seg.segment(probe.batch([probe.load(i)], "cpu"), (9, 7))[0].numpy() for i in range(len(probe))]
    thr, iou = reference_pnas(_acts(_net(), probe, "units2"), labels, list(range(1, 6)), q)
    layer = res["units2"]
    assert np.array_equal(layer.thresholds, thr.astype(np.float32))
    np.testing.assert_allclose(layer.iou, iou, rtol=1e-6, atol=1e-7)
    assert (iou > 0).sum() >= 5  # not vacuous


def test_broden_mode_with_segmenter_exact_against_reference(folder, tmp_path):
    res = _run(folder, tmp_path, iou="broden", quantile=0.05)
    assert res.summary["config"]["quantile"] == 0.05
    probe = ImageFolder(folder / "img")
    seg = load_segmenter(f"{folder}/seg.py:make")
    labels = [seg.segment(probe.batch([probe.load(i)], "cpu"), (8, 10))[0].numpy() for i in range(len(probe))]
    thr, iou = reference_segmenter_broden(_acts(_net(), probe, "units2"), labels, seg.categories, 0.05)
    np.testing.assert_allclose(res["units2"].thresholds, thr, rtol=1e-6)
    np.testing.assert_allclose(res["units2"].iou, iou, rtol=1e-6, atol=1e-7)
    assert (iou > 0).sum() >= 5


def test_pnas_mode_on_broden_masks_against_reference(broden):
    """--iou pnas with a dataset's own masks (the science check's ground-truth run)."""
    from netdissect.data import Broden
    from reference import layer_activations

    ds = Broden(broden)
    res = dissect(_net(), ["units2"], broden, iou="pnas", num_workers=0, progress=False, normalize="none")
    assert res.summary["config"]["quantile"] == 0.01
    labels = []
    for i in range(len(ds)):
        s = ds.load_labels(i)
        sh, sw = ds.rows[i].sh, ds.rows[i].sw
        planes = [p for p in (s.planes if s.planes is not None else [])]
        planes += [np.full((sh, sw), n) for n in s.image_labels]
        labels.append(np.stack(planes) if planes else np.zeros((1, sh, sw), int))
    P = max(len(p) for p in labels)
    labels = [np.concatenate([p, np.zeros((P - len(p), *p.shape[1:]), int)]) for p in labels]
    thr, iou = reference_pnas(layer_activations(_net(), ds, "units2"), labels, list(ds.concepts.numbers), 0.01)
    assert np.array_equal(res["units2"].thresholds, thr.astype(np.float32))
    np.testing.assert_allclose(res["units2"].iou, iou, rtol=1e-6, atol=1e-7)
    assert (iou > 0).sum() >= 5


def test_label_cache_reused_and_invalidated(folder, tmp_path):
    import shutil

    img = tmp_path / "img"
    shutil.copytree(folder / "img", img)
    kw = dict(segmenter="color", label_cache=tmp_path / "cache", num_workers=0, progress=False, normalize="none")
    first = dissect(_net(), ["units2"], images=img, **kw)
    assert first.summary["labels"]["segmented_images"] == 14
    again = dissect(_net(), ["units"], images=img, **kw)  # another layer: labels from the cache
    assert again.summary["labels"]["segmented_images"] == 0
    np.testing.assert_array_equal(again.summary["labels"]["cache"], first.summary["labels"]["cache"])
    f = sorted(img.rglob("*.png"))[-1]
    Image.fromarray(np.zeros((32, Image.open(f).size[0], 3), np.uint8)).save(f)  # a changed image is segmented again
    os.utime(f, ns=(1, 1))
    assert dissect(_net(), ["units2"], images=img, **kw).summary["labels"]["segmented_images"] == 1
    other = dissect(_net(), ["units2"], images=img, seg_size=5, **kw)  # another option: another cache
    assert other.summary["labels"]["segmented_images"] == 14
    assert other.summary["labels"]["cache"] != first.summary["labels"]["cache"]


def test_color_segmenter_matches_the_worlds_colour_masks(tmp_path):
    from netdissect.data.synth.generate import make_sample
    from netdissect.data.synth.catalogue import CATALOGUE

    seg = load_segmenter("color")
    names = CATALOGUE.names_by_number()
    agree = total = 0
    for i in range(6):
        s = make_sample(2017, i, 64)
        x = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255
        got = seg.segment(x, (32, 32))[0, 0].numpy()
        want = np.vectorize(lambda n: seg.concepts.index(names[n]) + 1)(s.masks["color"][0])
        agree += int((got == want).sum())
        total += got.size
    assert agree / total > 0.995


def test_quad_parts_against_reference():
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 4, (3, 2, 12, 10))
    planes[planes == 3] = 0
    first = np.array([0, 10, 0, 20])  # objects: 1 and 3 (3 absent), 2 is not an object
    first[3] = 20
    out = quad_planes(planes, first)
    for b in range(3):
        for p in range(2):
            ref = reference_quad(planes[b, p], {1})
            for (n, side), m in ref.items():
                plane = out[b, 2 * p] if side in ("top", "bottom") else out[b, 2 * p + 1]
                k = first[n] + ("top", "bottom", "left", "right").index(side)
                assert np.array_equal(plane == k, m), (b, p, side)
            assert not (out[b, 2 * p:2 * p + 2] >= 20).any()


def test_quad_parts_merged_and_catalogue(folder):
    seg = load_segmenter(f"color+{folder}/seg.py:make", quad_parts=True)
    assert isinstance(seg, QuadParts)
    assert seg.concepts[:11] == load_segmenter("color").concepts and "low-top" in seg.concepts
    assert seg.categories[seg.concepts.index("high-right")] == "part"
    x = torch.rand(2, 3, 16, 16)
    planes = seg.segment(x, (4, 4))
    assert planes.shape == (2, 3 * 3, 4, 4)  # 3 base planes + 2 quad planes each
    assert int(planes[:, 1:3].min()) >= 0 and (planes[:, 1] == 0).logical_or(planes[:, 1] > 11).all()


def test_bad_inputs(folder, tmp_path):
    with pytest.raises(NetDissectError, match="wrong shape|shape"):
        _run(folder, tmp_path, segmenter=f"{folder}/seg.py:bad_shape", out=None)
    with pytest.raises(NetDissectError, match=r"bad_numbers.*outside 0\.\.5"):
        _run(folder, tmp_path, segmenter=f"{folder}/seg.py:bad_numbers")
    with pytest.raises(NetDissectError, match="needs --segmenter"):
        dissect(_net(), ["units2"], images=folder / "img")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(NetDissectError, match="iou must be"):
        _run(folder, tmp_path, iou="voc")
    with pytest.raises(NetDissectError, match="no callable"):
        load_segmenter(f"{folder}/seg.py:nothing")
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(bad / "a" / f"{k}.png")
    (bad / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"1\.png"):
        dissect(_net(), ["units2"], images=bad, segmenter="color", label_cache=tmp_path / "c", num_workers=0,
                progress=False, normalize="none")
    res = dissect(_net(), ["units2"], images=bad, segmenter="color", label_cache=tmp_path / "c", num_workers=0,
                  progress=False, normalize="none", skip_bad=True)
    assert len(res.summary["dataset"]["skipped"]) == 1


def test_hf_segmenter_tiny_random_segformer(tmp_path):
    import transformers  # a declared test dependency (the `test` extra): missing is a failure, not a skip
    names = {0: "wall", 1: "door", 2: "glass", 3: "windowpane, window"}
    cfg = transformers.SegformerConfig(num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8],
                                       num_attention_heads=[1], patch_sizes=[7], strides=[4], mlp_ratios=[1],
                                       decoder_hidden_size=8, num_labels=4, id2label=names,
                                       label2id={v: k for k, v in names.items()})
    torch.manual_seed(0)
    transformers.SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path / "tiny")
    seg = load_segmenter(f"hf:{tmp_path / 'tiny'}+color")
    assert seg.concepts[:4] == list(names.values())
    assert seg.categories[:4] == ["object", "part", "material", "part"]
    from netdissect.segment import checked_segment

    planes = checked_segment(seg, torch.rand(2, 3, 32, 32), (8, 8))
    assert planes.shape == (2, 2, 8, 8) and int(planes[:, 0].min()) >= 1 and int(planes[:, 0].max()) <= 4


def test_hf_segmenter_dissects_a_folder_and_keys_the_cache_by_its_weights(folder, tmp_path):
    """A whole run with an hf: segmenter: labels from it (no masks), the summary names it with its
    weights digest, and other weights of the same architecture never reuse its cached labels."""
    import transformers
    names = {0: "wall", 1: "door", 2: "glass"}
    for seed in (0, 1):
        cfg = transformers.SegformerConfig(num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8],
                                           num_attention_heads=[1], patch_sizes=[7], strides=[4], mlp_ratios=[1],
                                           decoder_hidden_size=8, num_labels=3, id2label=names,
                                           label2id={v: k for k, v in names.items()})
        torch.manual_seed(seed)
        transformers.SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path / f"tiny{seed}")
    runs = [_run(folder, tmp_path, segmenter=f"hf:{tmp_path / f'tiny{seed}'}", out=tmp_path / f"r{seed}")
            for seed in (0, 1)]
    ids = [r.summary["labels"]["segmenter"] for r in runs]
    assert ids[0]["kind"] == "hf" and all(len(h) >= 16 for h in ids[0]["weights_sha256"])
    assert ids[0]["weights_sha256"] != ids[1]["weights_sha256"]
    assert [r.summary["labels"]["segmented_images"] for r in runs] == [14, 14]  # not the other's labels
    assert runs[0].summary["labels"]["cache"] != runs[1].summary["labels"]["cache"]
    assert set(runs[0]["units2"].concept_names) <= set(names.values())
    assert runs[0]["units2"].iou.shape == (len(runs[0]["units2"].iou), 3)


def test_cli_images_segmenter_and_segmenters(folder, tmp_path, capsys):
    from netdissect.cli import main
    from netdissect import load

    tests = os.path.dirname(__file__)
    out = tmp_path / "run"
    code = main(["dissect", "--model", f"{tests}/nets.py:elementwise_net", "--normalize", "none", "--layer", "units2",
                 "--images", str(folder / "img"), "--segmenter", f"color+{folder}/seg.py:make", "--quad-parts",
                 "--seg-size", "6,5", "--size", "24", "--crop", "--label-cache", str(tmp_path / "cache"),
                 "--out", str(out), "--workers", "0", "--quiet", "--no-report"])
    assert code == 0, capsys.readouterr()
    r = load(out)
    assert r.summary["labels"]["iou"] == "pnas" and r.summary["config"]["quantile"] == 0.01
    assert r.summary["labels"]["seg_size"] == [6, 5] and r.summary["dataset"]["size"] == [24, 24]
    assert "low-top" in set(r["units2"].concept_names)
    capsys.readouterr()
    assert main(["segmenters"]) == 0
    text = capsys.readouterr().out
    assert "zoo:world-seg" in text and "object (19)" in text and "color (11)" in text
    code = main(["dissect", "--model", f"{tests}/nets.py:elementwise_net", "--layer", "units2",
                 "--images", str(folder / "img"), "--out", str(tmp_path / "r2")])
    assert code != 0 and "needs --segmenter" in capsys.readouterr().err


def test_label_cache_packs_one_file_per_flush_and_reports_a_failed_write(tmp_path, monkeypatch):
    """Labels wait in memory until ``flush`` writes them as one pack (planes + keys); another
    process (a new object, a pickled copy as a spawned loader worker gets) finds them; a pack whose
    keys are missing, or that disagrees, is not read; a failed write is raised naming the cache."""
    import pickle

    from netdissect.concepts import cache as cache_mod
    from netdissect.concepts.cache import LabelCache
    from netdissect.concepts.segmenter import SegmenterLabels

    cache = LabelCache(tmp_path / "cache", {"test": 1})
    planes = [np.full((2, 4, 4), k, np.uint8) for k in range(5)]
    for k, p in enumerate(planes):
        cache.put(f"row{k}", p)
        assert cache.has(f"row{k}")
    np.testing.assert_array_equal(cache.get("row3"), planes[3])  # from memory
    assert not list(cache.packs.iterdir())
    with pytest.raises(NetDissectError, match="not yet written"):
        pickle.dumps(cache)
    cache.flush()
    assert sorted(p.name.split(".", 1)[1] for p in cache.packs.iterdir()) == ["keys.npy", "npy"]
    other = LabelCache(tmp_path / "cache", {"test": 1})
    assert other.key == cache.key and not other.has("row9")
    for k, p in enumerate(planes):
        np.testing.assert_array_equal(other.get(f"row{k}"), p)
    copy = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(copy.get("row4"), planes[4])
    copy.put("row9", planes[0])
    copy.flush()
    assert cache.get("row9") is not None  # written by another object: found when missed
    assert LabelCache(tmp_path / "cache", {"test": 2}).get("row0") is None  # another identity
    # a pack without its keys (a writer killed between the two files) or with too few keys is not read
    np.save(cache.packs / "half.npy", np.stack(planes))
    np.save(cache.packs / "bad.npy", np.stack(planes))
    np.save(cache.packs / "bad.keys.npy", np.zeros((3, 16), np.uint8))
    fresh = LabelCache(tmp_path / "cache", {"test": 1})
    assert fresh.get("row1") is not None and len(fresh._arrays) == 2

    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    src = SegmenterLabels(load_segmenter("color"), ImageFolder(tmp_path / "img"), cache_dir=tmp_path / "c2")

    def broken(path, data, durable=True):
        raise OSError("disk full")

    src.cache.put("x", planes[0])
    monkeypatch.setattr(cache_mod, "write_bytes", broken)
    with pytest.raises(NetDissectError, match="could not write labels to the label cache .*disk full"):
        src.flush()


def test_file_stamp_tells_a_relinked_file_apart(tmp_path):
    """A link repointed to another file of the same size and time gets another stamp (the inode)."""
    from netdissect.probe.folder import file_stamp

    for name in ("x.png", "y.png"):
        (tmp_path / name).write_bytes(b"12345678")
        os.utime(tmp_path / name, ns=(5, 5))
    link = tmp_path / "l.png"
    link.symlink_to(tmp_path / "x.png")
    before = file_stamp(link)
    link.unlink()
    link.symlink_to(tmp_path / "y.png")
    assert file_stamp(link) != before and file_stamp(link) == file_stamp(link)
    assert file_stamp(tmp_path / "gone.png").endswith("missing")
