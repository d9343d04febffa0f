"""Rollouts on a cluster (`--target=k8s`): the same steps as on local replicas, carried by the
models.config ConfigMap and acknowledged by every ready pod.

The kit keeps one models.config (build/models/models.config, host paths) and one rollout state
per model: `inv deploy` renders the ConfigMap from them, and a rollout step rewrites them and
applies the ConfigMap again, mapped to the paths the pods see (kit/k8s/deploy.py container_config,
for the storage `inv deploy --apply` used). Each kubelet refreshes the mounted file on its own
sync (up to about a minute, ../shared/K8S.md §3.7), then each server polls it, so the pods
disagree for a while; the step waits, through one `kubectl port-forward` per ready pod, until
every pod answers each label with its new version: kit/rollout/agreement.py, the wait local replicas
use. A pod that cannot be asked is named, and the step is not claimed for it.
"""
from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path
from typing import Callable, Iterator

from invoke.exceptions import Exit

from kit import paths
from kit.errors import KitError
from kit.k8s import cluster as k8s
from kit.k8s import deploy

TIMEOUT_S = 240.0  # kubelet sync (~60 s) + cache + the server's 1-2 s poll + a version's load, with room


def configmap_command(config_file: Path, namespace: str) -> tuple[list[str], str]:
    """kubectl apply of the ConfigMap holding `config_file` (host paths) as the pods see it."""
    target = deploy.applied(namespace)
    text = deploy.container_config(config_file.read_text(), target["storage"],
                                   target["models_uri"] or deploy.DEFAULT_MODELS_URI.get(target["storage"], ""),
                                   target.get("overlay"))
    return k8s.configmap_apply_command(text, namespace)


def config_applier(config_file: Path, namespace: str, run: k8s.Run = k8s.run_kubectl,
                   say: Callable[[str], None] = print) -> Callable[[], None]:
    """What a rollout step runs after each write of models.config: apply it as the ConfigMap."""
    def apply() -> None:
        argv, manifest = configmap_command(config_file, namespace)
        say(f"$ {shlex.join(argv)}  # ConfigMap {k8s.CONFIGMAP_NAME}")
        run(argv, stdin=manifest)
    return apply


@contextlib.contextmanager
def pod_replicas(namespace: str, run: k8s.Run = k8s.run_kubectl, forward=k8s.port_forward,
                 say: Callable[[str], None] = print) -> Iterator[list[str]]:
    """The REST base URL of every ready pod, each through its own `kubectl port-forward` (stopped
    by pid on exit): the replicas the all-pod wait asks."""
    pods = k8s.ready_pods(namespace, run=run)
    if not pods:
        raise KitError(f"no ready pod with {k8s.SELECTOR} in namespace {namespace} (inv deploy --apply first)")
    with contextlib.ExitStack() as stack:
        urls = []
        for pod in pods:
            port = stack.enter_context(forward(pod, namespace, k8s.REST_PORT))
            urls.append(f"http://127.0.0.1:{port}")
        say(f"asking {len(pods)} ready pod(s) through port-forwards: "
            + ", ".join(f"{pod} -> {url}" for pod, url in zip(pods, urls)))
        yield urls


def dry_run_pods(namespace: str, say: Callable[[str], None] = print) -> None:
    """The commands a step runs first on the cluster: the ready pods, a port-forward to each."""
    say(f"$ {shlex.join([k8s.kubectl(), 'get', 'pods', '--namespace', namespace, '--selector', k8s.SELECTOR])}"
        "  # the ready pods")
    say(f"$ {shlex.join([k8s.kubectl(), 'port-forward', '--namespace', namespace, 'pod/<pod>', f':{k8s.REST_PORT}'])}"
        "  # one per ready pod, for the whole step, stopped by pid afterwards")


def dry_run_apply(config_file: Path, namespace: str, say: Callable[[str], None] = print) -> None:
    """The ConfigMap a step applies: `config_file` as written for it, mapped to the pods' paths."""
    argv, manifest = configmap_command(config_file, namespace)
    say(f"$ {shlex.join(argv)}  # with this ConfigMap's models.config:")
    for line in json.loads(manifest)["data"][k8s.MODELS_CONFIG_KEY].splitlines():
        say(f"    {line}")


class K8s:
    """The ready pods of one namespace (the rollout Target protocol, kit/rollout/target.py)."""

    timeout = TIMEOUT_S

    def __init__(self, namespace: str, dry_run: bool = False, say: Callable[[str], None] = print):
        self.namespace, self.dry_run, self.say = namespace, dry_run, say
        self.name = f"k8s namespace {namespace}"

    def replicas(self):
        return pod_replicas(self.namespace, say=self.say)

    def config_written(self) -> None:
        config_applier(paths.MODEL_CONFIG, self.namespace, say=self.say)()

    def offline(self) -> bool:
        return False  # the pods run; a step asks them

    def show_start(self, say: Callable[[str], None]) -> None:
        dry_run_pods(self.namespace, say)

    def show_config(self, config_file: Path, say: Callable[[str], None]) -> None:
        dry_run_apply(config_file, self.namespace, say)


def create(namespace: str = k8s.DEFAULT_NAMESPACE, dry_run: bool = False, say: Callable[[str], None] = print) -> K8s:
    """The cluster target; Exit (one line) when no cluster answers (a dry run needs none)."""
    if not dry_run:
        reason = k8s.cluster_unavailable()
        if reason:
            raise Exit(f"--target=k8s: {reason}")
    return K8s(namespace, dry_run, say)
