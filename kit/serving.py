"""The kit's serve step for every backend: native pyserving, a Bazel-built binary, or Docker.

All three take the same ModelServerConfig (build/models/models.config) and the same ports, so
the same clients and tests run against each. A started server is recorded in
build/server.json and stopped by its own pid (or container name), never by process name.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kit import docker_backend, paths
from kit.process import ServerFailed, ServerProcess, pid_alive, pid_command, port_open, stop_pid

BACKENDS = ("native", "binary", "docker")
DOCKER_CONFIG_NAME = "models.docker.config"
CONTAINER_NAME = "kit-tfserving"
WAIT_NOTE_EVERY = 5.0  # seconds between "still waiting" lines while a server starts
# TF Serving's defaults, 5 retries 60 s apart, keep a version that cannot load in LOADING for 5
# minutes (and a bad model at start-up from failing for as long); the kit's server retries once,
# 2 s later, so a bad version ends in END with its error within seconds. Every backend takes them.
LOAD_RETRY_FLAGS = ("--max_num_load_retries=1", "--load_retry_interval_micros=2000000")
# grpc.health.v1, for Kubernetes' grpc probe and health-checking gRPC clients (pyserving says
# NOT_SERVING on SIGTERM before it stops accepting); TF Serving has it since 2.15.1.
HEALTH_FLAG = "--enable_grpc_healthcheck_service"
LOOPBACK, EVERY_INTERFACE = "127.0.0.1", "0.0.0.0"
HOSTS = (LOOPBACK, EVERY_INTERFACE)  # the kit's own clients connect to 127.0.0.1: either works for them


def binary() -> Path:
    """The tensorflow_model_server that `inv build-server` builds."""
    return paths.BUILD / "bin" / "tensorflow_model_server"


def write_model_config(models: Mapping[str, Path], path: Optional[Path] = None,
                       labels: Optional[Mapping[str, Mapping[str, int]]] = None,
                       specific: Optional[Mapping[str, Sequence[int]]] = None) -> Path:
    """A ModelServerConfig text file serving each model's versions from its base path.

    `specific` pins a model to those versions (policy `specific`), else its latest one serves;
    `path` defaults to build/models/models.config."""
    path = path or paths.MODEL_CONFIG
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in models.items():
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, str(Path(base).resolve()), "tensorflow"
        for label, version in (labels or {}).get(name, {}).items():
            entry.version_labels[label] = version
        if specific and specific.get(name):
            entry.model_version_policy.specific.versions.extend(sorted(specific[name]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text_format.MessageToString(config))
    docker_config = path.parent / DOCKER_CONFIG_NAME
    if path == paths.MODEL_CONFIG and docker_config.exists():
        # A Docker server reads the container-path twin: keep it in step (labels, rollouts).
        atomic_write(docker_config, docker_backend.container_model_config(path.read_text(), paths.MODELS))
    return path


def atomic_write(path: Path, text: str) -> None:
    """Write a file whole or not at all: a polling server never reads half a file, and a task
    killed half-way leaves the previous one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def serve_command(backend: str, config_file: Optional[Path] = None, grpc_port: int = 8500, rest_port: int = 8501,
                  extra_flags: Sequence[str] = (), host: str = LOOPBACK, name: str = CONTAINER_NAME) -> list[str]:
    """The command serving `config_file` on the two ports, listening on `host` (127.0.0.1: this
    machine only; 0.0.0.0: every interface). The binary cannot be told: TF Serving has no such flag."""
    if host not in HOSTS:
        raise ValueError(f"host must be {LOOPBACK} (this machine only) or {EVERY_INTERFACE} (every interface), "
                         f"got {host!r}: the kit's own clients connect to {LOOPBACK}")
    config_file = config_file or paths.MODEL_CONFIG
    flags = ["--model_config_file_poll_wait_seconds=1", *LOAD_RETRY_FLAGS, HEALTH_FLAG, *extra_flags]
    if backend == "native":
        # pyserving's own flag; without it pyserving binds every interface, as TF Serving does
        listen = [f"--pyserving_listen_address={host}"] if host != EVERY_INTERFACE else []
        return [str(paths.VENV_BIN / "tensorflow_model_server"), f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                f"--model_config_file={config_file}", *flags, *listen]
    if backend == "binary":
        return docker_backend.binary_serve_command(binary(), config_file, grpc_port, rest_port, flags)
    if backend == "docker":
        return docker_backend.docker_serve_command(
            paths.MODELS, config_name=DOCKER_CONFIG_NAME, grpc_port=grpc_port, rest_port=rest_port,
            name=name, poll_wait_seconds=1, bind_address=host,
            extra_flags=(*LOAD_RETRY_FLAGS, *extra_flags),
        )
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def listening_note(backend: str, host: str) -> str:
    """Where the started server can be reached from."""
    if backend == "binary":
        return "listening on every interface: tensorflow_model_server has no flag to listen on one address"
    if host == LOOPBACK:
        return f"listening on {LOOPBACK} only (--host={EVERY_INTERFACE}: every interface)"
    return "listening on every interface"


def unavailable(backend: str) -> Optional[str]:
    """One line saying why a backend cannot run here, or None."""
    if backend == "binary" and not binary().exists():
        return f"binary: {binary()} does not exist; build it with `make build-server` (needs Docker and a network)"
    if backend == "docker":
        return docker_backend.engine_status()
    return None


def write_docker_config() -> Path:
    path = paths.MODELS / DOCKER_CONFIG_NAME
    atomic_write(path, docker_backend.container_model_config(paths.MODEL_CONFIG.read_text(), paths.MODELS))
    return path


REPLICA_PORT_STEP = 10  # replica i serves gRPC on grpc_port + 10*i and REST on rest_port + 10*i


def replica_ports(grpc_port: int, rest_port: int, replicas: int) -> list[tuple[int, int]]:
    """(gRPC, REST) port of each replica: 8500/8501, 8510/8511, ... (no two replicas share one)."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    ports = [(grpc_port + REPLICA_PORT_STEP * i, rest_port + REPLICA_PORT_STEP * i) for i in range(replicas)]
    used = [p for pair in ports for p in pair]
    if len(set(used)) != len(used):
        raise ValueError(f"gRPC port {grpc_port} and REST port {rest_port} collide across {replicas} replicas "
                         f"{REPLICA_PORT_STEP} ports apart")
    return ports


def rest_urls(state: dict) -> list[str]:
    """Every replica's REST base URL, in replica order."""
    return [f"http://127.0.0.1:{r['rest_port']}" for r in state["replicas"]]


def replica_up(replica: dict) -> bool:
    """Its process is alive (a container is assumed up: `docker stop` is what ends it)."""
    return pid_alive(replica["pid"]) if replica.get("pid") else True


def running() -> Optional[dict]:
    """The recorded server: {"backend", "replicas": [{"grpc_port", "rest_port", "log", "pid" or
    "container"}, ...]}, or None when none is recorded or every replica's process has exited."""
    server_state = paths.SERVER_STATE
    if not server_state.exists():
        return None
    state = json.loads(server_state.read_text())
    if "replicas" not in state:  # written by a kit from before replicas: one server
        state = {"backend": state["backend"],
                 "replicas": [{k: v for k, v in state.items() if k != "backend"}]}
    if not any(replica_up(r) for r in state["replicas"]):
        server_state.unlink()
        return None
    return state


def _replica_log(index: int) -> Path:
    return paths.LOGS / ("server.log" if index == 0 else f"server-{index}.log")


def container_name(index: int) -> str:
    return CONTAINER_NAME if index == 0 else f"{CONTAINER_NAME}-{index}"


def start(backend: str, grpc_port: int, rest_port: int, run=None, say=print, timeout: float = 180.0,
          note_every: float = WAIT_NOTE_EVERY, host: str = LOOPBACK, replicas: int = 1) -> dict:
    """Start `replicas` servers in the background, all serving build/models/models.config (as pods
    mount one volume and one ConfigMap), replica i on ports grpc_port + 10*i and rest_port + 10*i;
    wait until every one serves, saying every `note_every` s what it waits for; returns the
    recorded state. A replica that fails to start stops the others."""
    if running():
        raise RuntimeError(f"a server is already running ({paths.SERVER_STATE}); stop it first: inv serve --stop")
    reason = unavailable(backend)
    if reason:
        raise RuntimeError(reason)
    ports = replica_ports(grpc_port, rest_port, replicas)
    for port in (p for pair in ports for p in pair):
        if port_open(port):
            raise RuntimeError(f"port {port} is already in use on 127.0.0.1")
    if backend == "docker":
        write_docker_config()
    state = {"backend": backend, "replicas": []}
    server_state = paths.SERVER_STATE
    server_state.parent.mkdir(parents=True, exist_ok=True)
    for index, (grpc, rest) in enumerate(ports):
        command = serve_command(backend, paths.MODEL_CONFIG, grpc, rest, host=host, name=container_name(index))
        say("$ " + " ".join(command))
        replica = {"grpc_port": grpc, "rest_port": rest, "log": str(_replica_log(index))}
        if backend == "docker":
            result = run(" ".join(command), warn=True, hide=True)
            if result.exited != 0:
                stop(run=run, say=say)
                raise RuntimeError(f"docker run failed: {result.stderr.strip()}")
            replica["container"] = container_name(index)
        else:
            replica["pid"] = ServerProcess(command, _replica_log(index), ready_port=rest, detach=True).start().pid
        state["replicas"].append(replica)
        server_state.write_text(json.dumps(state))  # recorded at once: a failure later still stops it
    _wait_serving(state, timeout, note_every, run, say)
    lines = [f"serving ({backend}) on gRPC 127.0.0.1:{replica['grpc_port']} and REST "
             f"http://127.0.0.1:{replica['rest_port']}" + (f", pid {replica['pid']}" if "pid" in replica else "")
             for replica in state["replicas"]]
    if replicas == 1:
        say(f"{lines[0]}; {listening_note(backend, host)}")
    else:
        for line in lines:
            say(line)
        say(f"{listening_note(backend, host)}; {replicas} replicas share {paths.MODEL_CONFIG}")
    return state


def _wait_serving(state: dict, timeout: float, note_every: float, run, say) -> None:
    """Until every replica's REST port accepts (each opens its ports once its models are loaded)."""
    began = time.monotonic()
    deadline, next_note = began + timeout, began + note_every
    waiting = list(state["replicas"])
    while waiting:
        for replica in list(waiting):
            if replica.get("pid") and not pid_alive(replica["pid"]):
                stop(run=run, say=say)
                raise ServerFailed(f"server exited during start-up; see {replica['log']}:\n"
                                   + _tail(Path(replica["log"])))
            if port_open(replica["rest_port"]):
                waiting.remove(replica)
        if not waiting:
            return
        now = time.monotonic()
        if now > deadline:
            stop(run=run, say=say)
            raise ServerFailed(f"server not ready after {timeout:.0f} s; see {waiting[0]['log']}")
        if now >= next_note:  # a server opens its ports once every model is loaded: say why it waits
            logs = ", ".join(r["log"] for r in waiting)
            say(f"waiting for the server to load the models ({now - began:.0f} s of at most {timeout:.0f}; "
                f"log: {logs})")
            next_note += note_every
        time.sleep(0.2)


def stop(run=None, say=print) -> bool:
    """Stop every recorded replica by its pid or container name; False when none was running."""
    state = running()
    if state is None:
        return False
    for replica in state["replicas"]:
        if "container" in replica:
            command = docker_backend.docker_stop_command(replica["container"])
            say("$ " + " ".join(command))
            run(" ".join(command), warn=True, hide=True)
        elif pid_alive(replica["pid"]):
            pid = replica["pid"]
            command = pid_command(pid)
            if "model_server" not in command and "pyserving" not in command:
                raise RuntimeError(f"pid {pid} is no longer our server ({command!r}); not touching it")
            stop_pid(pid)
            say(f"stopped server pid {pid}")
    paths.SERVER_STATE.unlink(missing_ok=True)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
