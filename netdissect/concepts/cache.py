"""The on-disk label cache: a segmenter's label planes of each image, computed once.

    >>> import numpy as np
    >>> identity = {"segmenter": {"kind": "color"}, "seg_size": [2, 2]}
    >>> cache = LabelCache("labels", identity)             # e.g. LabelCache(default_cache_dir(), ...)
    >>> stamp, planes = "photos/a.jpg:1234:1700000000", np.arange(8, dtype=np.uint16).reshape(2, 2, 2)
    >>> cache.put(stamp, planes); cache.flush(); cache.get(stamp).tolist()
    [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    >>> LabelCache("labels", identity).has(stamp), LabelCache("labels", {**identity, "seg_size": [4, 4]}).has(stamp)
    (True, False)

A cache folder ``<root>/<key>/`` holds the labels of one segmenter at one
setting: ``key`` is a hash of the identity (the segmenter's identity with its
weights hash and options, the label size, the probe's image size and crop,
and the cache layout).  An image's labels (uint8 when the concepts fit, else
uint16) are found by the digest of its stamp: the image file's resolved
path, size, modification time and inode, so a changed image gets a new entry
and a stale one is never read.  They are stored in packs, not one file per
image: ``packs/<name>.npy`` holds the planes (n, P, sh, sw) of the n images
labelled between two flushes (pass 1 flushes at each checkpoint and at its
end), ``packs/<name>.keys.npy`` their stamps' digests (n, 16 bytes).  Each
file is written atomically (temporary file, then rename), the keys last, and
a pack counts only once both are there and agree, so processes sharing a
cache (torchrun ranks, several runs) never see half a pack.  Reading is one
binary search in a sorted array of the digests (24 bytes an image in memory:
the digest and where its row is) and a slice of a memory-mapped pack: a second
run reads its labels without opening a file per image.  ``identity.json`` beside
``packs/`` says what the folder holds.

A generator's labels (:class:`netdissect.concepts.generated.GeneratedLabels`)
use the same packs: the folder is keyed by the generator's identity with the
segmenter and sizes, and a row's stamp is its latent draw (seed, z size) and
row number, so a second run of the same generator and seed segments nothing
it has segmented before, and a run of N samples writes a pack per flush, not
N files.

The root is ``--label-cache DIR``, else ``$NETDISSECT_CACHE/labels``, else
the platform's user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache`` on
Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows) under
``netdissect/labels``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from netdissect.atomic import write_bytes
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


DIGEST = np.dtype("V16")  # a stamp's digest (the first 16 bytes of its sha256), ordered as bytes


def label_dtype(concepts: int):
    """The compact dtype of label numbers 0..concepts."""
    return np.uint8 if concepts < 256 else np.uint16 if concepts < 65536 else np.int32


class LabelCache:
    """Label planes per image, keyed by the image's stamp, under ``root`` for one ``identity``
    (see the module): ``put`` buffers, ``flush`` writes the buffered planes as one pack.

    >>> import numpy as np
    >>> cache = LabelCache("labels", {"segmenter": {"kind": "color"}})
    >>> cache.put("a.jpg:1:2", np.zeros((1, 2, 2), np.uint16)); cache.flush()
    >>> cache.has("a.jpg:1:2"), cache.get("a.jpg:1:2").shape, cache.get("b.jpg:1:2")
    (True, (1, 2, 2), None)
    """

    FLUSH_ROWS = 4096  # images held in memory at most before they are written
    LAYOUT = 2  # 1: one .npy per image; 2: packs (a different key: old folders are not read)

    def __init__(self, root, identity: dict, plane_size=None):
        self.root = Path(root)
        self.identity = identity
        self.plane_size = None if plane_size is None else tuple(int(v) for v in plane_size)
        keyed = {**identity, "layout": self.LAYOUT}
        self.key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = self.root / self.key
        self.packs = self.dir / "packs"
        try:
            self.packs.mkdir(parents=True, exist_ok=True)
            ident = self.dir / "identity.json"
            if not ident.exists():
                self._atomic(ident, json.dumps(keyed, indent=2, sort_keys=True).encode())
        except OSError as exc:
            raise NetDissectError(f"label cache {self.root}: cannot write there ({exc}); choose another "
                                  "folder with --label-cache DIR") from None
        self._reset()

    def _reset(self) -> None:
        self._pending: dict[bytes, np.ndarray] = {}
        # the index of the packs read: digests sorted (16 bytes each), with each one's pack number and row
        # (a dict of bytes -> tuple took ~175 bytes an image, measured with tracemalloc; this takes 24)
        self._keys = np.empty(0, DIGEST)
        self._pack = np.empty(0, np.int32)
        self._row = np.empty(0, np.int32)
        self._arrays: list = []  # the packs' planes, memory-mapped
        self._seen: set[str] = set()
        self._mtime: int | None = None

    @staticmethod
    def digest(stamp: str) -> bytes:
        return hashlib.sha256(stamp.encode("utf-8", "surrogateescape")).digest()[:16]

    def _scan(self, force: bool = False) -> None:
        """Index the packs written since the last scan (by another process): by default only when
        the folder's modification time moved. A pack whose files cannot be read or disagree is
        left out."""
        try:
            mtime = os.stat(self.packs).st_mtime_ns
        except OSError:
            return
        if mtime == self._mtime and not force:
            return
        self._mtime = mtime
        for keys_path in sorted(self.packs.glob("*.keys.npy")):
            name = keys_path.name[:-len(".keys.npy")]
            if name not in self._seen:
                self._add(name)

    def _add(self, name: str) -> None:
        try:
            keys = np.load(self.packs / f"{name}.keys.npy", allow_pickle=False)
            planes = np.load(self.packs / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return
        if keys.ndim != 2 or keys.shape[1] != 16 or planes.ndim != 4 or len(planes) != len(keys):
            return
        if self.plane_size is not None and tuple(planes.shape[2:]) != self.plane_size:
            return  # planes of another label size (not this folder's): as if absent
        self._seen.add(name)
        self._arrays.append(planes)
        self._insert(np.ascontiguousarray(keys, np.uint8).view(DIGEST)[:, 0], len(self._arrays) - 1)

    def _insert(self, digests: np.ndarray, pack: int) -> None:
        """Index pack ``pack``'s ``digests`` (its rows in order): a digest already indexed now points
        here (a later pack of the same rows wins, as it would in a dict); within the pack, its last row."""
        order = np.argsort(digests, kind="stable")
        new, rows = digests[order], order.astype(np.int32)
        last = np.ones(len(new), bool)
        last[:-1] = new[1:] != new[:-1]
        new, rows = new[last], rows[last]
        at = np.searchsorted(self._keys, new)
        hit = at < len(self._keys)
        hit[hit] = self._keys[at[hit]] == new[hit]
        self._pack[at[hit]] = pack
        self._row[at[hit]] = rows[hit]
        miss = ~hit
        self._keys = np.insert(self._keys, at[miss], new[miss])
        self._pack = np.insert(self._pack, at[miss], np.int32(pack))
        self._row = np.insert(self._row, at[miss], rows[miss])

    def _lookup(self, d: bytes):
        if not len(self._keys):
            return None
        i = int(self._keys.searchsorted(np.void(d)))  # (the method: a fifth of np.searchsorted's call)
        if i < len(self._keys) and self._keys[i].tobytes() == d:
            return int(self._pack[i]), int(self._row[i])
        return None

    def _where(self, d: bytes, force: bool):
        """(pack number, row) of digest ``d``, scanning for new packs on a miss; None if absent."""
        hit = self._lookup(d)
        if hit is None:
            self._scan(force)
            hit = self._lookup(d)
        return hit

    def has(self, stamp: str) -> bool:
        d = self.digest(stamp)
        return d in self._pending or self._where(d, False) is not None

    def get(self, stamp: str) -> np.ndarray | None:
        """The planes (P, sh, sw) stored for ``stamp``, or None (none, or an unreadable pack)."""
        d = self.digest(stamp)
        if d in self._pending:
            return self._pending[d]
        hit = self._where(d, True)
        if hit is None:
            return None
        try:
            return np.array(self._arrays[hit[0]][hit[1]])
        except (OSError, ValueError):
            return None

    def put(self, stamp: str, planes: np.ndarray) -> None:
        self._pending[self.digest(stamp)] = np.ascontiguousarray(planes)
        if len(self._pending) >= self.FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered planes as one pack: ``packs/<name>.npy`` (n, P, sh, sw), then
        ``packs/<name>.keys.npy`` (n, 16 bytes of each stamp's digest), each atomically; a reader
        takes a pack only once its keys are there. Planes of other shapes go to packs of their own."""
        groups: dict[tuple, list[bytes]] = {}
        for d, planes in self._pending.items():
            groups.setdefault((planes.shape, planes.dtype.str), []).append(d)
        for digests in groups.values():
            keys = np.frombuffer(b"".join(digests), np.uint8).reshape(len(digests), 16)
            name = hashlib.sha256(keys.tobytes()).hexdigest()[:24]
            buf = io.BytesIO()
            np.save(buf, np.stack([self._pending[d] for d in digests]))
            self._atomic(self.packs / f"{name}.npy", buf.getvalue())
            buf = io.BytesIO()
            np.save(buf, keys)
            self._atomic(self.packs / f"{name}.keys.npy", buf.getvalue())
            self._seen.discard(name)  # the same rows written again: the same name, read afresh
            self._add(name)
        self._pending.clear()

    def __getstate__(self):  # a loader worker started by spawn opens the packs itself
        if self._pending:
            raise NetDissectError("labels not yet written were about to be copied to a loader worker")
        return {"root": self.root, "identity": self.identity, "plane_size": self.plane_size, "key": self.key,
                "dir": self.dir, "packs": self.packs}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._reset()

    @staticmethod
    def _atomic(path: Path, data: bytes) -> None:
        # (no fsync: a pack lost in a crash is only segmented again)
        write_bytes(path, data, durable=False)

