"""The on-disk label cache: a segmenter's label planes of each image, computed once.

    >>> cache = LabelCache(default_cache_dir(), {"segmenter": {...}, "seg_size": [56, 56]})  # doctest: +SKIP
    >>> cache.put(stamp, planes); cache.get(stamp)                                         # doctest: +SKIP

A cache folder ``<root>/<key>/`` holds the labels of one segmenter at one
setting: ``key`` is a hash of the identity (the segmenter's identity with its
weights hash and options, the label size, the probe's image size and crop).
Inside, one ``.npy`` per image (uint8 when the concepts fit, else uint16),
named by a hash of the image file's resolved path, size and modification
time: a changed image gets a new entry and a stale one is never read.  Each
entry is written atomically (temporary file, then rename), so processes
sharing a cache (torchrun ranks, several runs) never see half a file.
``identity.json`` beside the entries says what the folder holds.

The root is ``--label-cache DIR``, else ``$NETDISSECT_CACHE/labels``, else
the platform's user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache`` on
Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows) under
``netdissect/labels``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from netdissect.errors import NetDissectError


def default_cache_dir() -> Path:
    if os.environ.get("NETDISSECT_CACHE"):
        return Path(os.environ["NETDISSECT_CACHE"]) / "labels"
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "netdissect" / "labels"


def label_dtype(concepts: int):
    """The compact dtype of label numbers 0..concepts."""
    return np.uint8 if concepts < 256 else np.uint16 if concepts < 65536 else np.int32


class LabelCache:
    """Label planes per image file under ``root``, for one ``identity`` (see the module)."""

    def __init__(self, root, identity: dict):
        self.root = Path(root)
        self.identity = identity
        self.key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = self.root / self.key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            ident = self.dir / "identity.json"
            if not ident.exists():
                self._atomic(ident, json.dumps(identity, indent=2, sort_keys=True).encode())
        except OSError as exc:
            raise NetDissectError(f"label cache {self.root}: cannot write there ({exc}); choose another "
                                  "folder with --label-cache DIR") from None
        self.hits = self.misses = 0

    def path(self, stamp: str) -> Path:
        h = hashlib.sha256(stamp.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self.dir / h[:2] / f"{h}.npy"

    def has(self, stamp: str) -> bool:
        return self.path(stamp).is_file()

    def get(self, stamp: str) -> np.ndarray | None:
        """The planes (P, sh, sw) stored for ``stamp``, or None (none, or an unreadable entry)."""
        try:
            return np.load(self.path(stamp), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put(self, stamp: str, planes: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(planes))
        path = self.path(stamp)
        path.parent.mkdir(exist_ok=True)
        self._atomic(path, buf.getvalue())

    @staticmethod
    def _atomic(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
