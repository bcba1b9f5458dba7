"""Doctests of the package run real examples: each in a fresh temporary folder (so ``runs/r18`` and the like
are written there), with ``world`` in its namespace, the path of a tiny synthetic world (6 images of 32 px,
Broden format, made once per session and only when a doctest uses it)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(scope="session")
def _doctest_world(tmp_path_factory):
    from netdissect.data.synth.export import write_world

    return str(write_world(tmp_path_factory.mktemp("doctest") / "world", n=6, seed=2017, size=32, progress=False))


@pytest.fixture(autouse=True)
def _doctest_folder(request):
    if not isinstance(request.node, DoctestItem):
        return
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
    if any("world" in e.source for e in request.node.dtest.examples):
        request.getfixturevalue("doctest_namespace")["world"] = request.getfixturevalue("_doctest_world")


def pytest_configure(config):
    """The suite never writes into the user's cache folder: label and paint caches go to a folder of
    this session (removed at the end) unless the caller chose one with ``NETDISSECT_CACHE``."""
    if "NETDISSECT_CACHE" not in os.environ:
        config._netdissect_cache = tempfile.mkdtemp(prefix="netdissect-test-cache-")
        os.environ["NETDISSECT_CACHE"] = config._netdissect_cache


def pytest_unconfigure(config):
    folder = getattr(config, "_netdissect_cache", None)
    if folder:
        os.environ.pop("NETDISSECT_CACHE", None)
        shutil.rmtree(folder, ignore_errors=True)
