"""kit/k8s/cluster.py: the cluster helpers the rollout tasks use, without a cluster: the real kubectl with
no kubeconfig where that tells something, a stand-in `run` (kubectl's JSON as data) where the
answer needs a cluster, and a stand-in port-forward process (a script printing kubectl's line)."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from kit.k8s import cluster as k8s
from kit.process import pid_alive


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


def pod(name: str, ready: str, terminating: bool = False) -> dict:
    meta = {"name": name, **({"deletionTimestamp": "2026-11-30T05:00:00Z"} if terminating else {})}
    return {"metadata": meta, "status": {"conditions": [{"type": "Initialized", "status": "True"},
                                                       {"type": "Ready", "status": ready}]}}


def test_ready_pods_keeps_ready_pods_that_are_not_terminating():
    pods = {"items": [pod("kit-serving-b", "True"), pod("kit-serving-a", "True"), pod("kit-serving-c", "False"),
                      pod("kit-serving-d", "True", terminating=True), {"metadata": {"name": "pending"}, "status": {}}]}
    run = fake_run({"get": json.dumps(pods)})
    assert k8s.ready_pods("kit-py", k8s.SELECTOR, run) == ["kit-serving-a", "kit-serving-b"]
    assert run.calls[0][1:] == ["get", "pods", "--namespace", "kit-py", "--selector",
                                "app.kubernetes.io/name=kit-serving", "-o", "json"]


def test_configmap_apply_command_carries_the_config_under_the_fixed_name():
    argv, stdin = k8s.configmap_apply_command('model_config_list { config { name: "svm" } }\n', "ml")
    assert argv == [k8s.kubectl(), "apply", "--namespace", "ml", "-f", "-"]
    manifest = json.loads(stdin)
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
