"""Output folders: bad --out refused in one line, one job per folder, damaged JSON named."""
import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netdissect import atomic
from netdissect.errors import NetDissectError
from netdissect.runfolder import (
    LOCK_FILE,
    RunLock,
    RunLockedError,
    check_merge_folders,
    check_out,
    has_progress,
    lock_folders,
    read_chunk_info,
    read_json,
)

ROOT = Path(__file__).parent.parent


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and isinstance(exc_info.value, NetDissectError)
    return msg


# ---------------------------------------------------------------- check_out
def test_empty_out_is_refused_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(NetDissectError) as e:
            check_out(empty)
        assert "current directory" in _one_line(e) and "--out runs/NAME" in str(e.value)
    assert list(tmp_path.iterdir()) == []
    assert check_out(".") == Path(".")  # said explicitly: allowed


def test_out_naming_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    with pytest.raises(NetDissectError) as e:
        check_out(f)
    assert f"{f}: is a file" in _one_line(e) and "choose another --out" in str(e.value)
    with pytest.raises(NetDissectError) as e:
        check_out(f / "run" / "deeper", what="report folder")
    assert f"{f} is a file" in _one_line(e) and "report folder cannot be created" in str(e.value)
    assert f.read_text() == "keep me"


def test_out_is_created_with_its_parents(tmp_path):
    out = check_out(tmp_path / "a" / "b" / "run")
    assert out == tmp_path / "a" / "b" / "run" and out.is_dir() and list(out.iterdir()) == []
    assert check_out(out) == out  # an existing folder is fine
    missing = tmp_path / "x" / "y"
    assert check_out(missing, create=False) == missing and not missing.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; "
                    "test_unwritable_out_when_the_probe_fails covers it")
def test_read_only_out(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(NetDissectError) as e:
            check_out(ro)
        assert "not writable" in _one_line(e)
        with pytest.raises(NetDissectError) as e:
            check_out(ro / "run")
        assert "cannot create the run folder" in _one_line(e) and "permission denied" in str(e.value)
    finally:
        ro.chmod(0o755)


def test_unwritable_out_when_the_probe_fails(tmp_path, monkeypatch):
    """What a read-only folder or mount does, as any user (root included): the probe file cannot be made."""
    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(NetDissectError) as e:
        check_out(tmp_path)
    assert f"{tmp_path}: the run folder is not writable (permission denied" in _one_line(e)
    with pytest.raises(NetDissectError) as e:
        check_out(tmp_path / "new", create=False)
    assert f"{tmp_path / 'new'}: the run folder is not writable" in _one_line(e)


def test_other_mkdir_errors_are_one_line(tmp_path, monkeypatch):
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(NetDissectError) as e:
        check_out(tmp_path / "run")
    assert "cannot create the run folder (no space left on the device)" in _one_line(e)
    assert isinstance(e.value, OSError)  # callers that catch OSError still do


# ---------------------------------------------------------------- RunLock
def _hold(path: str, started, release) -> None:
    with RunLock(path):
        started.set()
        release.wait(30)


def _try_lock(path: str, queue) -> None:
    try:
        with RunLock(path):
            queue.put("locked")
    except RunLockedError as exc:
        queue.put(str(exc))


def _lock_in_subprocess(path) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom netdissect.runfolder import RunLock\n"
            "try:\n    RunLock(sys.argv[1]).acquire()\nexcept Exception as e:\n    print(e); sys.exit(1)\n"
            "print('locked')")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                          timeout=60)


def test_second_job_on_one_folder_fails_fast(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK_FILE).exists()
        t0 = time.monotonic()
        other = _lock_in_subprocess(tmp_path)
        assert other.returncode == 1 and time.monotonic() - t0 < 30
        msg = other.stdout.strip()
        assert msg.startswith(f"another netdissect job (pid {os.getpid()} on {socket.gethostname()}, started ")
        assert msg.endswith(f") is writing {tmp_path}; wait for it or choose another --out")
    assert not (tmp_path / LOCK_FILE).exists()  # released and tidied
    assert _lock_in_subprocess(tmp_path).stdout.strip() == "locked"


def test_lock_is_held_against_a_forked_child(tmp_path):
    """A child forked while the parent holds the lock (the parent's registry is copied) is another job."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    with RunLock(tmp_path):
        p = ctx.Process(target=_try_lock, args=(str(tmp_path), q))
        p.start()
        p.join(60)
        assert "is writing" in q.get(timeout=5)


def test_lock_released_on_exception_and_nested_in_one_process(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path):
            with RunLock(tmp_path / "." ):  # the CLI and the engine may both lock one folder
                pass
            assert (tmp_path / LOCK_FILE).exists()  # the outer one still holds it
            1 / 0
    assert not (tmp_path / LOCK_FILE).exists()
    assert _lock_in_subprocess(tmp_path).stdout.strip() == "locked"


def test_killed_job_and_stale_lock_file_do_not_block(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(tmp_path), started, release))
    p.start()
    assert started.wait(60)
    assert "is writing" in _lock_in_subprocess(tmp_path).stdout
    os.kill(p.pid, signal.SIGKILL)  # no cleanup runs: the .lock file stays, naming a dead pid
    p.join(30)
    assert (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() and lock.held
    # a lock file with rubbish in it (an old format, a partial write) blocks nothing either
    (tmp_path / LOCK_FILE).write_text("{garbage")
    assert _lock_in_subprocess(tmp_path).stdout.strip() == "locked"


def test_lock_only_on_rank_zero(tmp_path):
    with RunLock(tmp_path, rank=1) as lock:
        assert not lock.held and not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path, rank=0) as lock:
        assert lock.held


def test_lock_folders_takes_all_or_none(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(b), started, release))
    p.start()
    try:
        assert started.wait(60)
        with pytest.raises(RunLockedError) as e:
            lock_folders([a, b], what="chunk folder")
        assert _one_line(e).endswith(f"is writing {b}; wait for it")
        assert not (a / LOCK_FILE).exists()  # a's lock was given back
    finally:
        release.set()
        p.join(30)
    with lock_folders([a, b, a]):
        assert (a / LOCK_FILE).exists() and (b / LOCK_FILE).exists()


# ---------------------------------------------------------------- work folder
def test_has_progress(tmp_path):
    work = tmp_path / ".work"
    assert not has_progress(work)
    work.mkdir()
    (work / "identity.json").write_text("{}")
    (work / "units.acts").write_bytes(b"\0" * 64)  # a job that failed on its first batch leaves this
    assert not has_progress(work)
    (work / "rank1").mkdir()
    (work / "rank1" / "checkpoint.npz").write_bytes(b"x")
    assert has_progress(work)
    (work / "rank1" / "checkpoint.npz").unlink()
    (work / "checkpoint.npz").write_bytes(b"x")
    assert has_progress(work)


# ---------------------------------------------------------------- merge folders
def test_merge_out_overlapping_a_chunk_is_refused(tmp_path):
    c0, c1 = tmp_path / "chunks" / "c0", tmp_path / "chunks" / "c1"
    c0.mkdir(parents=True), c1.mkdir()
    for out, says in ((c0, "is chunk folder"), (c0 / "merged", "is inside chunk folder"),
                      (tmp_path / "chunks", "is inside --out")):
        with pytest.raises(NetDissectError) as e:
            check_merge_folders([c0, c1], out)
        assert says in _one_line(e)
    link = tmp_path / "link"
    link.symlink_to(c1)
    with pytest.raises(NetDissectError, match="is inside chunk folder"):
        check_merge_folders([c0, link], c1 / "run")
    check_merge_folders([c0, c1], tmp_path / "run")
    check_merge_folders([c0, c1], tmp_path / "chunks" / "c")  # a sibling whose name starts like theirs
    check_merge_folders([c0], tmp_path / "chunks" / "c00")


# ---------------------------------------------------------------- JSON
def test_read_json_damaged_files_are_one_line(tmp_path):
    f = tmp_path / "identity.json"
    cases = {
        "": "is empty: damaged or cut short",
        '{"model": {"spec": "x"': "is not valid JSON (Expecting",
        "[1, 2]": "holds a JSON list, not an object",
        '{"model": {}}': "lacks 'layers': incomplete",
        '{"model": 3, "layers": []}': "'model' is 3, not a dict",
        '{"model": {}, "layers": true}': "'layers' is true, not a list",
    }
    for text, says in cases.items():
        f.write_text(text)
        with pytest.raises(NetDissectError) as e:
            read_json(f, {"model": dict, "layers": list}, "identity file", fix="remove RUN/.work to start afresh")
        msg = _one_line(e)
        assert msg.startswith(f"{f}: ") and says in msg and msg.endswith("; remove RUN/.work to start afresh"), msg
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(NetDissectError, match="is not text"):
        read_json(f)
    with pytest.raises(NetDissectError, match="identity file not found"):
        read_json(tmp_path / "nope.json", what="identity file")
    f.write_text('{"model": {}, "layers": [], "extra": 1}')
    assert read_json(f, ["model", "layers"])["extra"] == 1


def _chunk(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"chunk": 0, "of": 2, "rows": [0, 15], "timing_s": {},
            "identity": {"model": {}, "dataset": {"path": "/data"}, "layers": ["units"], "config": {}}}
    info.update(changes)
    atomic.write_json(folder / "chunk.json", info)
    return folder


def test_read_chunk_info(tmp_path):
    assert read_chunk_info(_chunk(tmp_path / "ok"))["rows"] == [0, 15]
    bad = {
        "x1": ({"chunk": 2}, "says chunk 2 of 2"),
        "x2": ({"rows": [3]}, "'rows' is [3], not [first, end]"),
        "x3": ({"of": "2"}, "'of' is \"2\", not an int"),
        "x4": ({"identity": {"model": {}, "dataset": {"path": "/d"}, "layers": []}}, "its identity lacks 'config'"),
        "x5": ({"identity": {"model": {}, "dataset": {}, "layers": [], "config": {}}},
               "its dataset identity lacks 'path'"),
    }
    for name, (changes, says) in bad.items():
        d = _chunk(tmp_path / name, **changes)
        with pytest.raises(NetDissectError) as e:
            read_chunk_info(d)
        msg = _one_line(e)
        assert says in msg and str(d / "chunk.json") in msg and f"--chunk I/N --out {d} --resume" in msg, msg


def test_write_json_is_atomic_and_readable(tmp_path):
    f = atomic.write_json(tmp_path / "a" / "x.json", {"k": [1, 2]})
    assert read_json(f, {"k": list}) == {"k": [1, 2]}
    assert [p.name for p in f.parent.iterdir()] == ["x.json"]
