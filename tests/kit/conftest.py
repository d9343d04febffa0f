"""The kit's fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture
def build(tmp_path, monkeypatch):
    """The kit's build folder (KIT_BUILD_DIR), not created yet."""
    build = tmp_path / "build"
    monkeypatch.setenv("KIT_BUILD_DIR", str(build))
    return build
