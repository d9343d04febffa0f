#!/usr/bin/env python3
"""A stand-in for `kubectl` against a "cluster" kept in a state folder ($FAKE_K8S_DIR), whose pods
are real processes on this machine (tests/kit/k8s/test_target.py starts pyserving ones from the
applied Deployment). It answers the commands the kit runs as kubectl does, wherever the kit
depends on the answer:

  config current-context           "fake-cluster"
  get --raw=/readyz                "ok"
  get pods [-n NS] [-l SELECTOR] -o json
                                   the pods of pods.json in namespace NS (default: "default") whose
                                   labels match SELECTOR (kubectl's syntax: k=v, k!=v, k, !k,
                                   k in (a,b), k notin (a,b)), with a Ready condition each
  port-forward [-n NS] pod/NAME [LOCAL]:REMOTE [--address=A]
                                   listens on A:LOCAL (0 or empty: an ephemeral port), prints
                                   "Forwarding from A:PORT -> REMOTE", then relays every TCP
                                   connection to the pod's port REMOTE (pods.json maps each pod
                                   port, 8500 gRPC and 8501 REST, to the local port its process
                                   listens on; any other port exits non-zero), printing "Handling
                                   connection for PORT" on stdout for each, as kubectl does; runs
                                   until it is stopped (SIGTERM)
  apply [-n NS] -f FILE|-          stores each object (JSON or YAML, several documents) under
                                   objects/<namespace>/<Kind>/<name>.json and appends it to
                                   applied.jsonl: an object's namespace must match -n when both
                                   are given, and must exist (default, or a Namespace applied
                                   before); an object under another name is another object (a
                                   ConfigMap named otherwise is not the one the pods mount)
  rollout status deployment/NAME [-n NS] [--timeout=D]
                                   waits until pods.json has spec.replicas Ready pods in NS
                                   matching the Deployment's selector (the test starts them)

Unknown commands and flags exit 1 with kubectl's "error: ..." line. Every call is appended to
calls.log. Differences from kubectl that the kit does not depend on: no kubeconfig, one context,
`localhost` binds 127.0.0.1 only, a port the pod does not serve is refused at start (kubectl
would fail each connection instead), and a file `halted` in the state folder makes a waiting
`rollout status` give up (the test's cluster is gone).
"""
import json
import os
import re
import signal
import socket
import sys
import threading
import time

import yaml

STATE = os.environ["FAKE_K8S_DIR"]
VALUE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "-l": "selector", "--selector": "selector",
               "-o": "output", "--output": "output", "-f": "filename", "--filename": "filename",
               "--address": "address", "--timeout": "timeout", "--request-timeout": "request-timeout",
               "--raw": "raw"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass"}
BUILT_IN_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


class Failure(Exception):
    """kubectl's error output (one line or more) and exit code 1."""


def parse(argv):
    flags, positional = {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name not in VALUE_FLAGS:
                raise Failure(f"error: unknown flag: {name}")
            if not eq:
                i += 1
                if i == len(argv):
                    raise Failure(f"error: flag needs an argument: {name}")
                value = argv[i]
            flags[VALUE_FLAGS[name]] = value
        else:
            positional.append(arg)
        i += 1
    return flags, positional


def path(*parts):
    return os.path.join(STATE, *parts)


def write_atomic(file, text):
    os.makedirs(os.path.dirname(file), exist_ok=True)
    tmp = f"{file}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, file)


def pods():
    try:
        with open(path("pods.json")) as f:
            return json.load(f)["pods"]
    except FileNotFoundError:
        return []


# ---- label selectors ------------------------------------------------------------------------
KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"


def parse_selector(text):
    """kubectl's label selector syntax -> [(key, op, values)]."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(text[start:i].strip())
            start = i + 1
    requirements = []
    for term in terms:
        set_based = re.fullmatch(rf"({KEY})\s+(in|notin)\s+\(([^()]*)\)", term)
        equality = re.fullmatch(rf"({KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)", term)
        if set_based:
            values = {v.strip() for v in set_based.group(4).split(",")}
            requirements.append((set_based.group(1), set_based.group(3), values))
        elif equality:
            op = "!=" if equality.group(3) == "!=" else "="
            requirements.append((equality.group(1), op, {equality.group(4)}))
        elif re.fullmatch(rf"!\s*({KEY})", term):
            requirements.append((term[1:].strip(), "!", set()))
        elif re.fullmatch(KEY, term):
            requirements.append((term, "exists", set()))
        else:
            raise Failure(f"error: unable to parse requirement: found '{term}', expected: label selector")
    return requirements


def selected(requirements, labels):
    for key, op, values in requirements:
        ok = {"=": key in labels and labels[key] in values, "in": key in labels and labels[key] in values,
              "!=": labels.get(key) not in values, "notin": labels.get(key) not in values,
              "exists": key in labels, "!": key not in labels}[op]
        if not ok:
            return False
    return True


def label_selector(selector):
    """A Deployment's LabelSelector (matchLabels, matchExpressions) -> requirements."""
    requirements = [(k, "=", {v}) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    requirements += [(e["key"], ops[e["operator"]], set(e.get("values", [])))
                     for e in selector.get("matchExpressions") or []]
    return requirements


# ---- commands -------------------------------------------------------------------------------
def pod_object(pod):
    ready = "True" if pod.get("ready", True) else "False"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod["name"], "namespace": pod["namespace"], "labels": pod.get("labels", {})},
            "spec": {"containers": [{"name": "server", "ports": [{"containerPort": int(p)} for p in pod["ports"]]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": ready},
                                      {"type": "ContainersReady", "status": ready}]}}


def get_pods(flags):
    namespace = flags.get("namespace", "default")
    requirements = parse_selector(flags["selector"]) if "selector" in flags else []
    found = [p for p in pods() if p["namespace"] == namespace and selected(requirements, p.get("labels", {}))]
    output = flags.get("output")
    if output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                          "items": [pod_object(p) for p in found]}, indent=4))
    elif output is None:
        if not found:
            print(f"No resources found in {namespace} namespace.", file=sys.stderr)
            return
        print(f"{'NAME':<24}READY   STATUS    RESTARTS   AGE")
        for p in found:
            print(f"{p['name']:<24}{'1/1' if p.get('ready', True) else '0/1'}     Running   0          1m")
    else:
        raise Failure(f"error: unable to match a printer suitable for the output format \"{output}\"")


def port_forward(flags, positional):
    namespace = flags.get("namespace", "default")
    if len(positional) < 3:
        raise Failure("error: TYPE/NAME and list of ports are required for port-forward")
    kind, _, name = positional[1].rpartition("/")
    if kind not in ("", "pod", "pods", "po"):
        raise Failure(f"error: the stand-in forwards to pods only, not {positional[1]}")
    pod = next((p for p in pods() if p["namespace"] == namespace and p["name"] == name), None)
    if pod is None:
        raise Failure(f'Error from server (NotFound): pods "{name}" not found')
    address = flags.get("address", "localhost")
    address = "127.0.0.1" if address == "localhost" else address
    listeners = []
    for spec in positional[2:]:
        local, _, remote = spec.rpartition(":")
        if not remote.isdigit():
            raise Failure(f"error: the stand-in forwards numbered ports only, got {spec!r}")
        target = pod["ports"].get(remote)
        if target is None:
            raise Failure(f"error: pod {name} has no container port {remote} (its ports: "
                          f"{', '.join(sorted(pod['ports']))})")
        listener = socket.create_server((address, int(local or 0)))
        listeners.append((listener, remote, target))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopped by its pid, as kubectl is
    for listener, remote, _ in listeners:
        print(f"Forwarding from {address}:{listener.getsockname()[1]} -> {remote}", flush=True)
    for listener, remote, target in listeners:
        threading.Thread(target=accept, args=(listener, remote, target), daemon=True).start()
    threading.Event().wait()


def accept(listener, remote, target):
    local = listener.getsockname()[1]
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=relay, args=(conn, local, remote, target), daemon=True).start()


def relay(conn, local, remote, target):
    print(f"Handling connection for {local}", flush=True)  # kubectl's line, on stdout
    try:
        upstream = socket.create_connection(("127.0.0.1", target))
    except OSError as exc:
        print(f'E0000 portforward.go:424] "Unhandled Error" err="an error occurred forwarding {local} -> {remote}: '
              f'error forwarding port {remote} to pod: {exc}"', file=sys.stderr, flush=True)
        conn.close()
        return
    done = threading.Event()

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            if done.is_set():
                src.close()
                dst.close()
            done.set()

    threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
    pump(conn, upstream)


def resource(obj):
    group = obj.get("apiVersion", "v1").rpartition("/")[0].split(".")[0]
    return obj["kind"].lower() + (f".{group}" if group else "")


def apply(flags, stdin):
    source = flags.get("filename")
    if source is None:
        raise Failure("error: must specify one of -f and -k")
    text = stdin.read() if source == "-" else open(source).read()
    where = "STDIN" if source == "-" else source
    docs = []
    for doc in yaml.safe_load_all(text):
        if doc:
            docs += doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]
    given = flags.get("namespace")
    for obj in docs:
        own = obj.get("metadata", {}).get("namespace")
        if given and own and own != given and obj["kind"] not in CLUSTER_SCOPED:
            raise Failure(f'error: the namespace from the provided object "{own}" does not match the namespace '
                          f'"{given}". You must pass \'--namespace={own}\' to perform this operation.')
    errors = []
    for obj in docs:
        name = obj.get("metadata", {}).get("name")
        if not name:
            errors.append(f'error: error when retrieving current configuration of "{where}": name is required')
            continue
        if obj["kind"] in CLUSTER_SCOPED:
            namespace, folder = "", "_cluster"
        else:
            namespace = obj["metadata"].get("namespace") or given or "default"
            folder = namespace
            exists = namespace in BUILT_IN_NAMESPACES or os.path.exists(path("objects", "_cluster", "Namespace",
                                                                             f"{namespace}.json"))
            if not exists:
                errors.append(f'Error from server (NotFound): error when creating "{where}": namespaces '
                              f'"{namespace}" not found')
                continue
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        file = path("objects", folder, obj["kind"], f"{name}.json")
        before = open(file).read() if os.path.exists(file) else None
        text = json.dumps(obj, indent=1, sort_keys=True)
        write_atomic(file, text)
        with open(path("applied.jsonl"), "a") as log:
            log.write(json.dumps(obj, sort_keys=True) + "\n")
        outcome = "created" if before is None else "unchanged" if before == text else "configured"
        print(f"{resource(obj)}/{name} {outcome}")
    if errors:
        raise Failure("\n".join(errors))


def seconds(duration):
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total if duration not in ("", "0") else 0.0


def rollout_status(flags, positional):
    namespace = flags.get("namespace", "default")
    kind, _, name = positional[2].partition("/") if len(positional) > 2 else ("", "", "")
    if kind not in ("deployment", "deployments", "deploy"):
        raise Failure("error: the stand-in knows `rollout status deployment/NAME` only")
    file = path("objects", namespace, "Deployment", f"{name}.json")
    if not os.path.exists(file):
        raise Failure(f'Error from server (NotFound): deployments.apps "{name}" not found')
    with open(file) as f:
        deployment = json.load(f)
    wanted = deployment["spec"].get("replicas", 1)
    requirements = label_selector(deployment["spec"]["selector"])
    deadline = time.monotonic() + (seconds(flags.get("timeout", "0")) or 1e9)
    said = None
    while True:
        ready = sum(1 for p in pods() if p["namespace"] == namespace and p.get("ready", True)
                    and selected(requirements, p.get("labels", {})))
        if ready >= wanted:
            print(f'deployment "{name}" successfully rolled out')
            return
        if ready != said:
            print(f'Waiting for deployment "{name}" rollout to finish: {ready} of {wanted} updated replicas are '
                  "available...", flush=True)
            said = ready
        if os.path.exists(path("halted")):
            raise Failure("error: the stand-in cluster was stopped")
        if time.monotonic() >= deadline:
            raise Failure("error: timed out waiting for the condition")
        time.sleep(0.1)


def main(argv):
    with open(path("calls.log"), "a") as log:
        log.write(" ".join(argv) + "\n")
    flags, positional = parse(argv)
    if positional == ["config", "current-context"]:
        print("fake-cluster")
    elif positional == ["get"] and flags.get("raw") == "/readyz":
        print("ok")
    elif positional[:2] in (["get", "pods"], ["get", "pod"], ["get", "po"]) and len(positional) == 2:
        get_pods(flags)
    elif positional[:1] == ["port-forward"]:
        port_forward(flags, positional)
    elif positional == ["apply"]:
        apply(flags, sys.stdin)
    elif positional[:2] == ["rollout", "status"]:
        rollout_status(flags, positional)
    else:
        raise Failure(f"error: the stand-in kubectl does not know {' '.join(argv)!r}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Failure as failure:
        print(failure, file=sys.stderr)
        sys.exit(1)
