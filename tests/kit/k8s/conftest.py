"""The stand-in cluster's kubectl (data/fake_kubectl.py), as $KUBECTL, and pod ports for its port-forwards."""
from __future__ import annotations

import os
import shlex
import socketserver
import sys
import threading
from pathlib import Path

import pytest

FAKE_KUBECTL = Path(__file__).parent / "data" / "fake_kubectl.py"


def pytest_collection_modifyitems(items):
    """Under `make mutate` (mutmut names the mutant in MUTANT_UNDER_TEST), the tests marked
    `renders` (a `kubectl kustomize` each, ~0.5 s) run after the in-process ones: mutmut runs a
    mutant's tests with -x in no set order, so a mutant an in-process test catches then costs no
    render. The order changes nothing else: every test is independent of the others."""
    if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        items.sort(key=lambda item: item.get_closest_marker("renders") is not None)  # stable


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


class Answering(socketserver.TCPServer):
    """A pod port: answers every connection with its own name (one at a time, at once)."""

    def __init__(self, word: bytes):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.sendall(word)
        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def pod_ports():
    """A stand-in pod's gRPC and REST ports ("grpc", "rest"): each answers every connection with its name."""
    servers = {"grpc": Answering(b"grpc"), "rest": Answering(b"rest")}
    yield servers
    for server in servers.values():
        server.stop()
