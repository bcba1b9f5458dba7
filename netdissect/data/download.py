"""Resumable, verified downloads of the Broden datasets and of published weights.

    >>> from netdissect.data.download import fetch_dataset, fetch_weights, download
    >>> root = fetch_dataset("broden1_224", "data")              # doctest: +SKIP
    >>> root                                                      # doctest: +SKIP
    PosixPath('data/broden1_224')
    >>> fetch_dataset("broden1_224", "data", url="https://mirror.example/broden1_224.zip")  # doctest: +SKIP
    >>> fetch_dataset("/downloads/broden1_224.zip", "data")       # a local zip  # doctest: +SKIP
    >>> fetch_weights("vgg16_places365", "weights")               # doctest: +SKIP
    PosixPath('weights/vgg16_places365-0bafbc55.pth')

A download streams into ``DEST.part``; when interrupted, the next call
resumes it with an HTTP ``Range`` request (a server that ignores ``Range``
gets a clean restart).  The file becomes ``DEST`` (an atomic rename) only
after its size and SHA-256 (or SHA-256 prefix) verify.  The
``netdissect.csail.mit.edu`` links are reported dead at times: every entry
point takes a mirror ``url`` (a URL or a local file), and
:func:`fetch_dataset` also takes a local ``.zip`` or an extracted folder.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from netdissect.errors import DatasetError, DownloadError

MIRROR_HINT = (
    "the netdissect.csail.mit.edu links are reported dead at times: pass a mirror with "
    "--url MIRROR (url=... in Python), or a local copy of the file"
)
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")


@dataclass(frozen=True)
class Asset:
    """A known downloadable file: a dataset zip or a weights file."""

    name: str
    kind: str                         # "dataset" or "weights"
    url: str
    size: int | None = None           # bytes, when known
    sha256: str | None = None         # full hex digest, when known
    sha256_prefix: str | None = None  # e.g. the hex in "vgg16_places365-0bafbc55.pth"
    note: str = ""

    @property
    def filename(self) -> str:
        return PurePosixPath(_parse(self.url).path).name


def _pnas(name: str, filename: str, note: str) -> Asset:
    return Asset(name, "weights", f"https://dissect.csail.mit.edu/models/{filename}",
                 sha256_prefix=_HASH_IN_NAME.search(filename).group(1), note=note)


def _places(arch: str) -> Asset:
    return Asset(f"{arch}_places365", "weights",
                 f"http://places2.csail.mit.edu/models_places365/{arch}_places365.pth.tar",
                 note="Places365 CNN by the Places authors (checkpoint dict, keys prefixed 'module.')")


_PNAS_NOTE = "Places365 CNN converted by the PNAS authors"
ASSETS: dict[str, Asset] = {a.name: a for a in [
    *(Asset(f"broden1_{s}", "dataset", f"http://netdissect.csail.mit.edu/data/broden1_{s}.zip",
            note=f"Broden 1, {s}x{s} images") for s in (224, 227, 384)),
    *(_places(arch) for arch in ("resnet18", "resnet50", "alexnet", "densenet161", "wideresnet18")),
    _pnas("vgg16_places365", "vgg16_places365-0bafbc55.pth", _PNAS_NOTE),
    _pnas("alexnet_places365_pnas", "alexnet_places365-92864cf6.pth", _PNAS_NOTE),
    _pnas("resnet152_places365", "resnet152_places365-f928166e5c.pth", _PNAS_NOTE),
    *(_pnas(f"proggan_{scene}", f"proggan_{scene}-{h}.pth", "Progressive GAN generator (LSUN)")
      for scene, h in [("churchoutdoor", "7e701dd5"), ("kitchen", "67f1e16c"),
                       ("bedroom", "d8a89ff1"), ("livingroom", "5ef336dd")]),
]}


# ---------------------------------------------------------------------- download
def download(url: str, dest_path: str | os.PathLike, *, sha256: str | None = None,
             sha256_prefix: str | None = None, size: int | None = None, progress: bool = True,
             chunk: int = 1 << 20, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest_path``, resuming a ``.part`` file and verifying the result.

        >>> download("https://dissect.csail.mit.edu/models/vgg16_places365-0bafbc55.pth",
        ...          "weights/vgg16_places365-0bafbc55.pth", sha256_prefix="0bafbc55")  # doctest: +SKIP

    ``url`` may also be a local file path (copied, then verified).  When
    ``dest_path`` already exists it is verified and returned without a
    download.  Raises :class:`DownloadError` (naming the URL) on a network
    error, an HTTP error, or a size / checksum mismatch; a mismatching
    ``.part`` file is deleted, an interrupted one is kept for the next call.
    """
    dest = Path(dest_path)
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        t = float("nan")
    if not (t > 0 and t != float("inf")):
        raise DownloadError(f"timeout (--timeout) must be a number of seconds > 0, got {timeout!r}")
    sha256 = _check_hex(sha256, "sha256")
    sha256_prefix = _check_hex(sha256_prefix, "sha256_prefix")
    if dest.exists():
        what = _html_page("", _head(dest))
        if what:
            raise DownloadError(f"{dest} (from {url}) holds {what}, not the file; delete it and download "
                                f"again from a URL that serves the file; {MIRROR_HINT}")
        _verify(dest, url, size, sha256, sha256_prefix, hasher=None, remove=False)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if os.path.isfile(url) or url.startswith("file:"):
        _copy_local(url, part)
        what = _html_page("", _head(part))
        if what:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: holds {what}, not the file; nothing was saved")
        hasher, total = None, None
    else:
        hasher, total = _fetch(url, part, size=size, progress=progress, chunk=chunk,
                               timeout=timeout, label=dest.name)
    _verify(part, url, size if size is not None else total, sha256, sha256_prefix, hasher, remove=True)
    os.replace(part, dest)
    return dest


def _check_hex(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if what == "sha256" and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise DownloadError(f"sha256 must be 64 hexadecimal digits, got {value!r}")
    if not re.fullmatch(r"[0-9a-f]{1,64}", value):
        raise DownloadError(f"{what} must be hexadecimal digits (at most 64), got {value!r}")
    return value


_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _html_page(content_type: str | None, head: bytes, sniff: bool = True) -> str | None:
    """What came back, when it is an HTML page (a login, error or 'moved' page) instead of a file.

    HTML is a body that starts like HTML (``<!DOCTYPE html``, ``<html``, ...; with ``sniff``), or
    one served as ``text/html`` that holds no NUL byte in its first block (a zip or a weights file
    always does, so a real file behind a mislabelled Content-Type still downloads)."""
    ct = (content_type or "").split(";")[0].strip().lower()
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    looks = sniff and text.startswith(_HTML_STARTS)
    if not looks and not (ct in ("text/html", "application/xhtml+xml") and b"\0" not in head):
        return None
    m = re.search(rb"<title[^>]*>([^<]{1,200})", head, re.IGNORECASE)
    title = f", title {' '.join(m.group(1).decode('utf-8', 'replace').split())!r}" if m else ""
    return f"an HTML page (Content-Type {ct or 'not given'}{title})"


def _copy_local(source: str, part: Path) -> None:
    path = urllib.request.url2pathname(_parse(source).path) if source.startswith("file:") else source
    try:
        shutil.copyfile(path, part)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"cannot copy local file {path}: {exc}") from None


def _fetch(url, part: Path, *, size, progress, chunk, timeout, label):
    """Stream ``url`` into ``part`` (resuming it); return (sha256 hasher of the file, total size or None)."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()   # longer than the file can be: not a prefix of it
        offset = 0
    if size is not None and offset == size and offset > 0:
        return None, size          # finished earlier, only the rename was missed
    try:
        resp, offset, total = _open(url, offset, timeout)
        if resp is None:           # 416: the .part already holds the whole file
            return None, total
        first = resp.read(chunk)
        what = _html_page(resp.headers.get("Content-Type"), first, sniff=not offset)
        if what:
            resp.close()
            kept = f"; {part} is kept for a resume" if offset else "; nothing was saved"
            raise DownloadError(f"{url}: the server answered with {what}, not the file (a login, error or "
                                f"moved page?){kept}; check the URL, or {MIRROR_HINT}")
        hasher = hashlib.sha256()
        mode = "ab" if offset else "wb"
        if offset:
            _hash_file(part, hasher)
        with resp, open(part, mode) as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, disable=not progress, leave=False,
        ) as bar:
            data = first
            while True:
                if not data:
                    break
                f.write(data)
                hasher.update(data)
                bar.update(len(data))
                data = resp.read(chunk)
        got = part.stat().st_size
        if total is not None and got < total:   # the connection closed early: keep the .part
            raise DownloadError(f"{url}: connection closed after {got} of {total} bytes; "
                                f"rerun to resume from {part}; {MIRROR_HINT}")
        return hasher, total
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; {MIRROR_HINT}") from None
    except ValueError as exc:  # urllib's word for a malformed URL ("Invalid IPv6 URL", "unknown url type")
        raise DownloadError(f"{url}: not a valid URL ({exc}); give an http(s):// URL, a local file or a "
                            "registry name (netdissect download --list)") from None
    except _NETWORK_ERRORS as exc:
        reason = getattr(exc, "reason", None) or exc
        kept = f"; rerun to resume from {part}" if part.exists() and part.stat().st_size else ""
        raise DownloadError(f"{url}: download failed ({reason}){kept}; {MIRROR_HINT}") from None
    except OSError as exc:
        raise DownloadError(f"{url}: cannot write {part}: {exc}") from None


def _open(url: str, offset: int, timeout: float):
    """Open ``url`` from byte ``offset``; return (response or None, actual offset, total size or None)."""
    headers = {"User-Agent": "netdissect", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # Range not satisfiable: complete if the server's length equals what we hold.
        m = re.search(r"/\s*(\d+)", exc.headers.get("Content-Range", "") or "")
        exc.close()
        if m and int(m.group(1)) == offset:
            return None, offset, offset
        return _open(url, 0, timeout)   # our .part is not a prefix of this file: start over
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    status = getattr(resp, "status", None) or 200
    if offset and status == 206:
        m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "") or "")
        if m and int(m.group(1)) == offset:
            total = int(m.group(2)) if m.group(2) != "*" else (offset + length if length is not None else None)
            return resp, offset, total
        resp.close()
        return _open(url, 0, timeout)   # a range we did not ask for: start over
    return resp, 0, length   # 200: the server ignored Range (or there was none); restart cleanly


def _hash_file(path: Path, hasher) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)


def _verify(path: Path, url: str, size, sha256, sha256_prefix, hasher, *, remove: bool) -> None:
    """Check size and digest of ``path``; on mismatch delete it (if ``remove``) and raise."""
    problems = []
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        problems.append(f"expected {size} bytes, got {got_size} bytes")
    elif sha256 or sha256_prefix:
        if hasher is None:
            hasher = hashlib.sha256()
            _hash_file(path, hasher)
        got = hasher.hexdigest()
        if sha256 and got != sha256:
            problems.append(f"expected sha256 {sha256}, got {got}")
        if sha256_prefix and not got.startswith(sha256_prefix):
            problems.append(f"expected sha256 starting {sha256_prefix}, got {got}")
    if not problems:
        return
    if remove:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{url}: download does not verify: {'; '.join(problems)} "
                            f"(deleted {path}); {MIRROR_HINT}")
    raise DownloadError(f"{path} (from {url}) exists but does not verify: {'; '.join(problems)}; "
                        f"delete it to download again")


# ---------------------------------------------------------------------- assets
def _parse(url: str):
    """``urlparse(url)``, a malformed URL (``http://[::1``) refused in one line."""
    try:
        return urllib.parse.urlparse(url)
    except ValueError as exc:
        raise DownloadError(f"{url}: not a valid URL ({exc}); give an http(s):// URL, a local file or a "
                            "registry name (netdissect download --list)") from None


def _is_url(s: str) -> bool:
    return _parse(s).scheme in ("http", "https", "ftp", "file")


def _url_name(url: str) -> str:
    return PurePosixPath(_parse(url).path).name


def fetch_weights(name_or_url: str, to_dir: str | os.PathLike, *, url: str | None = None,
                  sha256: str | None = None, size: int | None = None, progress: bool = True,
                  timeout: float = 60) -> Path:
    """Download a known weights file (or any URL) into ``to_dir``; return its path.

        >>> fetch_weights("resnet18_places365", "weights")          # doctest: +SKIP
        PosixPath('weights/resnet18_places365.pth.tar')

    ``url`` replaces the registry's URL (a mirror, or a local file) while the
    registry's checks still apply.  A hex hash in a file name such as
    ``vgg16_places365-0bafbc55.pth`` is verified as a SHA-256 prefix.
    """
    asset = ASSETS.get(name_or_url)
    if asset is None and not _is_url(name_or_url) and not os.path.isfile(name_or_url):
        raise DownloadError(f"unknown asset {name_or_url!r}; known: {', '.join(ASSETS)} "
                            "(or pass a URL)")
    source = url or (asset.url if asset else name_or_url)
    filename = asset.filename if asset else _url_name(source) or os.path.basename(source)
    m = _HASH_IN_NAME.search(filename)
    prefix = asset.sha256_prefix if asset else (m.group(1) if m else None)
    return download(source, Path(to_dir) / filename, sha256=sha256 or (asset and asset.sha256),
                    sha256_prefix=prefix, size=size if size is not None else (asset and asset.size),
                    progress=progress, timeout=timeout)


def fetch_dataset(name_or_url: str, to_dir: str | os.PathLike, *, url: str | None = None,
                  sha256: str | None = None, size: int | None = None, progress: bool = True,
                  timeout: float = 60, keep_zip: bool = False) -> Path:
    """Get a Broden-format dataset into ``to_dir``; return its root (the folder with index.csv).

        >>> fetch_dataset("broden1_224", "data")                         # doctest: +SKIP
        PosixPath('data/broden1_224')

    ``name_or_url`` is a registry name (``broden1_224``, ``broden1_227``,
    ``broden1_384``), a URL of a zip, a local ``.zip`` file, or an extracted
    dataset folder (returned as it is).  ``url`` replaces the registry's URL
    (a mirror URL or a local zip).  The zip downloads to ``to_dir/NAME.zip``
    (resumable, verified), is extracted into a temporary folder beside the
    target and renamed to ``to_dir/NAME`` when complete; a member that would
    land outside the target is rejected.  Nothing is done when
    ``to_dir/NAME/index.csv`` already exists.  A downloaded zip is deleted
    after extraction unless ``keep_zip``; a local zip is never deleted.
    """
    sha256 = _check_hex(sha256, "sha256")
    if os.path.isdir(name_or_url):
        return _dataset_root(Path(name_or_url), Path(name_or_url))
    asset = ASSETS.get(name_or_url)
    if asset is not None and asset.kind != "dataset":
        raise DownloadError(f"{name_or_url!r} is a weights file, not a dataset; use fetch_weights")
    local_zip = name_or_url if os.path.isfile(name_or_url) else None
    if asset is None and local_zip is None and not _is_url(name_or_url):
        known = ", ".join(n for n, a in ASSETS.items() if a.kind == "dataset")
        raise DownloadError(f"unknown dataset {name_or_url!r}; known: {known} "
                            "(or pass a URL, a local .zip, or an extracted folder)")
    source = url or (asset.url if asset else name_or_url)
    if url and os.path.isfile(url):
        local_zip = url
    name = asset.name if asset else Path(_url_name(name_or_url) or name_or_url).name
    name = name[:-4] if name.lower().endswith(".zip") else name
    to_dir = Path(to_dir)
    target = to_dir / name
    if (target / "index.csv").is_file():
        return target
    if target.exists():
        raise DatasetError(f"{target} exists but holds no index.csv; move it away to extract again")
    to_dir.mkdir(parents=True, exist_ok=True)
    if local_zip:
        zip_path = Path(local_zip)
        if sha256 or size is not None:
            _verify(zip_path, source, size, sha256, None, None, remove=False)
    else:
        zip_path = download(source, to_dir / f"{name}.zip",
                            sha256=sha256 or (asset and asset.sha256),
                            size=size if size is not None else (asset and asset.size),
                            progress=progress, timeout=timeout)
    extract_zip(zip_path, target, progress=progress)
    if not local_zip and not keep_zip:
        zip_path.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------------- extraction
def extract_zip(zip_path: str | os.PathLike, target: str | os.PathLike, *, progress: bool = True) -> Path:
    """Extract a dataset zip safely and atomically so that ``target/index.csv`` exists.

        >>> import zipfile
        >>> with zipfile.ZipFile("broden1_224.zip", "w") as z:       # a dataset inside one folder
        ...     z.writestr("broden1_224/index.csv", "image,split"); z.writestr("broden1_224/images/a.jpg", b"")
        >>> extract_zip("broden1_224.zip", "data/broden1_224", progress=False)
        PosixPath('data/broden1_224')
        >>> sorted(p.name for p in Path("data/broden1_224").iterdir())
        ['images', 'index.csv']
        >>> with zipfile.ZipFile("evil.zip", "w") as z:
        ...     z.writestr("../evil.txt", "x")
        >>> extract_zip("evil.zip", "data/evil", progress=False)
        Traceback (most recent call last):
        netdissect.errors.DatasetError: evil.zip: member '../evil.txt' would be written outside the target folder; refusing to extract this zip

    The zip may hold the dataset at its top level or inside one folder.
    Members with absolute paths or ``..`` components are rejected before
    anything is written; extraction goes to a temporary folder beside
    ``target`` that is renamed to ``target`` only when complete.
    """
    zip_path, target = Path(zip_path), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_extractions(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_extract_prefix(target)}{socket.gethostname()}-{os.getpid()}-",
                                dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                members = zf.infolist()
                for info in members:
                    _check_member(info.filename, zip_path, tmp)
                for info in tqdm(members, desc=f"extract {zip_path.name}", unit="file",
                                 disable=not progress, leave=False):
                    zf.extract(info, tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise DatasetError(f"{zip_path}: not a readable zip file ({exc}); "
                               "delete it and download again") from None
        root = _dataset_root(tmp, zip_path)
        try:
            os.rename(root, target)
        except OSError as exc:
            if not (target / "index.csv").is_file():   # else another process got there first
                raise DatasetError(f"cannot move the extracted dataset to {target}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_prefix(target: Path) -> str:
    return f".{target.name}.extract-"


def _remove_abandoned_extractions(target: Path) -> None:
    """Delete temporary folders of extractions into ``target`` whose process (on this host) is gone,
    e.g. killed midway; those of live processes, or of other hosts on a shared disk, are left alone."""
    host, prefix = socket.gethostname(), _extract_prefix(target)
    for folder in target.parent.glob(prefix + "*"):
        parts = folder.name[len(prefix):].rsplit("-", 2)  # HOST-PID-RANDOM (no "-" in RANDOM)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or not folder.is_dir():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _check_member(name: str, zip_path: Path, tmp: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    bad = (not parts or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name)
           or ".." in parts)
    if not bad:
        resolved = (tmp / name).resolve()
        bad = resolved != tmp.resolve() and tmp.resolve() not in resolved.parents
    if bad:
        raise DatasetError(f"{zip_path}: member {name!r} would be written outside the target "
                           "folder; refusing to extract this zip")


def _dataset_root(folder: Path, source) -> Path:
    """The folder holding index.csv: ``folder`` itself or its single subfolder."""
    if (folder / "index.csv").is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
    if len(subs) == 1 and (subs[0] / "index.csv").is_file():
        return subs[0]
    raise DatasetError(f"{source}: no index.csv at its top level or in a single top-level folder; "
                       "not a Broden-format dataset")
