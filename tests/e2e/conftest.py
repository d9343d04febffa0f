"""End-to-end fixtures: the kit's own models, trained by its CLIs, served by every backend.

The serving tests are written once and run against each backend: native (pyserving) always,
the official tensorflow/serving image through pytest-docker when a Docker engine is present
(skipped with a one-line reason otherwise).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kit import model_config
from tests.e2e.docker_fixtures import tfserving_docker  # noqa: F401  (fixture)
from tests.helpers import ROOT, launch


class KitTraining:
    """The kit's two models trained by its own CLIs, in processes started in the background (a
    Python + TensorFlow start-up and some training each); wait() returns the models folder."""

    COMMANDS = {
        "svm": ["-m", "models.svm.train", "--export_path_base", "{root}/svm", "--num_epochs", "10",
                "--checkpoint_dir", "{root}/../ckpt", "--model_version", "1"],
        "mnist": ["-m", "models.mnist.mnist_saved_model", "--training_iteration=300", "--model_version=1",
                  "{root}/mnist"],
    }

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs = {name: root.parent / f"train-{name}.log" for name in self.COMMANDS}
        self.procs = {}
        for name, args in self.COMMANDS.items():
            with open(self.logs[name], "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, *(a.format(root=root) for a in args)], cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self, timeout: float = 600) -> Path:
        for name, proc in self.procs.items():
            assert proc.wait(timeout) == 0, f"training {name} failed:\n{self.logs[name].read_text()[-3000:]}"
        return self.root

    def stop(self) -> None:
        for proc in self.procs.values():  # by its own pid, if still running
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


# Tests that need the kit's trained models (the `backend` fixture asks for them at run time).
NEEDS_KIT_MODELS = {"kit_models", "backend", "native_backend", "tfserving_models_dir"}


@pytest.fixture(scope="session")
def kit_training(tmp_path_factory):
    training = KitTraining(tmp_path_factory.mktemp("kit") / "models")
    yield training
    training.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_kit_training_early(request):
    """At the first e2e test, start the training if a selected test needs the models: it then
    runs while the tests before those do (test_reproduce's own trainings and servers)."""
    if any(NEEDS_KIT_MODELS & set(item.fixturenames) for item in request.session.items):
        request.getfixturevalue("kit_training")


@pytest.fixture(scope="session")
def kit_models(kit_training) -> Path:
    """<root>/svm/1 and <root>/mnist/1 trained by the kit's CLIs, and models.config (container paths)."""
    root = kit_training.wait()
    host_config = model_config.write({"svm": root / "svm", "mnist": root / "mnist"}, root.parent / "native.config")
    (root / "models.config").write_text(model_config.container_text(host_config.read_text(), root))
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
