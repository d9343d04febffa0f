"""deploy/ rendered by `inv deploy` (kit/k8s/deploy.py) and checked offline (kit/k8s/manifest_checks.py):
every overlay x storage variant builds with `kubectl kustomize`, passes kubernetes-validate
--strict on the oldest supported and the newest bundled Kubernetes, and passes the semantic
checks; each kind of check is fed one broken manifest and must catch it.

No cluster, no network: kubectl runs with KUBECONFIG=/dev/null. Renders are made once per module.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
import subprocess
import textwrap
import tomllib

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kit import model_config, paths
from kit.k8s import cluster as k8s
from kit.k8s import deploy, manifest_checks
from kit.paths import ROOT
from kit.serve import docker as docker_backend
from kit.serve import server as serving

COMBOS = [("tfserving", "pvc"), ("tfserving", "gcs"), ("tfserving", "s3"), ("pyserving", "pvc"), ("pyserving", "gcs"),
          ("pyserving", "s3")]
VERSIONS = deploy.k8s_versions()
KSERVE_SCHEMA = ROOT.parent / "shared" / "k8s" / "kserve-inferenceservice-v1beta1.schema.json"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(overlay, storage) -> the rendered objects, from a build folder with no trained model."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_BUILD_DIR", str(tmp_path_factory.mktemp("build")))
        for overlay, storage in COMBOS:
            out[overlay, storage] = deploy.render(overlay, storage, say=lambda line: None).docs
    return out


def find(docs: list[dict], kind: str, name: str = "") -> dict:
    [obj] = [d for d in docs if d["kind"] == kind and (not name or d["metadata"]["name"] == name)]
    return obj


def server(docs: list[dict]) -> dict:
    return manifest_checks.server_container(find(docs, "Deployment")["spec"]["template"])


def broken(docs: list[dict]) -> list[dict]:
    return copy.deepcopy(docs)


# ---- every overlay x storage x Kubernetes version -------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("combo", COMBOS, ids="-".join)
def test_every_overlay_and_storage_passes_the_strict_schemas(rendered, combo, version):
    checked, skipped, errors = manifest_checks.schema_errors(rendered[combo], version)
    print(f"{combo[0]}/{combo[1]} against Kubernetes {version}: {checked} resources checked, "
          f"{len(errors)} errors, {len(skipped)} CRDs skipped")
    assert errors == [] and skipped == []
    assert checked == len(rendered[combo]) >= 7  # gcs: no PVC


@pytest.mark.parametrize("combo", COMBOS, ids="-".join)
def test_every_overlay_and_storage_passes_the_semantic_checks(rendered, combo):
    assert manifest_checks.semantic_problems(rendered[combo], k8s.DEFAULT_MODELS) == []


def test_the_versions_are_the_oldest_supported_and_the_newest_bundled():
    import kubernetes_validate

    assert VERSIONS == ("1.30", "1.37") and kubernetes_validate.latest_version().startswith("1.37")
    assert "Kubernetes 1.30" in (ROOT / "README.md").read_text()


def test_the_overlays_build_alone_with_plain_kubectl_kustomize():
    """What a user gets from `kubectl kustomize deploy/overlays/<overlay>`: the PVC default."""
    for overlay in k8s.OVERLAYS:
        proc = subprocess.run([k8s.render_kubectl(), "kustomize", str(k8s.DEPLOY / "overlays" / overlay)],
                              capture_output=True, text=True, env=k8s.offline_env(), check=True)
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert manifest_checks.semantic_problems(docs, k8s.DEFAULT_MODELS) == []
        assert find(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_the_servicemonitor_component_names_a_service_port(tmp_path):
    """The optional component: the CRD is skipped by the schema check (counted), its port checked."""
    work = tmp_path / "sm"
    work.mkdir()
    rel = os.path.relpath(k8s.DEPLOY, work)
    (work / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [f"{rel}/overlays/tfserving"], "components": [f"{rel}/components/servicemonitor"]}))
    proc = subprocess.run([k8s.render_kubectl(), "kustomize", str(work)], capture_output=True, text=True,
                          env=k8s.offline_env(), check=True)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert manifest_checks.check_ports(docs) == []
    checked, skipped, errors = manifest_checks.schema_errors(docs, VERSIONS[1])
    assert (skipped, errors) == (["ServiceMonitor/kit-serving"], []) and checked == len(docs) - 1
    find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "metrics"
    assert manifest_checks.check_ports(docs) == [
        "ServiceMonitor/kit-serving: endpoint port 'metrics' names no Service port"]


# ---- what each overlay and storage variant must contain -------------------------------------------
def test_names_and_labels_are_the_ones_kit_k8s_uses(rendered):
    for docs in rendered.values():
        deployment = find(docs, "Deployment", k8s.DEPLOYMENT)
        assert deployment["spec"]["selector"]["matchLabels"] == dict([k8s.APP_LABEL])
        assert k8s.SELECTOR == "=".join(k8s.APP_LABEL)
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": k8s.CONFIGMAP_NAME}} in volumes
        assert {"name": "config", "mountPath": k8s.CONFIG_DIR, "readOnly": True} in server(docs)["volumeMounts"]
        assert {find(docs, "Service", n)["spec"]["ports"][0]["port"] for n in (k8s.REST_SERVICE, k8s.GRPC_SERVICE)} \
            == {k8s.REST_PORT, k8s.GRPC_PORT}
        assert find(docs, "Service", k8s.GRPC_SERVICE)["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_configmap_apply_command_applies_the_rendered_configmap(rendered, overlay):
    """The rollout tasks' ConfigMap is the manifests' one: same name, labels and side files."""
    cm = find(rendered[overlay, "pvc"], "ConfigMap", k8s.CONFIGMAP_NAME)
    argv, stdin = k8s.configmap_apply_command(cm["data"][k8s.MODELS_CONFIG_KEY], "kit-serving")
    assert argv[1:] == ["apply", "--namespace", "kit-serving", "-f", "-"]
    applied = yaml.safe_load(stdin)
    assert applied["data"] == cm["data"]
    assert applied["metadata"] == {**cm["metadata"], "namespace": "kit-serving"}


def test_the_pinned_images_follow_the_kit(rendered):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert server(rendered["pyserving", "pvc"])["image"] == f"kit-pyserving:{version}"
    assert server(rendered["tfserving", "pvc"])["image"] == docker_backend.SERVING_IMAGE == "tensorflow/serving:2.21.0"
    sync = find(rendered["tfserving", "s3"], "Deployment")["spec"]["template"]["spec"]["initContainers"][0]
    assert sync["image"].startswith("amazon/aws-cli:2.")
    assert "envFrom" not in sync  # the optional Secret kit-models-s3 is mounted as files, never env
    assert {"name": "s3-credentials", "mountPath": "/var/run/secrets/kit-models-s3", "readOnly": True} \
        in sync["volumeMounts"]


def test_tfserving_gets_a_short_grace_and_pyserving_a_real_drain(rendered):
    from pyserving.app import ModelServer

    drain = inspect.signature(ModelServer.stop).parameters["grace_s"].default
    for overlay, grace_range in (("tfserving", range(6, 21)), ("pyserving", range(int(drain) + 6, 61))):
        spec = find(rendered[overlay, "pvc"], "Deployment")["spec"]["template"]["spec"]
        sleep = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        # TF Serving ignores SIGTERM: the pod lasts the whole grace, so keep it just above preStop.
        # pyserving drains after preStop: grace must cover preStop + its drain time.
        assert 0 < sleep and spec["terminationGracePeriodSeconds"] in grace_range, overlay


def test_storage_variants_mount_what_they_say(rendered):
    def spec(combo):
        return find(rendered[combo], "Deployment")["spec"]["template"]["spec"]

    assert {"name": "models", "persistentVolumeClaim": {"claimName": "kit-models", "readOnly": True}} \
        in spec(("tfserving", "pvc"))["volumes"]
    s3 = spec(("tfserving", "s3"))  # TF Serving cannot read s3://: an init container copies into a volume
    assert {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}} in s3["volumes"]
    assert find(rendered["tfserving", "s3"], "ConfigMap", "kit-models-source")["data"] == {
        "MODELS_URI": "s3://kit-models/models"}
    for storage, scheme in (("s3", "s3"), ("gcs", "gs")):  # pyserving reads both buckets itself
        docs = rendered["pyserving", storage]
        pod = spec(("pyserving", storage))
        assert "initContainers" not in pod and "models" not in {v["name"] for v in pod["volumes"]}
        assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim" or d["metadata"]["name"] ==
                    "kit-models-source"]
        assert f'base_path: "{scheme}://kit-models/models/svm"' in find(docs, "ConfigMap", k8s.CONFIGMAP_NAME)[
            "data"][k8s.MODELS_CONFIG_KEY]
        assert {"name": "model-cache", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
        env = {e["name"]: e.get("value") for e in server(docs)["env"]}
        assert env["PYSERVING_STORAGE_CACHE_DIR"] == "/var/cache/pyserving"
        assert int(env["PYSERVING_STORAGE_CACHE_MAX_BYTES"]) < 2 << 30  # below the emptyDir's limit
        assert {"name": "model-cache", "mountPath": "/var/cache/pyserving"} in server(docs)["volumeMounts"]
    s3_server = server(rendered["pyserving", "s3"])
    assert {"name": "s3-credentials", "mountPath": "/var/run/secrets/kit-models-s3", "readOnly": True} \
        in s3_server["volumeMounts"]  # the optional Secret, as files, never env
    assert not [e for e in s3_server["env"] if "valueFrom" in e]
    gcs = rendered["tfserving", "gcs"]
    assert not [d for d in gcs if d["kind"] == "PersistentVolumeClaim"]
    assert "models" not in {v["name"] for v in spec(("tfserving", "gcs"))["volumes"]}
    assert 'base_path: "gs://kit-models/models/svm"' in find(gcs, "ConfigMap", k8s.CONFIGMAP_NAME)["data"][
        k8s.MODELS_CONFIG_KEY]


def test_the_shipped_models_configs_come_from_the_kit_writer(build):
    """deploy/base's and the gcs component's default models.config are what the writer gives."""
    host = model_config.write({m: paths.MODELS / m for m in k8s.DEFAULT_MODELS}, build / "host.config")
    assert (k8s.DEPLOY / "base" / "config" / "models.config").read_text() == deploy.container_config(
        host.read_text(), "pvc", "")
    assert (k8s.DEPLOY / "components" / "storage-gcs" / "models.config").read_text() == deploy.container_config(
        host.read_text(), "gcs", deploy.DEFAULT_MODELS_URI["gcs"])


def test_render_serves_the_trained_models_with_their_rollout_labels(build):
    """The ConfigMap carries the config `inv serve` writes (labels and pinned versions included),
    with container paths."""
    from kit.rollout import plan as rollout

    for version in (1, 2):
        (build / "models" / "svm" / str(version) / "variables").mkdir(parents=True)
        (build / "models" / "svm" / str(version) / "saved_model.pb").write_bytes(b"graph")
    model_config.save_state(build / "models" / "models.config",
                       rollout.start_canary(model_config.Rollout("svm", str(build / "models" / "svm"), stable=1), 2))
    result = deploy.render("pyserving", "pvc", replicas=3, namespace="ml", image="registry.example/kit:1.2",
                           say=lambda line: None)
    cm = find(result.docs, "ConfigMap", k8s.CONFIGMAP_NAME)
    # As literal text: the host config with its base_path on the pods' volume, nothing else changed.
    assert str(build) in (build / "models" / "models.config").read_text()
    assert cm["data"][k8s.MODELS_CONFIG_KEY] == textwrap.dedent("""\
        model_config_list {
          config {
            name: "svm"
            base_path: "/models/svm"
            model_platform: "tensorflow"
            model_version_policy {
              specific {
                versions: 1
                versions: 2
              }
            }
            version_labels {
              key: "canary"
              value: 2
            }
            version_labels {
              key: "stable"
              value: 1
            }
          }
        }
        """)
    [entry] = text_format.Parse(cm["data"][k8s.MODELS_CONFIG_KEY],
                                model_server_config_pb2.ModelServerConfig()).model_config_list.config
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert result.models == ["svm"] and result.path == build / "deploy" / "pyserving.yaml"
    assert find(result.docs, "Deployment")["spec"]["replicas"] == 3
    assert find(result.docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    assert server(result.docs)["image"] == "registry.example/kit:1.2"
    assert {d["metadata"].get("namespace") for d in result.docs if d["kind"] != "Namespace"} == {"ml"}
    assert find(result.docs, "Namespace")["metadata"]["name"] == "ml"


@pytest.mark.parametrize("combo", COMBOS, ids="-".join)
def test_the_readme_s_promises_hold_for_every_overlay_and_storage(rendered, combo):
    """README "Deploying to Kubernetes", each promise about the rendered objects, as literals (and
    the scrape annotations also against the container's REST port and monitoring.config's path)."""
    overlay, docs = combo[0], rendered[combo]
    deployment = find(docs, "Deployment")
    template, container = deployment["spec"]["template"], server(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "rest": 8501}
    # a start-up probe (the ports open once the models are loaded)
    assert ports[container["startupProbe"]["tcpSocket"]["port"]] == 8501
    # a readiness probe on the metrics URL
    assert container["readinessProbe"]["httpGet"] == {"path": "/monitoring/prometheus/metrics", "port": "rest"}
    monitoring = find(docs, "ConfigMap", "kit-serving-config")["data"]["monitoring.config"]
    assert re.search(r'enable: true\s+path: "/monitoring/prometheus/metrics"', monitoring)
    # a gRPC health liveness probe
    assert container["livenessProbe"]["grpc"] == {"port": 8500}
    assert "--enable_grpc_healthcheck_service" in container["args"]
    # Prometheus scrape annotations
    annotations = template["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8501",
        "prometheus.io/path": "/monitoring/prometheus/metrics"}
    assert annotations["prometheus.io/port"] == str(ports["rest"])
    assert f'path: "{annotations["prometheus.io/path"]}"' in monitoring
    # an HPA on CPU (utilization of the CPU request), a PDB
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kit-serving"}
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    assert container["resources"]["requests"]["cpu"] == "1"
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "kit-serving"}}
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "kit-serving"
    # rolling updates with maxUnavailable: 0
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # uid 10001 on a read-only root file system with no capabilities
    assert template["spec"]["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # TF Serving: a 5 s preStop sleep and a 15 s grace period; pyserving: 30 s
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert template["spec"]["terminationGracePeriodSeconds"] == {"tfserving": 15, "pyserving": 30}[overlay]


def test_probe_check(rendered):
    docs = broken(rendered["pyserving", "pvc"])
    container = server(docs)
    del container["startupProbe"], container["readinessProbe"], container["livenessProbe"]
    assert manifest_checks.check_probes(docs) == [
        "Deployment/kit-serving container server: no startupProbe.tcpSocket (the ports open once the models are "
        "loaded; without it a slow load is killed by the liveness probe)",
        "Deployment/kit-serving container server: no readinessProbe.httpGet (on the metrics path of the REST port)",
        "Deployment/kit-serving container server: no livenessProbe.grpc (grpc.health.v1 on the gRPC port 8500)"]
    docs = broken(rendered["tfserving", "gcs"])
    container = server(docs)
    container["startupProbe"]["tcpSocket"]["port"] = 9000
    container["readinessProbe"]["httpGet"] = {"path": "/v1/models/svm", "port": "grpc"}
    container["livenessProbe"]["grpc"]["port"] = 8501
    container["args"].remove("--enable_grpc_healthcheck_service")
    assert manifest_checks.check_probes(docs) == [
        "Deployment/kit-serving container server: startupProbe.tcpSocket port 9000 is neither the gRPC port 8500 "
        "nor the REST port 8501",
        "Deployment/kit-serving container server: readinessProbe.httpGet port 'grpc' is not the REST port 8501",
        "Deployment/kit-serving: readinessProbe asks for /v1/models/svm, but monitoring.config serves metrics at "
        "/monitoring/prometheus/metrics",
        "Deployment/kit-serving container server: livenessProbe.grpc port 8501 is not the gRPC port 8500",
        "Deployment/kit-serving container server: livenessProbe.grpc needs --enable_grpc_healthcheck_service in the "
        "args"]


def test_scrape_check(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    template = find(docs, "Deployment")["spec"]["template"]
    del template["metadata"]["annotations"]
    assert manifest_checks.check_scrape(docs) == [
        "Deployment/kit-serving: pod annotation prometheus.io/scrape is None, expected 'true'",
        "Deployment/kit-serving: pod annotation prometheus.io/port is None, expected '8501'",
        "Deployment/kit-serving: pod annotation prometheus.io/path is None, expected '/monitoring/prometheus/metrics'"]
    template["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "8500",
                                           "prometheus.io/path": "/monitoring/prometheus/metrics"}
    cm = find(docs, "ConfigMap", k8s.CONFIGMAP_NAME)
    cm["data"]["monitoring.config"] = cm["data"]["monitoring.config"].replace("/monitoring/prometheus/metrics", "/m")
    assert manifest_checks.check_scrape(docs) == [
        "Deployment/kit-serving: pod annotation prometheus.io/port is '8500', expected '8501'",
        "Deployment/kit-serving: pod annotation prometheus.io/path is '/monitoring/prometheus/metrics', expected '/m'"]


def test_scaling_check(rendered):
    docs = broken(rendered["pyserving", "s3"])
    hpa = find(docs, "HorizontalPodAutoscaler")
    hpa["spec"]["metrics"][0]["resource"]["name"] = "memory"
    del server(docs)["resources"]["requests"]["cpu"]
    docs.remove(find(docs, "PodDisruptionBudget"))
    assert manifest_checks.check_scaling(docs) == [
        "HorizontalPodAutoscaler/kit-serving: scales on Resource memory Utilization; expected CPU utilization alone",
        "Deployment/kit-serving: the server has no CPU request, which CPU utilization is measured against",
        "Deployment/kit-serving: no PodDisruptionBudget selects its pods"]
    hpa["spec"]["metrics"] = [{"type": "Pods", "pods": {
        "metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "100"}}}]
    hpa["spec"]["scaleTargetRef"]["name"] = "other"
    assert manifest_checks.check_scaling(docs)[0] == "Deployment/kit-serving: no HorizontalPodAutoscaler scales it"
    hpa["spec"]["scaleTargetRef"]["name"] = "kit-serving"
    assert manifest_checks.check_scaling(docs)[0] == (
        "HorizontalPodAutoscaler/kit-serving: scales on Pods requests_per_second AverageValue; expected CPU "
        "utilization alone")


# ---- options refused with one line ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"image": "tensorflow/serving"}, "must be pinned"),
    ({"image": "tensorflow/serving:latest"}, "must be pinned"),
    ({"namespace": "Kit_Serving"}, "is not a valid namespace name"),
    ({"replicas": 0}, "--replicas must be at least 1"),
    ({"storage": "s3", "models_uri": "gs://b/m"}, "--models-uri goes with"),
    ({"overlay": "kserve"}, "--overlay must be one of tfserving, pyserving"),
])
def test_bad_options_stop_with_one_line(build, kwargs, message):
    with pytest.raises(deploy.DeployError, match=message) as info:
        deploy.render(**kwargs, say=lambda line: None)
    assert "\n" not in str(info.value) and not (build / "deploy").exists()


def test_apply_without_a_cluster_says_what_is_missing(build, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    with pytest.raises(deploy.DeployError) as info:
        deploy.deploy("tfserving", apply=True, say=lambda line: None)
    assert str(info.value).startswith("--apply: no Kubernetes cluster: kubectl has no current context")
    assert "\n" not in str(info.value) and (build / "deploy" / "tfserving.yaml").exists()


def test_dry_run_prints_every_command_and_touches_no_cluster(build, capsys):
    ran = []
    deploy.deploy("pyserving", "s3", namespace="kit-py", apply=True, dry_run=True, run=ran.append)
    out = capsys.readouterr().out
    assert ran == []
    assert f"kubectl kustomize {build / 'deploy' / 'pyserving-s3'}" in out
    assert f"kubectl apply -f {build / 'deploy' / 'pyserving.yaml'}" in out
    assert "kubectl rollout status deployment/kit-serving --namespace kit-py --timeout=10m" in out


# ---- each kind of check catches a broken manifest -------------------------------------------------
def test_schema_check_catches_a_wrong_type_and_an_unknown_field(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    find(docs, "Deployment")["spec"]["replicas"] = "two"
    find(docs, "Service", k8s.REST_SERVICE)["spec"]["ports"][0]["protocl"] = "TCP"
    _, _, errors = manifest_checks.schema_errors(docs, VERSIONS[1])
    assert len(errors) == 2
    assert "Deployment/kit-serving against 1.37: spec.replicas: 'two' is not of type 'integer', 'null'" in errors
    assert "Service/kit-serving-rest against 1.37: spec.ports.0: Additional properties are not allowed ('protocl' " \
           "was unexpected)" in errors


def test_schema_check_refuses_a_kubernetes_older_than_the_manifests_need(rendered):
    """preStop.sleep does not exist before 1.29: strict validation against 1.28 says so."""
    _, _, errors = manifest_checks.schema_errors(rendered["tfserving", "pvc"], "1.28")
    assert len(errors) == 1 and errors[0].startswith("Deployment/kit-serving against 1.28") and "sleep" in errors[0]


def test_selector_check(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    problems = manifest_checks.check_selectors(docs)
    assert problems[0] == ("Deployment/kit-serving: spec.selector does not match its pod template labels "
                           "{'app': 'other'}")
    assert {p.split(":")[0] for p in problems} == {
        "Deployment/kit-serving", "Service/kit-serving-grpc", "Service/kit-serving-rest",
        "PodDisruptionBudget/kit-serving"}
    docs = broken(rendered["tfserving", "pvc"])
    find(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "tfs"
    assert manifest_checks.check_selectors(docs) == [
        "HorizontalPodAutoscaler/kit-serving: scaleTargetRef Deployment/tfs is no Deployment here"]


def test_port_check(rendered):
    docs = broken(rendered["pyserving", "pvc"])
    container = server(docs)
    container["readinessProbe"]["httpGet"]["port"] = "http"
    container["livenessProbe"]["grpc"]["port"] = "grpc"
    find(docs, "Service", k8s.GRPC_SERVICE)["spec"]["ports"][0]["targetPort"] = 9000
    assert manifest_checks.check_ports(docs) == [
        "Deployment/kit-serving container server: readinessProbe.httpGet port 'http' is not a declared container port",
        "Deployment/kit-serving container server: livenessProbe.grpc port 'grpc': gRPC probes take a port number, "
        "not a name",
        "Service/kit-serving-grpc: targetPort 9000 is not a container port of its pods"]


def test_args_equal_inv_serves_flags_but_for_the_listed_differences(rendered):
    """The comparison itself, made here from serve_command rather than through check_args."""
    serve = k8s.flag_map(serving.serve_command("native")[1:])
    pod = k8s.flag_map(server(rendered["tfserving", "pvc"])["args"])
    for name, value in serve.items():
        if name in k8s.SERVE_FLAGS_DROPPED:
            assert name not in pod
        elif name in k8s.SERVE_FLAGS_CHANGED:
            assert pod[name] != value
        else:
            assert pod[name] == value, name
    assert pod.keys() - serve.keys() == k8s.cluster_flags(2).keys()
    assert pod["model_config_file"] == f"{k8s.CONFIG_DIR}/models.config"


def test_args_check(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    args = server(docs)["args"]
    args.remove("--allow_version_labels_for_unavailable_models")
    args[args.index("--model_config_file_poll_wait_seconds=1")] = "--model_config_file_poll_wait_seconds=60"
    args.append("--port=9000")
    assert manifest_checks.check_args(docs) == [
        "Deployment/kit-serving: args lack --allow_version_labels_for_unavailable_models (expected "
        "--allow_version_labels_for_unavailable_models)",
        "Deployment/kit-serving: --model_config_file_poll_wait_seconds=60 differs from the expected "
        "--model_config_file_poll_wait_seconds=1",
        "Deployment/kit-serving: args have --port, which neither `inv serve` nor the cluster's list "
        "(kit/k8s/cluster.py) names"]


def test_args_check_sizes_threads_from_the_cpu_limit(rendered):
    docs = broken(rendered["pyserving", "pvc"])
    server(docs)["resources"]["limits"]["cpu"] = "4"
    problems = manifest_checks.check_args(docs)
    assert "Deployment/kit-serving: --tensorflow_intra_op_parallelism=2 differs from the expected " \
           "--tensorflow_intra_op_parallelism=4" in problems and len(problems) == 4
    assert manifest_checks.check_config(docs) == [
        "Deployment/kit-serving: batching.config num_batch_threads 2 differs from the CPU limit 4"]


def test_config_check_reads_models_config_with_pyservings_reader(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    cm = find(docs, "ConfigMap", k8s.CONFIGMAP_NAME)
    text = cm["data"][k8s.MODELS_CONFIG_KEY]
    assert manifest_checks.check_config(docs, ["svm", "mnist"]) == []
    assert manifest_checks.check_config(docs, ["svm"]) == [
        "ConfigMap/kit-serving-config: models.config serves ['mnist', 'svm'], expected ['svm']"]
    cm["data"][k8s.MODELS_CONFIG_KEY] = text.replace("model_config_list", "model_config_lst")
    [problem] = manifest_checks.check_config(docs)
    assert problem == "ConfigMap/kit-serving-config: models.config does not parse: Invalid protobuf file: " \
                      "'models.config'"  # pyserving's reader says it so (TF Serving's words)
    cm["data"][k8s.MODELS_CONFIG_KEY] = text.replace('"/models/mnist"', '"/data/mnist"')
    assert manifest_checks.check_config(docs) == [
        "ConfigMap/kit-serving-config: model mnist's base_path /data/mnist is on no mounted volume"]
    cm["data"][k8s.MODELS_CONFIG_KEY] = text
    cm["data"]["monitoring.config"] = cm["data"]["monitoring.config"].replace("enable: true", "enable: false")
    assert manifest_checks.check_config(docs) == [
        "ConfigMap/kit-serving-config: monitoring.config does not enable Prometheus metrics (the readiness probe "
        "and the scrape annotations ask for them)"]


def test_config_mount_check(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    mount = next(m for m in server(docs)["volumeMounts"] if m["name"] == "config")
    mount["subPath"] = "models.config"
    mount["mountPath"] = f"{k8s.CONFIG_DIR}/models.config"
    problems = manifest_checks.check_config_mount(docs)
    assert problems[0] == ("Deployment/kit-serving container server: ConfigMap mounted with subPath 'models.config', "
                           "which never receives updates")
    assert "Deployment/kit-serving: --model_config_file=/etc/kit-serving/models.config is not in the mounted " \
           "ConfigMap directory" in problems
    docs = broken(rendered["tfserving", "pvc"])
    find(docs, "ConfigMap", k8s.CONFIGMAP_NAME)["metadata"]["name"] = "kit-serving-config-5g2mh7f8kc"
    assert manifest_checks.check_config_mount(docs)[0] == (
        "no ConfigMap named kit-serving-config (found kit-serving-config-5g2mh7f8kc: a name suffix hash turns every "
        "models.config edit into a rollout)")


@pytest.mark.parametrize("image", ["tensorflow/serving:latest", "tensorflow/serving", "kit-pyserving"])
def test_image_check(rendered, image):
    docs = broken(rendered["tfserving", "s3"])
    find(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"][0]["image"] = image
    assert manifest_checks.check_images(docs) == [
        f"Deployment/kit-serving container sync-models: image {image!r} is not pinned (no tag, or :latest)"]
    server(docs)["image"] = "tensorflow/serving@sha256:" + "a" * 64
    assert len(manifest_checks.check_images(docs)) == 1


DIGEST = "@sha256:" + "a" * 64


@pytest.mark.parametrize("image,pinned", [
    ("tensorflow/serving:2.21.0", True), ("tensorflow/serving" + DIGEST, True),
    ("tensorflow/serving:2.21.0" + DIGEST, True), ("registry:5000/kit-pyserving:0.1.0", True),
    ("tensorflow/serving", False), ("tensorflow/serving:latest", False),
    ("tensorflow/serving:latest" + DIGEST, False), ("registry:5000/kit-pyserving", False), ("", False),
])
def test_one_pinning_rule_for_deploy_s_image_option_and_the_manifest_check(image, pinned):
    assert manifest_checks.image_pinned(image) is pinned
    options = ("tfserving", "pvc", image, 1, "kit-serving", "")
    if pinned or not image:  # no --image: the overlay's own, pinned, image
        deploy.check_options(*options)
    else:
        with pytest.raises(deploy.DeployError, match="must be pinned"):
            deploy.check_options(*options)


def test_non_root_check(rendered):
    docs = broken(rendered["tfserving", "s3"])
    spec = find(docs, "Deployment")["spec"]["template"]["spec"]
    del spec["securityContext"]["runAsUser"]
    del spec["initContainers"][0]["securityContext"]["readOnlyRootFilesystem"]
    server(docs)["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    assert manifest_checks.check_non_root(docs) == [
        "Deployment/kit-serving container sync-models: runAsUser is None (the TF Serving image has no USER: give a "
        "numeric non-zero uid)",
        "Deployment/kit-serving container sync-models: readOnlyRootFilesystem is not true",
        "Deployment/kit-serving container server: runAsUser is None (the TF Serving image has no USER: give a "
        "numeric non-zero uid)",
        "Deployment/kit-serving container server: capabilities do not drop ALL"]
    spec["securityContext"]["runAsUser"] = 0
    assert "Deployment/kit-serving container server: runAsUser is 0 (the TF Serving image has no USER: give a " \
           "numeric non-zero uid)" in manifest_checks.check_non_root(docs)


def test_shutdown_check(rendered):
    docs = broken(rendered["tfserving", "pvc"])
    deployment = find(docs, "Deployment")
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    assert manifest_checks.check_shutdown(docs) == [
        "Deployment/kit-serving: strategy must be RollingUpdate with maxUnavailable 0",
        "Deployment/kit-serving container server: preStop sleep 5 s is not shorter than "
        "terminationGracePeriodSeconds 5"]


def test_render_refuses_to_write_manifests_that_fail_a_check(build, tmp_path, monkeypatch):
    """inv deploy runs the checks before writing: a copy of deploy/ whose base mounts the ConfigMap
    file by subPath stops it with the problems, and nothing is written."""
    import shutil

    copy_dir = tmp_path / "deploy"
    shutil.copytree(k8s.DEPLOY, copy_dir)
    manifest = copy_dir / "base" / "deployment.yaml"
    manifest.write_text(manifest.read_text().replace(
        "              mountPath: /etc/kit-serving\n",
        "              mountPath: /etc/kit-serving/models.config\n              subPath: models.config\n"))
    monkeypatch.setattr(k8s, "DEPLOY", copy_dir)
    with pytest.raises(deploy.DeployError) as info:
        deploy.render("tfserving", say=lambda line: None)
    lines = str(info.value).splitlines()
    assert lines[0] == "tfserving/pvc: the rendered manifests fail 4 check(s):"
    assert lines[1] == ("  [config-mount] Deployment/kit-serving container server: ConfigMap mounted with subPath "
                        "'models.config', which never receives updates")
    assert not (build / "deploy" / "tfserving.yaml").exists()


# ---- the KServe alternative -----------------------------------------------------------------------
def kserve_docs() -> list[dict]:
    return list(yaml.safe_load_all((k8s.DEPLOY / "kserve" / "inferenceservice.yaml").read_text()))


def test_kserve_inferenceservices_are_named_after_the_models_and_pinned():
    docs = kserve_docs()
    assert [d["metadata"]["name"] for d in docs] == ["svm", "mnist"]
    for doc in docs:
        model = doc["spec"]["predictor"]["model"]
        assert model["runtimeVersion"] == docker_backend.TF_SERVING_VERSION
        assert model["storageUri"] == f"pvc://kit-models/{doc['metadata']['name']}"


@pytest.mark.skipif(not KSERVE_SCHEMA.exists(), reason="../shared/k8s (KServe's CRD schema) is absent")
def test_kserve_inferenceservice_matches_the_crd_schema():
    docs = kserve_docs()
    assert [manifest_checks.inferenceservice_errors(d, KSERVE_SCHEMA) for d in docs] == [[], []]
    bad = copy.deepcopy(docs[0])
    bad["spec"]["predictor"]["minReplicas"] = "two"
    assert manifest_checks.inferenceservice_errors(bad, KSERVE_SCHEMA) == [
        "InferenceService/svm: spec.predictor.minReplicas: 'two' is not of type 'integer'"]


def test_kserve_readme_states_its_limits():
    text = (k8s.DEPLOY / "kserve" / "README.md").read_text()
    for limit in ("No version labels", "InferenceService's name", "pvc://"):
        assert limit in text
    assert "deploy/kserve/README.md" in (ROOT / "README.md").read_text()


def test_every_file_under_deploy_is_used(rendered):
    """No stray manifest: each YAML file is a kustomization, referenced by one, or a KServe/kind file."""
    referenced = set()
    for kfile in k8s.DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kfile.read_text())
        for entry in [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []) if "path" in p)]:
            referenced.add((kfile.parent / entry).resolve())
        for gen in spec.get("configMapGenerator", []):
            referenced |= {(kfile.parent / f).resolve() for f in gen.get("files", [])}
    own = {p.resolve() for p in k8s.DEPLOY.rglob("*") if p.is_file() and p.name != "kustomization.yaml"
           and p.parent.name not in ("kserve", "kind")}
    assert own - referenced == set()
