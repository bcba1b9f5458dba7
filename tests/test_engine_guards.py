"""The engine's defaults are exact, and what it relies on is checked before it is used."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from nets import ElementwiseNet, SmallRandomCNN, Tap
from reference import layer_activations as _acts
from reference import reference_dissect
from netdissect import dissect
from netdissect.data import Broden
from netdissect.errors import DatasetError, NetDissectError

KW = dict(num_workers=0, progress=False)


class PlantedNet(nn.Module):
    """Elementwise units (bit-reproducible): C random detectors, the same at half scale, and the
    same squeezed into 1.000..1.010 (where float16 has only ~10 distinct values)."""

    def __init__(self):
        super().__init__()
        self.base = ElementwiseNet(units=4, seed=3)
        self.units = Tap()

    def forward(self, x):
        p = (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) * 0.25
        c = self.base.coef
        u = torch.stack([torch.relu(p[:, 0] * c[k, 0] + p[:, 1] * c[k, 1] + p[:, 2] * c[k, 2] + c[k, 3])
                         for k in range(len(c))], 1)
        return self.units(torch.cat([u, u * 0.5, 1.0 + u * 0.004], 1)).mean((2, 3))


@pytest.mark.parametrize("q", [0.005, 0.05])
def test_default_options_are_exact_and_scale_invariant(broden, q):
    """Regression: the float16 default cache made ties at thresholds (a narrow unit lost its label;
    two scalings of one detector got different IoUs)."""
    model, ds = PlantedNet(), Broden(broden)
    result = dissect(model, ["units"], broden, quantile=q, **KW)
    thresholds, iou = reference_dissect(_acts(model, ds, "units"), ds, q)
    lr = result["units"]
    np.testing.assert_array_equal(lr.thresholds, thresholds.astype(np.float32))
    np.testing.assert_allclose(lr.iou, iou, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lr.iou[:4], lr.iou[4:8])  # scale by 0.5: the same masks
    assert lr.iou[8:].max() > 0  # the narrow units still segment something
    assert result.summary["cache"] == {"dtype": "float32", "exact": True}
    # the lossy opt-in says what rounding did
    lossy = dissect(model, ["units"], broden, quantile=q, cache_dtype="float16", **KW)
    tied = lossy.summary["lossy_cache"]["tied_positions"]["units"]
    assert tied > 0
    assert not np.allclose(lossy["units"].iou[8:], lr.iou[8:], atol=1e-6)  # what the old default got wrong


def test_a_broden_object_with_split_or_limit_is_refused(broden):
    with pytest.raises(NetDissectError, match="pass them to it: Broden"):
        dissect(SmallRandomCNN(), ["conv2"], Broden(broden), limit=5, **KW)


@pytest.mark.parametrize("kw, match", [
    (dict(limit=0), "limit must be an integer >= 1"),
    (dict(limit=-5), "limit must be an integer >= 1"),
    (dict(num_workers=-1), "num_workers must be an integer >= 0"),
    (dict(topk=0), "topk must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(quantile_memory=10), "quantile_memory must be an integer >= 4096"),
])
def test_meaningless_parameters_are_refused_before_anything_runs(broden, tmp_path, kw, match):
    with pytest.raises(NetDissectError, match=match):
        dissect(SmallRandomCNN(), ["conv2"], broden, out=tmp_path / "run", **{**KW, **kw})
    assert not (tmp_path / "run" / "summary.json").exists()


def test_an_absurd_topk_is_refused_before_the_passes(broden, tmp_path, monkeypatch):
    from netdissect.dissection import config

    r = dissect(SmallRandomCNN(), ["conv2"], broden, topk=10_000_000, **KW)  # at most every row
    assert r["conv2"].top_images.shape == (12, 30)
    monkeypatch.setattr(config, "MAX_TOPK_BYTES", 12 * 16 * 16 * 2 * 20)  # room for 20 maps per unit
    with pytest.raises(NetDissectError, match="topk=25 keeps .* choose a smaller --topk"):
        dissect(SmallRandomCNN(), ["conv2"], broden, topk=25, out=tmp_path / "run", **KW)
    assert not (tmp_path / "run" / ".work" / "conv2.acts").exists()


def test_a_cache_larger_than_the_free_disk_is_refused_with_the_alternatives(broden, tmp_path, monkeypatch):
    import collections

    from netdissect.dissection import engine

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(NetDissectError, match=r"cache needs .* GiB .*--cache-dtype float16 .*--chunk"):
        dissect(SmallRandomCNN(), ["conv2"], broden, out=tmp_path / "run", **KW)


def test_bf16_without_native_support_warns_and_runs_fp32(broden, monkeypatch):
    from netdissect.dissection import config

    monkeypatch.setattr(config, "native_bf16", lambda device: (False, "CPU capability AVX2, bf16 instructions: none"))
    with pytest.warns(RuntimeWarning, match="no native bf16 .*AVX2.*fp32 is used"):
        r = dissect(SmallRandomCNN(), ["conv2"], broden, precision="bf16", **KW)
    assert r.summary["precision"]["used"] == "fp32" and r.summary["precision"]["asked"] == "bf16"
    want = dissect(SmallRandomCNN(), ["conv2"], broden, **KW)
    np.testing.assert_array_equal(r["conv2"].thresholds, want["conv2"].thresholds)


def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch):
    from netdissect.dissection import config

    monkeypatch.setattr(config, "_cpu_flags", lambda: {"avx2", "fma"})
    assert config.native_bf16("cpu")[0] is False
    monkeypatch.setattr(config, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert config.native_bf16("cpu")[0] is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _unfinished(broden, out, monkeypatch):
    """A run killed at the start of pass 2 (pass 1 checkpointed)."""
    from netdissect.dissection import engine

    def die(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine, "run_iou_pass", die)
        with pytest.raises(KeyboardInterrupt):
            dissect(SmallRandomCNN(), ["conv2"], broden, out=out, **KW)
    assert (out / ".work" / "checkpoint.npz").exists()


@pytest.mark.parametrize("damage, match", [
    ("truncate", "truncated or replaced"),
    ("delete", "activation cache .* is missing"),
    ("checkpoint", "corrupt checkpoint"),
    ("identity", "identity.json: identity file is not valid JSON"),
])
def test_resume_checks_what_it_relies_on(broden, tmp_path, monkeypatch, damage, match):
    out = tmp_path / "run"
    _unfinished(broden, out, monkeypatch)
    cache = out / ".work" / "conv2.acts"
    if damage == "truncate":
        with open(cache, "r+b") as f:
            f.truncate(cache.stat().st_size - 100)
    elif damage == "delete":
        cache.unlink()
    elif damage == "checkpoint":
        (out / ".work" / "checkpoint.npz").write_bytes(b"PK\x03\x04 not a zip")
    else:
        (out / ".work" / "identity.json").write_text("{")
    with pytest.raises(NetDissectError, match=match):
        dissect(SmallRandomCNN(), ["conv2"], broden, out=out, resume=True, **KW)


def test_resume_continues_an_intact_run_to_the_same_result(broden, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _unfinished(broden, out, monkeypatch)
    got = dissect(SmallRandomCNN(), ["conv2"], broden, out=out, resume=True, **KW)
    want = dissect(SmallRandomCNN(), ["conv2"], broden, **KW)
    np.testing.assert_array_equal(got["conv2"].iou, want["conv2"].iou)


def test_resume_of_a_finished_run_checks_its_identity(broden, tmp_path):
    out = tmp_path / "run"
    dissect(SmallRandomCNN(), ["conv2"], broden, out=out, **KW)
    again = dissect(SmallRandomCNN(), ["conv2"], broden, out=out, resume=True, **KW)  # same: returned
    assert list(again) == ["conv2"]
    for other in (dict(layers=["conv1"]), dict(quantile=0.05), dict(model=SmallRandomCNN(seed=1))):
        kw = {"model": SmallRandomCNN(), "layers": ["conv2"], **other}
        with pytest.raises(NetDissectError, match="holds a finished run of other settings"):
            dissect(kw.pop("model"), kw.pop("layers"), broden, out=out, resume=True, **{**KW, **kw})


def test_a_run_that_failed_on_its_first_batch_is_rerun_without_resume(broden, tmp_path):
    out = tmp_path / "run"

    class Broken(SmallRandomCNN):
        def forward(self, x):
            raise ValueError("bad model")

    with pytest.raises(Exception, match="bad model"):
        dissect(Broken(), ["conv2"], broden, out=out, **KW)
    assert not (out / ".work" / "checkpoint.npz").exists()
    r = dissect(SmallRandomCNN(), ["conv2"], broden, out=out, **KW)  # no "pass --resume"
    assert (out / "summary.json").exists() and "conv2" in r


def test_the_users_module_is_left_in_training_mode(broden):
    model = SmallRandomCNN().train()
    model.conv1.eval()
    dissect(model, ["conv2"], broden, **KW)
    assert model.training and not model.conv1.training and model.conv2.training


def test_unknown_label_numbers_warn_and_refuse_above_the_documented_share():
    from netdissect.dissection.engine import MAX_UNKNOWN_SHARE, check_unknown_labels

    assert check_unknown_labels(0, 1000, "ds") is None
    assert "10 label-plane positions (0.10%)" in check_unknown_labels(10, 10_000, "ds")
    with pytest.raises(DatasetError, match="mask format problem"):
        check_unknown_labels(int(10_000 * MAX_UNKNOWN_SHARE) + 1, 10_000, "ds")


def test_summary_records_mask_sizes_and_identity(broden, tmp_path):
    r = dissect(SmallRandomCNN(), ["conv2"], broden, out=tmp_path / "run", **KW)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["layers"]["conv2"]["mask_sizes"] == [[16, 16]] and s["layers"]["conv2"]["mask_size"] == [16, 16]
    assert s["identity"]["layers"] == ["conv2"] and r.summary["identity"] == s["identity"]


def _chunks(broden, tmp_path, n=2):
    dirs = [tmp_path / f"c{i}" for i in range(n)]
    for i, d in enumerate(dirs):
        assert dissect(SmallRandomCNN(), ["conv2"], broden, out=d, chunk=f"{i}/{n}", **KW) is None
    return dirs


@pytest.mark.parametrize("text, match", [("{", "chunk file is not valid JSON"), ("[1, 2]", "chunk file"),
                                         ('{"chunk": 0, "of": 2}', "chunk file .*rows")])
def test_merge_names_a_corrupt_or_incomplete_chunk_file(broden, tmp_path, text, match):
    from netdissect.dissection.chunks import merge_chunks

    dirs = _chunks(broden, tmp_path)
    (dirs[1] / "chunk.json").write_text(text)
    with pytest.raises(NetDissectError, match=f"c1/chunk.json: {match}"):
        merge_chunks(dirs, out=tmp_path / "run", progress=False, num_workers=0)


def test_merge_refuses_a_truncated_chunk_cache(broden, tmp_path):
    from netdissect.dissection.chunks import merge_chunks

    dirs = _chunks(broden, tmp_path)
    cache = dirs[0] / ".work" / "conv2.acts"
    with open(cache, "r+b") as f:
        f.truncate(10)
    with pytest.raises(NetDissectError, match=r"chunk .*c0: activation cache .* truncated or replaced"):
        merge_chunks(dirs, out=tmp_path / "run", progress=False, num_workers=0)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_model_that_fails_on_the_images_is_one_line_naming_model_and_input(broden):
    from netdissect.errors import ModelError

    class Grey(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ModelError, match=r"model python:Grey fails .*\(N, C, H, W\) = \(1, 3, 32, 32\).*3-channel"):
        dissect(Grey(), ["conv"], broden, **KW)


def test_the_users_module_keeps_device_dtype_and_memory_format(broden):
    model = SmallRandomCNN().double()
    before = {n: (p.dtype, p.is_contiguous(), p.data_ptr()) for n, p in model.named_parameters()}
    params = list(model.parameters())
    dissect(model.float(), ["conv2"], broden, **KW)
    after = {n: (p.dtype, p.is_contiguous()) for n, p in model.named_parameters()}
    assert all(after[n] == (torch.float32, True) for n in after)
    assert all(a is b for a, b in zip(params, model.parameters()))  # the same Parameter objects
    assert before  # (dtype changed by the caller's own .float(), not by dissect)


def test_random_weights_are_seeded_so_two_runs_agree(broden, tmp_path):
    kw = dict(weights="none", **KW)
    a = dissect("torchvision:resnet18", ["layer2"], broden, out=tmp_path / "a", **kw)
    b = dissect("torchvision:resnet18", ["layer2"], broden, out=tmp_path / "b", **kw)
    c = dissect("torchvision:resnet18", ["layer2"], broden, seed=1, **kw)
    assert a.summary["model"]["sha256"] == b.summary["model"]["sha256"] != c.summary["model"]["sha256"]
    np.testing.assert_array_equal(a["layer2"].iou, b["layer2"].iou)
    assert a.summary["model"]["seed"] == 0 and a.summary["model"]["weights_description"] == "random init, seed 0"
    assert a["layer2"].units.shape == (128,)  # a torchvision model end to end (in-place ReLUs, residual +=)


@pytest.mark.parametrize("bad", ["", "file", "file/under"])
def test_out_must_name_a_folder_that_can_be_written(broden, tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NetDissectError, match="--out|run folder"):
        dissect(SmallRandomCNN(), ["conv2"], broden, out=bad, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written into the cwd


def test_a_second_job_on_the_same_out_is_refused_while_the_first_runs(broden, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from netdissect.runfolder import RunLock, check_out\n"
        f"check_out({str(out)!r})\n"
        f"l = RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NetDissectError, match=r"another netdissect job \(pid \d+ on .*is writing"):
            dissect(SmallRandomCNN(), ["conv2"], broden, out=out, **KW)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert "conv2" in dissect(SmallRandomCNN(), ["conv2"], broden, out=out, **KW)  # a dead holder blocks nothing
    assert not (out / ".lock").exists() and not (out / ".work").exists()


def test_resume_and_merge_notice_dataset_files_that_changed(broden, tmp_path, monkeypatch):
    from netdissect.dissection.chunks import merge_chunks

    ds = tmp_path / "ds"
    shutil.copytree(broden, ds)
    out = tmp_path / "run"
    _unfinished(ds, out, monkeypatch)
    dirs = _chunks(ds, tmp_path)
    img = ds / "images" / Broden(ds).rows[3].image
    img.write_bytes(img.read_bytes() + b"\0" * 10)  # replaced by a file of another size
    with pytest.raises(NetDissectError, match=r"files already processed \(pass 2, .*changed in size"):
        dissect(SmallRandomCNN(), ["conv2"], ds, out=out, resume=True, **KW)
    with pytest.raises(NetDissectError, match=r"chunk .*c0: .*files already processed \(pass 1, rows 0..14\)"):
        merge_chunks(dirs, out=tmp_path / "merged", progress=False, num_workers=0)
    r = dissect(SmallRandomCNN(), ["conv2"], ds, out=tmp_path / "fresh", **KW)
    from netdissect.data.digest import files_digest

    assert r.summary["dataset"]["files_digest"] == files_digest(ds / "images", [row.image for row in Broden(ds).rows])


def test_a_module_called_twice_is_refused_and_its_calls_can_be_named(broden):
    """torchvision's BasicBlock calls its one relu twice: the plain name would silently be the first call."""
    from netdissect.errors import LayerError
    from netdissect.hooks import Trace

    kw = dict(weights="none", **KW)
    with pytest.raises(LayerError, match=r"'layer4.1.relu' .*runs 2 times.*layer4.1.relu#1.*layer4.1.relu#2"):
        dissect("torchvision:resnet18", ["layer4.1.relu"], broden, **kw)
    r = dissect("torchvision:resnet18", ["layer4.1.relu#2", "layer4.1"], broden, **kw)
    np.testing.assert_array_equal(r["layer4.1.relu#2"].thresholds, r["layer4.1"].thresholds)  # the block's output
    first = dissect("torchvision:resnet18", ["layer4.1.relu#1"], broden, **kw)
    assert not np.array_equal(first["layer4.1.relu#1"].thresholds, r["layer4.1"].thresholds)


def test_a_layer_that_skips_a_batch_is_an_error_naming_the_layer_and_row(broden):
    from netdissect.errors import LayerError

    class Sometimes(SmallRandomCNN):
        calls = 0

        def forward(self, x):
            Sometimes.calls += 1
            h = torch.relu(self.conv1(x))
            if Sometimes.calls <= 3:  # the two checks before pass 1, and the first batch
                h = torch.relu(self.conv2(h))
            return h.mean((2, 3))

    with pytest.raises(LayerError, match=r"'conv2'.*did not run.*index.csv row 12 .*batch of rows 10..19"):
        dissect(Sometimes(), ["conv2"], broden, batch_size=10, **KW)


def test_thresholds_stay_exact_when_the_buffer_exceeds_its_memory(broden, tmp_path):
    """A budget below the exact buffer (10 units x ~430 floats here) forces further passes over
    the cache: the result is the same, to the last bit, alone, in chunks and after a resume."""
    from netdissect.dissection.chunks import merge_chunks
    from netdissect.stats.quantile import quantile_plan

    model, q, small = ElementwiseNet(units=10, seed=3), 0.05, 16000
    assert quantile_plan(10, q, 30 * 16 * 16, small)["mode"] == "radix"
    want = dissect(model, ["units"], broden, quantile=q, **KW)
    got = dissect(model, ["units"], broden, quantile=q, quantile_memory=small, **KW)
    np.testing.assert_array_equal(got["units"].thresholds, want["units"].thresholds)
    np.testing.assert_array_equal(got["units"].iou, want["units"].iou)
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        dissect(model, ["units"], broden, quantile=q, quantile_memory=small, out=d, chunk=f"{i}/3", **KW)
    merged = merge_chunks(dirs, out=tmp_path / "run", progress=False, num_workers=0)
    np.testing.assert_array_equal(merged["units"].thresholds, want["units"].thresholds)
    np.testing.assert_array_equal(merged["units"].iou, want["units"].iou)


def test_a_quantile_memory_too_small_for_the_layer_names_the_minimum(broden):
    with pytest.raises(NetDissectError, match=r"--quantile-memory .*too small for layer 'units' .*at least 9600 bytes"):
        dissect(ElementwiseNet(units=10, seed=3), ["units"], broden, quantile_memory=5000, **KW)


def test_torchvision_inplace_relus_do_not_change_what_is_dissected(broden):
    """resnet18 (random weights, in-place ReLUs, residual +=): layer1.0.bn1 dissected together with a
    later layer equals the plain reference on bn1 traced alone, and keeps its negative values (an
    in-place ReLU after it used to rewrite the captured tensor)."""
    from netdissect.models import load_model

    ds = Broden(broden)
    both = dissect("torchvision:resnet18", ["layer1.0.bn1", "layer2"], broden, weights="none", batch_size=1,
                   normalize="none", **KW)
    model, _ = load_model("torchvision:resnet18", weights="none", normalize="none")
    model.eval()
    thresholds, iou = reference_dissect(_acts(model, ds, "layer1.0.bn1"), ds, 0.005)
    lr = both["layer1.0.bn1"]
    np.testing.assert_allclose(lr.thresholds, thresholds, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lr.iou, iou, atol=1e-3)
    assert (iou > 0).sum() >= 5 and lr.top_maps.min() < 0
