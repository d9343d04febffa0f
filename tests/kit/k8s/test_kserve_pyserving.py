"""deploy/kserve/pyserving-runtime.yaml and inferenceservice-pyserving.yaml, offline: the
ClusterServingRuntime lists tensorflow and all four protocol versions, its container is a valid
Kubernetes container (strict schema, as a Pod) whose flags pyserving's own parser accepts, and the
InferenceServices (v1, v2, grpc-v2) match KServe's v1beta1 CRD schema and name that runtime."""
from __future__ import annotations

import copy
import tomllib

import pytest
import yaml

from kit.k8s import cluster as k8s
from kit.k8s import manifest_checks
from kit.paths import ROOT

KSERVE = k8s.DEPLOY / "kserve"
KSERVE_SCHEMA = ROOT.parent / "shared" / "k8s" / "kserve-inferenceservice-v1beta1.schema.json"
NAME = "svm"  # what KServe puts for {{.Name}}


def runtime() -> dict:
    return yaml.safe_load((KSERVE / "pyserving-runtime.yaml").read_text())


def services() -> list[dict]:
    return list(yaml.safe_load_all((KSERVE / "inferenceservice-pyserving.yaml").read_text()))


def test_the_runtime_lists_tensorflow_and_every_protocol():
    doc = runtime()
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "serving.kserve.io/v1alpha1", "ClusterServingRuntime", "kit-pyserving")
    assert doc["spec"]["protocolVersions"] == ["v1", "v2", "grpc-v1", "grpc-v2"]
    assert {(f["name"], f["version"]) for f in doc["spec"]["supportedModelFormats"]} == {
        ("tensorflow", "1"), ("tensorflow", "2")}


def test_the_runtime_image_is_the_pyserving_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (container,) = runtime()["spec"]["containers"]
    assert container["image"] == f"kit-pyserving:{version}"


@pytest.mark.parametrize("version", ["1.30", "1.37"])
def test_the_runtime_container_passes_the_strict_schema(version):
    (container,) = runtime()["spec"]["containers"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kit-pyserving"},
           "spec": {"containers": [container]}}
    assert manifest_checks.schema_errors([pod], version) == (1, [], [])
    broken = copy.deepcopy(pod)
    broken["spec"]["containers"][0]["args"] = "--port=9000"
    assert manifest_checks.schema_errors([broken], version)[2] != []


def test_pyserving_accepts_the_runtimes_flags_and_serves_kserves_ports():
    from pyserving import cli

    (container,) = runtime()["spec"]["containers"]
    assert container["command"] == ["tensorflow_model_server"]  # the console script the image installs
    settings, _given = cli.parse([arg.replace("{{.Name}}", NAME) for arg in container["args"]])
    assert (settings.port, settings.rest_api_port) == (9000, 8080)  # KServe's gRPC and REST ports
    assert (settings.model_name, settings.model_base_path) == (NAME, "/mnt/models")
    assert settings.enable_grpc_healthcheck_service


def test_the_inferenceservices_use_the_runtime_one_protocol_each():
    protocols = runtime()["spec"]["protocolVersions"]
    docs = services()
    assert [(d["metadata"]["name"], d["spec"]["predictor"]["model"]["protocolVersion"]) for d in docs] == [
        ("svm", "v1"), ("mnist", "v2"), ("mnist-grpc", "grpc-v2")]
    for doc in docs:
        model = doc["spec"]["predictor"]["model"]
        assert model["runtime"] == "kit-pyserving" and model["protocolVersion"] in protocols
        assert model["modelFormat"]["name"] == "tensorflow"
        assert model["storageUri"] in ("pvc://kit-models/svm", "pvc://kit-models/mnist")
    grpc_ports = docs[2]["spec"]["predictor"]["model"]["ports"]
    (container,) = runtime()["spec"]["containers"]
    assert grpc_ports == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert "--port=9000" in container["args"]


@pytest.mark.skipif(not KSERVE_SCHEMA.exists(), reason="../shared/k8s (KServe's CRD schema) is absent")
def test_the_inferenceservices_match_the_crd_schema():
    docs = services()
    assert [manifest_checks.inferenceservice_errors(d, KSERVE_SCHEMA) for d in docs] == [[], [], []]
    bad = copy.deepcopy(docs[2])
    bad["spec"]["predictor"]["model"]["ports"][0]["containerPort"] = "9000"
    assert manifest_checks.inferenceservice_errors(bad, KSERVE_SCHEMA) == [
        "InferenceService/mnist-grpc: spec.predictor.model.ports.0.containerPort: '9000' is not of type 'integer'"]
