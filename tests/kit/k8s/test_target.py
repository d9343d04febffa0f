"""kit/k8s/target.py and the rollout tasks with --target=k8s.

The cluster is a stand-in (tests/kit/k8s/data/fake_kubectl.py answers the kubectl commands the kit
runs), but its two pods are real pyserving processes, each reading its own copy of the ConfigMap
that a "kubelet" thread here refreshes, the second pod 1.5 s after the first, as kubelets sync
on their own timers (../shared/K8S.md §0.6). So a step must wait for the slow pod."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke import MockContext
from invoke.exceptions import Exit

import tasks as kit_tasks
from kit import model_config, paths
from kit.k8s import cluster as k8s
from kit.k8s import deploy
from kit.rollout import updates
from pyserving.examples import half_plus_two
from tests.helpers import launch, rest_predict

FAKE_KUBECTL = Path(__file__).parent / "data" / "fake_kubectl.py"
NAMESPACE = "kit-py"
SLOW_POD_DELAY_S = 1.5


class Kubelet(threading.Thread):
    """Copies the applied ConfigMap into each pod's mounted file (its /models paths mapped to this
    machine's build/models, the pods' volume), pod i `delays[i]` seconds after it changed."""

    def __init__(self, state: Path, pod_files: list[Path], delays: list[float]):
        super().__init__(daemon=True)
        self.state, self.pod_files, self.delays = state, pod_files, delays
        self._halt = threading.Event()
        self._pending: list[tuple[float, Path, str]] = []

    def run(self) -> None:
        source, seen = self.state / "configmap.config", None
        while not self._halt.wait(0.05):
            if source.exists() and source.read_text() != seen:
                seen = source.read_text()
                text = seen.replace(f'"{k8s.MODELS_MOUNT}/', f'"{paths.MODELS}/')
                now = time.monotonic()
                self._pending += [(now + d, f, text) for f, d in zip(self.pod_files, self.delays)]
            for item in [p for p in self._pending if p[0] <= time.monotonic()]:
                tmp = item[1].with_suffix(".tmp")
                tmp.write_text(item[2])
                tmp.replace(item[1])  # atomic, as the kubelet's ..data symlink swap
                self._pending.remove(item)

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(5)


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    build = tmp_path / "build"
    monkeypatch.setenv("KIT_BUILD_DIR", str(build))
    half_plus_two.write_tf1(str(build / "models" / "svm"), 1, b=2.0)  # answers 2.5 to x=1
    model_config.served()
    deploy.record(NAMESPACE, "pyserving", "pvc", "")  # as `inv deploy --apply` leaves it
    state = tmp_path / "fake-k8s"
    state.mkdir()
    monkeypatch.setenv("KUBECTL", str(FAKE_KUBECTL))
    monkeypatch.setenv("FAKE_K8S_DIR", str(state))
    pod_files = [tmp_path / f"pod-{i}" / "models.config" for i in range(2)]
    for f in pod_files:
        f.parent.mkdir()
        shutil.copy(paths.MODEL_CONFIG, f)
    pods = [launch(tmp_path / "logs", [f"--model_config_file={f}", "--model_config_file_poll_wait_seconds=1",
                                       "--file_system_poll_wait_seconds=1"], wait=False) for f in pod_files]
    kubelet = Kubelet(state, pod_files, [0.0, SLOW_POD_DELAY_S])
    try:
        for pod in pods:
            pod.wait_ready()
        (state / "pods.json").write_text(json.dumps({"pods": {f"kit-serving-{i}": p.rest_port
                                                              for i, p in enumerate(pods)}}))
        kubelet.start()
        yield SimpleNamespace(build=build, state=state, pods=pods)
    finally:  # the pods first, by their pids: nothing in the kubelet's stop may keep them alive
        for pod in pods:
            pod.stop()
        kubelet.stop()


def answers(pods, label: str) -> list[float]:
    return [rest_predict(pod, "svm", label=label) for pod in pods]


def test_a_rollout_on_the_cluster_waits_for_every_ready_pod(cluster, tmp_path, capsys):
    staged = tmp_path / "staged"
    half_plus_two.write_tf1(str(staged), 1, b=3.0)  # 3.5: the version to publish
    k8s_flags = {"target": "k8s", "namespace": NAMESPACE}
    kit_tasks.publish(MockContext(), model="svm", source=str(staged / "1"), force=True, **k8s_flags)
    out = capsys.readouterr().out
    # Pinned on the cluster first (label stable), so the pods do not take the new version up on their own.
    assert "pin: svm stable=1 canary=None previous=None (2 of 2 replicas agreed in " in out
    assert answers(cluster.pods, "stable") == [2.5, 2.5]

    kit_tasks.canary(MockContext(), model="svm", **k8s_flags)
    out = capsys.readouterr().out
    assert "asking 2 ready pod(s) through port-forwards: kit-serving-0 -> http://127.0.0.1:" in out
    assert f"$ {FAKE_KUBECTL} apply --namespace {NAMESPACE} -f -  # ConfigMap {k8s.CONFIGMAP_NAME}" in out
    assert "canary: svm stable=1 canary=2 previous=None (2 of 2 replicas agreed in " in out
    # Returned only once the slow pod, whose kubelet syncs 1.5 s later, answers the new label too.
    assert answers(cluster.pods, "canary") == [3.5, 3.5]
    applied = (cluster.state / "configmap.config").read_text()
    assert f'base_path: "{k8s.MODELS_MOUNT}/svm"' in applied and 'value: 2' in applied  # the pods' paths

    kit_tasks.promote(MockContext(), model="svm", **k8s_flags)
    assert answers(cluster.pods, "stable") == [3.5, 3.5] and answers(cluster.pods, "previous") == [2.5, 2.5]
    kit_tasks.rollback(MockContext(), model="svm", **k8s_flags)
    assert answers(cluster.pods, "stable") == [2.5, 2.5]
    calls = (cluster.state / "calls.log").read_text().splitlines()
    # pin, canary, promote, rollback: two ConfigMap applies and two port-forwards (one per pod) each
    assert sum(c.startswith("apply ") for c in calls) == 8
    assert sum(c.startswith("port-forward ") for c in calls) == 8


def test_a_pod_that_is_not_ready_is_not_asked(cluster, capsys):
    pods = json.loads((cluster.state / "pods.json").read_text())
    (cluster.state / "pods.json").write_text(json.dumps({**pods, "not_ready": ["kit-serving-1"]}))
    kit_tasks.publish(MockContext(), model="svm", force=True, target="k8s", namespace=NAMESPACE)
    out = capsys.readouterr().out
    assert "asking 1 ready pod(s) through port-forwards: kit-serving-0 -> " in out
    assert "pin: svm stable=1 canary=None previous=None (acknowledged by the server in " in out


def test_a_dry_run_shows_each_step_s_commands_and_configmap_and_runs_none(tmp_path, monkeypatch, capsys):
    build = tmp_path / "build"
    monkeypatch.setenv("KIT_BUILD_DIR", str(build))
    monkeypatch.setenv("KUBECTL", "/nonexistent/kubectl")  # nothing may run
    half_plus_two.write_tf1(str(build / "models" / "svm"), 1)
    model_config.served()
    updates.pin_before_publish("svm")  # no server here: pins the newest on disk, as `inv publish` does
    half_plus_two.write_tf1(str(build / "models" / "svm"), 2)
    before = paths.MODEL_CONFIG.read_text()
    kit_tasks.canary(MockContext(), model="svm", target="k8s", namespace="prod", dry_run=True)
    out = capsys.readouterr().out
    assert "canary: (dry run) svm stable=1 canary=None previous=None -> stable=1 canary=2 previous=None; " \
           "on k8s namespace prod:" in out
    assert "# step 1: load versions [1, 2], labels unchanged" in out
    assert "# step 2: move the labels {'stable': 1, 'canary': 2}, retire the rest" in out
    assert "$ /nonexistent/kubectl get pods --namespace prod --selector app.kubernetes.io/name=kit-serving" in out
    assert "$ /nonexistent/kubectl port-forward --namespace prod 'pod/<pod>' :8501" in out
    assert out.count("$ /nonexistent/kubectl apply --namespace prod -f -  # with this ConfigMap's models.config:") == 2
    assert out.count('base_path: "/models/svm"') == 2  # each step's ConfigMap, at the pods' paths
    assert paths.MODEL_CONFIG.read_text() == before
    assert json.loads((paths.MODELS / "svm.rollout.json").read_text())["canary"] is None


def test_without_a_cluster_a_step_says_what_is_missing_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_BUILD_DIR", str(tmp_path / "build"))
    half_plus_two.write_tf1(str(tmp_path / "build" / "models" / "svm"), 1)
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    monkeypatch.delenv("KUBECTL", raising=False)
    with pytest.raises(Exit) as stopped:
        kit_tasks.promote(MockContext(), model="svm", target="k8s")
    assert stopped.value.message.startswith("--target=k8s: no Kubernetes cluster: kubectl has no current context")
    with pytest.raises(Exit, match="^--target must be local or k8s, got 'gke'$"):
        kit_tasks.rollback(MockContext(), model="svm", target="gke")
    with pytest.raises(Exit, match=r"^--dry-run goes with --target=k8s"):
        kit_tasks.rollback(MockContext(), model="svm", dry_run=True)
