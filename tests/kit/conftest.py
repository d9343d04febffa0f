"""The kit's fixtures."""
from __future__ import annotations

import pytest

from kit import bazel_build as bb
from kit import docker_tasks


@pytest.fixture
def build(tmp_path, monkeypatch):
    """The kit's build folder (KIT_BUILD_DIR), not created yet."""
    build = tmp_path / "build"
    monkeypatch.setenv("KIT_BUILD_DIR", str(build))
    return build


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """Point the tasks at an empty repository root; fail if they probe docker."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setattr(bb, "REPO_ROOT", root)

    def no_probe():
        raise AssertionError("the engine must not be probed here")

    monkeypatch.setattr(docker_tasks, "engine_status", no_probe)
    return root
