"""A cheap fingerprint of a list of files: did any of them change since a run read them?

    >>> from netdissect.data import Broden
    >>> from netdissect.data.digest import files_digest
    >>> ds = Broden(world)
    >>> d = files_digest(ds.image_dir, [r.image for r in ds.rows])
    >>> len(d), d == files_digest(ds.image_dir, [r.image for r in ds.rows])
    (64, True)
    >>> d == files_digest(ds.image_dir, [r.image for r in reversed(ds.rows)])   # the order counts
    False

Only ``os.stat`` is used (no file is read), so fingerprinting the 63,000
images of Broden takes well under a second.  The digest covers, for each
path in order, the path itself, the file's size and its ``mtime_ns``: an
image replaced by another file (even of the same size), two images swapped
(a rename keeps each file's mtime but moves it to the other name), a file
deleted, or the list reordered all give another digest.  A file that is
touched without being changed gives another digest too (a false alarm,
never a miss that matters: a replaced file always gets a new mtime unless
its writer forges it).

The engine records ``summary["dataset"]["files_digest"] =
files_digest(ds.image_dir, [r.image for r in ds.rows])``; the report
recomputes it over ``topk.npz``'s ``image_paths`` before drawing any image
(:func:`changed_files` then names what changed).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["files_digest", "changed_files"]


def _stat_key(path: str) -> bytes:
    try:
        st = os.stat(path)
    except OSError:  # missing (or unreadable): a digest that differs from any present file's
        return b"missing"
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def files_digest(root: str | os.PathLike, relpaths) -> str:
    """Hex sha256 over each path (relative to ``root``), its size and its ``mtime_ns``, in order."""
    base = os.fspath(root)
    h = hashlib.sha256()
    h.update(b"netdissect-files-digest-v1\0")
    for rel in relpaths:
        rel = os.fspath(rel)
        h.update(rel.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update(_stat_key(os.path.join(base, rel)))
        h.update(b"\n")
    return h.hexdigest()


def changed_files(root: str | os.PathLike, relpaths, since_ns: int, limit: int = 3) -> list[str]:
    """Up to ``limit`` of ``relpaths`` that are missing or changed (mtime or ctime) after ``since_ns``.

    Used to make a digest mismatch concrete ("img003.jpg changed after the run").
    """
    out = []
    for rel in relpaths:
        try:
            st = os.stat(Path(root) / rel)
        except OSError:
            out.append(f"{rel} (missing)")
        else:
            if max(st.st_mtime_ns, st.st_ctime_ns) > since_ns:  # ctime: renamed/swapped too
                out.append(f"{rel} (changed after the run)")
        if len(out) >= limit:
            break
    return out
