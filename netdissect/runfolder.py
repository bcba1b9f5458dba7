"""Output folders: checked before a job writes into them, locked while it does, read back with clear errors.

Every command that writes a folder (``dissect``, ``merge``, ``report``, ``compare``) goes through
this module, so a bad ``--out`` or a damaged file in a run folder gives one line naming the path
and the fix, never a traceback, and two jobs never write one folder at once:

    >>> from netdissect.runfolder import check_out, RunLock
    >>> run = check_out("runs/r18")
    >>> with RunLock(run):
    ...     (run / ".lock").exists()                        # write the run here
    True
    >>> (run / ".lock").exists()                            # released and tidied
    False
    >>> check_out("")
    Traceback (most recent call last):
    netdissect.runfolder.RunFolderError: --out is empty: it would write into the current directory; name the run folder, e.g. --out runs/NAME (or --out . to mean here)

* :func:`check_out` refuses ``''``, a file, a path under a file and a folder that cannot be
  created or written, before any work starts.
* :class:`RunLock` is an exclusive lock (``RUN/.lock``) held for a job's whole duration; a second
  job on the same folder fails at once, naming the job that holds it.  The lock belongs to the
  job's process alone (a process it forks, such as a DataLoader worker, does not keep it), and
  the operating system drops it when that process ends, however it ends, so a killed job never
  blocks the next.
* :func:`has_progress` tells a work folder with a checkpoint (worth ``--resume``) from one left by
  a job that failed before its first checkpoint (nothing to resume: start afresh).
* :func:`check_merge_folders` refuses a merge whose ``--out`` and chunk folders overlap.
* :func:`read_json` and :func:`read_chunk_info` read ``identity.json`` / ``chunk.json`` and turn
  every way they can be damaged into one line.

This module imports neither torch nor numpy: the command line can check its folders before
loading a model.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from netdissect.errors import NetDissectError

try:  # POSIX; on other systems RunLock warns once and runs unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"
WORK_DIR = ".work"
CHECKPOINT_FILE = "checkpoint.npz"
CHUNK_FILE = "chunk.json"
CHUNK_LABELS = "labels"  # a segmenter-labelled chunk's label planes of its rows (a label cache)


class RunFolderError(NetDissectError, OSError):
    """An output folder that cannot be used (a file, read-only, held by another job, damaged)."""

    def __str__(self):  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class RunLockedError(RunFolderError):
    """The folder is being written by another netdissect job."""


# ---------------------------------------------------------------- --out
def check_out(path: str | os.PathLike, what: str = "run folder", *, flag: str = "--out",
              create: bool = True) -> Path:
    """``path`` as a folder this process can write into (created when ``create``), or a one-line error.

    Refused: ``''`` (it would write into the current directory), an existing file, a path under a
    file, a folder that cannot be created (permissions, read-only file system, ...) and one that
    exists but cannot be written.  ``what`` names the folder in messages ("run folder", "report
    folder"); ``flag`` is the option the user would change.  With ``create=False`` a missing
    folder is accepted when it could be created (its nearest existing parent is writable).
    """
    if path is None or not str(os.fspath(path)).strip():
        raise RunFolderError(f"{flag} is empty: it would write into the current directory; "
                             f"name the {what}, e.g. {flag} runs/NAME (or {flag} . to mean here)")
    p = Path(path)
    try:
        return _check_out(p, what, flag, create)
    except RunFolderError:
        raise
    except OSError as exc:  # e.g. a parent that cannot be searched
        raise RunFolderError(f"{p}: cannot use it as the {what} ({_reason(exc)}); choose another {flag}") from None


def _check_out(p: Path, what: str, flag: str, create: bool) -> Path:
    if p.exists() and not p.is_dir():
        raise RunFolderError(f"{p}: is a file, not a folder; the {what} must be a folder: "
                             f"choose another {flag} or move the file away")
    parent = _nearest_existing(p)
    if parent != p and not parent.is_dir():
        raise RunFolderError(f"{p}: {parent} is a file, so the {what} cannot be created under it; "
                             f"choose another {flag}")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"{p}: cannot create the {what} ({_reason(exc, parent)}); "
                                 f"{_fix(exc, flag, parent)}") from None
        _probe_writable(p, what, flag)
    else:
        _probe_writable(p if p.exists() else parent, what, flag, target=p)
    return p


def _nearest_existing(p: Path) -> Path:
    """``p`` or its nearest ancestor that exists (as a file or a folder)."""
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _reason(exc: OSError, where: Path | None = None) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {where}" if where is not None else "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


def _fix(exc: OSError, flag: str, folder: Path) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"choose another {flag} or fix the permissions of {folder}"
    return f"choose another {flag}"


def _probe_writable(folder: Path, what: str, flag: str, target: Path | None = None) -> None:
    """Create and remove a file in ``folder``: the only test that root, ACLs and read-only mounts all obey."""
    target = folder if target is None else target
    try:
        fd, tmp = tempfile.mkstemp(prefix=".netdissect-probe-", dir=folder)
    except OSError as exc:
        raise RunFolderError(f"{target}: the {what} is not writable ({_reason(exc, folder)}); "
                             f"{_fix(exc, flag, folder)}") from None
    os.close(fd)
    os.unlink(tmp)


# ---------------------------------------------------------------- lock
# (pid, realpath) -> [fd, depth]: a process may lock a folder it already holds (a forked child
# starts with none: see _forget_in_child)
_held: dict[tuple[int, str], list] = {}
_held_guard = threading.Lock()
_warned_unlocked = False


def _forget_in_child() -> None:
    """Run in every child forked by Python (``os.fork``, ``multiprocessing``, DataLoader workers).

    ``flock`` belongs to the open file, which a fork shares: a child that kept its copy of the
    descriptor would hold the job's lock after the job died (a SIGKILLed dissection's loader workers
    did, and its ``--resume`` was refused).  So the child closes its copies at once and holds nothing.
    """
    global _held_guard
    for fd, _ in list(_held.values()):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()
    _held_guard = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class RunLock:
    """An exclusive lock on a folder for a job's duration: ``with RunLock(run_dir): ...``.

    The lock is ``fcntl.flock`` on ``RUN/.lock``, which also records who holds it (pid, host,
    start time) for the message a second job gets::

        another netdissect job (pid 4242 on gpu1, started 2026-11-21 22:00:00) is writing runs/r18;
        wait for it or choose another --out

    It is released on exit from the ``with`` block, on an exception, and by the operating system
    when the process dies (even by SIGKILL), so a ``.lock`` left by a dead job blocks nothing.  A
    child the process forks closes its copy of the lock at once (``os.register_at_fork``), so the
    lock is the job's alone: its DataLoader workers cannot keep it after it dies.  Should a process
    the job left behind (say, forked by foreign C code) still hold it, the message says that the
    recorded job is dead and names the processes that hold the lock file open.
    Locking a folder this process already holds is allowed (nested, counted), so the command line
    and the engine may both lock one folder.  Under torchrun pass ``rank``: only rank 0 locks
    (the others are then no-ops; the engine shares rank 0's failure with ``group.agree``).

    On a file system without locks (some network or FUSE mounts) the job runs unlocked, with a
    warning.  The folder must exist (:func:`check_out` makes it).
    """

    def __init__(self, path: str | os.PathLike, *, rank: int = 0, what: str = "run folder",
                 flag: str | None = "--out"):
        self.path = Path(path)
        self.rank, self.what, self.flag = rank, what, flag
        self._key: tuple[int, str] | None = None

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` at once (never waits)."""
        if self.rank != 0 or self._key is not None:
            return self
        key = (os.getpid(), os.path.realpath(self.path))
        with _held_guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
        if fcntl is None:  # pragma: no cover - Windows
            self._unlocked("this system has no fcntl.flock")
            return self
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunFolderError(f"{self.path}: cannot create its lock file {LOCK_FILE} "
                                     f"({_reason(exc, self.path)}); choose another {self.flag}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    message = self._refusal(fd)
                finally:
                    os.close(fd)
                if message is None:  # the holder let go meanwhile: try again
                    continue
                raise RunLockedError(message) from None
            except OSError as exc:  # ENOLCK, EOPNOTSUPP: no locks on this file system
                os.close(fd)
                self._unlocked(f"{self.path} is on a file system without file locks ({_reason(exc)})")
                return self
            # the file we locked may have been removed by a job that released it meanwhile: retry
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        _write_holder(fd)
        with _held_guard:
            _held[key] = [fd, 1]
        self._key = key
        return self

    def _refusal(self, fd: int) -> str | None:
        """The message for a lock held by someone else; None if it was let go meanwhile."""
        info = _read_holder_info(fd)
        if info is not None and _dead_here(info):
            # a job that has just taken the lock may not have written its name yet: look again
            time.sleep(0.2)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            info = _read_holder_info(fd)
        other = f" or choose another {self.flag}" if self.flag else ""
        if info is None or not _dead_here(info):
            return f"another netdissect job ({_describe(info)}) is writing {self.path}; wait for it{other}"
        holders = _holders(fd)
        held_by = (f"process{'es' if len(holders) > 1 else ''} {', '.join(map(str, holders))} still "
                   f"hold{'s' if len(holders) == 1 else ''} its lock file {self.lock_path} open"
                   if holders else f"a process it left behind still holds its lock file {self.lock_path} "
                   f"(find it with `fuser {self.lock_path}`)")
        stop = f"stop {'them' if len(holders) > 1 else 'it'} (kill {' '.join(map(str, holders))})" if holders \
            else "stop that process"
        return (f"the netdissect job that locked {self.path} ({_describe(info)}) is no longer running, but "
                f"{held_by}; {stop} and run the command again{other}")

    def _unlocked(self, why: str) -> None:
        global _warned_unlocked
        if not _warned_unlocked:
            warnings.warn(f"{why}: two jobs started on one {self.what} would not be stopped", stacklevel=3)
            _warned_unlocked = True

    def release(self) -> None:
        """Release the lock (and remove ``.lock`` when the outermost holder releases)."""
        key, self._key = self._key, None
        if key is None:
            return
        with _held_guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
        fd = entry[0]
        try:  # unlink while still holding: a job that opened the old file sees it gone and retries
            os.unlink(self.lock_path)
        except OSError:
            pass  # removed with its folder (merge --remove-chunks), or read-only now
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip(),
            "command": " ".join(sys.argv)}
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder_info(fd: int) -> dict | None:
    """The holder's record from a held lock file: None when not written yet (or unreadable)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        info = {"pid": int(info["pid"]), "host": str(info["host"]), "started": str(info["started"])}
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return info


def _describe(info: dict | None) -> str:
    """``pid N on HOST, started T`` (or, before the holder wrote its name, "one that has just started")."""
    if info is None:
        return "one that has just started"
    return f"pid {info['pid']} on {info['host']}, started {info['started']}"


def _dead_here(info: dict) -> bool:
    """Whether the recorded holder ran on this host and has ended (a zombie counts as ended)."""
    if info["host"] != socket.gethostname() or info["pid"] <= 0:
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    try:  # a killed process not yet reaped by its parent has closed its files: it holds nothing
        with open(f"/proc/{info['pid']}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _holders(fd: int) -> list[int]:
    """Pids of the other processes that have the file of ``fd`` open (Linux ``/proc``; [] elsewhere)."""
    try:
        st = os.fstat(fd)
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    me, found, t0 = os.getpid(), [], time.monotonic()
    for pid in pids:
        if pid == me or time.monotonic() - t0 > 2:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's
            continue
        for name in fds:
            try:
                other = os.stat(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                found.append(pid)
                break
    return sorted(found)


def lock_folders(paths: Iterable[str | os.PathLike], *, what: str = "folder", flag: str | None = None):
    """A context manager holding a :class:`RunLock` on each of ``paths`` (taken in a fixed order,
    so two jobs locking overlapping sets cannot deadlock; none is held if one fails)."""
    from contextlib import ExitStack

    stack = ExitStack()
    try:
        for p in sorted({os.path.realpath(p): Path(p) for p in paths}.items()):
            stack.enter_context(RunLock(p[1], what=what, flag=flag))
    except BaseException:
        stack.close()
        raise
    return stack


# ---------------------------------------------------------------- work folder
def has_progress(work: str | os.PathLike) -> bool:
    """Whether a work folder holds something to resume: a checkpoint, its own or a rank's.

    A job that fails before its first checkpoint leaves ``.work`` with only an identity file and
    empty caches; that is nothing to resume, so the next job may start afresh without ``--resume``.
    """
    work = Path(work)
    if (work / CHECKPOINT_FILE).is_file():
        return True
    try:
        return any((d / CHECKPOINT_FILE).is_file() for d in work.glob("rank*") if d.is_dir())
    except OSError:
        return False


# ---------------------------------------------------------------- merge
def _inside(a: str, b: str) -> bool:
    """Whether real path ``a`` is ``b`` or inside it."""
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_merge_folders(chunks: Iterable[str | os.PathLike], out: str | os.PathLike) -> None:
    """Refuse a merge whose ``out`` is, or is inside, a chunk folder, or holds one.

    The merge writes ``out`` and ``--remove-chunks`` then deletes the chunk folders: with ``out``
    inside one, that deletes the result just written; with a chunk inside ``out``, the run folder
    would mix a chunk's files with the run's.  Checked on real paths (symbolic links followed).
    """
    real_out = os.path.realpath(out)
    for c in chunks:
        real_c = os.path.realpath(c)
        if _inside(real_out, real_c):
            where = "is" if real_out == real_c else "is inside"
            raise RunFolderError(f"--out {out} {where} chunk folder {c}: the merged run would be written among "
                                 f"the chunk's files (and --remove-chunks would delete it); "
                                 f"choose an --out outside every chunk folder")
        if _inside(real_c, real_out):
            raise RunFolderError(f"chunk folder {c} is inside --out {out}: the run folder would mix the "
                                 f"chunk's files with the run's; choose an --out that holds no chunk folder")


# ---------------------------------------------------------------- JSON files
def read_json(path: str | os.PathLike, required: Iterable[str] | Mapping[str, type | tuple] = (),
              what: str = "file", fix: str | None = None) -> dict:
    """The JSON object in ``path``, or a one-line :class:`RunFolderError` naming the file and ``fix``.

    Refused: a missing or unreadable file, bytes that are not UTF-8 JSON (a truncated write), a
    value that is not an object, and an object without one of the ``required`` keys.  With a
    mapping ``{key: type}``, each value must also have that type (``bool`` is not an ``int``).
    """
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"{path}: {what} not found{tail}") from None
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: {what} is not text (damaged){tail}") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read the {what} ({_reason(exc)}){tail}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        state = "is empty" if not text.strip() else f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise RunFolderError(f"{path}: {what} {state}: damaged or cut short{tail}") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: {what} holds a JSON {type(data).__name__}, not an object{tail}")
    check_keys(data, required, f"{path}: {what}", tail)
    return data


def check_keys(data: dict, required: Iterable[str] | Mapping[str, type | tuple], where: str, tail: str = "") -> None:
    """Raise one line unless ``data`` has every ``required`` key (of the given type, for a mapping)."""
    types = required if isinstance(required, Mapping) else dict.fromkeys(required)
    missing = [k for k in types if k not in data]
    if missing:
        raise RunFolderError(f"{where} lacks {', '.join(map(repr, missing))}: incomplete{tail}")
    for k, t in types.items():
        if t is None:
            continue
        v = data[k]
        ok = isinstance(v, t) and not (isinstance(v, bool) and bool not in (t if isinstance(t, tuple) else (t,)))
        if not ok:
            want = " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))
            raise RunFolderError(f"{where}: {k!r} is {json.dumps(v)[:40]}, not {_a(want)}{tail}")


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


_CHUNK_KEYS = {"chunk": int, "of": int, "rows": list, "identity": dict}
_IDENTITY_KEYS = {"model": dict, "dataset": dict, "layers": list, "config": dict}


def read_chunk_info(folder: str | os.PathLike) -> dict:
    """``FOLDER/chunk.json`` checked to be a whole chunk record, or one line saying how to remake it.

    Checks what the merge relies on: ``chunk`` and ``of`` (0 <= chunk < of), ``rows`` (two row
    numbers), and an ``identity`` with ``model``, ``dataset`` (with its ``path``, unless it is a
    generator's latent samples), ``layers`` and ``config``.
    """
    folder = Path(folder)
    fix = (f"redo this chunk's pass 1: `netdissect dissect ... --chunk I/N --out {folder} --resume` "
           f"after removing {folder / CHUNK_FILE}")
    info = read_json(folder / CHUNK_FILE, _CHUNK_KEYS, "chunk file", fix)
    where = f"{folder / CHUNK_FILE}: chunk file"
    if not 0 <= info["chunk"] < info["of"]:
        raise RunFolderError(f"{where} says chunk {info['chunk']} of {info['of']}: not a valid chunk; {fix}")
    rows = info["rows"]
    if len(rows) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows) or rows[0] > rows[1]:
        raise RunFolderError(f"{where}: 'rows' is {json.dumps(rows)[:40]}, not [first, end]; {fix}")
    check_keys(info["identity"], _IDENTITY_KEYS, f"{where}: its identity", f"; {fix}")
    if info["identity"]["dataset"].get("kind") != "latent":  # (a generator's latent samples have no path)
        check_keys(info["identity"]["dataset"], {"path": str}, f"{where}: its dataset identity", f"; {fix}")
    return info
