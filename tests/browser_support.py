"""What the browser tests share: Debian's chromium, launched the one way it works here, and a
watch on a page that fails the test on console errors, failed requests or requests leaving the
machine.  (Playwright cannot download browsers here; ``make browser`` installs chromium.)"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (run `make browser`)")


def launch_chromium(sync_api):
    """A generator for a module-scoped ``browser`` fixture: one chromium for the module's tests."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


class PageWatch:
    """Every request, console error and failed response of a page.  A request whose URL ``allowed``
    rejects is aborted and recorded in ``outside``; ``check`` asserts that none of it happened."""

    where = "the machine"

    def __init__(self, page):
        self.requests, self.outside, self.errors, self.bad = [], [], [], []
        page.route("**/*", self._route)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("response", lambda r: self.bad.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("requestfailed", lambda r: self.bad.append(f"failed {r.url}"))

    def allowed(self, u) -> bool:
        """Local files, data URLs and this machine's plain-HTTP servers."""
        return u.scheme in ("file", "data") or (u.scheme == "http" and u.hostname == "127.0.0.1")

    def seen(self, route, u) -> None:
        """Called for every request let through (a subclass records what it needs)."""

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        u = urlparse(url)
        if not self.allowed(u):
            self.outside.append(url)
            return route.abort()
        self.seen(route, u)
        return route.continue_()

    def check(self):
        assert not self.outside, f"requests leaving {self.where}: {self.outside}"
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.bad, f"failed requests: {self.bad}"
