"""pytest plugin: the official TensorFlow Serving in Docker, for the e2e tests.

Load it as a plugin (``-p tests.e2e.docker_fixtures`` or ``pytest_plugins``)
and ask for ``tfserving_docker``: it starts docker/compose.yaml through
pytest-docker on free loopback ports, waits until every model of
``build/models/models.config`` is AVAILABLE, and yields
``(grpc_target, rest_base_url)``, e.g. ``("127.0.0.1:40123",
"http://127.0.0.1:40124")``.  Without a Docker engine (or without the compose
plugin) the tests using it are skipped with a one-line reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from kit.model_config import CONFIG_NAME, CONTAINER_MODELS_ROOT
from kit.paths import ROOT
from kit.process import free_ports
from kit.serve.docker import (
    COMPOSE_FILE,
    COMPOSE_SERVICE,
    GRPC_PORT,
    REST_PORT,
    compose_command,
    compose_env,
    compose_status,
)

logger = logging.getLogger(__name__)

READY_TIMEOUT = 180.0  # first start pulls the image and loads SavedModels
MODELS_DIR_ENV = "KIT_MODELS_DIR"


def model_names(config_text: str) -> list[str]:
    """Model names of a models.config, checking it holds container paths."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig())
    names = []
    for model in config.model_config_list.config:
        if not (model.base_path + "/").startswith(CONTAINER_MODELS_ROOT + "/"):
            raise ValueError(
                f"model {model.name!r}: base_path {model.base_path!r} is not under "
                f"{CONTAINER_MODELS_ROOT}; write the config with container paths "
                "(kit.model_config.container_text)"
            )
        names.append(model.name)
    if not names:
        raise ValueError("models.config lists no models")
    return names


def model_available(rest_base: str, name: str, timeout: float = 2.0) -> bool:
    """Does GET /v1/models/<name> report a version in state AVAILABLE?"""
    try:
        with urllib.request.urlopen(f"{rest_base}/v1/models/{name}", timeout=timeout) as reply:
            status = json.load(reply)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", []))


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    # pytest-docker runs `docker compose` through a shell that inherits
    # os.environ; compose.yaml reads its ports, tag and folder from there.
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _compose_logs(project: str) -> str:
    argv = compose_command("logs", "--no-color", "--tail", "20", project=project)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"(could not read logs: {err})"
    return (proc.stdout + proc.stderr).strip()


@contextlib.contextmanager
def compose_tfserving(
    models_dir: Path,
    grpc_port: int | None = None,
    rest_port: int | None = None,
    project: str | None = None,
    timeout: float = READY_TIMEOUT,
) -> Iterator[tuple[str, str]]:
    """Run docker/compose.yaml with pytest-docker until the block ends."""
    try:
        from pytest_docker.plugin import get_docker_ip, get_docker_services
    except ImportError:
        pytest.fail("the Docker e2e backend needs pytest-docker: pip install pytest-docker==3.2.6")

    config = Path(models_dir) / CONFIG_NAME
    if not config.is_file():
        pytest.fail(f"{config} is missing: export the kit's models (with their models.config) first")
    try:
        names = model_names(config.read_text(encoding="utf-8"))
    except ValueError as err:
        pytest.fail(f"{config}: {err}")

    ports = free_ports(2)
    grpc_port, rest_port = grpc_port or ports[0], rest_port or ports[1]
    project = project or f"kit-tfserving-{os.getpid()}"
    env = compose_env(models_dir, grpc_port, rest_port, base_env={})
    with _environ(env), get_docker_services(
        "docker compose", str(COMPOSE_FILE), project, ["up -d --wait"], ["down -v"]
    ) as services:
        host = get_docker_ip()
        grpc_target = f"{host}:{services.port_for(COMPOSE_SERVICE, GRPC_PORT)}"
        rest_base = f"http://{host}:{services.port_for(COMPOSE_SERVICE, REST_PORT)}"
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting and time.monotonic() < deadline:
            waiting = [name for name in waiting if not model_available(rest_base, name)]
            if waiting:
                time.sleep(1.0)
        if waiting:
            pytest.fail(
                f"TF Serving at {rest_base} did not report {', '.join(waiting)} AVAILABLE "
                f"within {timeout:g}s; last logs:\n{_compose_logs(project)}"
            )
        logger.info("TF Serving ready: grpc %s, rest %s", grpc_target, rest_base)
        yield grpc_target, rest_base


@pytest.fixture(scope="session")
def tfserving_models_dir() -> Path:
    """The kit's exported models (build/models; KIT_MODELS_DIR overrides)."""
    return Path(os.environ.get(MODELS_DIR_ENV) or ROOT / "build" / "models").resolve()


@pytest.fixture(scope="session")
def tfserving_docker(tfserving_models_dir: Path) -> Iterator[tuple[str, str]]:
    """(grpc_target, rest_base_url) of the official server; skipped without Docker."""
    reason = compose_status()
    if reason is not None:
        pytest.skip(reason)
    with compose_tfserving(tfserving_models_dir) as endpoints:
        yield endpoints
