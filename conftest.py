"""Doctests of the package run real examples: each in a fresh temporary folder (so ``runs/r18`` and the like
are written there), with ``world`` in its namespace, the path of a tiny synthetic world (6 images of 32 px,
Broden format, made once per session and only when a doctest uses it)."""
from __future__ import annotations

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
