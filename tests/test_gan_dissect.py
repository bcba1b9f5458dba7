"""Dissecting a generator (issue 12): latent samples as the probe, the generated images segmented in
the forward pass, PNAS IoU exact against the plain reference (tests/reference.py), proggan loading,
top images regenerated into the run, resume, the label cache, compare."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from netdissect import dissect
from netdissect.data.synth.colors import COLOR_NAMES, name_colors
from netdissect.errors import LayerError, ModelError, NetDissectError
from netdissect.models import load_model
from netdissect.models.loading import GeneratorIO
from netdissect.models.proggan import ProgressiveGenerator, to_image
from netdissect.probe.latent import latent_z
from reference import reference_pnas

# unit k of layer "paint" paints COLOURS[k]; the last unit is on somewhere but paints nothing
COLOURS = {"red-c": (215, 25, 30), "green-c": (35, 155, 45), "blue-c": (25, 60, 225)}
GREY = (128, 128, 128)


class Bumps(nn.Module):
    """(N, z_dim) -> (N, K, 8, 8): unit k is a cone of radius 2.5 cells centred at a z-dependent cell."""

    def __init__(self, units: int):
        super().__init__()
        self.units = units
        yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        self.register_buffer("yy", yy.contiguous())
        self.register_buffer("xx", xx.contiguous())

    def forward(self, z):
        cy = torch.sigmoid(z[:, 0::2][:, :self.units]) * 7  # (N, K)
        cx = torch.sigmoid(z[:, 1::2][:, :self.units]) * 7
        d = ((self.yy - cy[:, :, None, None]) ** 2 + (self.xx - cx[:, :, None, None]) ** 2).sqrt()
        return (1 - d / 2.5).clamp(min=0) * (1 + 0.3 * torch.tanh(z[:, -1]))[:, None, None, None]


class Paint(nn.Module):
    """(N, K, 8, 8) -> (N, 3, 32, 32) in [-1, 1]: colour k where unit k (upsampled) exceeds 0.5 and is the
    strongest painter; grey elsewhere."""

    def __init__(self, painters: int):
        super().__init__()
        rgb = torch.tensor([GREY, *COLOURS.values()], dtype=torch.float32) / 255
        self.register_buffer("rgb", rgb[: painters + 1])
        self.painters = painters

    def forward(self, a):
        up = nn.functional.interpolate(a[:, : self.painters], size=(32, 32), mode="bilinear", align_corners=False)
        best = up.max(1)
        which = torch.where(best.values > 0.5, best.indices + 1, 0)  # (N, 32, 32)
        return self.rgb[which].permute(0, 3, 1, 2) * 2 - 1


class Painter(nn.Module):
    """A hand-built generator whose units are known painters: ``paint`` unit k paints COLOURS[k]."""

    z_dim = 9

    def __init__(self):
        super().__init__()
        self.paint = Bumps(units=4)
        self.rgb = Paint(painters=3)

    def forward(self, z):
        return self.rgb(self.paint(z))


def make_painter():
    return Painter()


KW = dict(num_workers=0, progress=False, batch_size=8, normalize="0.5,0.5")


def _reference(model, n, seed, q):
    """Activations and colour labels one z at a time, the generated image named by numpy."""
    acts, labels = [], []
    z = torch.from_numpy(np.random.RandomState(seed).standard_normal((n, model.z_dim)).astype(np.float32))
    with torch.no_grad():
        for i in range(n):
            a = model.paint(z[i:i + 1])
            img = ((model.rgb(a)[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
            acts.append(a[0].numpy())
            labels.append((name_colors(np.round(img * 255).astype(np.uint8)) + 1)[None].astype(np.int64))
    return reference_pnas(np.stack(acts), labels, list(range(1, len(COLOR_NAMES) + 1)), q)


def test_hand_built_painters_are_labelled_with_their_colours_exactly_as_the_reference(tmp_path):
    out = tmp_path / "run"
    res = dissect(Painter(), ["paint"], samples=40, seed=3, segmenter="color", out=out,
                  label_cache=tmp_path / "cache", **KW)
    layer = res["paint"]
    thr, iou = _reference(Painter(), 40, 3, 0.01)
    assert np.array_equal(layer.thresholds, thr.astype(np.float32))
    np.testing.assert_allclose(layer.iou, iou, rtol=1e-6, atol=1e-7)
    units = layer.units
    for k, colour in enumerate(COLOURS):
        assert units["label"][k] == colour and units["detector"][k], (k, units[k])
    assert not units["detector"][3]  # on, but paints nothing
    s = res.summary
    assert s["labels"]["iou"] == "pnas" and s["config"]["quantile"] == 0.01
    assert s["labels"]["seg_size"] == [32, 32]  # 32 px output: at least 32, at most the output
    assert s["dataset"]["kind"] == "latent" and (s["dataset"]["samples"], s["dataset"]["seed"],
                                                 s["dataset"]["dim"]) == (40, 3, 9)
    assert s["model"]["generator"]["output_size"] == [32, 32] and s["labels"]["segmenter"]["kind"] == "color"
    # the contract with the report: images_in_run + topk.npz image_paths relative to it
    assert s["dataset"]["images_in_run"] == "images"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["dataset"]["images_in_run"] == "images"
    with np.load(out / "paint" / "topk.npz") as z:
        paths, top = list(z["image_paths"]), z["images"]
    assert len(paths) == 40 and paths[7] == "seed3/000007.png"
    rows = sorted(set(top.ravel().tolist()))
    written = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    assert written == [paths[i] for i in rows]  # exactly the union of the top rows
    z = torch.from_numpy(latent_z(40, 3, 9))
    for i in rows[:3]:
        want = (to_image(Painter()(z[i:i + 1]))[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(np.asarray(Image.open(out / "images" / paths[i])), want)


def test_cli_generator_run_is_the_python_run(tmp_path):
    from netdissect.cli import main

    out = tmp_path / "cli"
    argv = ["dissect", "--model", "test_gan_dissect:make_painter", "--layer", "paint", "--samples", "24",
            "--seed", "5", "--segmenter", "color", "--normalize", "0.5,0.5", "--quantile", "0.05",
            "--label-cache", str(tmp_path / "cache"), "--workers", "0", "--batch-size", "5", "--out", str(out),
            "--quiet", "--no-report"]
    assert main(argv) == 0
    from netdissect import load

    got = load(out)
    want = dissect(Painter(), ["paint"], samples=24, seed=5, segmenter="color", quantile=0.05,
                   label_cache=tmp_path / "cache2", **KW)
    np.testing.assert_array_equal(got["paint"].iou, want["paint"].iou)
    np.testing.assert_array_equal(got["paint"].top_images, want["paint"].top_images)
    assert list(got["paint"].units["label"][:3]) == list(COLOURS)
    # --latent-seed separates the draw from --seed
    assert main(argv[:-4] + ["--out", str(tmp_path / "other"), "--latent-seed", "6", "--quiet", "--no-report"]) == 0
    other = load(tmp_path / "other").summary
    assert other["dataset"]["seed"] == 6 and other["model"]["seed"] == 5


def _progan_old_layout(sd):
    out = {}
    for k, v in sd.items():
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            out[f"features.{int(i) - 1}.{rest}"] = v
        else:
            out["output." + k.split(".", 1)[1]] = v
    return out


@pytest.mark.parametrize("layout", ["new", "old"])
def test_proggan_files_load_in_both_layouts(tmp_path, layout):
    torch.manual_seed(0)
    g = ProgressiveGenerator(32, [16, 12, 8, 8], z_dim=10).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # biases too
    sd = g.state_dict()
    path = tmp_path / "proggan_test-0123abcd.pth"
    torch.save({"state_dict": sd} if layout == "new" else _progan_old_layout(sd), path)
    model, prep = load_model(f"proggan:{path}")
    assert isinstance(prep, GeneratorIO) and prep.z_dim == 10
    assert model.sizes == [16, 12, 8, 8] and model.layer_names == [f"layer{i}" for i in range(1, 9)]
    z = torch.randn(3, 10)
    with torch.no_grad():
        y = model(z)
        assert y.shape == (3, 3, 32, 32)
        assert torch.equal(y, g(z))
        assert torch.equal(prep.to_image(y), ((y + 1) / 2).clamp(0, 1))
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v)
    r = dissect(f"proggan:{path}", ["layer4"], samples=12, seed=1, segmenter="color",
                label_cache=tmp_path / "cache", num_workers=0, progress=False)
    assert r["layer4"].shape == (12, 8, 8) and r.summary["model"]["weights_description"].startswith("file ")


def test_bad_generator_files_and_zoo_generator(tmp_path, monkeypatch):
    g = ProgressiveGenerator(16, [8, 8, 4], z_dim=6)
    sd = g.state_dict()
    bad = dict(sd)
    bad["layer3.wscale.b"] = torch.zeros(5)  # layer3 outputs 8 channels
    torch.save(bad, tmp_path / "mismatch.pth")
    with pytest.raises(ModelError, match=r"mismatch\.pth: .*do not agree"):
        load_model(f"proggan:{tmp_path / 'mismatch.pth'}")
    torch.save({"fc.weight": torch.zeros(3, 4), "conv1.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "cnn.pth")
    with pytest.raises(ModelError, match=r"cnn\.pth: not a progressive-GAN generator state dict"):
        load_model(f"proggan:{tmp_path / 'cnn.pth'}")
    missing = dict(sd)
    del missing["layer2.wscale.b"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ModelError, match=r"missing\.pth: .*missing \['layer2.wscale.b'\]"):
        load_model(f"proggan:{tmp_path / 'missing.pth'}")
    with pytest.raises(ModelError, match="weights file not found"):
        load_model(f"proggan:{tmp_path / 'nope.pth'}")
    torch.save(sd, tmp_path / "good.pth")
    with pytest.raises(ModelError, match="is a generator .*--samples N"):
        dissect(f"proggan:{tmp_path / 'good.pth'}", ["layer1"], images=tmp_path, segmenter="color")
    # zoo:world-gan: the bundled file's format (float16, "recipe" metadata) read as the training script writes it
    from safetensors.torch import save

    from netdissect.models import zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match="train_world_gan.py"):
        load_model("zoo:world-gan")
    torch.manual_seed(1)
    wg = ProgressiveGenerator(64, [32, 16, 8, 8, 4], z_dim=20)  # sizes from the recipe, not the registry
    recipe = {"resolution": 64, "sizes": [32, 16, 8, 8, 4], "z_dim": 20}
    half = {k: v.to(torch.float16) for k, v in wg.state_dict().items()}
    record = {"kind": "generator", **recipe, "layers": wg.layer_names}  # as scripts/train_world_gan.py writes it
    (tmp_path / "world-gan.safetensors").write_bytes(
        save(half, metadata={"recipe": json.dumps({**recipe, "batch": 32}), "netdissect_zoo": json.dumps(record)}))
    model, prep = load_model("zoo:world-gan")
    assert prep.z_dim == 20 and model(torch.zeros(2, 20)).shape == (2, 3, 64, 64)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    gens = zoo.list_generators()
    assert gens[0]["name"] == "world-gan" and gens[0]["available"] and gens[0]["layers"][-1] == "layer10"


def test_clear_errors_for_bad_generator_runs(tmp_path):
    kw = dict(samples=8, segmenter="color", num_workers=0, progress=False, normalize="none")
    with pytest.raises(LayerError, match="layer99"):
        dissect(Painter(), ["layer99"], **kw)
    with pytest.raises(NetDissectError, match="--samples needs --segmenter"):
        dissect(Painter(), ["paint"], samples=8, normalize="none")
    with pytest.raises(NetDissectError, match="not both"):
        dissect(Painter(), ["paint"], images=tmp_path, **kw)
    with pytest.raises(ModelError, match="not a generator"):
        dissect("torchvision:resnet18", ["layer4"], **kw)

    class NoDim(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Painter()

        def forward(self, z):
            return self.body(z)

    with pytest.raises(ModelError, match=r"latent input is unknown: give z_dim=N \(--z-dim N\)"):
        dissect(NoDim(), ["body.paint"], **kw)
    assert dissect(NoDim(), ["body.paint"], z_dim=9, **kw)["body.paint"].shape == (4, 8, 8)
    with pytest.raises(ModelError, match=r"fails on latent samples: it was given z of shape \(1, 5\)"):
        dissect(NoDim(), ["body.paint"], z_dim=5, **kw)

    class Flat(nn.Module):
        z_dim = 4
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)

        def forward(self, z):
            return self.fc(z)

    with pytest.raises(ModelError, match=r"outputs \(1, 6\) .* must output RGB images"):
        dissect(Flat(), ["fc"], **kw)


def test_resume_after_a_kill_in_pass_1_and_in_the_images_gives_the_same_run(tmp_path, monkeypatch):
    from netdissect.dissection import activations, engine

    kw = dict(samples=40, seed=2, segmenter="color", label_cache=tmp_path / "cache", checkpoint_every=0, **KW)
    want = dissect(Painter(), ["paint"], out=tmp_path / "whole", **kw)
    out = tmp_path / "run"
    real = activations.ActivationPass._forward_batch
    calls = []

    def dies_on_third(self, *a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a)

    kw["label_cache"] = tmp_path / "cache-resume"  # labels of the killed run only
    with monkeypatch.context() as m:
        m.setattr(activations.ActivationPass, "_forward_batch", dies_on_third)
        with pytest.raises(KeyboardInterrupt):
            dissect(Painter(), ["paint"], out=out, **kw)
    with pytest.raises(NetDissectError, match="unfinished run: pass --resume"):
        dissect(Painter(), ["paint"], out=out, **kw)

    def dies(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # killed again while the top images are written
        m.setattr(engine, "write_generated_images", dies)
        with pytest.raises(KeyboardInterrupt):
            dissect(Painter(), ["paint"], out=out, resume=True, **kw)
    got = dissect(Painter(), ["paint"], out=out, resume=True, **kw)
    assert got.summary["labels"]["segmented_images"] == 0  # every row was labelled before the kills
    for f in ("iou", "thresholds", "top_images", "top_values"):
        np.testing.assert_array_equal(getattr(got["paint"], f), getattr(want["paint"], f))
    a = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png"))
    b = sorted(p.relative_to(tmp_path / "whole").as_posix() for p in (tmp_path / "whole" / "images").rglob("*.png"))
    assert a == b and not (out / ".work").exists()


def test_label_cache_is_reused_for_the_same_generator_and_seed(tmp_path):
    kw = dict(segmenter="color", label_cache=tmp_path / "cache", **KW)
    first = dissect(Painter(), ["paint"], samples=20, seed=1, **kw)
    assert first.summary["labels"]["segmented_images"] == 20
    again = dissect(Painter(), ["paint"], samples=20, seed=1, quantile=0.05, **kw)
    assert again.summary["labels"]["segmented_images"] == 0
    assert again.summary["labels"]["cache"] == first.summary["labels"]["cache"]
    more = dissect(Painter(), ["paint"], samples=30, seed=1, **kw)  # rows 0..19 are the same z
    assert more.summary["labels"]["segmented_images"] == 10
    assert dissect(Painter(), ["paint"], samples=20, seed=2, **kw).summary["labels"]["segmented_images"] == 20
    other = Painter()
    other.rgb.rgb[1] = torch.tensor([0.0, 0.0, 0.0])  # another generator: its own labels
    o = dissect(other, ["paint"], samples=20, seed=1, **kw)
    assert o.summary["labels"]["segmented_images"] == 20 and o.summary["labels"]["cache"] != first.summary["labels"]["cache"]


def test_compare_draws_units_per_category_for_generator_layers(tmp_path):
    from netdissect.report import compare

    g = ProgressiveGenerator(16, [8, 8, 4], z_dim=6)
    out = tmp_path / "run"
    dissect(g, ["layer2", "layer4", "layer6"], samples=16, seed=1, segmenter="color", out=out,
            label_cache=tmp_path / "cache", num_workers=0, progress=False)
    files = compare([out], tmp_path / "cmp")
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("run,layer") and "units_color" in rows[0]
    assert [r.split(",")[1] for r in rows[1:]] == ["layer2", "layer4", "layer6"]
    assert files["detector_units.png"].exists()


def test_default_label_size_of_generated_images():
    from netdissect.dissection.inputs import default_generated_seg_size

    assert default_generated_seg_size((256, 256)) == (64, 64)  # the paper's
    assert default_generated_seg_size((64, 64)) == (32, 32)    # zoo:world-gan: at least 32
    assert default_generated_seg_size((16, 16)) == (16, 16)    # never above the output


def test_torchrun_two_gloo_ranks_equal_one_process(tmp_path):
    """Rows shard over two ranks (each segments its own generated images); the same run as one process."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from netdissect import load

    tests = Path(__file__).parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "netdissect", "dissect",
            "--model", f"{tests}/test_gan_dissect.py:make_painter", "--layer", "paint", "--samples", "30",
            "--seed", "4", "--segmenter", "color", "--normalize", "0.5,0.5", "--label-cache", str(tmp_path / "c"),
            "--batch-size", "4", "--workers", "0", "--out", str(out), "--quiet", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = load(out)
    assert got.summary["config"]["world_size"] == 2 and not (out / ".work").exists()
    one = dissect(Painter(), ["paint"], samples=30, seed=4, segmenter="color", out=tmp_path / "one",
                  label_cache=tmp_path / "c1", batch_size=4, num_workers=0, progress=False, normalize="0.5,0.5")
    for f in ("iou", "thresholds", "top_images", "top_values", "top_maps"):
        np.testing.assert_array_equal(getattr(got["paint"], f), getattr(one["paint"], f))
    pngs = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(tmp_path / "one" / "images").as_posix()
                                   for p in (tmp_path / "one" / "images").rglob("*.png"))


def test_top_images_held_in_pass_1_equal_the_regenerated_ones(tmp_path, monkeypatch):
    """Pass 1 holds the top rows' images (no second generator pass); over the memory bound it holds
    none and regenerates them at the end: the same files either way."""
    from netdissect.dissection import activations, output

    kw = dict(samples=30, seed=7, segmenter="color", label_cache=tmp_path / "cache", **KW)
    regenerated = {}  # run -> rows run through the generator again for its top images
    real = output.write_generated_images

    def spy(run_dir, *a, kept=None, **k):
        n = len([i for i in a[3] if i not in (kept or {})])
        regenerated[run_dir.name] = regenerated.get(run_dir.name, 0) + n
        return real(run_dir, *a, kept=kept, **k)

    monkeypatch.setattr("netdissect.dissection.engine.write_generated_images", spy)
    dissect(Painter(), ["paint"], out=tmp_path / "held", **kw)
    monkeypatch.setattr(activations, "KEPT_IMAGE_BYTES", 1)
    dissect(Painter(), ["paint"], out=tmp_path / "regen", **kw)
    assert regenerated["held"] == 0 and regenerated["regen"] > 0
    a = sorted((tmp_path / "held" / "images").rglob("*.png"))
    b = sorted((tmp_path / "regen" / "images").rglob("*.png"))
    assert [p.name for p in a] == [p.name for p in b] and len(a) == regenerated["regen"]
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(Image.open(x)), np.asarray(Image.open(y)))



def test_top_images_written_by_threads_with_a_small_backlog_and_a_failed_write_raised(tmp_path, monkeypatch):
    """The writer threads give the same files with a backlog of one image; a write that fails (a
    folder where a PNG goes) stops the run with the path, not a silently missing image."""
    from netdissect.dissection import output

    kw = dict(samples=30, seed=7, segmenter="color", label_cache=tmp_path / "cache", **KW)
    dissect(Painter(), ["paint"], out=tmp_path / "a", **kw)
    monkeypatch.setattr(output, "BACKLOG", 1)
    monkeypatch.setattr(output, "WRITE_THREADS", 2)
    dissect(Painter(), ["paint"], out=tmp_path / "b", **kw)
    a = sorted((tmp_path / "a" / "images").rglob("*.png"))
    b = sorted((tmp_path / "b" / "images").rglob("*.png"))
    assert a and [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    blocked = tmp_path / "c" / "images" / a[len(a) // 2].relative_to(tmp_path / "a" / "images")
    blocked.mkdir(parents=True)
    with pytest.raises(OSError, match=blocked.name):
        dissect(Painter(), ["paint"], out=tmp_path / "c", **kw)


def _packs(cache_root):
    """{pack name: its number of rows} of the label cache folder under ``cache_root``."""
    packs, = cache_root.glob("*/packs")
    return {k.name[:-len(".keys.npy")]: len(np.load(k)) for k in packs.glob("*.keys.npy")}, packs


def test_generated_labels_are_stored_in_packs_and_a_bad_pack_counts_as_absent(tmp_path):
    """A generator run writes one label pack per flush (not one file per sample); more samples add a
    pack of the new rows only; a pack that cannot be read, or of another label size, is as if absent
    (its rows are segmented again); another label size is another folder (never a stale label)."""
    kw = dict(segmenter="color", label_cache=tmp_path / "cache", **KW)
    first = dissect(Painter(), ["paint"], samples=20, seed=1, **kw)
    counts, packs = _packs(tmp_path / "cache")
    assert list(counts.values()) == [20]
    name, = counts
    planes = np.load(packs / f"{name}.npy")
    assert planes.shape[0] == 20 and planes.shape[2:] == (32, 32) and planes.dtype == np.uint8
    more = dissect(Painter(), ["paint"], samples=30, seed=1, **kw)
    assert more.summary["labels"]["segmented_images"] == 10
    assert sorted(_packs(tmp_path / "cache")[0].values()) == [10, 20]
    other, = set(_packs(tmp_path / "cache")[0]) - {name}
    (packs / f"{name}.npy").write_bytes(b"not an array")  # broken: as if absent
    np.save(packs / f"{other}.npy", np.load(packs / f"{other}.npy")[:, :, :16])  # wrong label size: absent
    again = dissect(Painter(), ["paint"], samples=30, seed=1, **kw)
    assert again.summary["labels"]["segmented_images"] == 30
    for f in ("iou", "thresholds", "top_images", "top_values"):
        np.testing.assert_array_equal(getattr(again["paint"], f), getattr(more["paint"], f))
    new, = set(_packs(tmp_path / "cache")[0]) - {name, other}
    np.testing.assert_array_equal(np.load(packs / f"{new}.npy")[:20], planes)  # rows in order, the same labels
    small = dissect(Painter(), ["paint"], samples=20, seed=1, seg_size=16, **kw)
    assert small.summary["labels"]["segmented_images"] == 20
    assert small.summary["labels"]["cache"] != first.summary["labels"]["cache"]


def test_a_killed_run_leaves_the_labels_of_its_checkpointed_rows_and_resumes_from_them(tmp_path, monkeypatch):
    """Labels are held in memory between checkpoints and written at each one: a run killed in pass 1
    leaves exactly the rows its checkpoint counts as done; the resumed run segments only the others and
    gives the run of one go."""
    from netdissect.dissection import activations

    kw = dict(samples=40, seed=5, segmenter="color", checkpoint_every=0, **KW)  # batches of 8
    want = dissect(Painter(), ["paint"], out=tmp_path / "whole", label_cache=tmp_path / "c0", **kw)
    real = activations.ActivationPass._forward_batch
    calls = []

    def dies_on_fourth(self, *a):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, *a)

    with monkeypatch.context() as m:
        m.setattr(activations.ActivationPass, "_forward_batch", dies_on_fourth)
        with pytest.raises(KeyboardInterrupt):
            dissect(Painter(), ["paint"], out=tmp_path / "run", label_cache=tmp_path / "c1", **kw)
    assert sorted(_packs(tmp_path / "c1")[0].values()) == [8, 8, 8]  # 3 batches, each checkpointed
    got = dissect(Painter(), ["paint"], out=tmp_path / "run", label_cache=tmp_path / "c1", resume=True, **kw)
    assert got.summary["labels"]["segmented_images"] == 16
    for f in ("iou", "thresholds", "top_images", "top_values", "top_maps"):
        np.testing.assert_array_equal(getattr(got["paint"], f), getattr(want["paint"], f))


def test_thresholds_scanned_beside_pass_1_equal_the_scan_of_the_cache(tmp_path, monkeypatch):
    """The PNAS threshold scan fed batch by batch during pass 1 (pnas.ExactStream) gives the very
    thresholds, counts and top images of the scan of the activation cache after pass 1, whatever the
    batch size; a run that cannot use it (here: refused) scans the cache."""
    from netdissect.dissection import pnas

    g = ProgressiveGenerator(16, [8, 8, 4], z_dim=6)
    kw = dict(samples=37, seed=3, segmenter="color", label_cache=tmp_path / "cache", num_workers=0, progress=False)
    used = []
    real = pnas.ExactStream.thresholds
    monkeypatch.setattr(pnas.ExactStream, "thresholds", lambda self, group: used.append(self.name) or real(self, group))
    streamed = dissect(g, ["layer2", "layer4"], batch_size=5, **kw)
    assert used == ["layer2", "layer4"]
    monkeypatch.setattr(pnas.ExactStream, "ready", lambda self, sizes: False)
    scanned = dissect(g, ["layer2", "layer4"], batch_size=16, **kw)
    assert used == ["layer2", "layer4"]
    for name in ("layer2", "layer4"):
        for f in ("thresholds", "iou", "top_images", "top_values", "top_maps"):
            np.testing.assert_array_equal(getattr(streamed[name], f), getattr(scanned[name], f))


def test_raised_floors_of_the_threshold_scan_are_checked_and_a_too_high_one_scans_the_cache(tmp_path, monkeypatch):
    """Once 5% of the rows (and 64) are scanned the stream raises each unit's floor to keep about twice the
    values the thresholds need; at the end it checks that enough values above it were kept.  A floor
    raised too high (here: forced) fails that check and the cache is scanned: the same results."""
    from netdissect.dissection import pnas

    torch.manual_seed(0)  # the weights, whatever ran before: the raised floor's estimate depends on them
    g = ProgressiveGenerator(16, [8, 8, 4], z_dim=6)
    kw = dict(samples=60, seed=4, segmenter="color", label_cache=tmp_path / "cache", num_workers=0, progress=False,
              batch_size=4)
    # (60 samples: fewer than the 64 it asks; after 20 rows the estimate held for the 6 weight seeds
    # tried, after 4 it failed for some, which then scan the cache, as the second run below does)
    monkeypatch.setattr(pnas, "RAISE_MIN_ROWS", 20)
    verdicts, raised = [], []
    real_ready, real_raise = pnas.ExactStream.ready, pnas.ExactStream._raise_floor
    monkeypatch.setattr(pnas.ExactStream, "ready", lambda self, sizes: verdicts.append(real_ready(self, sizes)) or
                        verdicts[-1])
    monkeypatch.setattr(pnas.ExactStream, "_raise_floor", lambda self: raised.append(self.scanned) or real_raise(self))
    normal = dissect(g, ["layer4"], **kw)
    assert verdicts == [True] and raised == [20]  # after the fifth batch (>= 5% of 60 rows, >= 20)
    monkeypatch.setattr(pnas, "RAISE_MARGIN", 1e-3)  # far fewer values than the thresholds need
    too_high = dissect(g, ["layer4"], **kw)
    assert verdicts == [True, False]
    monkeypatch.setattr(pnas, "RAISE_AFTER", 2.0)  # never raised: the plain exact scan
    plain = dissect(g, ["layer4"], **kw)
    assert verdicts == [True, False, True] and len(raised) == 2
    for res in (too_high, plain):
        for f in ("thresholds", "iou", "top_images", "top_values"):
            np.testing.assert_array_equal(getattr(res["layer4"], f), getattr(normal["layer4"], f))


def test_latent_rows_need_no_loader_workers(tmp_path, monkeypatch):
    """A generator's rows are z vectors in memory: asked for loader workers, both passes still load in
    the main process (forking workers to index an array costs more than it saves), same results."""
    from netdissect.dissection import activations, counting

    seen = []
    for mod in (activations, counting):
        real = mod.loader
        monkeypatch.setattr(mod, "loader", lambda ds, bs, workers, collate, real=real: seen.append(workers) or
                            real(ds, bs, workers, collate))
    kw = dict(samples=20, seed=5, segmenter="color", label_cache=tmp_path / "cache", progress=False, batch_size=8,
              normalize="0.5,0.5")
    two = dissect(Painter(), ["paint"], num_workers=2, out=tmp_path / "two", **kw)
    assert seen == [0, 0]
    none = dissect(Painter(), ["paint"], num_workers=0, out=tmp_path / "none", **kw)
    for f in ("iou", "thresholds", "top_images"):
        np.testing.assert_array_equal(getattr(two["paint"], f), getattr(none["paint"], f))
