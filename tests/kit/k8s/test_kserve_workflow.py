""".github/workflows/kserve.yml, which cannot run here (no Docker, no cluster), checked offline as far
as it goes: its actions are kind.yml's (same commits), the files it applies exist and validate and
agree with each other (namespace, PVC, storageUri, node mount, InferenceService names, Services,
protocols), its make targets and inv tasks and flags exist, and the tritonclient script's command
lines parse and agree with the port-forwards; the script itself runs for real against a live
pyserving serving an MNIST export under both InferenceService names (tritonclient from the venv of
requirements-oip-clients.txt, when built)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from client import oip_mnist_check
from kit.k8s import cluster as k8s
from kit.k8s import manifest_checks
from kit.paths import ROOT, VENV_BIN

WORKFLOWS = ROOT / ".github" / "workflows"
KSERVE = k8s.DEPLOY / "kserve"
KSERVE_SCHEMA = ROOT.parent / "shared" / "k8s" / "kserve-inferenceservice-v1beta1.schema.json"
# Where `make` puts the OIP clients' venv (the Makefile's $(BUILD_DIR)/tools/oip-clients-venv).
CLIENT_VENVS = [Path(os.environ["KIT_BUILD_DIR"]) / "tools" / "oip-clients-venv"] if os.environ.get(
    "KIT_BUILD_DIR") else []
CLIENT_VENVS.append(ROOT / "build" / "tools" / "oip-clients-venv")


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load((WORKFLOWS / "kserve.yml").read_text())["jobs"]["kserve"]


def run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def lines_matching(job: dict, pattern: str) -> list[list[str]]:
    return [shlex.split(line.split(" || ")[0]) for line in run_lines(job) if re.match(pattern, line)]


def services() -> dict[str, dict]:
    docs = yaml.safe_load_all((KSERVE / "inferenceservice-pyserving.yaml").read_text())
    return {d["metadata"]["name"]: d for d in docs}


def test_the_actions_and_kind_are_kind_ymls(job):
    kind = yaml.safe_load((WORKFLOWS / "kind.yml").read_text())["jobs"]["kind"]
    uses = {s["uses"] for s in job["steps"] if "uses" in s}
    assert uses == {s["uses"] for s in kind["steps"] if "uses" in s}  # the same commits, no new action
    (kind_step,) = [s for s in job["steps"] if s.get("uses", "").startswith("helm/kind-action@")]
    (kind_yml_step,) = [s for s in kind["steps"] if s.get("uses", "").startswith("helm/kind-action@")]
    assert kind_step["with"]["version"] == kind_yml_step["with"]["version"]
    assert kind_step["with"]["node_image"].split(":")[1] in kind["strategy"]["matrix"]["node"]
    assert job["permissions"] == {"contents": "read"}


def test_kserve_and_cert_manager_are_pinned_releases(job):
    assert re.fullmatch(r"v0\.\d+\.\d+", job["env"]["KSERVE_VERSION"])
    assert re.fullmatch(r"v1\.\d+\.\d+", job["env"]["CERT_MANAGER_VERSION"])
    text = "\n".join(run_lines(job))
    assert ("https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
            in text)
    assert "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml" in text
    # RawDeployment as the default, and on every InferenceService applied
    assert "s/\"defaultDeploymentMode\": \"Serverless\"/\"defaultDeploymentMode\": \"RawDeployment\"/" in text
    assert {d["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] for d in services().values()} == {
        "RawDeployment"}
    assert "knative" not in text.lower() and "istio" not in text.lower()


def test_every_applied_file_exists(job):
    applied = [a for argv in lines_matching(job, r"^(timeout .*'until )?kubectl ") for i, a in enumerate(argv)
               if i and argv[i - 1] == "-f" and not a.startswith(("http", "$"))]
    applied += [m for line in run_lines(job) for m in re.findall(r"kubectl apply -f (deploy/\S+?)[;']", line)]
    assert set(applied) == {"deploy/kind/kserve-models-pv.yaml", "deploy/base/pvc.yaml",
                            "deploy/kserve/pyserving-runtime.yaml", "deploy/kserve/inferenceservice-pyserving.yaml"}
    assert all((ROOT / path).is_file() for path in applied)


@pytest.mark.skipif(not KSERVE_SCHEMA.exists(), reason="../shared/k8s (KServe's CRD schema) is absent")
def test_the_applied_inferenceservices_match_the_crd_schema():
    assert [manifest_checks.inferenceservice_errors(d, KSERVE_SCHEMA) for d in services().values()] == [[], [], []]


def test_the_model_volume_serves_the_storage_uris(job):
    """The PV is pre-bound to the PVC of the namespace the InferenceServices go into, whose name is
    the one their storageUri names, and is the folder every kind node mounts."""
    [pv] = list(yaml.safe_load_all((k8s.DEPLOY / "kind" / "kserve-models-pv.yaml").read_text()))
    pvc = yaml.safe_load((k8s.DEPLOY / "base" / "pvc.yaml").read_text())
    assert manifest_checks.schema_errors([pv, pvc], "1.30") == (2, [], [])
    [created] = lines_matching(job, r"^kubectl create namespace ")
    namespace = created[-1]
    assert ["kubectl", "-n", namespace, "apply", "-f", "deploy/base/pvc.yaml"] in lines_matching(job, r"^kubectl ")
    assert ["kubectl", "-n", namespace, "apply", "-f", "deploy/kserve/inferenceservice-pyserving.yaml"] in \
        lines_matching(job, r"^kubectl ")
    assert pv["spec"]["claimRef"] == {"namespace": namespace, "name": pvc["metadata"]["name"]}
    assert set(pv["spec"]["accessModes"]) == set(pvc["spec"]["accessModes"])
    uris = {d["spec"]["predictor"]["model"]["storageUri"] for d in services().values()}
    assert {u.split("/")[2] for u in uris} == {pvc["metadata"]["name"]} and all(u.startswith("pvc://") for u in uris)
    nodes = yaml.safe_load((k8s.DEPLOY / "kind" / "kind-config.yaml").read_text())["nodes"]
    assert {m["containerPath"] for n in nodes for m in n["extraMounts"]} == {pv["spec"]["hostPath"]["path"]}
    # the models the URIs name are the ones the job trains into build/models
    assert ["make", "train-svm", "train-mnist"] in lines_matching(job, r"^make ")
    assert {u.split("/")[3] for u in uris} == {"svm", "mnist"}


def port_forwards(job: dict) -> dict[str, tuple[int, int]]:
    """service -> (local port, service port) of each kubectl port-forward."""
    found = {}
    for line in run_lines(job):
        m = re.match(r"^kubectl -n kit-serving port-forward svc/(\S+) (\d+):(\d+) ", line)
        if m:
            found[m[1]] = (int(m[2]), int(m[3]))
    return found


def test_every_inferenceservice_is_waited_for_and_asked_through_its_service(job):
    names = list(services())
    [wait] = lines_matching(job, r"^kubectl -n kit-serving wait --for=condition=Ready ")
    assert sorted(a.split("/")[1] for a in wait if a.startswith("inferenceservice/")) == sorted(names)
    # KServe's raw Service: <name>-predictor, port 80 to the first container port (8080, or the
    # InferenceService's own ports: h2c 9000 for grpc-v2)
    assert port_forwards(job) == {f"{n}-predictor": (port, 80) for n, port in
                                  zip(names, (18081, 18080, 19000))}


def parse_script_line(job: dict, command: str, tmp: Path):
    [argv] = [a for a in lines_matching(job, r"^\S+python client/oip_mnist_check\.py ") if a[2] == command]
    argv = [a.replace("$RUNNER_TEMP", str(tmp)) for a in argv]
    return argv[0], oip_mnist_check.build_parser().parse_args(argv[2:])


def test_the_script_lines_parse_and_agree_with_the_cluster(job, tmp_path):
    python, expect = parse_script_line(job, "expect", tmp_path)
    assert python == ".venv/bin/python" and expect.model_dir == "build/models/mnist"
    python, query = parse_script_line(job, "query", tmp_path)
    assert python == "build/tools/oip-clients-venv/bin/python"  # the Makefile's venv of the OIP clients
    assert query.expected == expect.out
    docs, forwards = services(), port_forwards(job)
    protocol = {name: d["spec"]["predictor"]["model"]["protocolVersion"] for name, d in docs.items()}
    assert protocol[query.http_model] == "v2" and protocol[query.grpc_model] == "grpc-v2"
    assert query.http == f"127.0.0.1:{forwards[query.http_model + '-predictor'][0]}"
    assert query.grpc == f"127.0.0.1:{forwards[query.grpc_model + '-predictor'][0]}"
    [svm] = lines_matching(job, r"^\.venv/bin/inv test-svm ")
    assert protocol["svm"] == "v1" and svm[-1] == f"--rest-port={forwards['svm-predictor'][0]}"


def test_the_make_targets_exist(job):
    env = {k: v for k, v in os.environ.items() if k not in ("KIT_BUILD_DIR", "MAKEFLAGS")}  # the Makefile's build/
    for argv in lines_matching(job, r"^make "):
        proc = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert ["make", "venv", "build/tools/oip-clients-venv/.installed"] in lines_matching(job, r"^make ")


def test_the_inv_tasks_and_flags_exist(job):
    steps = lines_matching(job, r"^\.venv/bin/inv ")
    assert [argv[1] for argv in steps] == ["image", "test-svm"]
    for argv in steps:
        proc = subprocess.run([str(VENV_BIN / "inv"), "--help", argv[1]], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        for flag in argv[2:]:
            option = re.escape(flag.split("=")[0])
            assert re.search(rf"^\s+(-\w( STRING| INT)?, )?{option}\b", proc.stdout, re.M), (argv[1], flag)


# ---- the script for real: expect (TensorFlow, here) and query (tritonclient, its own venv) -----------
@pytest.fixture(scope="module")
def client_python() -> Path:
    for venv in CLIENT_VENVS:
        if (venv / ".installed").exists():
            return venv / "bin" / "python"
    pytest.skip("tritonclient is not installed: `make test` builds build/tools/oip-clients-venv")


@pytest.fixture(scope="module")
def mnist_server(tmp_path_factory):
    """A short MNIST export, the script's expected scores for it, and a live server serving it as
    `mnist` and `mnist-grpc` (the two v2 InferenceServices' names)."""
    from models.mnist import input_data, mnist_saved_model
    from tests.helpers import launch, write_config

    tmp = tmp_path_factory.mktemp("kserve_script")
    mnist_saved_model.train_and_export(input_data.read_data_sets(), str(tmp / "mnist"), 1, 50, seed=0)
    assert oip_mnist_check.main(["expect", f"--model_dir={tmp / 'mnist'}", "--num=40",
                                 f"--out={tmp / 'mnist.npz'}"]) == 0
    config = write_config(tmp / "models.config", {"mnist": tmp / "mnist", "mnist-grpc": tmp / "mnist"})
    server = launch(tmp / "logs", [f"--model_config_file={config}"])
    try:
        yield server, tmp
    finally:
        server.stop()


def query(client_python: Path, server, expected: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(client_python), str(ROOT / "client" / "oip_mnist_check.py"), "query",
                           f"--expected={expected}", f"--http=127.0.0.1:{server.rest_port}", "--http_model=mnist",
                           f"--grpc={server.grpc_target}", "--grpc_model=mnist-grpc"],
                          capture_output=True, text=True, timeout=120)


def test_the_script_checks_a_live_servers_answers(client_python, mnist_server):
    server, tmp = mnist_server
    proc = query(client_python, server, tmp / "mnist.npz")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0] == (f"http 127.0.0.1:{server.rest_port}: metadata mnist versions ['1'], "
                        "platform tensorflow_savedmodel")
    assert [re.sub(r"error rate .*", "", line) for line in lines[1:3]] == [
        f"http 127.0.0.1:{server.rest_port} mnist ({kind}): 40 answers = the SavedModel's (argmax), "
        for kind in ("JSON", "binary")]
    assert lines[3].endswith(": metadata mnist-grpc versions ['1'], platform tensorflow_savedmodel")
    assert lines[4].startswith(f"grpc {server.grpc_target} mnist-grpc: 40 answers = the SavedModel's (argmax)")


def test_the_script_fails_on_answers_that_are_not_the_models(client_python, mnist_server):
    server, tmp = mnist_server
    with np.load(tmp / "mnist.npz") as f:
        data = dict(f)
    data["scores"] = np.roll(data["scores"], 1, axis=1)  # every argmax moved by one class
    np.savez(tmp / "wrong.npz", **data)
    proc = query(client_python, server, tmp / "wrong.npz")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"http 127.0.0.1:{server.rest_port} mnist (JSON): argmax differs from the " \
                                  f"SavedModel's for 40 of 40 images"
