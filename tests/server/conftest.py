"""The server's fixtures and fakes: in-process servers, and servables without TensorFlow.

In-process servers are pyserving's real ModelServer (REST on aiohttp, gRPC on grpc.aio) started
in the test process on free loopback ports: every edge case talks to the real protocol stacks
without paying a Python + TensorFlow start-up per server. Scopes: `serve` (one test: for tests
that change state - files on disk, config reloads, counters), `serve_module` (one module's
read-only tests), `models_server` (the whole session: hp2 and hp2tf2, for read-only edge cases).
Every server is stopped at teardown, also when the test failed.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import pytest

from tests.helpers import InProcessServer, write_config


class FakeServable:
    """Stands in for a TensorFlow servable in manager tests: answers with its own version."""

    def __init__(self, version: int):
        self.version = version
        self.closed = False
        self.signatures = {}

    def run(self, signature_name, inputs, output_keys, timeout_s=None):
        return {"version": self.version}

    def signature_def_map(self) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_servable():
    """The FakeServable class: fake_servable(version) -> a servable answering {"version": version}."""
    return FakeServable


@contextlib.contextmanager
def _in_process_servers() -> Iterator:
    started: list[InProcessServer] = []

    def start(args: Sequence[str], **kwargs) -> InProcessServer:
        server = InProcessServer(args, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def serve():
    """Factory: serve(args, rest=True, grpc_port=None) -> a started in-process server, stopped
    when the test ends."""
    with _in_process_servers() as start:
        yield start


@pytest.fixture(scope="module")
def serve_module():
    """As `serve`, stopped when the module's tests are done: for a module-scoped server fixture."""
    with _in_process_servers() as start:
        yield start


@pytest.fixture(scope="session")
def models_server(exported, tmp_path_factory):
    """One in-process server for read-only edge cases: hp2 (label "stable" -> 1) and hp2tf2,
    with CORS, a gRPC UNIX socket (`.socket`) and the gRPC health service."""
    tmp = tmp_path_factory.mktemp("models_server")
    config = write_config(tmp / "models.config", {
        "hp2": (exported / "hp2", 'version_labels { key: "stable" value: 1 }'),
        "hp2tf2": exported / "hp2tf2",
    })
    sock = tmp / "grpc.sock"
    with _in_process_servers() as start:
        # a label in a start-up config needs the flag, as in TF Serving (nothing is loaded yet)
        server = start([f"--model_config_file={config}", "--rest_api_enable_cors_support=true",
                        f"--grpc_socket_path={sock}", "--enable_grpc_healthcheck_service=true",
                        "--allow_version_labels_for_unavailable_models"])
        server.socket = sock
        yield server
