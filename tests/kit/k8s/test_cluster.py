"""kit/k8s/cluster.py: the cluster helpers the rollout tasks use, without a cluster: the real kubectl with
no kubeconfig where that tells something, a stand-in `run` (kubectl's JSON as data) where the
answer needs a cluster, a stand-in port-forward process (a script printing kubectl's line), and
the stand-in kubectl of the rollout tests (data/fake_kubectl.py), which answers as kubectl does: pods
by namespace and selector, port-forwards that relay TCP to the pod port named, applies checked
against the object's namespace."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from kit.k8s import cluster as k8s
from kit.process import pid_alive
from kit.rollout import agreement, plan
from tests.helpers import read_until_closed


def test_cluster_unavailable_without_a_kubeconfig_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    monkeypatch.delenv("KUBECTL", raising=False)
    reason = k8s.cluster_unavailable()
    assert reason.startswith("no Kubernetes cluster: kubectl has no current context") and "\n" not in reason


def fake_run(answers: dict):
    """A kubectl `run` answering by subcommand; an Exception value is raised."""
    calls = []

    def run(argv):
        calls.append(list(argv))
        answer = answers[argv[1]]
        if isinstance(answer, Exception):
            raise answer
        return answer
    run.calls = calls
    return run


def test_cluster_unavailable_names_a_context_whose_api_server_does_not_answer():
    refused = RuntimeError("kubectl get --raw=/readyz failed: connection refused")
    run = fake_run({"config": "kind-kit\n", "get": refused})
    assert k8s.cluster_unavailable(run) == ("no Kubernetes cluster: the API server of context 'kind-kit' does not "
                                            "answer (kubectl get --raw=/readyz failed: connection refused)")
    run = fake_run({"config": "kind-kit\n", "get": "ok"})
    assert k8s.cluster_unavailable(run) is None
    assert run.calls[1][1:] == ["get", "--raw=/readyz", "--request-timeout=5s"]


def test_kubectl_for_cluster_commands_can_be_the_clusters_own(monkeypatch):
    monkeypatch.setenv("KUBECTL", "/usr/local/bin/kubectl")
    assert k8s.kubectl() == "/usr/local/bin/kubectl"
    assert k8s.render_kubectl().endswith("/.venv/bin/kubectl")


def test_without_the_venv_s_kubectl_the_one_on_path_renders(monkeypatch, tmp_path):
    monkeypatch.setattr(k8s.paths, "VENV_BIN", tmp_path / "no-venv")
    on_path = tmp_path / "bin" / "kubectl"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert k8s.render_kubectl() == str(on_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert k8s.render_kubectl() == "kubectl"  # none at all: the bare name, whose run says it is missing


def test_a_kubectl_named_on_path_is_found(fake_kubectl, monkeypatch):
    """$KUBECTL may be a bare name, looked up on PATH."""
    monkeypatch.setenv("PATH", f"{os.path.dirname(os.environ['KUBECTL'])}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KUBECTL", "kubectl")
    assert k8s.cluster_unavailable() is None


def test_offline_rendering_reads_no_kubeconfig(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/home/someone/.kube/config")
    env = k8s.offline_env()
    assert env["KUBECONFIG"] == os.devnull and env["PATH"] == os.environ["PATH"]


def stand_in(tmp_path, script: str) -> str:
    """An executable kubectl stand-in running `script` (sh)."""
    exe = tmp_path / "kubectl-stand-in"
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    return str(exe)


def test_run_kubectl_says_which_command_failed_and_kubectl_s_first_line(tmp_path):
    exe = stand_in(tmp_path, "echo; echo 'error: the server has asked for credentials' >&2; echo second >&2; exit 1")
    with pytest.raises(RuntimeError) as failed:
        k8s.run_kubectl([exe, "get", "pods", "--namespace", "ml"])
    assert str(failed.value) == f"{exe} get pods failed: error: the server has asked for credentials"
    silent = stand_in(tmp_path, "exit 3")
    with pytest.raises(RuntimeError, match=r"^\S+ apply failed: exit 3$"):
        k8s.run_kubectl([silent, "apply"])
    echo = stand_in(tmp_path, "cat")
    assert k8s.run_kubectl([echo], stdin="the manifest") == "the manifest"


def test_run_kubectl_gives_up_on_a_kubectl_that_hangs(tmp_path):
    exe = stand_in(tmp_path, "exec sleep 30")
    with pytest.raises(subprocess.TimeoutExpired):
        k8s.run_kubectl([exe], timeout=0.5)


def pod(name: str, ready: str, terminating: bool = False) -> dict:
    meta = {"name": name, **({"deletionTimestamp": "2026-11-30T05:00:00Z"} if terminating else {})}
    return {"metadata": meta, "status": {"conditions": [{"type": "Initialized", "status": "True"},
                                                       {"type": "Ready", "status": ready}]}}


def test_ready_pods_keeps_ready_pods_that_are_not_terminating():
    pods = {"items": [pod("kit-serving-b", "True"), pod("kit-serving-a", "True"), pod("kit-serving-c", "False"),
                      pod("kit-serving-d", "True", terminating=True), {"metadata": {"name": "pending"}, "status": {}},
                      {"metadata": {"name": "new"}}, pod("kit-serving-e", "True")]}
    run = fake_run({"get": json.dumps(pods)})
    assert k8s.ready_pods("kit-py", k8s.SELECTOR, run) == ["kit-serving-a", "kit-serving-b", "kit-serving-e"]
    assert k8s.ready_pods("kit-py", k8s.SELECTOR, fake_run({"get": "{}"})) == []
    assert run.calls[0][1:] == ["get", "pods", "--namespace", "kit-py", "--selector",
                                "app.kubernetes.io/name=kit-serving", "-o", "json"]


def test_configmap_apply_command_carries_the_config_under_the_fixed_name():
    argv, stdin = k8s.configmap_apply_command('model_config_list { config { name: "svm" } }\n', "ml")
    assert argv == [k8s.kubectl(), "apply", "--namespace", "ml", "-f", "-"]
    manifest = json.loads(stdin)
    assert (manifest["apiVersion"], manifest["kind"]) == ("v1", "ConfigMap")
    assert manifest["metadata"] == {"name": "kit-serving-config", "namespace": "ml", "labels": {
        "app.kubernetes.io/name": "kit-serving", "app.kubernetes.io/part-of": "tf-serving-kit"}}
    assert manifest["metadata"]["name"] == k8s.CONFIGMAP_NAME == "kit-serving-config"
    assert manifest["data"][k8s.MODELS_CONFIG_KEY] == 'model_config_list { config { name: "svm" } }\n'
    assert sorted(manifest["data"]) == ["batching.config", "models.config", "monitoring.config"]


FORWARDER = textwrap.dedent("""
    import os, sys, time
    open(sys.argv[1], "w").write(str(os.getpid()))
    print("Forwarding from 127.0.0.1:43117 -> 8501", flush=True)
    print("Forwarding from [::1]:43117 -> 8501", flush=True)
    time.sleep(600)
""")


def test_port_forward_yields_kubectls_local_port_and_stops_it_by_pid(tmp_path):
    script, pid_file = tmp_path / "forward.py", tmp_path / "pid"
    script.write_text(FORWARDER)
    command = [sys.executable, str(script), str(pid_file)]
    with k8s.port_forward("kit-serving-a", "kit-py", 8501, command=command) as port:
        pid = int(pid_file.read_text())
        assert port == 43117 and pid_alive(pid)
    assert not pid_alive(pid)


@pytest.mark.parametrize("script,said", [
    ("print('a'); print('b'); print('c'); print('d')", "b | c | d"),  # kubectl's last three lines
    ("pass", "no output"),
])
def test_a_port_forward_that_exits_says_what_kubectl_said(tmp_path, script, said):
    command = [sys.executable, "-c", f"import sys\n{script}"]
    with pytest.raises(RuntimeError) as failed:
        with k8s.port_forward("p", "ns", 8501, command=command):
            pass
    assert str(failed.value) == f"kubectl port-forward to pod/p:8501 did not start: {said}"


def test_a_port_forward_that_says_nothing_is_given_up_after_its_timeout():
    silent = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(RuntimeError, match="^kubectl port-forward to pod/p:8501 did not start: no output$"):
        with k8s.port_forward("p", "ns", 8501, timeout=1.0, command=silent):
            pass


def test_port_forward_that_cannot_start_says_why(monkeypatch):
    """The real kubectl, with no kubeconfig: it exits at once, and kubectl's own words are shown."""
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    monkeypatch.delenv("KUBECTL", raising=False)
    with pytest.raises(RuntimeError) as info:
        with k8s.port_forward("kit-serving-a", "kit-py", 8501, timeout=60):
            pass
    assert str(info.value).startswith("kubectl port-forward to pod/kit-serving-a:8501 did not start: ")
    assert "localhost:8080" in str(info.value) or "configuration" in str(info.value)


def test_port_forward_argv_names_the_pod_and_an_ephemeral_local_port(monkeypatch, tmp_path):
    """The argv it runs, recorded by a stand-in kubectl ($KUBECTL) that answers in kubectl's shape."""
    seen = tmp_path / "argv.json"
    stand_in = tmp_path / "kubectl"
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys, time\n"
                        f"open({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                        "print('Forwarding from 127.0.0.1:40001 -> 8500', flush=True)\ntime.sleep(600)\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(stand_in))
    with k8s.port_forward("kit-serving-b", "ml", 8500) as port:
        assert port == 40001
    assert json.loads(seen.read_text()) == ["port-forward", "--namespace", "ml", "pod/kit-serving-b", ":8500",
                                            "--address=127.0.0.1"]


def test_port_forward_is_stopped_when_the_body_fails(tmp_path):
    script, pid_file = tmp_path / "forward.py", tmp_path / "pid"
    script.write_text(FORWARDER)
    with pytest.raises(ValueError, match="query failed"):
        with k8s.port_forward("p", "ns", 8501, command=[sys.executable, str(script), str(pid_file)]):
            raise ValueError("query failed")
    assert not pid_alive(int(pid_file.read_text()))


# ---- against the stand-in kubectl (data/fake_kubectl.py, as $KUBECTL; conftest.py) -------------
# The labels the rendered Deployment gives its pods (deploy/base/kustomization.yaml labels).
POD_LABELS = {"app.kubernetes.io/name": "kit-serving", "app.kubernetes.io/part-of": "tf-serving-kit"}


def stand_in_pods(state, *pods: dict) -> None:
    (state / "pods.json").write_text(json.dumps({"pods": list(pods)}))


def stand_in_pod(name: str, namespace: str = "kit-py", labels: dict = POD_LABELS, ready: bool = True,
                 ports: dict = None) -> dict:
    return {"name": name, "namespace": namespace, "labels": labels, "ready": ready,
            "ports": ports or {"8500": 1, "8501": 2}}


def test_ready_pods_asks_the_namespace_for_the_kit_s_pods(fake_kubectl):
    stand_in_pods(fake_kubectl, stand_in_pod("kit-serving-b"), stand_in_pod("kit-serving-a"),
                  stand_in_pod("kit-serving-c", ready=False),
                  stand_in_pod("other-a", labels={"app.kubernetes.io/name": "other"}),
                  stand_in_pod("kit-serving-d", namespace="default"), stand_in_pod("kit-serving-e", namespace="ml"))
    assert k8s.ready_pods("kit-py") == ["kit-serving-a", "kit-serving-b"]
    assert k8s.ready_pods("ml") == ["kit-serving-e"]
    assert k8s.ready_pods("kit-py", "app.kubernetes.io/name in (kit-serving, other),!tier") == [
        "kit-serving-a", "kit-serving-b", "other-a"]


def test_port_forward_through_the_stand_in_reaches_the_pod_port_it_names(fake_kubectl, pod_ports):
    ports = {"8500": pod_ports["grpc"].port, "8501": pod_ports["rest"].port}
    stand_in_pods(fake_kubectl, stand_in_pod("kit-serving-a", ports=ports))
    with k8s.port_forward("kit-serving-a", "kit-py", 8501) as rest, \
            k8s.port_forward("kit-serving-a", "kit-py", 8500) as grpc:
        assert (read_until_closed(rest), read_until_closed(grpc)) == (b"rest", b"grpc")
    with pytest.raises(OSError):  # stopped with the context
        read_until_closed(rest)
    with pytest.raises(RuntimeError, match="did not start: error: pod kit-serving-a has no container port 9000"):
        with k8s.port_forward("kit-serving-a", "kit-py", 9000):
            pass
    with pytest.raises(RuntimeError, match='did not start: Error from server \\(NotFound\\): pods "kit-serving-a"'):
        with k8s.port_forward("kit-serving-a", "default", 8501):
            pass


def test_port_forward_keeps_reading_what_kubectl_prints(fake_kubectl, pod_ports):
    """kubectl prints "Handling connection for PORT" for every connection; once 64 KiB of them fill
    an unread pipe it blocks, and the pod looks down (a rollout polls 20 times a second per pod,
    so a minute's wait for a kubelet's sync makes thousands)."""
    stand_in_pods(fake_kubectl, stand_in_pod("kit-serving-a", ports={"8500": 1, "8501": pod_ports["rest"].port}))
    line = len("Handling connection for 40000\n")
    with k8s.port_forward("kit-serving-a", "kit-py", 8501) as rest, ThreadPoolExecutor(4) as clients:
        answers = list(clients.map(lambda _: read_until_closed(rest), range(65536 // line + 200)))
    assert set(answers) == {b"rest"}


def test_the_configmap_lands_in_the_namespace_it_is_applied_to(fake_kubectl):
    argv, manifest = k8s.configmap_apply_command('model_config_list { config { name: "svm" } }\n', "ml")
    with pytest.raises(RuntimeError, match='namespaces "ml" not found'):
        k8s.run_kubectl(argv, stdin=manifest)
    k8s.run_kubectl([k8s.kubectl(), "apply", "-f", "-"],
                    stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}))
    assert k8s.run_kubectl(argv, stdin=manifest) == "configmap/kit-serving-config created\n"
    stored = json.loads((fake_kubectl / "objects" / "ml" / "ConfigMap" / "kit-serving-config.json").read_text())
    assert stored["data"]["models.config"] == 'model_config_list { config { name: "svm" } }\n'
    with pytest.raises(RuntimeError, match='the namespace from the provided object "ml" does not match'):
        k8s.run_kubectl([*argv[:2], "--namespace", "kit-py", "-f", "-"], stdin=manifest)


def test_a_pod_port_that_answers_no_http_is_a_replica_that_cannot_be_asked(fake_kubectl, pod_ports):
    """What a rollout makes of a port-forward to a port that is not the REST one (the gRPC port
    answers HTTP/1.1 with an HTTP/2 frame; here a word): the replica is down, said in one line, not
    an http.client error out of the step."""
    stand_in_pods(fake_kubectl, stand_in_pod("kit-serving-a", ports={"8500": 1, "8501": pod_ports["grpc"].port}))
    with k8s.port_forward("kit-serving-a", "kit-py", 8501) as port:
        with pytest.raises(agreement.ReplicaDown, match=r"^no HTTP answer \(BadStatusLine\)$"):
            plan.fetch_versions(f"http://127.0.0.1:{port}", "svm")
