import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from broden_fixture import make_broden  # noqa: E402


@pytest.fixture(scope="session")
def broden(tmp_path_factory):
    """A small Broden-format dataset (read-only: copy it before breaking it)."""
    return make_broden(tmp_path_factory.mktemp("broden") / "ds", n=30, size=32)
