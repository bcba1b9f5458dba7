"""--chunk I/N + merge with segmenter labels, --iou pnas and generators (issue 10): the merged run
equals one process's on the same rows, to the last bit; chunks of different runs are refused, naming
the difference."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from netdissect import dissect
from netdissect.cli import main
from netdissect.dissection.chunks import merge_chunks
from netdissect.errors import NetDissectError
from test_segment import SEGMENTER, _net

KW = dict(num_workers=0, batch_size=4, progress=False, normalize="none", topk=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """13 small images in two class folders (one unreadable: a skipped row) and the band segmenter."""
    root = tmp_path_factory.mktemp("chunkseg")
    rng = np.random.default_rng(5)
    for k in range(13):
        cls = "a" if k % 2 else "b"
        (root / "img" / cls).mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((40, 32), Image.BILINEAR)
        img.save(root / "img" / cls / f"{k:02d}.png")
    (root / "img" / "a" / "07.png").write_bytes(b"not a png")
    (root / "seg.py").write_text(SEGMENTER)
    return root


def _same(a, b):
    for layer in a:
        x, y = a[layer], b[layer]
        np.testing.assert_array_equal(x.thresholds, y.thresholds)
        np.testing.assert_array_equal(x.iou, y.iou)
        assert list(x.units["label"]) == list(y.units["label"])
        np.testing.assert_array_equal(x.top_images, y.top_images)
        np.testing.assert_array_equal(x.top_values, y.top_values)
        np.testing.assert_array_equal(x.dead, y.dead)
    for key in ("n_used", "skipped", "unknown_label_count"):
        assert a.summary["dataset"][key] == b.summary["dataset"][key]
    assert (a.summary["labels"]["kind"], a.summary["labels"]["iou"]) == (b.summary["labels"]["kind"],
                                                                         b.summary["labels"]["iou"])
    assert (np.asarray(a[next(iter(a))].iou) > 0).sum() >= 5  # not vacuous


def _chunks(tmp_path, n, run, **kw):
    dirs = [tmp_path / f"c{i}" for i in range(n)]
    for i in reversed(range(n)):  # any order
        assert run(out=dirs[i], chunk=f"{i}/{n}", **kw) is None
    return dirs


@pytest.mark.parametrize("iou, q", [("pnas", 0.01), ("broden", 0.05)])
def test_segmenter_chunks_merged_equal_one_run(folder, tmp_path, iou, q):
    """Each chunk fills its own label cache (as on separate machines) and keeps its rows' labels:
    the merge reads them back without running the segmenter and equals a single run."""
    def run(out=None, chunk=None, cache="cache"):
        return dissect(_net(), ["units", "units2"], images=folder / "img", segmenter=f"{folder}/seg.py:make",
                       iou=iou, quantile=q, seg_size=(9, 7), label_cache=tmp_path / cache, skip_bad=True,
                       out=out, chunk=chunk, **KW)

    single = run(cache="single")
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    for i in (2, 0, 1):
        assert run(out=dirs[i], chunk=f"{i}/3", cache=f"cache{i}") is None
    shutil.rmtree(tmp_path / "cache0")  # the merge reads the labels the chunks kept, not the caches
    merged = merge_chunks(dirs, out=tmp_path / "run", progress=False, num_workers=0)
    _same(merged, single)
    assert merged.summary["labels"]["cache"] == single.summary["labels"]["cache"]
    assert merged.summary["labels"]["segmented_images"] == 12  # 12 readable images, each segmented once
    assert merged.summary["config"]["chunks"] == 3 and len(merged.summary["dataset"]["skipped"]) == 1
    from netdissect import load

    _same(load(tmp_path / "run"), single)


@pytest.mark.parametrize("path", ["kernels", "torch"])
def test_pnas_chunks_of_a_broden_dataset_merged_equal_one_run(broden, tmp_path, monkeypatch, path):
    """--iou pnas on a dataset's own masks; with a small --quantile-memory the thresholds come from
    the radix passes over every chunk's cache; the torch path (a GPU, no numba) too: the same, to
    the last bit."""
    from netdissect.dissection import kernel

    if path == "torch":
        monkeypatch.setattr(kernel, "pnas_kernels", lambda: None)
    elif kernel.numba_missing():
        pytest.skip("numba is not installed")
    else:
        assert kernel.pnas_kernels() is not None, "numba is installed: the PNAS kernels must build"
    for memory in (256 << 20, 4096) if path == "kernels" else (256 << 20,):
        def run(out=None, chunk=None):
            return dissect(_net(), ["units2"], broden, iou="pnas", quantile_memory=memory, out=out, chunk=chunk, **KW)

        single = run()
        dirs = _chunks(tmp_path / str(memory), 2, run)
        out = tmp_path / str(memory) / "run"
        assert main(["merge", *map(str, dirs), "--out", str(out), "--workers", "0", "--quiet", "--no-report"]) == 0
        from netdissect import load

        _same(load(out), single)


@pytest.mark.parametrize("other, says", [
    (dict(seg_size=(8, 8)), r"labels.seg_size is \[8, 8\] in .*c1 but \[9, 7\] in .*c0"),
    (dict(iou="broden"), r"labels.iou is absent in .*c1 but \"pnas\" in .*c0"),
    (dict(quantile=0.02), r"config.quantile is 0.02 in .*c1 but 0.01 in .*c0"),
    (dict(segmenter="color"), r"labels.spec is \"color\" in .*c1 but \".*seg.py:make\" in .*c0"),
])
def test_merge_refuses_chunks_of_different_runs_naming_the_difference(folder, tmp_path, capsys, other, says):
    def run(out, chunk, **kw):
        kw = {"segmenter": f"{folder}/seg.py:make", "seg_size": (9, 7), "iou": "pnas", "quantile": 0.01, **kw}
        return dissect(_net(), ["units2"], images=folder / "img", label_cache=tmp_path / "cache", skip_bad=True,
                       out=out, chunk=chunk, **KW, **kw)

    run(tmp_path / "c0", "0/2")
    run(tmp_path / "c1", "1/2", **other)
    with pytest.raises(NetDissectError, match=f"are chunks of different runs: {says}"):
        merge_chunks([tmp_path / "c0", tmp_path / "c1"], out=tmp_path / "run", progress=False, num_workers=0)
    assert main(["merge", str(tmp_path / "c0"), str(tmp_path / "c1"), "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_generator_chunks_merged_equal_one_run(tmp_path):
    """A generator on latent samples: each chunk segments its own generated images and writes the
    top images of its rows; the merge (no generator) copies those of the merged top sets."""
    from test_gan_dissect import Painter

    kw = dict(samples=30, seed=3, segmenter="color", num_workers=0, progress=False, batch_size=8,
              normalize="0.5,0.5", topk=3)
    single = dissect(Painter(), ["paint"], out=tmp_path / "single", label_cache=tmp_path / "cache", **kw)
    dirs = [tmp_path / f"c{i}" for i in range(2)]
    for i in (1, 0):
        assert dissect(Painter(), ["paint"], out=dirs[i], chunk=f"{i}/2", label_cache=tmp_path / f"cache{i}",
                       **kw) is None
    merged = merge_chunks(dirs, out=tmp_path / "run", progress=False, num_workers=0)
    _same(merged, single)
    assert merged.summary["dataset"]["images_in_run"] == "images"
    want = sorted(p.relative_to(tmp_path / "single") for p in (tmp_path / "single" / "images").rglob("*.png"))
    got = sorted(p.relative_to(tmp_path / "run") for p in (tmp_path / "run" / "images").rglob("*.png"))
    assert got == want and len(got) >= 3
    assert all((tmp_path / "run" / p).read_bytes() == (tmp_path / "single" / p).read_bytes() for p in got)
    from netdissect import load

    a, b = load(tmp_path / "run"), load(tmp_path / "single")
    _same(a, b)
    assert list(a["paint"].image_paths) == list(b["paint"].image_paths)
    with pytest.raises(NetDissectError, match="--dataset: these chunks dissect a generator"):
        merge_chunks(dirs, out=tmp_path / "again", dataset=tmp_path, progress=False, num_workers=0)
