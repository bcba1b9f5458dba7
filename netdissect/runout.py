"""The output folder of a PNAS command: claimed and locked before any work, written whole or not at all.

    >>> from netdissect.runout import claim_output
    >>> with claim_output("runs/ablate", "ablate", "roles.json",
    ...                   inputs=[("--train", "data/train")]) as o:   # doctest: +SKIP
    ...     write_json(o.stage / "roles.json", summary)                   # every result file into o.stage
    ...     o.commit()                                                    # moved into runs/ablate, roles.json last

``ablate``, ``adversarial``, ``gan remove|insert`` and ``experiment rotation|probe|training`` go
through :func:`claim_output`, as ``dissect`` and ``merge`` go through :func:`netdissect.runfolder.check_out`
and :class:`~netdissect.runfolder.RunLock`:

* ``--out`` is checked first (``''``, a file, read-only: :func:`~netdissect.runfolder.check_out`)
  and locked for the whole job (a second job on the folder fails at once).
* ``--out`` may not be, lie inside, or hold one of the command's inputs (``--train``, ``--val``,
  ``--dissection``, ``--run``, ...): the results would be written among the inputs' files.
* An existing ``--out`` must be empty or a run of the same command (its record
  ``.netdissect-run.json``, or the command's finished result file); any other folder (a dataset, a
  dissection, the demo's story page) is refused, never overwritten.
* Results are written into ``OUT/.partial`` and moved into place only when every file is there:
  the old result file (``roles.json``, ``removal.json``, ...) is removed first, the new one moved
  in last, so a job that fails (a full disk, Ctrl-C) leaves the previous run whole, and one killed
  while moving leaves a folder without the result file, which every reader refuses as unfinished.

This module imports neither torch nor numpy.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from netdissect.runfolder import RunFolderError, RunLock, check_out

MANIFEST = ".netdissect-run.json"
STAGE = ".partial"
_IGNORED = {".lock", MANIFEST, STAGE}

# result files of each command, to name what an --out already holds
_KNOWN = {"summary.json": "a `netdissect dissect` run", "roles.json": "a `netdissect ablate` run",
          "adversarial.json": "a `netdissect adversarial` run", "removal.json": "a `netdissect gan remove` run",
          "insertion.json": "a `netdissect gan insert` run", "index.csv": "a dataset (index.csv)",
          "rotation.json": "a `netdissect experiment rotation` run", "probe.json": "a `netdissect experiment probe` "
          "run", "training.json": "a `netdissect experiment training` run", "story": "the demo's story"}


def _real(p) -> str:
    return os.path.realpath(os.fspath(p))


def _inside(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_apart(out, inputs: Iterable[tuple[str, object]], flag: str = "--out") -> None:
    """Refuse an ``out`` that is, lies inside or holds one of ``inputs`` (``(flag, path)`` pairs; None
    skipped), compared on real paths."""
    ro = _real(out)
    for name, path in inputs:
        if path is None or not str(path).strip():
            continue
        ri = _real(path)
        if _inside(ro, ri):
            where = "is" if ro == ri else "lies inside"
            raise RunFolderError(f"{flag} {out} {where} {name} {path}: the results would be written among its "
                                 f"files; choose an {flag} outside it")
        if _inside(ri, ro):
            raise RunFolderError(f"{name} {path} lies inside {flag} {out}: the results would be mixed with it; "
                                 f"choose an {flag} that holds none of the inputs")


class OutputFolder:
    """A claimed ``--out`` (see the module's text); use :func:`claim_output`."""

    def __init__(self, out, command: str, marker: str, *, inputs=(), flag: str = "--out", fmt: str | None = None):
        self.command, self.marker, self.flag, self.fmt = command, marker, flag, fmt
        self.inputs = list(inputs)
        self.raw = out
        self.path: Path | None = None
        self._lock: RunLock | None = None
        self.committed = False

    @property
    def stage(self) -> Path:
        return self.path / STAGE

    def __enter__(self) -> OutputFolder:
        if str(self.raw).strip():
            check_apart(self.raw, self.inputs, self.flag)
        self.path = check_out(self.raw, flag=self.flag)
        self._lock = RunLock(self.path, flag=self.flag).acquire()
        try:
            self._check_contents()
            from netdissect.atomic import write_json

            record = self._record() or {}
            write_json(self.path / MANIFEST, {"command": self.command, "files": record.get("files", [])})
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage.mkdir()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _record(self) -> dict | None:
        try:
            data = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _check_contents(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.path) if n not in _IGNORED and not n.startswith(".netdissect-probe-"))
        except OSError as exc:
            raise RunFolderError(f"{self.path}: cannot list the folder ({exc.strerror}); choose another {self.flag}") from None
        if not names:
            return
        rec = self._record()
        if rec is not None:
            if rec.get("command") == self.command:
                return
            raise RunFolderError(f"{self.flag} {self.raw} holds a `netdissect {rec.get('command')}` run, not a "
                                 f"`netdissect {self.command}` one: choose another {self.flag} (it is not overwritten)")
        if self.marker in names:  # a run written before the record existed
            if self.fmt is None:
                return
            try:
                if json.loads((self.path / self.marker).read_text()).get("format") == self.fmt:
                    return
            except (OSError, ValueError, AttributeError):
                pass
        known = [_KNOWN[n] for n in names if n in _KNOWN]
        what = known[0] if known else "other files"
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise RunFolderError(f"{self.flag} {self.raw} is not empty and not a `netdissect {self.command}` run: it holds "
                             f"{what} ({shown}); choose a new or empty {self.flag} (nothing there is overwritten)")

    def commit(self) -> None:
        """Move every file of :attr:`stage` into the folder, the marker (``roles.json``, ...) last."""
        stage = self.stage
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
        if self.marker not in files:
            raise RunFolderError(f"{stage}: the job wrote no {self.marker}; nothing was changed in {self.path}")
        old = (self._record() or {}).get("files", [])
        try:  # from here until the marker is back, the folder reads as unfinished
            (self.path / self.marker).unlink()
        except FileNotFoundError:
            pass
        for name in old:
            if name not in files and isinstance(name, str) and not os.path.isabs(name) and ".." not in Path(name).parts:
                try:
                    (self.path / name).unlink()
                except OSError:
                    pass
        for name in files:
            if name == self.marker:
                continue
            dest = self.path / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, dest)
        from netdissect.atomic import write_json

        write_json(self.path / MANIFEST, {"command": self.command, "files": files})
        os.replace(stage / self.marker, self.path / self.marker)
        self.committed = True
        shutil.rmtree(stage, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        try:
            shutil.rmtree(self.stage, ignore_errors=True)
        finally:
            self._lock.release()


def claim_output(out, command: str, marker: str, *, inputs=(), flag: str = "--out",
                 fmt: str | None = None) -> OutputFolder:
    """A context manager claiming ``out`` for ``netdissect COMMAND``; ``marker`` is the result file written
    last (``roles.json``), ``fmt`` its ``"format"`` value (to accept runs written before the record),
    ``inputs`` the ``(flag, path)`` pairs ``out`` must stay apart from."""
    return OutputFolder(out, command, marker, inputs=inputs, flag=flag, fmt=fmt)
