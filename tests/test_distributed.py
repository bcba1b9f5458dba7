"""torchrun sharding and chunked runs give exactly the single-process result."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netdissect import dissect, load
from netdissect.cli import main
from netdissect.dissection.distributed import assign_broadcast, shard_rows
from netdissect.errors import NetDissectError
from nets import ElementwiseNet

TESTS = Path(__file__).parent
LAYERS = ["units", "units2"]
KW = dict(quantile=0.05, cache_dtype="float32", batch_size=4, num_workers=0, topk=3, skip_bad=True)


@pytest.fixture(scope="module")
def broken(broden, tmp_path_factory):
    """The fixture dataset with one image gone (row 20, in the second half): a skipped row."""
    root = shutil.copytree(broden, tmp_path_factory.mktemp("broken") / "ds")
    (root / "images" / "img020.jpg").unlink()
    return root


@pytest.fixture(scope="module")
def single(broken):
    return dissect(ElementwiseNet(), LAYERS, broken, progress=False, **KW)


def _assert_same(a, b):
    for layer in LAYERS:
        x, y = a[layer], b[layer]
        np.testing.assert_array_equal(x.thresholds, y.thresholds)
        np.testing.assert_array_equal(x.iou, y.iou.astype(np.float32))
        assert list(x.units["label"]) == list(y.units["label"])
        np.testing.assert_array_equal(x.top_images, y.top_images)
        np.testing.assert_array_equal(x.top_values, y.top_values)
        np.testing.assert_array_equal(x.top_maps, y.top_maps)
        np.testing.assert_array_equal(x.dead, y.dead)
    for key in ("n_used", "skipped", "unknown_label_count"):
        assert a.summary["dataset"][key] == b.summary["dataset"][key]
    assert (np.asarray(a["units"].iou) > 0).sum() >= 5  # not vacuous


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_cover_the_rows_once():
    for n in (0, 1, 5, 30):
        for parts in (1, 2, 3, 7):
            slices = [shard_rows(n, i, parts) for i in range(parts)]
            assert slices[0][0] == 0 and slices[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))


def _torchrun(dataset, out, model="nets.py:elementwise_net", *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "-m", "netdissect", "dissect", "--model", f"{TESTS}/{model}",
            "--layer", "units", "--layer", "units2", "--dataset", str(dataset), "--out", str(out),
            "--quantile", "0.05", "--cache-dtype", "float32", "--batch-size", "4", "--workers", "0",
            "--topk", "3", "--skip-bad", "--quiet", "--no-report", *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


@pytest.mark.parametrize("memory", [[], ["--quantile-memory", "16k"]], ids=["exact-buffer", "radix-passes"])
def test_torchrun_two_gloo_ranks_equal_one_process(broken, single, tmp_path, memory):
    """With a quantile memory below the exact buffer, each rank feeds its own cache to the further
    passes and the counts are summed across ranks: the same result."""
    out = tmp_path / "run"
    proc = subprocess.run(_torchrun(broken, out, "nets.py:elementwise_net", *memory), env=ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results:") == 1  # rank 0 reports, rank 1 stays quiet
    assert not (out / ".work").exists()
    result = load(out)
    assert result.summary["config"]["world_size"] == 2
    _assert_same(result, single)


def _done(ckpt: Path) -> tuple[int, int]:
    """(phase, rows done) of a rank's checkpoint; (0, 0) while there is none."""
    try:
        with np.load(ckpt) as z:
            return int(z["phase"]), int(z["done"])
    except Exception:  # not written yet, or being replaced right now
        return 0, 0


def test_killed_torchrun_job_resumes_to_the_same_result(broken, single, tmp_path):
    """SIGKILL the whole torchrun job midway through pass 1; each rank resumes from its own
    checkpoint and the finished run equals the single-process one."""
    out = tmp_path / "run"
    args = _torchrun(broken, out, "nets.py:slow_elementwise_net", "--checkpoint-every", "0", "--batch-size", "2")
    proc = subprocess.Popen(args, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = [out / ".work" / f"rank{r}" / "checkpoint.npz" for r in (0, 1)]
    firsts = [0, 15]  # first row of each rank (30 rows in two contiguous halves)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        state = [_done(c) for c in ckpts]
        if all(ph == 1 and d >= f + 4 for (ph, d), f in zip(state, firsts)):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = [_done(c) for c in ckpts]
    assert all(ph == 1 and f + 4 <= d < f + 15 for (ph, d), f in zip(state, firsts)), state
    assert not (out / "summary.json").exists()
    resumed = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / ".work").exists()
    _assert_same(load(out), single)


def test_chunks_merged_equal_one_run(broken, single, tmp_path, capsys):
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    for i in (2, 0, 1):  # any order, any time
        assert dissect(ElementwiseNet(), LAYERS, broken, out=dirs[i], chunk=f"{i}/3", progress=False, **KW) is None
    assert main(["merge", str(dirs[0]), str(dirs[2]), "--out", str(tmp_path / "x")]) == 1
    assert "missing chunk(s) 1/3" in capsys.readouterr().err
    with pytest.raises(NetDissectError, match="finished chunk 0/3: pass --resume"):
        dissect(ElementwiseNet(), LAYERS, broken, out=dirs[0], chunk="0/3", progress=False, **KW)
    out = tmp_path / "run"
    assert main(["merge", *map(str, dirs), "--out", str(out), "--workers", "0", "--quiet", "--no-report"]) == 0
    assert "results:" in capsys.readouterr().out
    merged = load(out)
    assert merged.summary["config"]["chunks"] == 3
    _assert_same(merged, single)
    # merging again (e.g. after a preempted merge) reuses the chunks' IoU checkpoints, same result
    again = tmp_path / "again"
    assert main(["merge", *map(str, dirs), "--out", str(again), "--workers", "0", "--quiet", "--no-report",
                 "--remove-chunks"]) == 0
    _assert_same(load(again), single)
    assert not any(d.exists() for d in dirs)


def test_unfinished_chunk_is_named(broken, tmp_path, capsys):
    (tmp_path / "c0" / ".work").mkdir(parents=True)
    assert main(["merge", str(tmp_path / "c0"), "--out", str(tmp_path / "run")]) == 1
    assert "has not finished its pass 1" in capsys.readouterr().err
    with pytest.raises(NetDissectError, match="chunk must be I/N"):
        dissect(ElementwiseNet(), LAYERS, broken, out=tmp_path / "c", chunk="a/b", progress=False)


def test_broadcast_writes_expanded_view_buffers():
    """A buffer registered as an expanded view (stride 0) cannot take ``copy_``; the broadcast
    writes it through the memory it owns, so every rank ends with rank 0's values."""
    import torch

    def net(fill):
        m = torch.nn.Module()
        m.register_buffer("scale", torch.full((1, 3, 1), fill).expand(4, 3, 5))
        m.register_buffer("plain", torch.full((2,), fill))
        return m

    rank0, rank1 = net(1.0), net(0.0)
    for key, t in rank1.state_dict().items():
        assign_broadcast(t, rank0.state_dict()[key].contiguous())
    assert torch.equal(rank1.scale, rank0.scale) and torch.equal(rank1.plain, rank0.plain)
    assert rank1.scale.stride(0) == 0  # still the same expanded view, not replaced
