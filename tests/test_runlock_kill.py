"""A job killed by SIGKILL (as the out-of-memory killer does) can be resumed at once.

Before issue 32, a dissection's DataLoader workers, forked after the run lock was taken, shared the
lock's open file and outlived their parent: ``--resume`` right after a ``kill -9`` was refused with
"another netdissect job (pid N ...) is writing RUN" while pid N was dead.  Here: the lock belongs
to the job's process alone, its workers die with it, and a lock kept by a left-behind process is
reported as such.
"""
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from netdissect import dissect, load
from netdissect.runfolder import LOCK_FILE, RunLock, RunLockedError
from nets import ElementwiseNet

TESTS = Path(__file__).parent
ROOT = TESTS.parent
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from Linux /proc")


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                kids.append(int(p))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _gone_within(pids, seconds: float) -> list[int]:
    """The pids still alive after ``seconds`` (killed here then, so that a failing test leaves none)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(map(_alive, pids)):
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


@linux_only
def test_dissection_killed_with_loader_workers_resumes_within_a_second(broden, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "netdissect", "dissect", "--model", f"{TESTS}/nets.py:slow_elementwise_net",
            "--layer", "units", "--dataset", str(broden), "--out", str(out), "--batch-size", "1",
            "--workers", "2", "--checkpoint-every", "0", "--cache-dtype", "float32", "--quantile", "0.05",
            "--quiet", "--no-report"]
    proc = subprocess.Popen(args, env=ENV)
    ckpt = out / ".work" / "checkpoint.npz"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            if int(np.load(ckpt)["done"]) >= 18:  # 60% of pass 1's 30 images (12 more take >= 1.8 s)
                break
        except Exception:
            pass  # not written yet, or being replaced right now
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the job alone, as the OOM killer does: not its process group
    proc.wait()
    done = int(np.load(ckpt)["done"])
    assert 18 <= done < 30 and not (out / "summary.json").exists()
    assert len(workers) == 2, workers  # the loader workers were running
    # at once: nothing to wait for, the job is dead
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr  # not "another netdissect job (pid N ...) is writing"
    assert _gone_within(workers, 1) == []  # and the killed job's workers are gone
    clean = dissect(ElementwiseNet(), ["units"], broden, quantile=0.05, cache_dtype="float32", num_workers=0,
                    progress=False)
    result = load(out)
    np.testing.assert_array_equal(result["units"].iou, clean["units"].iou.astype(np.float32))
    np.testing.assert_array_equal(result["units"].thresholds, clean["units"].thresholds)
    np.testing.assert_array_equal(result["units"].top_images, clean["units"].top_images)


# a parent that iterates netdissect's loader over rows that take 30 s each to load (a slow disk):
# its workers are inside __getitem__ when the parent is killed, where torch's own watchdog never looks
_SLOW_LOADER = textwrap.dedent("""
    import time
    from torch.utils.data import Dataset
    from netdissect.dissection.rows import loader

    class Slow(Dataset):
        def __len__(self):
            return 100
        def __getitem__(self, i):
            time.sleep(30)
            return i

    it = iter(loader(Slow(), 1, 2, lambda items: items))
    print("started", flush=True)
    next(it)
""")


@linux_only
def test_loader_workers_die_when_their_parent_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_LOADER], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2
    time.sleep(0.3)  # the workers are past their start-up, sleeping in __getitem__
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone_within(workers, 3) == []


# the same without prctl (as on macOS): a thread in the worker watches for the parent's death
_FALLBACK = textwrap.dedent("""
    import multiprocessing, os, sys, time
    import netdissect.workers as w

    def child(parent):
        w._set_pdeathsig = lambda sig: False
        w.die_with_parent(parent, poll=0.1)
        time.sleep(30)

    p = multiprocessing.get_context("fork").Process(target=child, args=(os.getpid(),))
    p.start()
    print(p.pid, flush=True)
    time.sleep(30)
""")


@linux_only
def test_a_worker_without_prctl_notices_its_parent_died(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _FALLBACK], stdout=subprocess.PIPE, text=True, env=ENV)
    child = int(proc.stdout.readline())
    time.sleep(0.3)
    assert _alive(child)  # alive while its parent is
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone_within([child], 3) == []


def _hold_and_fork(path: str, ready) -> None:
    """Take the lock, fork a child that outlives this process, then wait to be killed."""
    RunLock(path).acquire()
    kid = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    kid.start()
    ready.put(kid.pid)
    time.sleep(60)


def test_the_lock_is_not_kept_by_a_child_the_job_forked(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    job = ctx.Process(target=_hold_and_fork, args=(str(tmp_path), ready))
    job.start()
    kid = ready.get(timeout=60)
    try:
        with pytest.raises(RunLockedError, match=f"pid {job.pid} on "):
            RunLock(tmp_path).acquire()  # held while the job lives
        os.kill(job.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30  # (not job.join(): the child holds a copy of its sentinel pipe)
        while job.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _alive(kid) or not Path("/proc").exists()
        with RunLock(tmp_path) as lock:  # at once, though the job's forked child lives on
            assert lock.held
    finally:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_lock_kept_after_its_job_died_says_so_and_names_the_holder(tmp_path):
    """A process that keeps a dead job's lock (forked by foreign C code, say): the message is true."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that has ended
    record = json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "2026-12-07 10:00:00 UTC"})
    keeper = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, {record!r}.encode())
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert keeper.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as e:
            RunLock(tmp_path).acquire()
        msg = str(e.value)
        assert "\n" not in msg and "another netdissect job" not in msg
        assert msg.startswith(f"the netdissect job that locked {tmp_path} (pid {dead.pid} on ")
        assert "is no longer running" in msg
        if sys.platform.startswith("linux"):
            assert f"process {keeper.pid} still holds its lock file {tmp_path / LOCK_FILE} open" in msg
            assert f"(kill {keeper.pid})" in msg
    finally:
        keeper.kill()
        keeper.wait()
    with RunLock(tmp_path) as lock:
        assert lock.held
