"""Starting, recording and stopping the kit's servers, on any backend (kit/serve/backends.py).

Every backend takes the same ModelServerConfig (build/models/models.config) and the same ports,
so the same clients and tests run against each. A started server is recorded in
build/server.json and stopped by its own pid (or container name), never by process name.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

from kit import paths
from kit.process import ServerFailed, pid_alive, port_open
from kit.serve import backends
from kit.serve.flags import EVERY_INTERFACE, HOSTS, LOOPBACK

NO_SERVER = "no server is running: start one with `inv serve`"
WAIT_NOTE_EVERY = 5.0  # seconds between "still waiting" lines while a server starts


def serve_command(backend: str = "native", config_file: Optional[Path] = None, grpc_port: int = 8500,
                  rest_port: int = 8501, extra_flags: Sequence[str] = (), host: str = LOOPBACK,
                  index: int = 0) -> list[str]:
    """The command serving `config_file` as replica `index` on the two ports, listening on `host`
    (127.0.0.1: this machine only; 0.0.0.0: every interface; the binary cannot be told: TF
    Serving has no such flag)."""
    if host not in HOSTS:
        raise ValueError(f"host must be {LOOPBACK} (this machine only) or {EVERY_INTERFACE} (every interface), "
                         f"got {host!r}: the kit's own clients connect to {LOOPBACK}")
    return backends.get(backend).command(config_file or paths.MODEL_CONFIG, grpc_port, rest_port, host, index,
                                         extra_flags)


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
    """Every replica's REST base URL, in replica order; a replica running workers
    (--pyserving_num_workers) counts each worker as a replica, reached on its private port, so
    that a rollout waits until every worker answers the change."""
    urls = []
    for r in state["replicas"]:
        private = worker_urls(r) if r.get("workers", 1) > 1 else []
        urls += private or [f"http://127.0.0.1:{r['rest_port']}"]
    return urls


def worker_urls(replica: dict) -> list[str]:
    """Each worker's private REST base URL, from its supervisor's state file ([] while none is
    written yet). A restarted worker keeps its slot's port."""
    from pyserving import supervisor  # imports neither TensorFlow nor gRPC

    try:
        state = json.loads(supervisor.state_path(replica["pid"]).read_text())
    except (OSError, ValueError, KeyError):
        return []
    return [f"http://127.0.0.1:{w['private_rest_port']}" for w in state["workers"] if w["private_rest_port"]]


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


def start(backend: str, grpc_port: int, rest_port: int, run=None, say=print, timeout: float = 180.0,
          note_every: float = WAIT_NOTE_EVERY, host: str = LOOPBACK, replicas: int = 1, workers: int = 1) -> dict:
    """Start `replicas` servers in the background, all serving build/models/models.config (as pods
    mount one volume and one ConfigMap), replica i on ports grpc_port + 10*i and rest_port + 10*i;
    wait until every one serves, saying every `note_every` s what it waits for; returns the
    recorded state. A replica that fails to start stops the others. workers > 1: each replica is
    a pyserving supervisor with that many workers on its ports (--pyserving_num_workers)."""
    if running():
        raise RuntimeError(f"a server is already running ({paths.SERVER_STATE}); stop it first: inv serve --stop")
    chosen = backends.get(backend)
    reason = chosen.unavailable()
    if reason:
        raise RuntimeError(reason)
    ports = replica_ports(grpc_port, rest_port, replicas)
    for port in (p for pair in ports for p in pair):
        if port_open(port):
            raise RuntimeError(f"port {port} is already in use on 127.0.0.1")
    if workers > 1 and backend != "native":
        raise RuntimeError(f"--workers is pyserving's (--pyserving_num_workers): the {backend} backend has no workers")
    extra = [f"--pyserving_num_workers={workers}"] if workers > 1 else []
    chosen.prepare()
    state = {"backend": backend, "replicas": []}
    server_state = paths.SERVER_STATE
    server_state.parent.mkdir(parents=True, exist_ok=True)
    for index, (grpc, rest) in enumerate(ports):
        command = serve_command(backend, paths.MODEL_CONFIG, grpc, rest, extra, host=host, index=index)
        say("$ " + " ".join(command))
        replica = {"grpc_port": grpc, "rest_port": rest, "log": str(_replica_log(index)), "workers": workers}
        try:
            replica.update(chosen.launch(command, index, _replica_log(index), rest, run))
        except RuntimeError:
            stop(run=run, say=say)
            raise
        state["replicas"].append(replica)
        server_state.write_text(json.dumps(state))  # recorded at once: a failure later still stops it
    _wait_serving(state, timeout, note_every, run, say)
    lines = [f"serving ({backend}) on gRPC 127.0.0.1:{replica['grpc_port']} and REST "
             f"http://127.0.0.1:{replica['rest_port']}" + (f", pid {replica['pid']}" if "pid" in replica else "")
             for replica in state["replicas"]]
    if workers > 1:
        lines = [f"{line}, {workers} workers (each also on its own port: {', '.join(worker_urls(r))})"
                 for line, r in zip(lines, state["replicas"])]
    if replicas == 1:
        say(f"{lines[0]}; {chosen.listening_note(host)}")
    else:
        for line in lines:
            say(line)
        say(f"{chosen.listening_note(host)}; {replicas} replicas share {paths.MODEL_CONFIG}")
    return state


def workers_serving(replica: dict) -> bool:
    """Every worker of the replica opened its ports (True for a replica without workers)."""
    if replica.get("workers", 1) <= 1:
        return True
    from pyserving import supervisor

    try:
        workers = json.loads(supervisor.state_path(replica["pid"]).read_text())["workers"]
    except (OSError, ValueError, KeyError):
        return False
    return all(w["serving"] for w in workers)


def _wait_serving(state: dict, timeout: float, note_every: float, run, say) -> None:
    """Until every replica's REST port accepts (each opens its ports once its models are loaded),
    and each of its workers serves."""
    began = time.monotonic()
    deadline, next_note = began + timeout, began + note_every
    waiting = list(state["replicas"])
    while waiting:
        for replica in list(waiting):
            if replica.get("pid") and not pid_alive(replica["pid"]):
                stop(run=run, say=say)
                raise ServerFailed(f"server exited during start-up; see {replica['log']}:\n"
                                   + _tail(Path(replica["log"])))
            if port_open(replica["rest_port"]) and workers_serving(replica):
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
    backend = backends.get(state["backend"])
    for replica in state["replicas"]:
        backend.stop(replica, run=run, say=say)
    paths.SERVER_STATE.unlink(missing_ok=True)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
