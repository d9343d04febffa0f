"""The stand-in cluster's kubectl (data/fake_kubectl.py), as $KUBECTL."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

FAKE_KUBECTL = Path(__file__).parent / "data" / "fake_kubectl.py"


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch) -> Path:
    """The state folder of an empty stand-in cluster, whose kubectl ($KUBECTL, an executable named
    kubectl) runs data/fake_kubectl.py with this interpreter (it reads YAML)."""
    state = tmp_path / "fake-k8s"
    state.mkdir()
    exe = tmp_path / "bin" / "kubectl"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_KUBECTL))} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(exe))
    monkeypatch.setenv("FAKE_K8S_DIR", str(state))
    return state
