"""Serve the kit's models with the real TensorFlow Serving: Docker or a binary.

Plain functions only: each builds an argv list (or a config text) that the
serve step runs, so tests can check the exact commands without an engine.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from kit import model_config
from kit.model_config import CONFIG_NAME as DEFAULT_CONFIG_NAME
from kit.model_config import CONTAINER_MODELS_ROOT
from kit.paths import ROOT
from kit.serve import native
from kit.serve.flags import HEALTH_FLAG, LABELS_FLAG, LOAD_RETRY_FLAGS, POLL_SECONDS

logger = logging.getLogger(__name__)


# One pin for the whole Docker route: serving image, devel base and git tag.
TF_SERVING_VERSION = "2.21.0"
SERVING_IMAGE = f"tensorflow/serving:{TF_SERVING_VERSION}"

GRPC_PORT = 8500  # fixed inside the official image (tf_serving_entrypoint.sh)
REST_PORT = 8501
CONTAINER_NAME = "kit-tfserving"
DEFAULT_POLL_WAIT_SECONDS = 60
# Publish on loopback only: nothing outside this machine needs the server.
DEFAULT_BIND_ADDRESS = "127.0.0.1"
ENGINE_CHECK_TIMEOUT = 10.0

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
COMPOSE_SERVICE = "tfserving"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return ""


def _docker_probe(args: list[str], docker: str, timeout: float, what: str) -> str | None:
    exe = shutil.which(docker)
    if exe is None:
        return f"docker: command not found ({docker!r} is not on PATH; install Docker to use this route)"
    try:
        proc = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"docker: {what} ({' '.join(['docker', *args])} timed out after {timeout:g}s)"
    except OSError as err:
        return f"docker: cannot run {exe}: {err.strerror or err}"
    if proc.returncode != 0 or not proc.stdout.strip():
        detail = _first_line(proc.stderr) or _first_line(proc.stdout) or f"exit code {proc.returncode}"
        return f"docker: {what} (docker {args[0]} failed: {detail})"
    return None


def engine_status(docker: str = "docker", timeout: float = ENGINE_CHECK_TIMEOUT) -> str | None:
    """None when a Docker engine answers, else one line saying what is missing."""
    # --format prints only the server version, and nothing when the CLI cannot
    # reach a daemon, so an empty answer also counts as "no engine".
    return _docker_probe(
        ["info", "--format", "{{.ServerVersion}}"], docker, timeout, "no Docker engine reachable"
    )


def compose_status(docker: str = "docker", timeout: float = ENGINE_CHECK_TIMEOUT) -> str | None:
    """None when both the engine and the ``docker compose`` plugin work."""
    reason = engine_status(docker, timeout)
    if reason is not None:
        return reason
    return _docker_probe(
        ["compose", "version", "--short"], docker, timeout, "the compose plugin is not available"
    )


def _publish(bind_address: str, host_port: int, container_port: int) -> str:
    prefix = f"{bind_address}:" if bind_address else ""
    return f"{prefix}{host_port}:{container_port}"


def docker_serve_command(
    models_root: Path,
    config_name: str = DEFAULT_CONFIG_NAME,
    grpc_port: int = GRPC_PORT,
    rest_port: int = REST_PORT,
    image: str = SERVING_IMAGE,
    name: str = CONTAINER_NAME,
    poll_wait_seconds: int = DEFAULT_POLL_WAIT_SECONDS,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    extra_flags: Iterable[str] = (),
) -> list[str]:
    """``docker run`` for the official image serving ``models_root`` as /models.

    ``models_root/config_name`` must already hold container paths (see
    kit.model_config.container_text).  Flags after the image go to
    ``tensorflow_model_server`` through the image's entrypoint.
    """
    if PurePosixPath(config_name).is_absolute() or ".." in PurePosixPath(config_name).parts:
        raise ValueError(f"config_name must be relative to models_root, got {config_name!r}")
    host_root = Path(models_root).resolve()
    return [
        "docker", "run", "-d", "--rm",
        "--name", name,
        "-p", _publish(bind_address, grpc_port, GRPC_PORT),
        "-p", _publish(bind_address, rest_port, REST_PORT),
        "-v", f"{host_root}:{CONTAINER_MODELS_ROOT}:ro",
        image,
        f"--model_config_file={posixpath.join(CONTAINER_MODELS_ROOT, config_name)}",
        f"--model_config_file_poll_wait_seconds={poll_wait_seconds}",
        *extra_flags,
    ]


def docker_stop_command(name: str = CONTAINER_NAME) -> list[str]:
    """Stop the serving container (``--rm`` in the run command removes it)."""
    return ["docker", "stop", name]


def binary_serve_command(
    binary: Path,
    model_config_file: Path,
    grpc_port: int = GRPC_PORT,
    rest_port: int = REST_PORT,
    extra_flags: Iterable[str] = (),
) -> list[str]:
    """Run a ``tensorflow_model_server`` binary (e.g. build/bin's) on the host."""
    return [
        str(binary),
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={model_config_file}",
        *extra_flags,
    ]


def compose_env(
    models_dir: Path,
    grpc_port: int = GRPC_PORT,
    rest_port: int = REST_PORT,
    tag: str = TF_SERVING_VERSION,
    config_name: str = DEFAULT_CONFIG_NAME,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for docker/compose.yaml (its ${...} variables)."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(
        {
            "KIT_MODELS_DIR": str(Path(models_dir).resolve()),
            "TFSERVING_GRPC_PORT": str(grpc_port),
            "TFSERVING_REST_PORT": str(rest_port),
            "TFSERVING_TAG": tag,
            "TFSERVING_MODEL_CONFIG": config_name,
        }
    )
    return env


def compose_command(
    *args: str, project: str | None = None, compose_file: Path = COMPOSE_FILE
) -> list[str]:
    """``docker compose -f docker/compose.yaml [-p project] <args>``."""
    argv = ["docker", "compose", "-f", str(compose_file)]
    if project:
        argv += ["-p", project]
    return [*argv, *args]


# ---- the docker backend of `inv serve` ------------------------------------------------------


def container_name(index: int) -> str:
    return CONTAINER_NAME if index == 0 else f"{CONTAINER_NAME}-{index}"


class Docker:
    """The official tensorflow/serving image, one container per replica, reading the container
    twin of models.config (/models paths) from build/models mounted read-only."""

    name = "docker"
    stop_note = " (docker stop for the container)"

    def command(self, config_file: Path, grpc_port: int, rest_port: int, host: str, index: int,
                extra_flags: Iterable[str] = ()) -> list[str]:
        # config_file is build/models/models.config; the container reads its twin beside it
        return docker_serve_command(
            Path(config_file).parent, config_name=model_config.CONTAINER_CONFIG_NAME, grpc_port=grpc_port,
            rest_port=rest_port, name=container_name(index), poll_wait_seconds=POLL_SECONDS, bind_address=host,
            extra_flags=(*LOAD_RETRY_FLAGS, HEALTH_FLAG, LABELS_FLAG, *extra_flags),
        )

    def unavailable(self) -> str | None:
        return engine_status()

    def listening_note(self, host: str) -> str:
        return native.BACKEND.listening_note(host)  # Docker publishes the ports on the same address

    def prepare(self) -> None:
        model_config.write_container_twin()

    def launch(self, command: list[str], index: int, log: Path, rest_port: int, run=None) -> dict:
        result = run(" ".join(command), warn=True, hide=True)
        if result.exited != 0:
            raise RuntimeError(f"docker run failed: {result.stderr.strip()}")
        return {"container": container_name(index)}

    def stop(self, replica: dict, run=None, say=print) -> None:
        command = docker_stop_command(replica["container"])
        say("$ " + " ".join(command))
        run(" ".join(command), warn=True, hide=True)


BACKEND = Docker()
