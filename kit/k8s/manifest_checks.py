"""Checks of rendered manifests (a list of Kubernetes objects as dicts) that need no cluster.

`schema_errors` validates built-in kinds with kubernetes-validate (strict, per Kubernetes
version); the semantic checks below catch what a schema cannot: a selector that matches no pod,
a probe on a port that does not exist, server args that drifted from `inv serve`'s, a
models.config pyserving cannot read, and any of the README's promises missing (the startup,
readiness and liveness probes, the scrape annotations, an HPA on CPU, a PDB, a NetworkPolicy, no
API token, Pod Security "restricted"). Each returns a
list of problems, one line each; `inv deploy` runs them all before it writes a file, and tests
feed each a broken manifest.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from kit.k8s import cluster as k8s

Problems = list[str]
CRD_KINDS = {"ServiceMonitor", "InferenceService"}  # no schema in kubernetes-validate


def _name(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def workloads(docs: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
    """(Deployment, its pod template) pairs."""
    for obj in docs:
        if obj.get("kind") == "Deployment":
            yield obj, obj.get("spec", {}).get("template", {})


def containers(pod_spec: dict, init: bool = True) -> list[dict]:
    return [*(pod_spec.get("initContainers", []) if init else []), *pod_spec.get("containers", [])]


def _matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False  # an empty selector selects everything: never what these manifests mean
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def check_selectors(docs: list[dict]) -> Problems:
    """Each Deployment's selector matches its pods; every Service, PDB, HPA and topology spread
    constraint finds the pods (or Deployment) it is meant for."""
    problems = []
    pod_labels = {}
    for deployment, template in workloads(docs):
        labels = template.get("metadata", {}).get("labels", {})
        pod_labels[deployment["metadata"]["name"]] = labels
        if not _matches(deployment["spec"].get("selector", {}), labels):
            problems.append(f"{_name(deployment)}: spec.selector does not match its pod template labels {labels}")
        for spread in template.get("spec", {}).get("topologySpreadConstraints", []):
            if not _matches(spread.get("labelSelector", {}), labels):
                problems.append(f"{_name(deployment)}: topologySpreadConstraints ({spread.get('topologyKey')}) "
                                "labelSelector matches none of its pods")
    for obj in docs:
        kind = obj.get("kind")
        if kind == "Service":
            selector = {"matchLabels": obj.get("spec", {}).get("selector") or {}}
        elif kind == "PodDisruptionBudget":
            selector = obj.get("spec", {}).get("selector", {})
        elif kind == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            if target.get("kind") != "Deployment" or target.get("name") not in pod_labels:
                problems.append(f"{_name(obj)}: scaleTargetRef {target.get('kind')}/{target.get('name')} is no "
                                "Deployment here")
            continue
        else:
            continue
        if not any(_matches(selector, labels) for labels in pod_labels.values()):
            problems.append(f"{_name(obj)}: selector {selector} matches no pod template")
    return problems


def _probe_ports(container: dict) -> Iterator[tuple[str, object]]:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container.get(probe) or {}
        for action in ("httpGet", "tcpSocket", "grpc"):
            if action in spec:
                yield f"{probe}.{action}", spec[action].get("port")


def check_ports(docs: list[dict]) -> Problems:
    """Probes and Services name ports the containers declare (gRPC probes take numbers only), and
    the ServiceMonitor names a Service port."""
    problems = []
    names, numbers, service_ports = set(), set(), set()
    for deployment, template in workloads(docs):
        for container in containers(template.get("spec", {}), init=False):
            declared = container.get("ports", [])
            c_names = {p.get("name") for p in declared if p.get("name")}
            c_numbers = {p["containerPort"] for p in declared}
            names |= c_names
            numbers |= c_numbers
            for where, port in _probe_ports(container):
                if isinstance(port, str) and where.endswith(".grpc"):
                    problems.append(f"{_name(deployment)} container {container['name']}: {where} port {port!r}: "
                                    "gRPC probes take a port number, not a name")
                elif port not in (c_names if isinstance(port, str) else c_numbers):
                    problems.append(f"{_name(deployment)} container {container['name']}: {where} port {port!r} "
                                    "is not a declared container port")
    for obj in docs:
        if obj.get("kind") == "Service":
            for port in obj["spec"].get("ports", []):
                service_ports.add(port.get("name"))
                target = port.get("targetPort", port.get("port"))
                if target not in (names if isinstance(target, str) else numbers):
                    problems.append(f"{_name(obj)}: targetPort {target!r} is not a container port of its pods")
    for obj in docs:
        if obj.get("kind") == "ServiceMonitor":
            for endpoint in obj["spec"].get("endpoints", []):
                if endpoint.get("port") not in service_ports:
                    problems.append(f"{_name(obj)}: endpoint port {endpoint.get('port')!r} names no Service port")
    return problems


def cpu_cores(quantity: object) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def server_container(template: dict) -> Optional[dict]:
    return next((c for c in template.get("spec", {}).get("containers", []) if c.get("name") == k8s.CONTAINER), None)


def check_args(docs: list[dict]) -> Problems:
    """The server's args are `inv serve`'s flags with the listed deliberate differences
    (kit/k8s/cluster.py), the thread flags sized from the container's CPU limit."""
    problems = []
    for deployment, template in workloads(docs):
        container = server_container(template)
        if container is None:
            problems.append(f"{_name(deployment)}: no container named {k8s.CONTAINER!r}")
            continue
        limit = container.get("resources", {}).get("limits", {}).get("cpu")
        if limit is None or not cpu_cores(limit).is_integer():
            problems.append(f"{_name(deployment)}: the server needs a whole-core CPU limit to size its threads, "
                            f"got {limit!r}")
            continue
        expected = k8s.expected_server_flags(int(cpu_cores(limit)))
        actual = k8s.flag_map(container.get("args", []))
        for name in sorted(expected.keys() | actual.keys()):
            if name not in actual:
                problems.append(f"{_name(deployment)}: args lack --{name} (expected {_flag(name, expected[name])})")
            elif name not in expected:
                problems.append(f"{_name(deployment)}: args have --{name}, which neither `inv serve` nor the "
                                "cluster's list (kit/k8s/cluster.py) names")
            elif actual[name] != expected[name]:
                problems.append(f"{_name(deployment)}: {_flag(name, actual[name])} differs from the expected "
                                f"{_flag(name, expected[name])}")
    return problems


def _flag(name: str, value: Optional[str]) -> str:
    return f"--{name}" if value is None else f"--{name}={value}"


def configmap(docs: list[dict], name: str = k8s.CONFIGMAP_NAME) -> Optional[dict]:
    return next((o for o in docs if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == name), None)


def check_config(docs: list[dict], models: Optional[Iterable[str]] = None) -> Problems:
    """The ConfigMap's models.config parses with pyserving's own reader and names `models`, each at
    a path the pod can read; monitoring.config and batching.config parse, monitoring.config enables
    Prometheus metrics, and the batch threads match the CPU limit."""
    from pyserving import config_protos
    from pyserving.errors import ServingError

    problems = []
    cm = configmap(docs)
    if cm is None:
        return [f"no ConfigMap named {k8s.CONFIGMAP_NAME}"]
    data = cm.get("data", {})
    try:
        served = _read_models(data.get(k8s.MODELS_CONFIG_KEY, ""))
    except ServingError as exc:
        return [f"ConfigMap/{k8s.CONFIGMAP_NAME}: {k8s.MODELS_CONFIG_KEY} does not parse: {exc}"]
    names = [m.name for m in served]
    if not names:
        problems.append(f"ConfigMap/{k8s.CONFIGMAP_NAME}: {k8s.MODELS_CONFIG_KEY} names no model")
    if models is not None and sorted(names) != sorted(models):
        problems.append(f"ConfigMap/{k8s.CONFIGMAP_NAME}: {k8s.MODELS_CONFIG_KEY} serves {sorted(names)}, "
                        f"expected {sorted(models)}")
    mounts = {m["mountPath"] for _, t in workloads(docs) for c in containers(t.get("spec", {}), init=False)
              for m in c.get("volumeMounts", [])}
    for model in served:
        if model.base_path.startswith(("gs://", "s3://")):  # read from the bucket, no volume
            continue
        if not any(model.base_path == m or model.base_path.startswith(m.rstrip("/") + "/") for m in mounts):
            problems.append(f"ConfigMap/{k8s.CONFIGMAP_NAME}: model {model.name}'s base_path {model.base_path} "
                            "is on no mounted volume")
    try:
        monitoring = config_protos.parse_text(data.get("monitoring.config", ""), config_protos.MonitoringConfig(),
                                              "monitoring.config")
        batching = config_protos.parse_text(data.get("batching.config", ""), config_protos.BatchingParameters(),
                                            "batching.config")
    except ServingError as exc:
        return [*problems, f"ConfigMap/{k8s.CONFIGMAP_NAME}: {exc}"]
    if not monitoring.prometheus_config.enable:
        problems.append(f"ConfigMap/{k8s.CONFIGMAP_NAME}: monitoring.config does not enable Prometheus metrics "
                        "(the readiness probe and the scrape annotations ask for them)")
    for deployment, template in workloads(docs):
        container = server_container(template) or {}
        limit = container.get("resources", {}).get("limits", {}).get("cpu")
        if limit is not None and batching.num_batch_threads.value != cpu_cores(limit):
            problems.append(f"{_name(deployment)}: batching.config num_batch_threads "
                            f"{batching.num_batch_threads.value} differs from the CPU limit {limit}")
    return problems


def _read_models(text: str) -> list:
    """pyserving's own reader (pyserving/core/config.py): local paths, gs:// and s3:// base paths."""
    from pyserving.core import config

    return config.from_proto(config.parse_text(text, k8s.MODELS_CONFIG_KEY))


def check_config_mount(docs: list[dict]) -> Problems:
    """The ConfigMap keeps its fixed name (no kustomize hash) and is mounted as a directory where
    the args look for it: a subPath mount never sees an update."""
    problems = []
    if configmap(docs) is None:
        hashed = [o["metadata"]["name"] for o in docs if o.get("kind") == "ConfigMap"
                  and re.fullmatch(re.escape(k8s.CONFIGMAP_NAME) + r"-[a-z0-9]{10}", o["metadata"]["name"])]
        problems.append(f"no ConfigMap named {k8s.CONFIGMAP_NAME}" + (f" (found {hashed[0]}: a name suffix hash "
                        "turns every models.config edit into a rollout)" if hashed else ""))
    for deployment, template in workloads(docs):
        spec = template.get("spec", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        config_volumes = {n for n, v in volumes.items() if v.get("configMap", {}).get("name") == k8s.CONFIGMAP_NAME}
        if not config_volumes:
            problems.append(f"{_name(deployment)}: no volume mounts ConfigMap {k8s.CONFIGMAP_NAME}")
        for container in containers(spec):
            for mount in container.get("volumeMounts", []):
                if mount["name"] in config_volumes and mount.get("subPath"):
                    problems.append(f"{_name(deployment)} container {container['name']}: ConfigMap mounted with "
                                    f"subPath {mount['subPath']!r}, which never receives updates")
        server = server_container(template) or {}
        dirs = {m["mountPath"] for m in server.get("volumeMounts", []) if m["name"] in config_volumes
                and not m.get("subPath")}
        for name, value in k8s.flag_map(server.get("args", [])).items():
            if name.endswith("_file") and value and str(Path(value).parent) not in dirs:
                problems.append(f"{_name(deployment)}: --{name}={value} is not in the mounted ConfigMap directory")
    return problems


# An image reference: name, then an optional :tag, then an optional @sha256 digest.
IMAGE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?P<digest>@sha256:[0-9a-f]{64})?$")


def image_pinned(image: str) -> bool:
    """A tag or a digest, and never the tag `latest` (False for no valid reference at all)."""
    match = IMAGE.match(image)
    return (match is not None and bool(match.group("tag") or match.group("digest"))
            and match.group("tag") != "latest")


def check_images(docs: list[dict]) -> Problems:
    """Every image is pinned: a tag other than `latest`, or a digest."""
    problems = []
    for obj in docs:
        for pod_spec in _pod_specs(obj):
            for container in containers(pod_spec):
                image = container.get("image", "")
                if not image or IMAGE.match(image) is None:
                    problems.append(f"{_name(obj)} container {container.get('name')}: no valid image {image!r}")
                elif not image_pinned(image):
                    problems.append(f"{_name(obj)} container {container.get('name')}: image {image!r} is not pinned "
                                    "(no tag, or :latest)")
    return problems


def _pod_specs(obj: dict) -> list[dict]:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [obj.get("spec", {}).get("template", {}).get("spec", {})]
    if obj.get("kind") == "Pod":
        return [obj.get("spec", {})]
    return []


def check_non_root(docs: list[dict]) -> Problems:
    """Every container runs as a non-root uid, without privilege escalation or capabilities, on a
    read-only root file system."""
    problems = []
    for obj in docs:
        for pod_spec in _pod_specs(obj):
            pod_sc = pod_spec.get("securityContext", {})
            for container in containers(pod_spec):
                sc = {**pod_sc, **container.get("securityContext", {})}
                who = f"{_name(obj)} container {container.get('name')}"
                if sc.get("runAsNonRoot") is not True:
                    problems.append(f"{who}: runAsNonRoot is not true")
                if sc.get("runAsUser") in (None, 0):
                    problems.append(f"{who}: runAsUser is {sc.get('runAsUser')!r} (the TF Serving image has no USER: "
                                    "give a numeric non-zero uid)")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{who}: allowPrivilegeEscalation is not false")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{who}: readOnlyRootFilesystem is not true")
                if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
                    problems.append(f"{who}: capabilities do not drop ALL")
    return problems


def check_shutdown(docs: list[dict]) -> Problems:
    """A rolling update never goes below the wanted replicas, and the grace period outlasts the
    preStop delay (else the kubelet kills the server mid-delay)."""
    problems = []
    for deployment, template in workloads(docs):
        rolling = deployment["spec"].get("strategy", {}).get("rollingUpdate", {})
        if deployment["spec"].get("strategy", {}).get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0:
            problems.append(f"{_name(deployment)}: strategy must be RollingUpdate with maxUnavailable 0")
        spec = template.get("spec", {})
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for container in containers(spec, init=False):
            sleep = (container.get("lifecycle") or {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            if sleep >= grace:
                problems.append(f"{_name(deployment)} container {container['name']}: preStop sleep {sleep} s is not "
                                f"shorter than terminationGracePeriodSeconds {grace}")
    return problems


def metrics_path(docs: list[dict]) -> Optional[str]:
    """The path monitoring.config serves Prometheus metrics at (on the REST port); None when it
    does not enable them, or cannot be read (check_config says why)."""
    from pyserving import config_protos
    from pyserving.errors import ServingError

    cm = configmap(docs) or {}
    try:
        monitoring = config_protos.parse_text((cm.get("data") or {}).get("monitoring.config", ""),
                                              config_protos.MonitoringConfig(), "monitoring.config")
    except ServingError:
        return None
    return monitoring.prometheus_config.path if monitoring.prometheus_config.enable else None


def _port_number(container: dict, port: object) -> object:
    """A probe's port as a number: a name resolved through the container's declared ports."""
    if isinstance(port, str):
        return next((p.get("containerPort") for p in container.get("ports", []) if p.get("name") == port), port)
    return port


def check_probes(docs: list[dict]) -> Problems:
    """The server's probes: a startupProbe connecting to a server port (the server opens its ports
    only once every model is loaded, so a slow load is not killed by the liveness probe), a
    readinessProbe GETting the metrics path monitoring.config enables, on the REST port (it does
    not depend on a model: /v1/models/NAME answers 200 for a version in any state), and a gRPC
    livenessProbe on the gRPC port (grpc.health.v1, which --enable_grpc_healthcheck_service serves)."""
    problems = []
    metrics = metrics_path(docs)
    for deployment, template in workloads(docs):
        container = server_container(template)
        if container is None:
            continue  # check_args says so
        who = f"{_name(deployment)} container {container['name']}"
        startup = (container.get("startupProbe") or {}).get("tcpSocket")
        if startup is None:
            problems.append(f"{who}: no startupProbe.tcpSocket (the ports open once the models are loaded; without "
                            "it a slow load is killed by the liveness probe)")
        elif _port_number(container, startup.get("port")) not in (k8s.GRPC_PORT, k8s.REST_PORT):
            problems.append(f"{who}: startupProbe.tcpSocket port {startup.get('port')!r} is neither the gRPC port "
                            f"{k8s.GRPC_PORT} nor the REST port {k8s.REST_PORT}")
        ready = (container.get("readinessProbe") or {}).get("httpGet")
        if ready is None:
            problems.append(f"{who}: no readinessProbe.httpGet (on the metrics path of the REST port)")
        else:
            if _port_number(container, ready.get("port")) != k8s.REST_PORT:
                problems.append(f"{who}: readinessProbe.httpGet port {ready.get('port')!r} is not the REST port "
                                f"{k8s.REST_PORT}")
            if ready.get("path") != metrics:
                problems.append(f"{_name(deployment)}: readinessProbe asks for {ready.get('path')}, but "
                                f"monitoring.config serves metrics at {metrics}")
        live = (container.get("livenessProbe") or {}).get("grpc")
        if live is None:
            problems.append(f"{who}: no livenessProbe.grpc (grpc.health.v1 on the gRPC port {k8s.GRPC_PORT})")
        else:
            if not isinstance(live.get("port"), str) and live.get("port") != k8s.GRPC_PORT:  # a name: check_ports
                problems.append(f"{who}: livenessProbe.grpc port {live.get('port')!r} is not the gRPC port "
                                f"{k8s.GRPC_PORT}")
            if "enable_grpc_healthcheck_service" not in k8s.flag_map(container.get("args", [])):
                problems.append(f"{who}: livenessProbe.grpc needs --enable_grpc_healthcheck_service in the args")
    return problems


SCRAPE = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def check_scrape(docs: list[dict]) -> Problems:
    """Each pod template carries the Prometheus scrape annotations (honoured by the
    prometheus-community chart's kubernetes-pods job): scrape "true", the REST port the metrics
    are served on, and the path monitoring.config enables."""
    problems = []
    metrics = metrics_path(docs)
    for deployment, template in workloads(docs):
        annotations = template.get("metadata", {}).get("annotations") or {}
        for key, value in zip(SCRAPE, ("true", str(k8s.REST_PORT), metrics)):
            if annotations.get(key) != value:
                problems.append(f"{_name(deployment)}: pod annotation {key} is {annotations.get(key)!r}, expected "
                                f"{value!r}")
    return problems


def _metric(metric: dict) -> str:
    """An HPA metric in a few words: "Resource cpu Utilization", "Pods requests_per_second AverageValue"."""
    kind = metric.get("type", "")
    source = metric.get(kind[:1].lower() + kind[1:]) or {}  # Resource -> resource, ContainerResource -> ...
    name = source.get("name") or (source.get("metric") or {}).get("name")
    return f"{kind} {name} {(source.get('target') or {}).get('type')}"


def check_scaling(docs: list[dict]) -> Problems:
    """An HPA scales each Deployment on CPU utilization alone, which is measured against the
    server's CPU request (so it must have one), and a PodDisruptionBudget selects its pods."""
    problems = []
    for deployment, template in workloads(docs):
        hpas = [o for o in docs if o.get("kind") == "HorizontalPodAutoscaler"
                and o.get("spec", {}).get("scaleTargetRef", {}).get("kind") == "Deployment"
                and o["spec"]["scaleTargetRef"].get("name") == deployment["metadata"]["name"]]
        if not hpas:
            problems.append(f"{_name(deployment)}: no HorizontalPodAutoscaler scales it")
        for hpa in hpas:
            # autoscaling/v2 without metrics scales on CPU utilization (80 %)
            metrics = [_metric(m) for m in hpa["spec"].get("metrics") or []] or ["Resource cpu Utilization"]
            if metrics != ["Resource cpu Utilization"]:
                problems.append(f"{_name(hpa)}: scales on {', '.join(metrics)}; expected CPU utilization alone")
        if not ((server_container(template) or {}).get("resources", {}).get("requests") or {}).get("cpu"):
            problems.append(f"{_name(deployment)}: the server has no CPU request, which CPU utilization is "
                            "measured against")
        labels = template.get("metadata", {}).get("labels", {})
        if not any(_matches(o.get("spec", {}).get("selector", {}), labels) for o in docs
                   if o.get("kind") == "PodDisruptionBudget"):
            problems.append(f"{_name(deployment)}: no PodDisruptionBudget selects its pods")
    return problems


def _storage(deployment: dict) -> str:
    return (deployment.get("metadata", {}).get("annotations") or {}).get("kit-serving/storage", "pvc")


def _rule_ports(rule: dict) -> Optional[set]:
    """A NetworkPolicy rule's ports as numbers (names resolved to the server's), None for all ports."""
    if not rule.get("ports"):
        return None
    named = {"grpc": k8s.GRPC_PORT, "rest": k8s.REST_PORT}
    return {named.get(p.get("port"), p.get("port")) for p in rule["ports"]}


def check_network_policy(docs: list[dict]) -> Problems:
    """A NetworkPolicy selects each Deployment's pods and restricts both directions: ingress only
    to the gRPC and REST ports and each rule from named sources (a rule without `from`, or an
    ipBlock of everything, lets any pod or host in); egress only with ports, and beyond DNS (53)
    only for bucket storage (gcs, s3), which needs its HTTPS endpoints."""
    problems = []
    policies = [o for o in docs if o.get("kind") == "NetworkPolicy"]
    for deployment, template in workloads(docs):
        labels = template.get("metadata", {}).get("labels", {})
        mine = [p for p in policies if _matches(p.get("spec", {}).get("podSelector", {}), labels)]
        if not mine:
            problems.append(f"{_name(deployment)}: no NetworkPolicy selects its pods (any pod in the cluster can "
                            f"reach ports {k8s.GRPC_PORT} and {k8s.REST_PORT})")
            continue
        types = {t for p in mine for t in p["spec"].get("policyTypes", [])}
        for direction in ("Ingress", "Egress"):
            if direction not in types:
                problems.append(f"{_name(deployment)}: no NetworkPolicy restricts its {direction.lower()} "
                                "(policyTypes)")
        for policy in mine:
            for i, rule in enumerate(policy["spec"].get("ingress") or []):
                where = f"{_name(policy)} ingress[{i}]"
                ports = _rule_ports(rule)
                if ports is None or not ports <= {k8s.GRPC_PORT, k8s.REST_PORT}:
                    problems.append(f"{where}: opens {'every port' if ports is None else sorted(ports, key=str)}; "
                                    f"only {k8s.GRPC_PORT} and {k8s.REST_PORT} are served")
                peers = rule.get("from") or []
                if not peers:
                    problems.append(f"{where}: no `from`: every source in and outside the cluster may connect")
                if any(p.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0") for p in peers):
                    problems.append(f"{where}: an ipBlock of every address may connect")
            for i, rule in enumerate(policy["spec"].get("egress") or []):
                ports = _rule_ports(rule)
                if ports is None:
                    problems.append(f"{_name(policy)} egress[{i}]: every port is open")
                elif ports - {53} and _storage(deployment) not in ("gcs", "s3"):
                    problems.append(f"{_name(policy)} egress[{i}]: ports {sorted(ports - {53}, key=str)} opened, "
                                    f"but {_storage(deployment)} storage needs no egress beyond DNS")
    return problems


SECRET_KEY = re.compile(r"(secret|password|passwd|token|private_?key|access_?key|credential)", re.IGNORECASE)


def check_service_account(docs: list[dict]) -> Problems:
    """Pods run under their own ServiceAccount with no Kubernetes API token mounted (the server
    never calls the API; GKE Workload Identity and EKS IRSA need none), and secrets reach a
    container only as files: not through env (secretKeyRef, envFrom secretRef), and never in a
    ConfigMap (no key named like a credential)."""
    problems = []
    accounts = {o["metadata"]["name"]: o for o in docs if o.get("kind") == "ServiceAccount"}
    for obj in docs:
        for pod_spec in _pod_specs(obj):
            name = pod_spec.get("serviceAccountName") or "default"
            if pod_spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{_name(obj)}: automountServiceAccountToken is not false (the pods get a Kubernetes "
                                "API token they never use)")
            if name == "default":
                problems.append(f"{_name(obj)}: runs under the namespace's default ServiceAccount; give it its own")
            elif obj.get("kind") == "Deployment" and name not in accounts:
                problems.append(f"{_name(obj)}: its ServiceAccount {name!r} is not among the manifests")
            elif name in accounts and accounts[name].get("automountServiceAccountToken") is not False:
                problems.append(f"ServiceAccount/{name}: automountServiceAccountToken is not false")
            for container in containers(pod_spec):
                who = f"{_name(obj)} container {container.get('name')}"
                for env in container.get("env") or []:
                    if "secretKeyRef" in (env.get("valueFrom") or {}):
                        problems.append(f"{who}: env {env.get('name')} comes from a Secret (mount it as a file)")
                for source in container.get("envFrom") or []:
                    if "secretRef" in source:
                        problems.append(f"{who}: envFrom Secret {source['secretRef'].get('name')!r} (mount it as "
                                        "files)")
                for arg in [*(container.get("command") or []), *(container.get("args") or [])]:
                    if SECRET_KEY.search(str(arg).split("=", 1)[0]) and "=" in str(arg):
                        problems.append(f"{who}: a credential on the command line ({str(arg).split('=', 1)[0]}=...)")
    for obj in docs:
        if obj.get("kind") == "ConfigMap":
            for key in [*(obj.get("data") or {}), *(obj.get("binaryData") or {})]:
                if SECRET_KEY.search(key):
                    problems.append(f"{_name(obj)}: key {key!r} looks like a credential; put it in a Secret")
    return problems


# Pod Security Standards, "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
HIGH_ID = 10000  # ids below it can belong to users of the node (checkov CKV_K8S_40)


def check_pod_security(docs: list[dict]) -> Problems:
    """Every pod meets Pod Security "restricted" (what the namespace `inv deploy` renders enforces)
    with a high uid and gid: no host namespaces, ports or paths, only the allowed volume types,
    non-root, seccomp RuntimeDefault (or Localhost), no privilege or privilege escalation, ALL
    capabilities dropped (NET_BIND_SERVICE the only one that may be added); and each Namespace
    among the manifests enforces "restricted"."""
    problems = []
    for obj in docs:
        if obj.get("kind") == "Namespace":
            level = (obj.get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce")
            if level != "restricted":
                problems.append(f"{_name(obj)}: label pod-security.kubernetes.io/enforce is {level!r}, expected "
                                "'restricted'")
        for pod_spec in _pod_specs(obj):
            for field in ("hostNetwork", "hostPID", "hostIPC"):
                if pod_spec.get(field):
                    problems.append(f"{_name(obj)}: {field} is true")
            for volume in pod_spec.get("volumes", []):
                kinds = set(volume) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    problems.append(f"{_name(obj)}: volume {volume.get('name')!r} is of type "
                                    f"{', '.join(sorted(kinds - RESTRICTED_VOLUMES))}, which restricted forbids")
            pod_sc = pod_spec.get("securityContext") or {}
            for container in containers(pod_spec):
                sc = {**pod_sc, **(container.get("securityContext") or {})}
                who = f"{_name(obj)} container {container.get('name')}"
                if sc.get("runAsNonRoot") is not True:
                    problems.append(f"{who}: runAsNonRoot is not true")
                for field in ("runAsUser", "runAsGroup"):
                    if not isinstance(sc.get(field), int) or sc[field] < HIGH_ID:
                        problems.append(f"{who}: {field} is {sc.get(field)!r}, expected a high id (>= {HIGH_ID}) "
                                        "that no node user has")
                if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                    problems.append(f"{who}: seccompProfile is not RuntimeDefault")
                if sc.get("privileged"):
                    problems.append(f"{who}: privileged")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{who}: allowPrivilegeEscalation is not false")
                capabilities = sc.get("capabilities") or {}
                if "ALL" not in capabilities.get("drop", []):
                    problems.append(f"{who}: capabilities do not drop ALL")
                added = set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}
                if added:
                    problems.append(f"{who}: adds capabilities {sorted(added)}")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{who}: readOnlyRootFilesystem is not true")
                if any(p.get("hostPort") for p in container.get("ports", [])):
                    problems.append(f"{who}: uses a hostPort")
    return problems


SEMANTIC_CHECKS: dict[str, Callable[[list[dict]], Problems]] = {
    "selectors": check_selectors, "ports": check_ports, "args": check_args, "config": check_config,
    "config-mount": check_config_mount, "images": check_images, "non-root": check_non_root,
    "shutdown": check_shutdown, "probes": check_probes, "scrape": check_scrape, "scaling": check_scaling,
    "network-policy": check_network_policy, "service-account": check_service_account,
    "pod-security": check_pod_security,
}


def semantic_problems(docs: list[dict], models: Optional[Iterable[str]] = None) -> Problems:
    problems = []
    for name, check in SEMANTIC_CHECKS.items():
        found = check(docs, models) if check is check_config else check(docs)
        problems += [f"[{name}] {p}" for p in found]
    return problems


def schema_errors(docs: list[dict], version: str) -> tuple[int, list[str], Problems]:
    """kubernetes-validate --strict against Kubernetes `version`: (built-in objects checked, CRD
    objects it has no schema for, errors)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    checked, skipped, errors = 0, [], []
    for obj in docs:
        if obj.get("kind") in CRD_KINDS:
            skipped.append(_name(obj))
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{_name(obj)} against {version}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except SchemaNotFoundError as exc:
            errors.append(f"{_name(obj)}: no schema for Kubernetes {version}: {exc.message}")
        checked += 1
    return checked, skipped, errors


def inferenceservice_errors(obj: dict, schema_file: Path) -> Problems:
    """An InferenceService against KServe's v1beta1 CRD schema (jsonschema; the CRD has no
    additionalProperties: false, so misspelled keys pass, type errors do not)."""
    import jsonschema

    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{_name(obj)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
