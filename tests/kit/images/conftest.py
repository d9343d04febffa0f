"""Fixtures of the image and Bazel-build tests."""
from __future__ import annotations

import pytest

from kit.images import bazel_build as bb
from kit.images import build


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """Point the build steps at an empty repository root; fail if they probe docker."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setattr(bb, "REPO_ROOT", root)
    monkeypatch.setenv("KIT_BUILD_DIR", str(root / "build"))

    def no_probe():
        raise AssertionError("the engine must not be probed here")

    monkeypatch.setattr(build, "engine_status", no_probe)
    return root
