"""End-to-end fixtures: the kit's own models, trained by its CLIs, served by every backend.

The serving tests are written once and run against each backend: native (pyserving) always,
the official tensorflow/serving image through pytest-docker when a Docker engine is present
(skipped with a one-line reason otherwise).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kit.docker_backend import container_model_config
from kit.serving import write_model_config
from tests.e2e.docker_fixtures import tfserving_docker  # noqa: F401  (fixture)
from tests.helpers import launch, run_module


@pytest.fixture(scope="session")
def kit_models(tmp_path_factory) -> Path:
    """<root>/svm/1 and <root>/mnist/1 trained by the kit's CLIs, and models.config (container paths)."""
    root = tmp_path_factory.mktemp("kit") / "models"
    run_module("-m", "models.svm.train", "--export_path_base", str(root / "svm"), "--num_epochs", "10",
               "--checkpoint_dir", str(root.parent / "ckpt"), "--model_version", "1")
    run_module("-m", "models.mnist.mnist_saved_model", "--training_iteration=300", "--model_version=1",
               str(root / "mnist"))
    host_config = write_model_config({"svm": root / "svm", "mnist": root / "mnist"}, root.parent / "native.config")
    (root / "models.config").write_text(container_model_config(host_config.read_text(), root))
    return root


@pytest.fixture(scope="session")
def tfserving_models_dir(kit_models) -> Path:
    return kit_models  # what the Docker backend mounts at /models


@pytest.fixture(scope="session")
def native_backend(kit_models, tmp_path_factory):
    server = launch(tmp_path_factory.mktemp("native"), [f"--model_config_file={kit_models.parent / 'native.config'}"])
    yield server.grpc_target, server.rest
    server.stop()


@pytest.fixture(scope="session", params=["native", "docker"])
def backend(request):
    """(name, grpc_target, rest_base) of a running server, for each backend available."""
    if request.param == "native":
        grpc_target, rest = request.getfixturevalue("native_backend")
    else:
        grpc_target, rest = request.getfixturevalue("tfserving_docker")
    return request.param, grpc_target, rest
