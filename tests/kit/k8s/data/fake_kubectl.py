#!/usr/bin/env python3
"""A stand-in for `kubectl` against a "cluster" whose pods are real pyserving processes on this
machine (tests/kit/test_k8s_rollout.py starts them). It answers the five commands the kit's
--target=k8s rollouts run, from a state folder ($FAKE_K8S_DIR):

  config current-context          -> "fake-cluster"
  get --raw=/readyz               -> "ok"
  get pods -o json ...            -> pods.json's pods, each Ready unless listed in not_ready
  port-forward pod/NAME :8501 ... -> "Forwarding from 127.0.0.1:<the pod's REST port> -> 8501", then
                                     waits to be stopped (the pod's port is reached directly)
  apply -f - (a ConfigMap)        -> writes the ConfigMap's models.config to configmap.config; the
                                     test's "kubelet" copies it into each pod's mounted file later
"""
import json
import os
import signal
import sys
import time

state = os.environ["FAKE_K8S_DIR"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.log"), "a") as log:
    log.write(" ".join(args) + "\n")
if args[:2] == ["config", "current-context"]:
    print("fake-cluster")
elif args[:1] == ["get"] and args[1].startswith("--raw"):
    print("ok")
elif args[:2] == ["get", "pods"]:
    with open(os.path.join(state, "pods.json")) as f:
        pods = json.load(f)
    items = [{"metadata": {"name": name},
              "status": {"conditions": [{"type": "Ready",
                                         "status": "False" if name in pods.get("not_ready", []) else "True"}]}}
             for name in pods["pods"]]
    print(json.dumps({"items": items}))
elif args[:1] == ["port-forward"]:
    with open(os.path.join(state, "pods.json")) as f:
        pods = json.load(f)["pods"]
    pod = next(a for a in args if a.startswith("pod/"))[4:]
    remote = next(a for a in args if a.startswith(":"))[1:]
    print(f"Forwarding from 127.0.0.1:{pods[pod]} -> {remote}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)
elif args[:1] == ["apply"] and "-" in args:
    manifest = json.loads(sys.stdin.read())
    assert manifest["kind"] == "ConfigMap", manifest["kind"]
    tmp = os.path.join(state, "configmap.config.tmp")
    with open(tmp, "w") as f:
        f.write(manifest["data"]["models.config"])
    os.replace(tmp, os.path.join(state, "configmap.config"))
    print(f"configmap/{manifest['metadata']['name']} configured")
else:
    print(f"fake kubectl: unsupported command {args}", file=sys.stderr)
    sys.exit(1)
