"""The command line end to end, and runs that are interrupted and resumed."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netdissect import dissect, load
from netdissect.cli import main
from netdissect.errors import NetDissectError
from nets import ElementwiseNet

TESTS = Path(__file__).parent


def test_dissect_cli_end_to_end(broden, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["dissect", "--model", f"{TESTS}/nets.py:color_units", "--layer", "units", "--dataset", str(broden),
                 "--out", str(out), "--quantile", "0.08", "--workers", "0", "--quiet", "--no-report"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "units" in printed and "object" in printed
    result = load(out)
    assert result["units"].units["label"][0] == "square"
    assert result.summary["model"]["spec"].endswith("nets.py:color_units")


def test_cli_errors_are_one_line_not_tracebacks(broden, tmp_path, capsys):
    code = main(["dissect", "--model", f"{TESTS}/nets.py:color_units", "--layer", "unitz", "--dataset", str(broden),
                 "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "no layer 'unitz'" in err and "units" in err and "Traceback" not in err
    code = main(["dissect", "--model", "tests/missing.py:f", "--layer", "x", "--dataset", str(broden),
                 "--out", str(tmp_path / "r2")])
    assert code == 1 and "model file not found" in capsys.readouterr().err


def test_layers_lists_names_and_shapes(capsys):
    assert main(["layers", "--model", f"{TESTS}/nets.py:elementwise_net", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "units " in out and "(1, 10, 16, 16)" in out and "units2" in out and "(1, 10, 8, 8)" in out


def test_layers_of_a_torchvision_model(capsys):
    assert main(["layers", "--model", "torchvision:resnet18", "--weights", "none", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "(1, 512, 2, 2)" in out


def _break_and_resume(broden, tmp_path, victim):
    """Dissect with a file gone (the run fails midway), put it back, resume; compare with a clean run."""
    root = shutil.copytree(broden, tmp_path / "ds")
    hidden = tmp_path / "hidden"
    shutil.move(root / "images" / victim, hidden)
    out = tmp_path / "run"
    kw = dict(quantile=0.05, cache_dtype="float32", batch_size=4, num_workers=0, progress=False, checkpoint_every=0)
    with pytest.raises(Exception, match="not found"):
        dissect(ElementwiseNet(seed=5), ["units", "units2"], root, out=out, **kw)
    assert (out / ".work" / "checkpoint.npz").exists()
    shutil.move(hidden, root / "images" / victim)
    resumed = dissect(ElementwiseNet(seed=5), ["units", "units2"], root, out=out, resume=True, **kw)
    clean = dissect(ElementwiseNet(seed=5), ["units", "units2"], root, **kw)
    for layer in ("units", "units2"):
        np.testing.assert_array_equal(resumed[layer].thresholds, clean[layer].thresholds)
        np.testing.assert_array_equal(resumed[layer].iou, clean[layer].iou)
        np.testing.assert_array_equal(resumed[layer].top_images, clean[layer].top_images)


def test_resume_after_failure_in_activation_pass(broden, tmp_path):
    _break_and_resume(broden, tmp_path, "img021.jpg")


def test_resume_after_failure_in_iou_pass(broden, tmp_path):
    mask = sorted(p.name for p in (Path(broden) / "images").glob("img02*_object_1.png"))[0]
    _break_and_resume(broden, tmp_path, mask)


def test_resume_refuses_other_settings(broden, tmp_path):
    out = tmp_path / "run"
    root = shutil.copytree(broden, tmp_path / "ds")
    (root / "images" / "img021.jpg").unlink()
    with pytest.raises(Exception):
        dissect(ElementwiseNet(), ["units"], root, out=out, batch_size=4, num_workers=0, progress=False,
                checkpoint_every=0)
    with pytest.raises(Exception, match="different settings"):
        dissect(ElementwiseNet(), ["units"], root, out=out, batch_size=4, num_workers=0, progress=False,
                quantile=0.01, resume=True)


def test_killed_process_resumes_to_the_same_result(broden, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "netdissect", "dissect", "--model", f"{TESTS}/nets.py:slow_elementwise_net",
            "--layer", "units", "--dataset", str(broden), "--out", str(out), "--batch-size", "2",
            "--workers", "0", "--checkpoint-every", "0", "--cache-dtype", "float32", "--quantile", "0.05",
            "--quiet", "--no-report"]
    proc = subprocess.Popen(args, start_new_session=True)
    ckpt = out / ".work" / "checkpoint.npz"
    deadline = time.time() + 60
    while time.time() < deadline:
        if ckpt.exists():
            try:
                if int(np.load(ckpt)["done"]) >= 6:
                    break
            except Exception:
                pass  # being replaced right now
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = int(np.load(ckpt)["done"])
    assert 6 <= done < 30 and not (out / "summary.json").exists()
    assert subprocess.run(args + ["--resume"], capture_output=True).returncode == 0
    clean = dissect(ElementwiseNet(), ["units"], broden, quantile=0.05, cache_dtype="float32", num_workers=0,
                    progress=False)
    resumed = load(out)
    np.testing.assert_array_equal(resumed["units"].iou, clean["units"].iou.astype(np.float32))
    np.testing.assert_array_equal(resumed["units"].thresholds, clean["units"].thresholds)


# ---------------------------------------------------------------- bad run folders on the command line
@pytest.fixture(scope="module")
def chunk_dirs(broden, tmp_path_factory):
    """Two finished chunk folders of one run (copy them before breaking them)."""
    root = tmp_path_factory.mktemp("chunks")
    for i in range(2):
        assert dissect(ElementwiseNet(), ["units"], broden, out=root / f"c{i}", chunk=f"{i}/2", quantile=0.05,
                       batch_size=4, num_workers=0, progress=False) is None
    return root


def _copy_chunks(chunk_dirs, tmp_path):
    return [shutil.copytree(chunk_dirs / f"c{i}", tmp_path / "chunks" / f"c{i}") for i in range(2)]


MERGE = ["--workers", "0", "--quiet", "--no-report"]


def test_merge_refuses_out_overlapping_a_chunk_before_any_work(chunk_dirs, tmp_path, capsys):
    c0, c1 = _copy_chunks(chunk_dirs, tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for out, says in ((c0 / "merged", "is inside chunk folder"), (c1, "is chunk folder"),
                      (tmp_path / "chunks", "is inside --out")):
        assert main(["merge", str(c0), str(c1), "--out", str(out), "--remove-chunks", *MERGE]) == 1
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1 and err.startswith("netdissect merge: error: ")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing touched
    out = tmp_path / "run"
    assert main(["merge", str(c0), str(c1), "--out", str(out), "--remove-chunks", *MERGE]) == 0
    assert load(out)["units"].iou.shape[0] == 10 and not c0.exists() and not (out / ".lock").exists()


def test_merge_names_a_damaged_chunk_json(chunk_dirs, tmp_path, capsys):
    c0, c1 = _copy_chunks(chunk_dirs, tmp_path)
    f = c1 / "chunk.json"
    text = f.read_text()
    f.write_text(text[: len(text) // 2])  # cut short
    assert main(["merge", str(c0), str(c1), "--out", str(tmp_path / "run"), *MERGE]) == 1
    err = capsys.readouterr().err
    assert f"{f}: chunk file is not valid JSON" in err and "cut short" in err and err.count("\n") == 1
    info = json.loads(text)
    del info["identity"]["layers"]
    f.write_text(json.dumps(info))
    assert main(["merge", str(c0), str(c1), "--out", str(tmp_path / "run"), *MERGE]) == 1
    err = capsys.readouterr().err
    assert "its identity lacks 'layers': incomplete" in err and f"--chunk I/N --out {c1} --resume" in err
    assert not (tmp_path / "run").exists()
    assert main(["merge", str(c0), "--out", str(tmp_path / "run"), *MERGE]) == 1  # refused by the merge itself
    assert "missing chunk(s) 1/2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (c0 / ".lock").exists()  # no empty --out left behind


def test_merge_out_naming_a_file(chunk_dirs, tmp_path, capsys):
    c0, c1 = _copy_chunks(chunk_dirs, tmp_path)
    (tmp_path / "file").write_text("x")
    assert main(["merge", str(c0), str(c1), "--out", str(tmp_path / "file"), *MERGE]) == 1
    assert "file: is a file, not a folder" in capsys.readouterr().err
    assert main(["merge", str(c0), str(c1), "--out", str(tmp_path / "file" / "run"), *MERGE]) == 1
    assert "is a file, so the run folder cannot be created under it" in capsys.readouterr().err
    assert main(["merge", str(c0), str(c1), "--out", "", *MERGE]) == 1
    assert "would write into the current directory" in capsys.readouterr().err


def _hold_lock(path, started, release):
    from netdissect.runfolder import RunLock

    with RunLock(path):
        started.set()
        release.wait(60)


def test_merge_refused_while_another_job_writes_its_folders(chunk_dirs, tmp_path, capsys):
    import multiprocessing

    c0, c1 = _copy_chunks(chunk_dirs, tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    ctx = multiprocessing.get_context("spawn")
    for busy in (out, c1):
        started, release = ctx.Event(), ctx.Event()
        p = ctx.Process(target=_hold_lock, args=(str(busy), started, release))
        p.start()
        try:
            assert started.wait(60)
            assert main(["merge", str(c0), str(c1), "--out", str(out), *MERGE]) == 1
            err = capsys.readouterr().err
            assert f"another netdissect job (pid {p.pid} on " in err and f"is writing {busy}; wait for it" in err
        finally:
            release.set()
            p.join(30)
    assert not (c0 / ".lock").exists() and not list(out.iterdir())  # nothing written, locks given back


def test_interrupt_and_os_errors_are_one_line(monkeypatch, capsys):
    import netdissect.cli.layers
    import netdissect.cli.merge

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(netdissect.cli.merge, "run", interrupted)
    assert main(["merge", "c0", "--out", "run"]) == 130
    assert capsys.readouterr().err == ("netdissect merge: interrupted; the chunk folders keep the merge's "
                                       "checkpoints: rerun the same merge to continue\n")
    monkeypatch.setattr(netdissect.cli.layers, "run", interrupted)
    assert main(["layers", "--model", "x"]) == 130
    assert capsys.readouterr().err == "netdissect layers: interrupted\n"

    def disk_full(args):
        raise OSError(28, "No space left on device", "/runs/r18/units/iou.npz")
    monkeypatch.setattr(netdissect.cli.merge, "run", disk_full)
    assert main(["merge", "c0", "--out", "run"]) == 1
    assert capsys.readouterr().err == "netdissect merge: error: /runs/r18/units/iou.npz: No space left on device\n"

    def two_lines(args):
        raise NetDissectError("first line\n  second line")
    monkeypatch.setattr(netdissect.cli.merge, "run", two_lines)
    assert main(["merge", "c0", "--out", "run"]) == 1
    assert capsys.readouterr().err == "netdissect merge: error: first line second line\n"


def test_ctrl_c_says_how_to_resume(broden, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "netdissect", "dissect", "--model", f"{TESTS}/nets.py:slow_elementwise_net",
            "--layer", "units", "--dataset", str(broden), "--out", str(out), "--batch-size", "2",
            "--workers", "0", "--checkpoint-every", "0", "--quantile", "0.05", "--quiet", "--no-report"]
    # SIGINT back to its default in the child: a suite started in the background (`make test &`) inherits
    # it ignored, and Python then installs no KeyboardInterrupt handler (the run would finish, exit 0)
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = out / ".work" / "checkpoint.npz"
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists() and proc.poll() is None, "the run ended (or never checkpointed) before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == ("netdissect dissect: interrupted; the run folder keeps its last checkpoint: "
                           "rerun the same command with --resume to continue")
    assert subprocess.run(args + ["--resume"], capture_output=True).returncode == 0
    assert load(out)["units"].iou.shape[0] == 10
