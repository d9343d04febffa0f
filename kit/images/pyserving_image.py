"""The pyserving container image: its build and run commands and its pinned requirements.

docker/pyserving.Dockerfile installs only what the server needs at run time: the dependency
closure of pyproject.toml's ``dependencies``, each pinned exactly as in requirements.txt, written
to docker/pyserving-requirements.txt by ``python -m kit.images.pyserving_image --write`` (the tests
check the file is current). Like kit.images.bazel_build, every command is a plain argv list.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kit.paths import ROOT
from kit.serve.docker import DEFAULT_BIND_ADDRESS, GRPC_PORT, REST_PORT

DOCKERFILE = Path("docker") / "pyserving.Dockerfile"
REQUIREMENTS = Path("docker") / "pyserving-requirements.txt"
ENTRYPOINT = Path("docker") / "pyserving-entrypoint.sh"

IMAGE_REPO = "kit-pyserving"
# The image's contract, as the official image's (docker/README.md, K8S.md section 1).
MODEL_NAME = "model"
MODEL_BASE_PATH = "/models"

# Never in requirements.txt (pip freeze leaves them out) and imported by nothing at run time:
# tensorflow lists setuptools (its own setup.py uses it), astunparse lists wheel. Everything is
# installed with --no-deps, so neither is fetched as a dependency; building the project fetches
# the setuptools that pyproject.toml's build-system pins.
NOT_PINNED = frozenset({"setuptools", "wheel"})


def project_version(repo_root: Path = ROOT) -> str:
    with open(repo_root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


DEFAULT_TAG = f"{IMAGE_REPO}:{project_version()}"


def build_command(tag: str = DEFAULT_TAG, repo_root: Path = ROOT) -> list[str]:
    """``docker build`` of docker/pyserving.Dockerfile with the repository root as context."""
    return ["docker", "build", "-f", str(repo_root / DOCKERFILE), "-t", tag, str(repo_root)]


def run_command(
    models_dir: Path,
    model_name: str,
    grpc_port: int = GRPC_PORT,
    rest_port: int = REST_PORT,
    tag: str = DEFAULT_TAG,
    name: str | None = None,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    args: Sequence[str] = (),
    remove: bool = True,
    read_only: bool = False,
) -> list[str]:
    """``docker run -d`` of the image serving ``models_dir/<model_name>``; ``args`` are appended
    to the server's flags by the entrypoint, as Kubernetes ``args:`` are. ``read_only``: a
    read-only root filesystem with a tmpfs /tmp, as a pod with readOnlyRootFilesystem and an
    emptyDir /tmp."""
    argv = ["docker", "run", "-d"]
    if remove:
        argv.append("--rm")
    if name:
        argv += ["--name", name]
    if read_only:
        argv += ["--read-only", "--tmpfs", "/tmp"]
    argv += [
        "-p", f"{bind_address}:{grpc_port}:{GRPC_PORT}",
        "-p", f"{bind_address}:{rest_port}:{REST_PORT}",
        "-v", f"{Path(models_dir).resolve()}:{MODEL_BASE_PATH}:ro",
        "-e", f"MODEL_NAME={model_name}",
        tag, *args,
    ]
    return argv


# --- docker/pyserving-requirements.txt ---------------------------------------------------------


def read_pins(text: str) -> dict[str, tuple[str, str]]:
    """requirements.txt text -> {canonical name: (name as spelled, version)} of its ``==`` pins."""
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        [spec] = req.specifier
        if spec.operator != "==":
            raise ValueError(f"not an exact pin: {raw!r}")
        pins[canonicalize_name(req.name)] = (req.name, spec.version)
    return pins


def runtime_closure(dependencies: Iterable[str]) -> set[str]:
    """Canonical names of ``dependencies`` and everything they require, from the installed
    packages' metadata, markers evaluated for this interpreter (Linux, Python 3.11, as the image)."""
    seen: set[str] = set()
    todo = [Requirement(d) for d in dependencies]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.requires(req.name) or ()]
    return seen


def server_requirements(pyproject_text: str, requirements_text: str) -> str:
    """The text of docker/pyserving-requirements.txt."""
    dependencies = tomllib.loads(pyproject_text)["project"]["dependencies"]
    pins = read_pins(requirements_text)
    needed = runtime_closure(dependencies) - NOT_PINNED
    missing = sorted(needed - pins.keys())
    if missing:
        raise ValueError(f"requirements.txt pins none of {', '.join(missing)}: regenerate it")
    lines = [
        "# The pyserving image's Python packages: pyproject.toml's dependencies and everything they",
        "# require, each pinned as in requirements.txt. Generated by",
        "#   .venv/bin/python -m kit.images.pyserving_image --write",
        "# and installed with --no-deps. Not listed: " + ", ".join(sorted(NOT_PINNED)),
        "# (kit/images/pyserving_image.py says why).",
    ]
    lines += [f"{pins[n][0]}=={pins[n][1]}" for n in sorted(needed)]
    return "\n".join(lines) + "\n"


def current_requirements(repo_root: Path = ROOT) -> str:
    return server_requirements((repo_root / "pyproject.toml").read_text(), (repo_root / "requirements.txt").read_text())


def main(argv: Sequence[str] | None = None, repo_root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.images.pyserving_image", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {REQUIREMENTS} (default: print it)")
    options = parser.parse_args(argv)
    text = current_requirements(repo_root)
    if options.write:
        (repo_root / REQUIREMENTS).write_text(text)
        print(f"wrote {REQUIREMENTS}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
