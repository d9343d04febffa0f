"""kit/k8s/target.py and the rollout tasks with --target=k8s, against a stand-in cluster.

`inv deploy --apply` (kit/k8s/deploy.py) applies the rendered manifests through the stand-in
kubectl (data/fake_kubectl.py, as $KUBECTL: conftest.py) and waits for the rollout, while this
module plays the cluster's part: it starts the applied Deployment's pods as real pyserving
processes with the Deployment's server args, their volumes as the storage gives them (pvc: the
kit's build/models, as in the kind rehearsal; s3: a copy the init container's stand-in makes at
pod start; gcs: no volume, the bucket read natively, here build/models), labelled as the
Deployment's template labels them. A "kubelet" thread copies the ConfigMap the pods mount into
each pod's mounted directory, the second pod 1.5 s after the first, as kubelets sync on their own
timers (../shared/K8S.md §0.6), so a step must wait for the slow pod. The rollout finds the pods
by namespace and labels, and reaches them only through the stand-in's port-forwards, which relay
TCP to the pod port named (8501 REST, 8500 gRPC).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from invoke import MockContext
from invoke.exceptions import Exit

import tasks as kit_tasks
from kit import model_config, paths
from kit.k8s import deploy
from kit.k8s import target as k8s_target
from kit.process import free_ports
from kit.rollout import updates
from pyserving.examples import half_plus_two
from tests.helpers import TEST_SERVER_FLAGS, Server, launch, rest_predict, wait_for

NAMESPACE = "kit-py"
SLOW_POD_DELAY_S = 1.5
# The kubelet here syncs within SLOW_POD_DELAY_S: a step not agreed after this never will be (the
# kit waits 240 s for real kubelets).
STEP_TIMEOUT_S = 60.0


def base_paths(config_text: str) -> list[str]:
    return re.findall(r'base_path: "([^"]*)"', config_text)


@dataclass
class Pod:
    """One pod: its volumes as folders here, its server process, its mounted config directory."""

    name: str
    root: Path  # the pod's own file system: a path on no volume lands here, and is missing
    mounts: dict[str, Path]  # the server container's mountPath -> folder here
    buckets: dict[str, Path]  # object-store URI the server reads natively -> folder here
    config_dir: Path
    server: Optional[Server] = None

    def ports(self, container: dict) -> dict[str, int]:
        """containerPort -> the port its server listens on here (launch() chose them)."""
        return {str(p["containerPort"]): {"grpc": self.server.grpc_port, "rest": self.server.rest_port}[p["name"]]
                for p in container["ports"]}

    def ready(self, container: dict) -> bool:
        """The container's readinessProbe (an httpGet), asked once."""
        probe = container["readinessProbe"]["httpGet"]
        port = next(p["containerPort"] for p in container["ports"] if probe["port"] in (p["name"], p["containerPort"]))
        url = f"http://127.0.0.1:{self.ports(container)[str(port)]}{probe['path']}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def local(self, path: str) -> str:
        """A path as the pod's server sees it, as a path on this machine."""
        for prefix, folder in sorted({**self.buckets, **self.mounts}.items(), key=lambda kv: -len(kv[0])):
            prefix = prefix.rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                return str(folder) + path[len(prefix):]
        return str(self.root) + path if path.startswith("/") else path

    def sync(self, data: dict) -> None:
        """The kubelet's update of the mounted ConfigMap: every key a file, models.config last."""
        for key in sorted(data, key=lambda k: k == "models.config"):
            text = data[key]
            if key == "models.config":
                text = re.sub(r'base_path: "([^"]*)"', lambda m: f'base_path: "{self.local(m.group(1))}"', text)
            tmp = self.config_dir / f".{key}.tmp"
            tmp.write_text(text)
            tmp.replace(self.config_dir / key)  # atomic, as the kubelet's ..data symlink swap


class Kubelet(threading.Thread):
    """Copies the stored ConfigMap (the stand-in's object file) into each pod, pod i `delays[i]`
    seconds after it changed."""

    def __init__(self, source: Path, pods: list[Pod], delays: list[float]):
        super().__init__(daemon=True)
        self.source, self.pods, self.delays = source, pods, delays
        self._halt = threading.Event()

    def run(self) -> None:
        seen, pending = self.source.read_text(), []
        while not self._halt.wait(0.05):
            text = self.source.read_text()
            if text != seen:
                seen, now = text, time.monotonic()
                pending += [(now + d, pod, json.loads(text)["data"]) for pod, d in zip(self.pods, self.delays)]
            for item in [p for p in pending if p[0] <= time.monotonic()]:
                item[1].sync(item[2])
                pending.remove(item)

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(5)


@dataclass
class Cluster:
    state: Path
    build: Path
    kubectl: str
    pods: list[Pod] = field(default_factory=list)
    buckets: dict[str, Path] = field(default_factory=dict)  # object-store URI -> folder here
    deploy_said: list[str] = field(default_factory=list)

    def stored(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict:
        return json.loads((self.state / "objects" / namespace / kind / f"{name}.json").read_text())

    def deployment(self) -> dict:
        [found] = (self.state / "objects" / NAMESPACE / "Deployment").glob("*.json")
        return json.loads(found.read_text())

    def mounted_configmap(self) -> str:
        """The name of the ConfigMap the Deployment's pods mount (the manifests', not the kit's constant)."""
        volumes = self.deployment()["spec"]["template"]["spec"]["volumes"]
        [name] = [v["configMap"]["name"] for v in volumes if "configMap" in v]
        return name

    def configmap_applies(self) -> list[dict]:
        """Every apply of the mounted ConfigMap in the namespace, in order (inv deploy's first)."""
        name, applied = self.mounted_configmap(), []
        for line in (self.state / "applied.jsonl").read_text().splitlines():
            obj = json.loads(line)
            meta = obj["metadata"]
            if (obj["kind"], meta["name"], meta.get("namespace")) == ("ConfigMap", name, NAMESPACE):
                applied.append(obj)
        return applied

    def calls(self) -> list[str]:
        log = self.state / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def write_pods(self, extra: tuple = ()) -> None:
        """pods.json: every pod with the Deployment's template labels, Ready as its probe says;
        `extra`: (pod, ready) pairs besides."""
        template = self.deployment()["spec"]["template"]
        [container] = template["spec"]["containers"]
        listed = [*((pod, pod.ready(container)) for pod in self.pods), *extra]
        pods = [{"name": pod.name, "namespace": NAMESPACE, "labels": template["metadata"]["labels"], "ready": is_ready,
                 "ports": pod.ports(container)} for pod, is_ready in listed]
        tmp = self.state / "pods.json.tmp"
        tmp.write_text(json.dumps({"pods": pods}))
        tmp.replace(self.state / "pods.json")


def new_pod(cluster: Cluster, index: int, buckets: dict[str, Path], tmp: Path) -> Pod:
    """Pod `index` of the applied Deployment: volumes as folders, init containers run, config synced.
    `buckets`: object-store URI -> folder here; the server reads gs:// ones itself (TF Serving
    cannot read s3://: only the s3 init container does)."""
    deployment = cluster.deployment()
    spec = deployment["spec"]["template"]["spec"]
    root = tmp / f"pod-{index}"
    folders = {}
    for volume in spec["volumes"]:
        if "persistentVolumeClaim" in volume:  # the PVC kit-models: build/models, as kind's hostPath volume
            folders[volume["name"]] = cluster.build / "models"
        else:  # emptyDir, configMap, secret: the pod's own
            folders[volume["name"]] = root / "volumes" / volume["name"]
            folders[volume["name"]].mkdir(parents=True)

    def mounts(container: dict) -> dict[str, Path]:
        return {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", [])}

    [server] = spec["containers"]
    config_volume = next(v["name"] for v in spec["volumes"] if "configMap" in v)
    config_mount = next(m["mountPath"] for m in server["volumeMounts"] if m["name"] == config_volume)
    natively = {uri: folder for uri, folder in buckets.items() if uri.startswith("gs://")}
    pod = Pod(f"{deployment['metadata']['name']}-{index}", root, mounts(server), natively, folders[config_volume])
    pod.sync(cluster.stored("ConfigMap", cluster.mounted_configmap())["data"])
    for init in spec.get("initContainers", []):
        run_init_container(cluster, init, Pod(pod.name, root, mounts(init), buckets, pod.config_dir))
    assert config_mount in pod.mounts
    return pod


def run_init_container(cluster: Cluster, container: dict, view: Pod) -> None:
    """The one init container the manifests have (storage s3): `aws s3 sync URI DIR`, the bucket
    being a folder here."""
    env = {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        env[var["name"]] = cluster.stored("ConfigMap", ref["name"])["data"][ref["key"]] if ref else var["value"]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    assert args[:2] == ["s3", "sync"], args
    source, target = args[-2], args[-1]
    assert source in view.buckets, f"init container {container['name']}: no bucket {source}"
    shutil.copytree(view.buckets[source], view.local(target), dirs_exist_ok=True)


def start_pod(cluster: Cluster, index: int, tmp: Path) -> Pod:
    """Pod `index` of the applied Deployment, its server started (not waited for) with the
    Deployment's args and the ConfigMap as stored now, as a controller starts a new pod."""
    pod = new_pod(cluster, index, cluster.buckets, tmp)
    cluster.pods.append(pod)
    [container] = cluster.deployment()["spec"]["template"]["spec"]["containers"]
    pod.server = launch(tmp / "logs", pod_args(pod, container), wait=False)
    return pod


def pod_args(pod: Pod, container: dict) -> list[str]:
    """The Deployment's server args, their paths mapped to this machine (the image's entrypoint adds
    --port and --rest_api_port: launch() gives free ones)."""
    args = []
    for arg in container["args"]:
        name, eq, value = arg.partition("=")
        if eq and value.startswith("/"):
            value = pod.local(value)
        if name == "--grpc_channel_arguments":  # keep the test servers' own channel argument too
            value += "," + TEST_SERVER_FLAGS[0].partition("=")[2]
        args.append(f"{name}={value}" if eq else arg)
    return args


@pytest.fixture
def make_cluster(tmp_path, monkeypatch, fake_kubectl):
    """make_cluster(overlay, storage, pods, models_uri): `inv deploy --apply` to namespace kit-py of
    the stand-in cluster, whose `pods` pods start once the Deployment is applied; svm version 1
    (answers 2.5 to x=1) trained in build/models, which is the pvc volume and the bucket."""
    build = tmp_path / "build"
    monkeypatch.setenv("KIT_BUILD_DIR", str(build))
    monkeypatch.setattr(k8s_target.K8s, "timeout", STEP_TIMEOUT_S)
    half_plus_two.write_tf1(str(build / "models" / "svm"), 1, b=2.0)
    model_config.served()
    cluster = Cluster(fake_kubectl, build, os.environ["KUBECTL"])
    kubelets: list[Kubelet] = []
    deploying: list[threading.Thread] = []

    def make(overlay: str, storage: str, pods: int, models_uri: str = "") -> Cluster:
        outcome = {}

        def apply() -> None:
            try:
                deploy.deploy(overlay, storage, replicas=pods, namespace=NAMESPACE, models_uri=models_uri, apply=True,
                              say=cluster.deploy_said.append)
            except BaseException as exc:  # noqa: BLE001 - raised again below
                outcome["error"] = exc

        thread = threading.Thread(target=apply, daemon=True)
        deploying.append(thread)
        thread.start()
        # Once kubectl apply is done and the rollout is waited for, the "controller" starts the pods.
        wait_for(lambda: not thread.is_alive() or any(c.startswith("rollout status") for c in cluster.calls()),
                 timeout=120, what="inv deploy --apply to wait for the rollout")
        if "error" in outcome:
            raise outcome["error"]
        bucket = models_uri or deploy.DEFAULT_MODELS_URI.get(storage)
        cluster.buckets = {bucket: build / "models"} if bucket else {}
        for index in range(pods):
            start_pod(cluster, index, tmp_path)
        for pod in cluster.pods:
            pod.server.wait_ready()
        cluster.write_pods()
        thread.join(60)
        if "error" in outcome or thread.is_alive():
            raise outcome.get("error") or AssertionError("inv deploy --apply did not end after the pods were ready")
        source = fake_kubectl / "objects" / NAMESPACE / "ConfigMap" / f"{cluster.mounted_configmap()}.json"
        kubelets.append(Kubelet(source, cluster.pods, [0.0, SLOW_POD_DELAY_S, 0.5]))  # pods added later too
        kubelets[-1].start()
        return cluster

    try:
        yield make
    finally:  # the pods first, by their pids: nothing else may keep them alive
        for pod in cluster.pods:
            if pod.server is not None:
                pod.server.stop()
        (fake_kubectl / "halted").touch()  # a rollout status still waiting gives up
        for thread in deploying:
            thread.join(30)
        for kubelet in kubelets:
            kubelet.stop()


def answers(cluster: Cluster, label: str) -> list[float]:
    return [rest_predict(pod.server, "svm", label=label) for pod in cluster.pods]


K8S = {"target": "k8s", "namespace": NAMESPACE}


def test_a_rollout_on_the_cluster_waits_for_every_ready_pod(make_cluster, tmp_path, capsys):
    cluster = make_cluster("pyserving", "pvc", pods=2)
    # inv deploy --apply: the manifests applied, the rollout waited for, then the storage recorded.
    manifests = cluster.build / "deploy" / "pyserving.yaml"
    assert f"$ {cluster.kubectl} apply -f {manifests}" in cluster.deploy_said
    assert f"apply -f {manifests}" in cluster.calls()
    assert "rollout status deployment/kit-serving --namespace kit-py --timeout=10m" in cluster.calls()
    assert {p.parent.name for p in (cluster.state / "objects" / NAMESPACE).glob("*/*.json")} == {
        "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "PersistentVolumeClaim", "ServiceAccount", "NetworkPolicy"}
    assert json.loads((cluster.build / "deploy" / f"applied-{NAMESPACE}.json").read_text()) == {
        "overlay": "pyserving", "storage": "pvc", "models_uri": ""}

    staged = tmp_path / "staged"
    half_plus_two.write_tf1(str(staged), 1, b=3.0)  # 3.5: the version to publish
    kit_tasks.publish(MockContext(), model="svm", source=str(staged / "1"), force=True, **K8S)
    out = capsys.readouterr().out
    # Pinned on the cluster first (label stable), so the pods do not take the new version up on their own.
    assert "pin: svm stable=1 canary=None previous=None (2 of 2 replicas agreed in " in out
    assert answers(cluster, "stable") == [2.5, 2.5]

    kit_tasks.canary(MockContext(), model="svm", **K8S)
    out = capsys.readouterr().out
    assert "asking 2 ready pod(s) through port-forwards: kit-serving-0 -> http://127.0.0.1:" in out
    assert f"$ {cluster.kubectl} apply --namespace {NAMESPACE} -f -  # ConfigMap kit-serving-config" in out
    assert "canary: svm stable=1 canary=2 previous=None (2 of 2 replicas agreed in " in out
    # Returned only once the slow pod, whose kubelet syncs 1.5 s later, answers the new label too.
    assert answers(cluster, "canary") == [3.5, 3.5]
    applied = cluster.configmap_applies()[-1]["data"]["models.config"]
    assert base_paths(applied) == ["/models/svm"] and "value: 2" in applied  # the pods' paths

    kit_tasks.promote(MockContext(), model="svm", **K8S)
    assert answers(cluster, "stable") == [3.5, 3.5] and answers(cluster, "previous") == [2.5, 2.5]
    kit_tasks.rollback(MockContext(), model="svm", **K8S)
    assert answers(cluster, "stable") == [2.5, 2.5]
    # inv deploy's ConfigMap, then pin, canary, promote, rollback: two applies and one REST
    # port-forward per pod each
    assert len(cluster.configmap_applies()) == 1 + 8
    forwards = [c for c in cluster.calls() if c.startswith("port-forward ")]
    assert len(forwards) == 8 and all(c.endswith(":8501 --address=127.0.0.1") for c in forwards)


def test_a_pod_that_is_not_ready_is_not_asked_on_an_s3_cluster(make_cluster, tmp_path, capsys):
    """s3 with TF Serving (which cannot read s3://): the init container copied the bucket into each
    pod at start; the ConfigMap a step applies names the pods' /models paths, not the bucket. A pod
    added after the pin starts, with the Deployment's args, from the ConfigMap that now has a label."""
    cluster = make_cluster("tfserving", "s3", pods=1, models_uri="s3://my-bucket/models")
    assert json.loads((cluster.build / "deploy" / f"applied-{NAMESPACE}.json").read_text()) == {
        "overlay": "tfserving", "storage": "s3", "models_uri": "s3://my-bucket/models"}
    assert cluster.stored("ConfigMap", "kit-models-source")["data"] == {"MODELS_URI": "s3://my-bucket/models"}
    # The HPA added a pod whose server is still loading: listed, not Ready, nothing listening yet.
    loading = Pod("kit-serving-1", Path("/nonexistent"), {}, {}, Path("/nonexistent"),
                  Server(None, *free_ports(2)))
    cluster.write_pods(extra=[(loading, False)])
    kit_tasks.publish(MockContext(), model="svm", force=True, **K8S)
    out = capsys.readouterr().out
    assert "asking 1 ready pod(s) through port-forwards: kit-serving-0 -> " in out
    assert "pin: svm stable=1 canary=None previous=None (acknowledged by the server in " in out
    applies = cluster.configmap_applies()
    assert len(applies) == 1 + 2 and [base_paths(a["data"]["models.config"]) for a in applies] == [["/models/svm"]] * 3
    # A pod the HPA adds after the pin starts from a ConfigMap with a label, which a server refuses
    # at start-up (nothing is loaded yet: 'Request to assign label to version 1 of model svm, which
    # is not currently available for inference', and the pod crash-loops) unless the Deployment
    # passes --allow_version_labels_for_unavailable_models.
    assert 'key: "stable"' in applies[-1]["data"]["models.config"]
    added = start_pod(cluster, 2, tmp_path)
    added.server.wait_ready()
    cluster.write_pods()
    assert answers(cluster, "stable") == [2.5, 2.5]


def test_a_failed_step_puts_the_configmap_back_on_a_gcs_cluster(make_cluster, tmp_path):
    """A canary that cannot load: step 1 applied a ConfigMap aspiring it, the pod reports the failed
    load, and the step applies the config from before it again. gcs: every ConfigMap names the
    bucket `inv deploy --apply` recorded (TF Serving reads gs:// itself; the pods have no /models)."""
    cluster = make_cluster("tfserving", "gcs", pods=1, models_uri="gs://my-bucket/models")
    assert json.loads((cluster.build / "deploy" / f"applied-{NAMESPACE}.json").read_text()) == {
        "overlay": "tfserving", "storage": "gcs", "models_uri": "gs://my-bucket/models"}
    corrupt = tmp_path / "corrupt" / "1"
    (corrupt / "variables").mkdir(parents=True)
    (corrupt / "saved_model.pb").write_bytes(b"not a SavedModel")
    kit_tasks.publish(MockContext(), model="svm", source=str(corrupt), force=True, **K8S)  # pins, then version 2
    assert [base_paths(a["data"]["models.config"]) for a in cluster.configmap_applies()] == [
        ["gs://my-bucket/models/svm"]] * 3  # inv deploy's and the pin's two
    before = cluster.configmap_applies()[-1]["data"]
    with pytest.raises(Exit) as stopped:
        kit_tasks.canary(MockContext(), model="svm", **K8S)
    assert stopped.value.message.startswith("canary: svm version 2 failed to load: ")
    applies = cluster.configmap_applies()
    assert len(applies) == 1 + 2 + 2  # inv deploy's, the pin's two, the canary's step 1 and its restore
    assert "versions: 2" in applies[-2]["data"]["models.config"]  # step 1 aspired the canary
    assert applies[-1]["data"] == before  # and the restore put back what the pod served
    assert [base_paths(a["data"]["models.config"]) for a in applies[3:]] == [["gs://my-bucket/models/svm"]] * 2
    assert answers(cluster, "stable") == [2.5]


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


def test_a_namespace_without_a_ready_pod_is_one_line_not_a_traceback(make_cluster):
    """The cluster is there but nothing of the kit's is ready in the namespace asked (a typo, or
    `inv deploy --apply` not run there): one line saying what to do, exit 1."""
    make_cluster("pyserving", "pvc", pods=1)
    with pytest.raises(Exit) as stopped:
        kit_tasks.promote(MockContext(), model="svm", target="k8s", namespace="kit-typo")
    assert stopped.value.message == ("no ready pod with app.kubernetes.io/name=kit-serving in namespace kit-typo "
                                     "(inv deploy --apply first)")
    assert stopped.value.code == 1
