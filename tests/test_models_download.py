"""torchvision ``--weights DEFAULT`` without internet: one-line errors, never the real network.

Each test points TORCH_HOME at an empty temporary folder and sends torch.hub's
``urlopen`` to a server (or a closed port) on 127.0.0.1, so the real urllib
code path fails the way it fails on a machine without internet.
"""
from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from netdissect.errors import ModelError
from netdissect.models import load_model
from netdissect.models.loading import model_identity

URL_FILE = "resnet18-f37072fd.pth"  # ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _send_hub_to(monkeypatch, base: str) -> list[str]:
    """torch.hub's downloads go to ``base`` + the URL's path; returns the list of URLs asked for."""
    asked = []
    real = urllib.request.urlopen

    def urlopen(req, *args, **kwargs):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        asked.append(url)
        return real(base + urlparse(url).path, *args, timeout=10)

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    return asked


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """A local HTTP server; ``server.body`` (bytes) or ``None`` (404) is what it answers."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if srv.body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(srv.body)))
            self.end_headers()
            self.wfile.write(srv.body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.body = None
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_no_network_is_one_line_naming_the_url_and_the_remedies(torch_home, monkeypatch):
    asked = _send_hub_to(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(ModelError) as err:
        load_model("torchvision:resnet18", weights="DEFAULT")
    msg = str(err.value)
    assert asked == [f"https://download.pytorch.org/models/{URL_FILE}"]
    assert "\n" not in msg
    assert "cannot download torchvision:resnet18 weights ResNet18_Weights.IMAGENET1K_V1" in msg
    assert asked[0] in msg and "--weights PATH" in msg and "TORCH_HOME" in msg
    assert str(torch_home / "hub" / "checkpoints") in msg
    assert err.value.__cause__ is None  # no URLError traceback under it


def test_http_error_and_a_substituted_page_are_one_line(torch_home, monkeypatch, server):
    _send_hub_to(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    with pytest.raises(ModelError, match=r"cannot download .*HTTP Error 404|cannot download .*Not Found"):
        load_model("torchvision:resnet18", weights="IMAGENET1K_V1")
    server.body = b"<html>please log in to the wifi</html>"
    with pytest.raises(ModelError, match=r"is not the published one .*invalid hash value.*--weights PATH"):
        load_model("torchvision:resnet18")
    assert not (torch_home / "hub" / "checkpoints" / URL_FILE).exists()


def test_pre_populated_torch_home_is_used_without_network(torch_home, monkeypatch):
    """The remedy the error names works: the file in TORCH_HOME/hub/checkpoints is loaded."""
    asked = _send_hub_to(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    src = torchvision.models.resnet18()
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(src.state_dict(), torch_home / "hub" / "checkpoints" / URL_FILE)
    model, prep = load_model("torchvision:resnet18", weights="DEFAULT")
    assert asked == [] and model_identity(model) == model_identity(src)
    assert prep.describe() == "imagenet"


def test_corrupt_cached_file_says_delete_it(torch_home, monkeypatch):
    _send_hub_to(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    cached = torch_home / "hub" / "checkpoints" / URL_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(ModelError, match=r"cached weights file .*resnet18-f37072fd.pth .*is unreadable.*delete it"):
        load_model("torchvision:resnet18")


def test_unwritable_torch_home(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "a_file" / "torch"))
    _send_hub_to(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(ModelError, match=r"cannot store .* set TORCH_HOME to a writable folder"):
        load_model("torchvision:resnet18")


def test_a_download_cut_short_is_one_line(torch_home, monkeypatch, server):
    """The server promises more bytes than it sends (a dropped connection)."""
    _send_hub_to(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    server.body = b"x" * 100
    real_header = http.server.BaseHTTPRequestHandler.send_header

    def send_header(self, key, value):
        real_header(self, key, "1000" if key == "Content-Length" else value)

    monkeypatch.setattr(http.server.BaseHTTPRequestHandler, "send_header", send_header)
    with pytest.raises(ModelError, match=r"not the published one .*cut off.*--weights PATH"):
        load_model("torchvision:resnet18")
