""".github/workflows/kind.yml, which cannot run here (no Docker, no cluster): its structure is
checked, and each `inv deploy` step in it runs for real with --dry-run (render and check offline,
print the cluster commands)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import yaml

from kit import model_config
from kit.k8s import cluster as k8s
from kit.k8s import manifest_checks
from kit.paths import ROOT, VENV_BIN

WORKFLOW = ROOT / ".github" / "workflows" / "kind.yml"


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["kind"]


def run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def deploy_steps(job: dict) -> list[list[str]]:
    return [shlex.split(line) for line in run_lines(job) if re.match(r"^\.venv/bin/inv deploy\b", line)]


def test_actions_kind_and_node_images_are_pinned(job):
    kind_step = next(s for s in job["steps"] if s.get("uses", "").startswith("helm/kind-action@"))
    assert re.fullmatch(r"helm/kind-action@[0-9a-f]{40}", kind_step["uses"])  # a commit; the tag in a comment
    assert re.search(r"helm/kind-action@[0-9a-f]{40}  # v\d+\.\d+\.\d+\n", WORKFLOW.read_text())
    assert re.fullmatch(r"v\d+\.\d+\.\d+", kind_step["with"]["version"])
    nodes = job["strategy"]["matrix"]["node"]
    assert all(re.fullmatch(r"v1\.\d+\.\d+", n) for n in nodes)
    oldest = min(tuple(map(int, n[1:].split("."))) for n in nodes)
    assert f"{oldest[0]}.{oldest[1]}" == "1.30"  # the oldest Kubernetes the README says the manifests support


def test_the_workflow_covers_the_whole_route(job):
    lines = run_lines(job)
    text = "\n".join(lines)
    for needed in ("make train-svm train-mnist", ".venv/bin/inv image --target=pyserving", "kind load docker-image",
                   "kubectl apply -f deploy/kind/models-pv.yaml", "port-forward svc/kit-serving-rest",
                   "port-forward svc/kit-serving-grpc", ".venv/bin/inv test-svm", ".venv/bin/inv test-mnist",
                   "inv canary --model=svm --target=k8s", "inv promote --model=svm --target=k8s",
                   "inv rollback --model=svm --target=k8s", "kubectl -n \"$ns\" delete \"$pod\"",
                   # Pod Security "restricted" refuses a plain pod; the NetworkPolicy lets the namespace in, not others
                   "--dry-run=server", 'violates PodSecurity "restricted',
                   "deploy/kind/netpol-probe.yaml | kubectl -n \"$ns\" apply -f -",
                   "kubectl -n \"$ns\" wait --for=condition=complete job/kit-netpol-probe",
                   "deploy/kind/netpol-probe.yaml | kubectl -n kit-outside apply -f -",
                   "kubectl -n kit-outside wait --for=condition=failed job/kit-netpol-probe"):
        assert needed in text, needed
    overlays = {next(a for a in argv if a.startswith("--overlay=")) for argv in deploy_steps(job)}
    assert overlays == {"--overlay=tfserving", "--overlay=pyserving"}
    assert all("--apply" in argv for argv in deploy_steps(job))


def test_the_model_volumes_match_the_namespaces_deployed_to(job):
    namespaces = {a.split("=", 1)[1] for argv in deploy_steps(job) for a in argv if a.startswith("--namespace=")}
    pvs = list(yaml.safe_load_all((k8s.DEPLOY / "kind" / "models-pv.yaml").read_text()))
    assert {pv["spec"]["claimRef"]["namespace"] for pv in pvs} == namespaces == {"kit-tfs", "kit-py"}
    assert {pv["spec"]["claimRef"]["name"] for pv in pvs} == {"kit-models"}  # deploy/base/pvc.yaml
    nodes = yaml.safe_load((k8s.DEPLOY / "kind" / "kind-config.yaml").read_text())["nodes"]
    mounted = {m["containerPath"] for n in nodes for m in n["extraMounts"]}
    assert mounted == {pv["spec"]["hostPath"]["path"] for pv in pvs}


def test_the_network_policy_probe_meets_restricted_and_asks_the_rest_service():
    """The probe Job runs in the restricted serving namespaces too, so it must pass their rules."""
    [probe] = list(yaml.safe_load_all((k8s.DEPLOY / "kind" / "netpol-probe.yaml").read_text()))
    assert manifest_checks.check_images([probe]) == [] and manifest_checks.check_pod_security([probe]) == []
    assert f"http://{k8s.REST_SERVICE}.TARGET_NS.svc.cluster.local:{k8s.REST_PORT}/v1/models/svm" in probe["spec"][
        "template"]["spec"]["containers"][0]["args"]


def test_the_load_job_is_pinned_and_non_root():
    [load] = list(yaml.safe_load_all((k8s.DEPLOY / "kind" / "load-job.yaml").read_text()))
    assert manifest_checks.check_images([load]) == [] and manifest_checks.check_non_root([load]) == []
    assert f"http://{k8s.REST_SERVICE}:{k8s.REST_PORT}/v1/models/mnist:predict" in load["spec"]["template"]["spec"][
        "containers"][0]["args"][0]


def test_each_inv_deploy_step_runs_with_dry_run(job, tmp_path):
    steps = deploy_steps(job)
    assert len(steps) == 2
    env = {**os.environ, "KIT_BUILD_DIR": str(tmp_path / "build"), "KUBECONFIG": os.devnull}
    for argv in steps:
        proc = subprocess.run([str(VENV_BIN / "inv"), *argv[1:], "--dry-run"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        overlay = next(a for a in argv if a.startswith("--overlay=")).split("=")[1]
        assert f"kubectl apply -f {tmp_path / 'build' / 'deploy' / overlay}.yaml" in proc.stdout
        assert "0 problems" in proc.stdout


def rollout_steps(job: dict) -> list[list[str]]:
    return [shlex.split(line.split("#")[0]) for line in run_lines(job)
            if re.match(r"^\.venv/bin/inv (publish|canary|promote|rollback)\b", line)]


def test_each_rollout_step_goes_to_the_cluster_and_runs_with_dry_run(job, tmp_path):
    from pyserving.examples import half_plus_two

    steps = rollout_steps(job)
    assert [argv[1] for argv in steps] == ["publish", "canary", "promote", "rollback"]
    assert all("--target=k8s" in argv and "--namespace=kit-py" in argv for argv in steps)  # publish pins there too
    build = tmp_path / "build"
    for v in (1, 2):
        half_plus_two.write_tf1(str(build / "models" / "svm"), v)
    config = build / "models" / "models.config"
    env = {**os.environ, "KIT_BUILD_DIR": str(build), "KUBECONFIG": os.devnull}
    # Each step from the state the one before it leaves (a dry run changes nothing itself).
    states = {"canary": model_config.Rollout("svm", str(build / "models" / "svm"), stable=1),
              "promote": model_config.Rollout("svm", str(build / "models" / "svm"), stable=1, canary=2),
              "rollback": model_config.Rollout("svm", str(build / "models" / "svm"), stable=2, previous=1)}
    for argv in steps[1:]:
        model_config.write_rollouts(config, [], states[argv[1]])
        model_config.save_state(config, states[argv[1]])
        proc = subprocess.run([str(VENV_BIN / "inv"), *argv[1:], "--dry-run"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert f"{argv[1]}: (dry run) svm " in proc.stdout and "on k8s namespace kit-py:" in proc.stdout
        assert proc.stdout.count("apply --namespace kit-py -f -") == 2  # step 1 and step 2 ConfigMaps
