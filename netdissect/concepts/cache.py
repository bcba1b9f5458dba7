"""The on-disk label cache: a segmenter's label planes of each image, computed once.

    >>> cache = LabelCache(default_cache_dir(), {"segmenter": {...}, "seg_size": [56, 56]})  # doctest: +SKIP
    >>> cache.put(stamp, planes); cache.flush(); cache.get(stamp)                          # doctest: +SKIP

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
dictionary lookup and a slice of a memory-mapped pack: a second run reads its
labels without opening a file per image.  ``identity.json`` beside
``packs/`` says what the folder holds.

A generator's labels (:class:`RowLabelCache`, used by
:class:`netdissect.concepts.generated.GeneratedLabels`) are rows of one
latent draw, not files: under the same ``<root>/<key>/`` folder (keyed by the
generator's identity and the segmenter and sizes as above), a folder
``rows-<hash of the draw>/`` (``identity.json`` beside it names the draw: seed
and latent size) holds one ``.npy`` per run of consecutive rows,
``<start>-<stop>.npy`` with planes (stop - start, P, sh, sw), written
atomically when pass 1 checkpoints or ends (a killed run loses only the rows
after its last checkpoint, which it computes again).  A run looks a row up in
the files present (any file whose range holds it); a file that cannot be read
or has the wrong shape counts as absent.

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
    """Label planes per image, keyed by the image's stamp, under ``root`` for one ``identity``
    (see the module): ``put`` buffers, ``flush`` writes the buffered planes as one pack.

    >>> cache = LabelCache(root, identity); cache.put(stamp, planes); cache.flush()   # doctest: +SKIP
    >>> cache.has(stamp), cache.get(stamp)                                          # doctest: +SKIP
    """

    FLUSH_ROWS = 4096  # images held in memory at most before they are written
    LAYOUT = 2  # 1: one .npy per image; 2: packs (a different key: old folders are not read)

    def __init__(self, root, identity: dict):
        self.root = Path(root)
        self.identity = identity
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
        self._index: dict[bytes, tuple[int, int]] = {}  # stamp digest -> (pack number, row)
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
        self._seen.add(name)
        n = len(self._arrays)
        self._arrays.append(planes)
        for row, k in enumerate(keys):
            self._index[k.tobytes()] = (n, row)

    def _where(self, stamp: str, force: bool):
        d = self.digest(stamp)
        hit = self._index.get(d)
        if hit is None and d not in self._pending:
            self._scan(force)
            hit = self._index.get(d)
        return d, hit

    def has(self, stamp: str) -> bool:
        d, hit = self._where(stamp, False)
        return hit is not None or d in self._pending

    def get(self, stamp: str) -> np.ndarray | None:
        """The planes (P, sh, sw) stored for ``stamp``, or None (none, or an unreadable pack)."""
        d = self.digest(stamp)
        if d in self._pending:
            return self._pending[d]
        d, hit = self._where(stamp, True)
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
        return {"root": self.root, "identity": self.identity, "key": self.key, "dir": self.dir,
                "packs": self.packs}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._reset()

    @staticmethod
    def _atomic(path: Path, data: bytes) -> None:
        _atomic(path, data)


class RowLabelCache:
    """Label planes of the rows of one draw (a generator's latent samples), stored as runs of
    consecutive rows (see the module): ``put`` buffers rows in memory, ``flush`` writes them.

    >>> cache = RowLabelCache(LabelCache(root, identity), "latent:...:seed=1:dim=128", (32, 32))  # doctest: +SKIP
    >>> cache.put(0, planes0); cache.flush(); cache.get(0)                                         # doctest: +SKIP
    """

    FLUSH_ROWS = 4096  # rows held in memory at most before they are written

    def __init__(self, folder: LabelCache, draw: str, seg_size):
        self.folder, self.draw, self.seg_size = folder, draw, tuple(int(v) for v in seg_size)
        h = hashlib.sha256(draw.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        self.dir = folder.dir / f"rows-{h}"
        self.key = folder.key
        try:
            self.dir.mkdir(exist_ok=True)
            ident = self.dir / "identity.json"
            if not ident.exists():
                _atomic(ident, json.dumps({"draw": draw}, indent=2).encode())
        except OSError as exc:
            raise NetDissectError(f"label cache {folder.root}: cannot write there ({exc}); choose another "
                                  "folder with --label-cache DIR") from None
        self._pending: dict[int, np.ndarray] = {}
        self._last: tuple | None = None  # (start, stop, planes) of the file read last
        self._scan()

    def _scan(self) -> None:
        """The files now in the folder that hold what their names say, as (start, stop, planes
        memory-mapped), sorted by start; one that cannot be read or has another shape is left out."""
        runs = []
        for p in self.dir.glob("*.npy"):
            try:
                a, b = (int(v) for v in p.stem.split("-"))
            except ValueError:
                continue
            if 0 <= a < b:
                arr = self._map(p, b - a)
                if arr is not None:
                    runs.append((a, b, arr))
        self._runs = sorted(runs, key=lambda r: (r[0], -r[1]))

    def _map(self, path: Path, rows: int):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if arr.ndim != 4 or arr.shape[0] != rows or tuple(arr.shape[2:]) != self.seg_size:
            return None
        return arr

    def _find(self, i: int):
        for run in self._runs:  # few files: one per run of rows a run wrote
            if run[0] <= i < run[1]:
                return run
            if run[0] > i:
                break
        return None

    def has(self, i: int) -> bool:
        return i in self._pending or self._find(i) is not None

    def get(self, i: int) -> np.ndarray | None:
        """The planes (P, sh, sw) of row ``i``, or None (not written, or no readable file holds it)."""
        if i in self._pending:
            return self._pending[i]
        run = self._last
        if run is None or not run[0] <= i < run[1]:
            run = self._find(i)
            if run is None:
                self._scan()  # written since (by another process sharing the cache)?
                run = self._find(i)
                if run is None:
                    return None
            self._last = run
        try:
            return np.array(run[2][i - run[0]])
        except (OSError, ValueError):
            return None

    def put(self, i: int, planes: np.ndarray) -> None:
        self._pending[int(i)] = np.ascontiguousarray(planes)
        if len(self._pending) >= self.FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows, one file per run of consecutive rows."""
        rows = sorted(self._pending)
        s = 0
        while s < len(rows):
            e = s + 1
            while e < len(rows) and rows[e] == rows[e - 1] + 1:
                e += 1
            a, b = rows[s], rows[e - 1] + 1
            block = np.stack([self._pending[i] for i in rows[s:e]])
            path = self.dir / f"{a:09d}-{b:09d}.npy"
            buf = io.BytesIO()
            np.save(buf, block)
            _atomic(path, buf.getvalue())
            self._runs = sorted([*self._runs, (a, b, np.load(path, mmap_mode="r"))], key=lambda r: (r[0], -r[1]))
            s = e
        self._pending.clear()


def _atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
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
