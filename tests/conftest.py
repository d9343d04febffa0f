"""Fixtures shared by every test folder: the SavedModels the tests export themselves, and live
server processes (each stopped by its own pid when its test ends, pass or fail).

Plain helpers are in tests/helpers.py; the in-process server fixtures in tests/server/conftest.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.helpers import ROOT, Server, launch  # noqa: E402

# ROOT stays importable from here for tests/kit/test_tasks.py (`from tests.conftest import ROOT`);
# new code imports it from tests.helpers.
__all__ = ["ROOT"]


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """models/hp2 (TF1-style, predict/classify/regress) and models/hp2tf2 (TF2), version 1 each."""
    from pyserving.examples import half_plus_two

    root = tmp_path_factory.mktemp("exported")
    half_plus_two.write_tf1(str(root / "hp2"), 1)
    half_plus_two.write_tf2(str(root / "hp2tf2"), 1)
    return root


@pytest.fixture
def start_server(tmp_path):
    """Factory for live processes: start_server(args) -> Server; all stopped at teardown."""
    started: list[Server] = []

    def start(args: Sequence[str], **kwargs) -> Server:
        server = launch(tmp_path / "logs", args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=["s3", "gs"])
def bucket_server(request, tmp_path, monkeypatch):
    """A local storage server (moto's S3, or gcp-storage-emulator for GCS) with a bucket `models`,
    pyserving's environment pointed at it (and its stores rebuilt from it); stopped at teardown."""
    from pyserving.storage import buckets
    from tests.helpers import GcsEmulator, S3Server

    server = S3Server() if request.param == "s3" else GcsEmulator(tmp_path / "gcs-data")
    server.scheme = request.param
    server.start()
    for name in ("AWS_PROFILE", "S3_ENDPOINT", "STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    buckets.reset()
    server.fs().mkdir("models")
    try:
        yield server
    finally:
        server.stop()
        buckets.reset()
