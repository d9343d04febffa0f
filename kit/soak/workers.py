"""The soak's workers (`inv soak --workers=N`): one replica's supervisor state, its workers'
private URLs (each a replica to a rollout step), a worker SIGKILLed during a step and back once
it answers the current labels, and each worker's resident memory."""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Callable

from kit.process import rss_mb
from kit.rollout import agreement
from kit.rollout import plan as ro
from kit.serve import server as serving
from kit.serve.replica_set import ReplicaSet
from pyserving import supervisor


def _supervisor_state(servers: ReplicaSet, index: int) -> dict:
    """Replica `index` as kit/serve/server.py records a replica with workers (their count > 1)."""
    return {"pid": servers.replicas[index].pid, "workers": 2}


def wait_serving(servers: ReplicaSet, replicas: int, timeout: float = 120.0) -> list[str]:
    """Until every worker of every replica serves; their private REST URLs, in order."""
    deadline = time.monotonic() + timeout
    for index in range(replicas):
        while not serving.workers_serving(_supervisor_state(servers, index)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers of replica {index} did not all serve within {timeout:.0f} s")
            time.sleep(0.1)
    return [url for index in range(replicas) for url in serving.worker_urls(_supervisor_state(servers, index))]


def _worker_pids(servers: ReplicaSet, index: int = 0) -> list:
    state = json.loads(supervisor.state_path(servers.replicas[index].pid).read_text())
    return [w["pid"] for w in state["workers"]]


def _worker_serving_again(servers: ReplicaSet, lost: dict) -> bool:
    worker = json.loads(supervisor.state_path(servers.replicas[0].pid).read_text())["workers"][lost["worker"]]
    return worker["pid"] not in (None, lost["pid"]) and worker["serving"]


def rss(servers: ReplicaSet) -> dict:
    rss = {}
    for replica in servers.replicas:
        try:
            pids = _worker_pids(servers, replica.index)
        except (OSError, ValueError):
            continue
        rss[str(replica.index)] = {str(slot): rss_mb(pid) for slot, pid in enumerate(pids)}
    return rss


def kill_once(servers: ReplicaSet, lost: dict, t0: float) -> Callable[[], None]:
    """A config_written hook that SIGKILLs worker `lost["worker"]` of replica 0 at its first call."""
    def kill() -> None:
        if "at" not in lost:
            pid = _worker_pids(servers)[lost["worker"]]
            os.kill(pid, signal.SIGKILL)
            lost["pid"] = pid
            lost["at"] = time.monotonic() - t0
    return kill


def back(servers: ReplicaSet, rests: list[str], lost: dict, model: str, labels: dict, t0: float, say) -> dict:
    """The supervisor starts the killed worker again; it is back once it answers the current labels
    on its private port (it opens the shared ports only with the config as it is then)."""
    say(f"[soak] SIGKILL worker {lost['worker']} (pid {lost['pid']}) during the step; its supervisor starts it again")
    deadline = time.monotonic() + 120
    while not _worker_serving_again(servers, lost):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {lost['worker']} was not serving again within 120 s")
        time.sleep(0.1)
    agreement.wait([rests[lost["worker"]]], ro.labels_answered(model, labels), 120, f"labels {labels}")
    return {**lost, "back": time.monotonic() - t0}
