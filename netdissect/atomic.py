"""Atomic file writes: a reader sees the old file or the new one, never half of one.

    >>> from netdissect.atomic import write_text
    >>> write_text(Path("report/index.html"), "<html>...</html>")
    PosixPath('report/index.html')
    >>> Path("report/index.html").read_text(), sorted(p.name for p in Path("report").iterdir())
    ('<html>...</html>', ['index.html'])

Each helper writes to a temporary file beside the target and renames it into
place with :func:`os.replace`, which is atomic on POSIX and Windows.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def write_with(path: Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` to fill a temporary file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None and exc.errno:  # (a full disk names no file)
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return path


def write_bytes(path: Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically and, with ``durable``, flushed to disk before the rename
    (a cache that can be recomputed may skip the fsync)."""
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    return write_with(path, _w)


def savez(path: Path, **arrays) -> Path:
    """``np.savez`` to ``path`` atomically (plain arrays, no pickles)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def save_image(path: Path, image, **params) -> Path:
    """Save a PIL image atomically (the format follows ``path``'s suffix)."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[Path(path).suffix.lower()]
    return write_with(path, lambda tmp: image.save(tmp, format=fmt, **params))


def save_figure(path: Path, fig, **params) -> Path:
    """Save a matplotlib figure atomically (PNG or SVG, from ``path``'s suffix)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    meta = {"Date": None} if fmt == "svg" else {}
    return write_with(path, lambda tmp: fig.savefig(tmp, format=fmt, metadata=meta, **params))


def save_figures(stem, fig, exts=("png", "svg"), **params) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.svg`` (each atomically) and close it."""
    import matplotlib.pyplot as plt

    paths = [save_figure(Path(stem).with_suffix(f".{ext}"), fig, **params) for ext in exts]
    plt.close(fig)
    return paths


def write_json(path: Path, obj, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically (a reader never sees half a file)."""
    import json

    return write_text(path, json.dumps(obj, indent=indent) + "\n")
