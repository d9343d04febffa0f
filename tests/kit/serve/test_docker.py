"""kit.serve.docker, docker/compose.yaml and the tfserving_docker fixture, with no engine.

A fake ``docker`` executable (a small Python script put first on PATH) plays
the engine: it fails like a missing daemon, answers like a working one, or
hangs, so the real probing code runs against each case.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from kit.serve import docker as db
from kit.serve.docker import (
    binary_serve_command,
    compose_command,
    compose_env,
    compose_status,
    docker_serve_command,
    docker_stop_command,
    engine_status,
)
from tests.helpers import COMPOSE_VAR, exit_codes_listening_then_closed, interpolate

REPO = Path(__file__).resolve().parents[3]
NO_DAEMON = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)

FAKE_DOCKER = """\
#!{python}
import json, os, sys, time
args = sys.argv[1:]
log = os.environ.get("FAKE_DOCKER_LOG")
if log:
    keys = ("TFSERVING_GRPC_PORT", "TFSERVING_REST_PORT", "TFSERVING_TAG",
            "KIT_MODELS_DIR", "TFSERVING_MODEL_CONFIG")
    with open(log, "a") as out:
        out.write(json.dumps({{"argv": args, "env": {{k: os.environ.get(k) for k in keys}}}}) + "\\n")
mode = os.environ.get("FAKE_DOCKER_MODE", "up")
if args[:1] == ["info"]:
    if mode == "down":
        print("{no_daemon}", file=sys.stderr)
        print("errors pretty printing info", file=sys.stderr)
        sys.exit(1)
    if mode == "hang":
        time.sleep(30)
    print("28.2.2")
    sys.exit(0)
if args[:1] == ["compose"]:
    if mode == "nocompose":
        print("docker: unknown command: docker compose", file=sys.stderr)
        sys.exit(1)
    if "version" in args:
        print("2.39.1")
        sys.exit(0)
    if "port" in args:
        var = "TFSERVING_GRPC_PORT" if args[-1] == "8500" else "TFSERVING_REST_PORT"
        print("0.0.0.0:" + os.environ[var])
sys.exit(0)
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """Put a fake docker first on PATH; returns a setter for its mode."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable, no_daemon=NO_DAEMON))
    script.chmod(0o755)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))

    def set_mode(mode: str) -> Path:
        monkeypatch.setenv("FAKE_DOCKER_MODE", mode)
        return log

    set_mode("up")
    return set_mode


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# --- engine_status / compose_status ------------------------------------------


def test_engine_status_without_docker_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker anywhere
    reason = engine_status()
    assert reason.startswith("docker: command not found")
    assert "\n" not in reason


def test_engine_status_without_daemon(fake_docker):
    fake_docker("down")
    assert engine_status() == f"docker: no Docker engine reachable (docker info failed: {NO_DAEMON})"


def test_engine_status_when_docker_info_hangs(fake_docker):
    fake_docker("hang")
    reason = engine_status(timeout=0.5)
    assert reason == (
        "docker: no Docker engine reachable "
        "(docker info --format {{.ServerVersion}} timed out after 0.5s)"
    )


def test_engine_status_with_engine(fake_docker):
    log = fake_docker("up")
    assert engine_status() is None
    assert calls(log)[0]["argv"] == ["info", "--format", "{{.ServerVersion}}"]


def test_compose_status(fake_docker):
    fake_docker("up")
    assert compose_status() is None
    fake_docker("nocompose")
    assert compose_status() == (
        "docker: the compose plugin is not available "
        "(docker compose failed: docker: unknown command: docker compose)"
    )
    fake_docker("down")
    assert compose_status().startswith("docker: no Docker engine reachable")


# --- serve commands ------------------------------------------------------------


def test_docker_serve_command(tmp_path):
    models = tmp_path / "models"
    assert docker_serve_command(models) == [
        "docker", "run", "-d", "--rm",
        "--name", "kit-tfserving",
        "-p", "127.0.0.1:8500:8500",
        "-p", "127.0.0.1:8501:8501",
        "-v", f"{models}:/models:ro",
        "tensorflow/serving:2.21.0",
        "--model_config_file=/models/models.config",
        "--model_config_file_poll_wait_seconds=60",
    ]


def test_docker_serve_command_options(tmp_path):
    argv = docker_serve_command(
        tmp_path / "m", config_name="sub/other.config", grpc_port=9000, rest_port=9001,
        image="tensorflow/serving:2.19.0", name="x", poll_wait_seconds=0, bind_address="",
        extra_flags=["--enable_batching"],
    )
    assert argv == [
        "docker", "run", "-d", "--rm", "--name", "x",
        "-p", "9000:8500", "-p", "9001:8501",
        "-v", f"{tmp_path / 'm'}:/models:ro",
        "tensorflow/serving:2.19.0",
        "--model_config_file=/models/sub/other.config",
        "--model_config_file_poll_wait_seconds=0",
        "--enable_batching",
    ]


@pytest.mark.parametrize("name", ["/etc/models.config", "../models.config"])
def test_docker_serve_command_rejects_config_outside_mount(tmp_path, name):
    with pytest.raises(ValueError, match="relative to models_root"):
        docker_serve_command(tmp_path, config_name=name)


def test_docker_stop_command():
    assert docker_stop_command() == ["docker", "stop", "kit-tfserving"]
    assert docker_stop_command("other") == ["docker", "stop", "other"]


def test_binary_serve_command(tmp_path):
    binary = tmp_path / "build/bin/tensorflow_model_server"
    config = tmp_path / "build/models/models.config"
    assert binary_serve_command(binary, config) == [
        str(binary), "--port=8500", "--rest_api_port=8501", f"--model_config_file={config}",
    ]
    assert binary_serve_command(binary, config, 1, 2, ["--enable_batching"]) == [
        str(binary), "--port=1", "--rest_api_port=2", f"--model_config_file={config}",
        "--enable_batching",
    ]


# --- compose -------------------------------------------------------------------

def load_compose():
    return yaml.safe_load(db.COMPOSE_FILE.read_text())


def test_compose_defaults_serve_build_models_on_8500_8501():
    service = interpolate(load_compose()["services"][db.COMPOSE_SERVICE], {})
    assert service["image"] == f"tensorflow/serving:{db.TF_SERVING_VERSION}"
    assert service["ports"] == ["127.0.0.1:8500:8500", "127.0.0.1:8501:8501"]
    assert service["command"] == [
        "--model_config_file=/models/models.config",
        "--model_config_file_poll_wait_seconds=60",
    ]
    [volume] = service["volumes"]
    assert volume == {"type": "bind", "source": "../build/models", "target": "/models", "read_only": True}
    # Relative sources resolve from the compose file's folder.
    assert (db.COMPOSE_FILE.parent / volume["source"]).resolve() == REPO / "build" / "models"


def test_compose_healthcheck_passes_once_the_rest_port_accepts(tmp_path):
    # `up --wait` waits for this check; TF Serving opens its REST port only after every model of
    # the config is AVAILABLE. Run the check's own command here, against a loopback port.
    check = load_compose()["services"][db.COMPOSE_SERVICE]["healthcheck"]["test"]
    assert check[0] == "CMD" and check[-1].endswith(f"/dev/tcp/127.0.0.1/{db.REST_PORT}")

    def run_check(port: int) -> int:
        argv = [*check[1:-1], check[-1].replace(f"/{db.REST_PORT}", f"/{port}")]
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode

    listening, closed = exit_codes_listening_then_closed(run_check)
    assert listening == 0 and closed != 0  # closed: nothing listens there any more


def test_compose_header_and_docker_readme_give_the_same_commands():
    from kit.model_config import CONTAINER_CONFIG_NAME as DOCKER_CONFIG_NAME

    ups = [line.lstrip("# ").strip() for line in db.COMPOSE_FILE.read_text().splitlines() if "up -d --wait" in line]
    tfserving = f"TFSERVING_MODEL_CONFIG={DOCKER_CONFIG_NAME} docker compose -f docker/compose.yaml up -d --wait"
    assert ups == [tfserving, f"{tfserving} pyserving"]
    readme = (REPO / "docker" / "README.md").read_text().splitlines()
    assert all(up in readme for up in ups)


def test_compose_env_drives_every_variable(tmp_path):
    env = compose_env(tmp_path / "m", 40001, 40002, tag="2.19.0", config_name="x.config", base_env={})
    assert env == {
        "KIT_MODELS_DIR": str((tmp_path / "m").resolve()),
        "TFSERVING_GRPC_PORT": "40001",
        "TFSERVING_REST_PORT": "40002",
        "TFSERVING_TAG": "2.19.0",
        "TFSERVING_MODEL_CONFIG": "x.config",
    }
    service = interpolate(load_compose()["services"]["tfserving"], env)
    assert service["image"] == "tensorflow/serving:2.19.0"
    assert service["ports"] == ["127.0.0.1:40001:8500", "127.0.0.1:40002:8501"]
    assert service["volumes"][0]["source"] == env["KIT_MODELS_DIR"]
    assert service["command"][0] == "--model_config_file=/models/x.config"
    # (the pyserving service reads these too, and PYSERVING_IMAGE: tests/kit/images/test_pyserving_image.py)
    used = set(COMPOSE_VAR.findall(json.dumps(load_compose()["services"]["tfserving"])))
    assert {name for name, _ in used} == set(env) | {"TFSERVING_BIND"}


def test_compose_env_keeps_the_callers_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SOMETHING_ELSE", "1")
    assert compose_env(tmp_path)["SOMETHING_ELSE"] == "1"


def test_compose_command():
    assert compose_command("up", "-d", "--wait") == [
        "docker", "compose", "-f", str(REPO / "docker" / "compose.yaml"), "up", "-d", "--wait",
    ]
    assert compose_command("down", "-v", project="p") == [
        "docker", "compose", "-f", str(REPO / "docker" / "compose.yaml"), "-p", "p", "down", "-v",
    ]


# --- tests/e2e/docker_fixtures.py ----------------------------------------------

def _load_fixture_module():
    # Loaded from its file so this test leaves sys.path alone (the lead loads
    # the same file as a pytest plugin under its own name).
    spec = importlib.util.spec_from_file_location(
        "_docker_fixtures_under_test", REPO / "tests" / "e2e" / "docker_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docker_fixtures = _load_fixture_module()

CONTAINER_CONFIG = """
model_config_list {
  config { name: "half_plus_two" base_path: "/models/half_plus_two" model_platform: "tensorflow" }
  config { name: "other" base_path: "/models/other" model_platform: "tensorflow" }
}
"""


class FakeRest(http.server.BaseHTTPRequestHandler):
    state = "AVAILABLE"

    def do_GET(self):  # noqa: N802
        body = json.dumps(
            {"model_version_status": [{"version": "1", "state": self.state, "status": {}}]}
        ).encode()
        self.send_response(200 if self.path.startswith("/v1/models/") else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_rest():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeRest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    FakeRest.state = "AVAILABLE"


@pytest.fixture
def models_dir(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "models.config").write_text(CONTAINER_CONFIG)
    return folder


def test_compose_tfserving_starts_waits_and_stops(fake_docker, fake_rest, models_dir):
    log = fake_docker("up")
    rest_port = fake_rest.server_address[1]
    with docker_fixtures.compose_tfserving(models_dir, grpc_port=40123, rest_port=rest_port,
                                           project="kit-test", timeout=5) as (grpc, rest):
        assert grpc == "127.0.0.1:40123"
        assert rest == f"http://127.0.0.1:{rest_port}"
        assert os.environ["TFSERVING_REST_PORT"] == str(rest_port)
    assert "TFSERVING_REST_PORT" not in os.environ  # restored
    argvs = [c["argv"] for c in calls(log)]
    head = ["compose", "-f", str(db.COMPOSE_FILE), "-p", "kit-test"]
    assert argvs[0] == head + ["up", "-d", "--wait"]
    assert argvs[-1] == head + ["down", "-v"]
    assert head + ["port", "tfserving", "8500"] in argvs
    assert calls(log)[0]["env"] == {
        "TFSERVING_GRPC_PORT": "40123", "TFSERVING_REST_PORT": str(rest_port),
        "TFSERVING_TAG": db.TF_SERVING_VERSION, "KIT_MODELS_DIR": str(models_dir),
        "TFSERVING_MODEL_CONFIG": "models.config",
    }


def test_compose_tfserving_fails_clearly_when_models_never_load(fake_docker, fake_rest, models_dir):
    log = fake_docker("up")
    FakeRest.state = "LOADING"
    with pytest.raises(pytest.fail.Exception, match="did not report half_plus_two, other AVAILABLE"):
        with docker_fixtures.compose_tfserving(models_dir, rest_port=fake_rest.server_address[1],
                                               project="kit-test", timeout=1.5):
            pass
    assert calls(log)[-1]["argv"][-2:] == ["down", "-v"]  # cleaned up anyway


def test_compose_tfserving_wants_container_paths(fake_docker, models_dir):
    (models_dir / "models.config").write_text(CONTAINER_CONFIG.replace("/models/other", "/home/me/other"))
    with pytest.raises(pytest.fail.Exception, match="'other'.*not under /models"):
        with docker_fixtures.compose_tfserving(models_dir):
            pass


@pytest.mark.parametrize("mode", ["down", "absent"])
def test_tfserving_docker_fixture_skips_without_engine(tmp_path, fake_docker, mode):
    if mode == "absent":
        (tmp_path / "fakebin" / "docker").unlink()
    else:
        fake_docker(mode)
    test_file = tmp_path / "test_uses_fixture.py"
    test_file.write_text("def test_needs_server(tfserving_docker):\n    raise AssertionError\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "e2e"), str(REPO)]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "docker_fixtures", "-p", "no:cacheprovider",
         "-rs", "-q", str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout
    expected = (
        f"docker: no Docker engine reachable (docker info failed: {NO_DAEMON})"
        if mode == "down" else "docker: command not found"
    )
    assert expected in proc.stdout
