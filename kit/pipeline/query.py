"""Querying the served models with the tutorial's clients: the SVM over REST, MNIST over gRPC."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from kit import paths
from kit.paths import ROOT
from kit.pipeline.train import PY, SVM_SAMPLE_DEV, Runner, shell_line

Ports = Union[int, Sequence[int]]  # one server's port, or one port per replica


def _ports(ports: Ports) -> list[int]:
    return [ports] if isinstance(ports, int) else list(ports)


def query_svm(run: Runner, rest_port: Ports, num: int = 5, data: Optional[Path] = None,
              label: Optional[str] = None) -> None:
    """The tutorial's REST client on the SVM: its latest version, or the version `label` points at;
    several REST ports (replicas) share the requests."""
    data = data or SVM_SAMPLE_DEV
    path = "/v1/models/svm" + (f"/labels/{label}" if label else "")
    url = ",".join(f"http://127.0.0.1:{port}{path}" for port in _ports(rest_port))
    run(shell_line(PY, ROOT / "client" / "client.py", url,
             "--model_dir", paths.MODELS / "svm", "--data", data, "--num", num))


def query_mnist(run: Runner, grpc_port: Ports, num_tests: int = 1000, concurrency: int = 8,
                data_dir: Optional[str] = None) -> None:
    """The MNIST gRPC client; several gRPC ports (replicas) are balanced round_robin."""
    extra = ["--data_dir", data_dir] if data_dir else []
    servers = ",".join(f"127.0.0.1:{port}" for port in _ports(grpc_port))
    run(shell_line(PY, ROOT / "client" / "mnist_client.py", f"--num_tests={num_tests}",
             f"--server={servers}", f"--concurrency={concurrency}", *extra))
