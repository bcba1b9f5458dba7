"""netdissect.data.download and `netdissect download`, against a local HTTP server on 127.0.0.1.

    pytest -q tests/test_download.py
"""
from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.cli import main
from netdissect.data import Broden
from netdissect.data.download import ASSETS, download, extract_zip, fetch_dataset, fetch_weights
from netdissect.errors import DatasetError, DownloadError


# ---------------------------------------------------------------------- a tiny Broden zip
def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_broden_zip(top: str | None = "broden1_224", extra: dict[str, bytes] | None = None) -> bytes:
    """A one-image Broden dataset (a color mask and a scene label), zipped under ``top/``."""
    mask = np.zeros((4, 4, 3), np.uint8)
    mask[:2, :, 0] = 1                                   # label 1 (red) on the top half
    files = {
        "index.csv": "image,split,ih,iw,sh,sw,color,scene\r\nimg0.jpg,train,8,8,4,4,img0_color.png,2\r\n",
        "label.csv": "number,name,category,frequency,coverage,syns\n0,-,,0,0,\n"
                     "1,red-c,color(1),1,0.5,\n2,street-s,scene(1),1,1,\n",
        "category.csv": "name,first,last,count,frequency\ncolor,1,1,1,1\nscene,2,2,1,1\n",
        "images/img0.jpg": _png(np.full((8, 8, 3), 128, np.uint8)),
        "images/img0_color.png": _png(mask),
        **(extra or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}" if top else name, data)
    return buf.getvalue()


ZIP = make_broden_zip()
BLOB = bytes(range(256)) * 400  # 102400 bytes of weights-like data
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


# ---------------------------------------------------------------------- the server
class Server:
    """Serves ``files`` on 127.0.0.1; records each request's path and Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.types: dict[str, str] = {}  # path -> Content-Type header (none sent otherwise)
        self.ignore_range = False
        self.truncate_next = False   # send the full Content-Length but only half the body, once
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if self.path in server.types:
                    self.send_header("Content-Type", server.types[self.path])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate_next:
                    server.truncate_next = False
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib would send even 127.0.0.1 through a proxy named in the environment."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def _server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def server(_server):
    _server.files = {"/broden1_224.zip": ZIP, "/model.bin": BLOB,
                     f"/net-{BLOB_SHA[:8]}.pth": BLOB, "/net-0badf00d.pth": BLOB}
    _server.types = {}
    _server.ignore_range = False
    _server.truncate_next = False
    _server.requests = []
    return _server


# ---------------------------------------------------------------------- download()
def test_full_download_and_extraction(server, tmp_path):
    root = fetch_dataset(server.url("/broden1_224.zip"), tmp_path / "data", progress=False, timeout=5)
    assert root == tmp_path / "data" / "broden1_224"
    ds = Broden(root)
    assert len(ds) == 1 and ds.concepts.names == ["red-c", "street-s"]
    sample = ds.load_labels(0)
    assert sample.planes[0, 0, 0] == 1 and sample.planes[0, 3, 0] == 0
    assert list(sample.image_labels) == [2]
    # the downloaded zip and the temporary folder are gone
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["broden1_224"]
    # a second call does no work
    n = len(server.requests)
    assert fetch_dataset(server.url("/broden1_224.zip"), tmp_path / "data", progress=False) == root
    assert len(server.requests) == n


def test_resume_sends_range_and_is_byte_identical(server, tmp_path):
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(BLOB[: len(BLOB) // 2])
    download(server.url("/model.bin"), dest, sha256=BLOB_SHA, size=len(BLOB), progress=False, timeout=5)
    assert server.ranges("/model.bin") == [f"bytes={len(BLOB) // 2}-"]
    assert dest.read_bytes() == BLOB
    assert not (tmp_path / "model.bin.part").exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(BLOB[:1000])
    download(server.url("/model.bin"), dest, sha256=BLOB_SHA, progress=False, timeout=5)
    assert server.ranges("/model.bin") == ["bytes=1000-"]   # asked, answered 200 with everything
    assert dest.read_bytes() == BLOB


def test_stale_part_not_a_prefix_is_replaced(server, tmp_path):
    # a .part longer than the file: the server answers 416 with another length -> start over
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(b"x" * (len(BLOB) + 10))
    download(server.url("/model.bin"), dest, progress=False, timeout=5)
    assert dest.read_bytes() == BLOB


def test_416_when_part_already_complete(server, tmp_path):
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(BLOB)
    download(server.url("/model.bin"), dest, sha256=BLOB_SHA, progress=False, timeout=5)
    assert server.ranges("/model.bin") == [f"bytes={len(BLOB)}-"]
    assert dest.read_bytes() == BLOB


def test_interrupted_transfer_keeps_part_then_resumes(server, tmp_path):
    server.truncate_next = True
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="rerun to resume"):
        download(server.url("/model.bin"), dest, progress=False, timeout=5)
    part = tmp_path / "model.bin.part"
    assert part.stat().st_size == len(BLOB) // 2 and not dest.exists()
    download(server.url("/model.bin"), dest, sha256=BLOB_SHA, progress=False, timeout=5)
    assert server.ranges("/model.bin") == [None, f"bytes={len(BLOB) // 2}-"]
    assert dest.read_bytes() == BLOB and not part.exists()


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    dest = tmp_path / "model.bin"
    url = server.url("/model.bin")
    with pytest.raises(DownloadError) as exc:
        download(url, dest, sha256="0" * 64, progress=False, timeout=5)
    msg = str(exc.value)
    assert url in msg and "0" * 64 in msg and BLOB_SHA in msg
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix(server, tmp_path):
    download(server.url("/model.bin"), tmp_path / "a", sha256_prefix=BLOB_SHA[:8], progress=False)
    with pytest.raises(DownloadError, match="expected sha256 starting deadbeef"):
        download(server.url("/model.bin"), tmp_path / "b", sha256_prefix="deadbeef", progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.part").exists()


def test_size_mismatch(server, tmp_path):
    with pytest.raises(DownloadError, match=f"expected 12345 bytes, got {len(BLOB)} bytes"):
        download(server.url("/model.bin"), tmp_path / "m", size=12345, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_existing_dest_is_verified_not_downloaded(server, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"not it")
    assert download(server.url("/model.bin"), dest, progress=False) == dest
    with pytest.raises(DownloadError, match="exists but does not verify"):
        download(server.url("/model.bin"), dest, sha256=BLOB_SHA, progress=False)
    assert server.requests == [] and dest.read_bytes() == b"not it"


def test_404_names_the_url(server, tmp_path):
    url = server.url("/missing.zip")
    with pytest.raises(DownloadError) as exc:
        download(url, tmp_path / "x.zip", progress=False, timeout=5)
    assert url in str(exc.value) and "404" in str(exc.value) and "--url" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_gives_mirror_hint(tmp_path):
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/broden1_224.zip"
    with pytest.raises(DownloadError) as exc:
        fetch_dataset("broden1_224", tmp_path, url=url, progress=False, timeout=5)
    assert url in str(exc.value) and "--url MIRROR" in str(exc.value)


# ---------------------------------------------------------------------- datasets and weights
def test_local_zip_folder_and_flat_zip(tmp_path):
    z = tmp_path / "broden1_224.zip"
    z.write_bytes(ZIP)
    root = fetch_dataset(str(z), tmp_path / "data", progress=False)
    assert root == tmp_path / "data" / "broden1_224" and len(Broden(root)) == 1
    assert z.exists()                                   # a user's zip is never deleted
    assert fetch_dataset(str(root), tmp_path / "other") == root   # an extracted folder as it is
    flat = tmp_path / "flat.zip"
    flat.write_bytes(make_broden_zip(top=None))         # files at the zip's top level
    root2 = fetch_dataset("broden1_227", tmp_path / "data", url=str(flat), progress=False)
    assert root2 == tmp_path / "data" / "broden1_227" and len(Broden(root2)) == 1


def test_zip_slip_rejected(tmp_path):
    for evil in ("../evil.txt", "/abs/evil.txt", "broden1_224/../../evil.txt"):
        z = tmp_path / "bad.zip"
        z.write_bytes(_zip_with(evil))
        out = tmp_path / "data"
        with pytest.raises(DatasetError, match="outside the target"):
            fetch_dataset(str(z), out, progress=False)
        assert not (tmp_path / "evil.txt").exists()
        assert list(out.iterdir()) == []                 # no half-extracted or temporary folder


def _zip_with(member: str) -> bytes:
    buf = io.BytesIO(make_broden_zip())
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(zipfile.ZipInfo(member), b"pwned")
    return buf.getvalue()


def test_abandoned_extraction_folders_are_removed(tmp_path):
    """A killed extraction leaves its temporary folder; the next extraction into the same target
    removes it when its process is gone, and leaves live or other hosts' folders alone."""
    import os
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = socket.gethostname()
    data = tmp_path / "data"
    dead = data / f".broden1_224.extract-{host}-{gone}-abc123_x"
    live = data / f".broden1_224.extract-{host}-{os.getpid()}-def456_y"
    other = data / f".broden1_224.extract-elsewhere-{gone}-ghi789_z"
    for d in (dead, live, other):
        (d / "broden1_224").mkdir(parents=True)
    z = tmp_path / "broden1_224.zip"
    z.write_bytes(make_broden_zip())
    assert extract_zip(z, data / "broden1_224", progress=False) == data / "broden1_224"
    assert not dead.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in data.iterdir()) == sorted(["broden1_224", live.name, other.name])


def test_zip_without_index_and_corrupt_zip(tmp_path):
    z = tmp_path / "empty.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(DatasetError, match="no index.csv"):
        extract_zip(z, tmp_path / "out", progress=False)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable zip"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.zip", "junk.zip"]


def test_fetch_weights_checks_hash_in_name(server, tmp_path):
    path = fetch_weights(server.url(f"/net-{BLOB_SHA[:8]}.pth"), tmp_path, progress=False)
    assert path.read_bytes() == BLOB
    with pytest.raises(DownloadError, match="0badf00d"):
        fetch_weights(server.url("/net-0badf00d.pth"), tmp_path, progress=False)
    # a registered PNAS file fetched from a mirror keeps the registry's prefix check
    with pytest.raises(DownloadError, match="0bafbc55"):
        fetch_weights("vgg16_places365", tmp_path, url=server.url("/model.bin"), progress=False)


def test_registry():
    for name in ("broden1_224", "broden1_227", "broden1_384"):
        assert ASSETS[name].url == f"http://netdissect.csail.mit.edu/data/{name}.zip"
    assert ASSETS["resnet18_places365"].url == \
        "http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar"
    assert ASSETS["vgg16_places365"].sha256_prefix == "0bafbc55"
    assert ASSETS["resnet152_places365"].sha256_prefix == "f928166e5c"
    with pytest.raises(DownloadError, match="unknown dataset 'broden9'"):
        fetch_dataset("broden9", "nowhere")


# ---------------------------------------------------------------------- CLI
def test_cli_end_to_end(server, tmp_path, capsys):
    to = tmp_path / "data"
    assert main(["download", "broden1_224", "--to", str(to), "--url",
                 server.url("/broden1_224.zip"), "--quiet"]) == 0
    root = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert root == to / "broden1_224" and len(Broden(root)) == 1
    assert main(["download", "--list"]) == 0
    assert "broden1_224" in capsys.readouterr().out
    assert main(["download", "broden1_384", "--to", str(to), "--url", server.url("/gone.zip"),
                 "--quiet"]) == 1
    assert "/gone.zip" in capsys.readouterr().err
    assert main(["download", "broden1_224", "--to", str(to), "--sha256", "abc"]) == 1
    assert "64 hexadecimal digits" in capsys.readouterr().err


# ---------------------------------------------------------------------- HTML instead of the file
LOGIN = b"<!DOCTYPE html>\n<html><head><title>Sign in - Campus SSO</title></head><body>login</body></html>\n"


def test_cli_html_page_with_text_html_is_not_saved(server, tmp_path, capsys):
    server.files["/broden1_224.zip"] = LOGIN.replace(b"<!DOCTYPE html>\n", b"")  # only the header says
    server.types["/broden1_224.zip"] = "text/html; charset=utf-8"
    to = tmp_path / "data"
    url = server.url("/broden1_224.zip")
    assert main(["download", url, "--to", str(to), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and url in err and "Traceback" not in err
    assert "an HTML page (Content-Type text/html, title 'Sign in - Campus SSO')" in err
    assert "nothing was saved" in err
    assert list(to.iterdir()) == []  # no zip, no .part, no dataset


def test_html_body_without_content_type_is_not_saved(server, tmp_path):
    server.files["/net-0badf00d.pth"] = LOGIN
    with pytest.raises(DownloadError, match=r"/net-0badf00d.pth: the server answered with an HTML page "
                                            r"\(Content-Type not given, title 'Sign in"):
        fetch_weights(server.url("/net-0badf00d.pth"), tmp_path, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_a_real_file_mislabelled_text_html_still_downloads(server, tmp_path):
    server.types["/broden1_224.zip"] = "text/html"
    root = fetch_dataset(server.url("/broden1_224.zip"), tmp_path / "data", progress=False, timeout=5)
    assert len(Broden(root)) == 1


def test_html_saved_earlier_or_local_is_refused(server, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(LOGIN)  # saved by an older version
    with pytest.raises(DownloadError, match=r"model.bin \(from .*\) holds an HTML page.*delete it"):
        download(server.url("/model.bin"), dest, progress=False, timeout=5)
    local = tmp_path / "page.pth"
    local.write_bytes(b"  " + LOGIN.lower())
    with pytest.raises(DownloadError, match=r"page.pth: holds an HTML page.*nothing was saved"):
        download(str(local), tmp_path / "w" / "page.pth", progress=False)
    assert list((tmp_path / "w").iterdir()) == []
