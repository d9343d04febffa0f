"""kit/k8s/manifest_checks.py check by check, in-process and fast (no kubectl, no render): a literal
copy of what `inv deploy --overlay=pyserving --storage=s3` rendered before pyserving pods read
buckets themselves (GOOD: the pyserving image with the s3 init-container copy that tfserving+s3
still renders, a bucket's egress and every kind of object the checks read) passes every check, and
each broken variant of it, or a small object made for the case, gets exactly the problems
written here. The rendered manifests themselves are test_deploy.py's (every overlay and storage
passes the same checks there); this module is what `make mutate` runs against the checks.
"""
from __future__ import annotations

import json

import pytest
import yaml

from kit.k8s import manifest_checks as mc

GOOD = """\
apiVersion: v1
kind: Namespace
metadata:
  labels:
    app.kubernetes.io/name: kit-serving
    pod-security.kubernetes.io/audit: restricted
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
  name: kit-serving
---
apiVersion: v1
automountServiceAccountToken: false
kind: ServiceAccount
metadata:
  name: kit-serving
  namespace: kit-serving
---
apiVersion: v1
data:
  MODELS_URI: s3://kit-models/models
kind: ConfigMap
metadata:
  name: kit-models-source
  namespace: kit-serving
---
apiVersion: v1
data:
  batching.config: |
    max_batch_size { value: 32 }
    num_batch_threads { value: 2 }
  models.config: |
    model_config_list {
      config {
        name: "svm"
        base_path: "/models/svm"
        model_platform: "tensorflow"
      }
      config {
        name: "mnist"
        base_path: "/models/mnist"
        model_platform: "tensorflow"
      }
    }
  monitoring.config: |
    prometheus_config {
      enable: true
      path: "/monitoring/prometheus/metrics"
    }
kind: ConfigMap
metadata:
  name: kit-serving-config
  namespace: kit-serving
---
apiVersion: v1
kind: Service
metadata:
  name: kit-serving-grpc
  namespace: kit-serving
spec:
  clusterIP: None
  ports:
  - name: grpc
    port: 8500
    targetPort: grpc
  selector:
    app.kubernetes.io/name: kit-serving
---
apiVersion: v1
kind: Service
metadata:
  name: kit-serving-rest
  namespace: kit-serving
spec:
  ports:
  - name: http
    port: 8501
    targetPort: rest
  selector:
    app.kubernetes.io/name: kit-serving
---
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    kit-serving/storage: s3
  name: kit-serving
  namespace: kit-serving
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: kit-serving
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    type: RollingUpdate
  template:
    metadata:
      annotations:
        prometheus.io/path: /monitoring/prometheus/metrics
        prometheus.io/port: "8501"
        prometheus.io/scrape: "true"
      labels:
        app.kubernetes.io/name: kit-serving
    spec:
      automountServiceAccountToken: false
      containers:
      - args:
        - --model_config_file=/etc/kit-serving/models.config
        - --model_config_file_poll_wait_seconds=1
        - --max_num_load_retries=1
        - --load_retry_interval_micros=2000000
        - --allow_version_labels_for_unavailable_models
        - --monitoring_config_file=/etc/kit-serving/monitoring.config
        - --enable_batching
        - --batching_parameters_file=/etc/kit-serving/batching.config
        - --enable_grpc_healthcheck_service
        - --grpc_channel_arguments=grpc.max_connection_age_ms=30000,grpc.max_connection_age_grace_ms=10000
        - --tensorflow_intra_op_parallelism=2
        - --tensorflow_inter_op_parallelism=2
        - --rest_api_num_threads=8
        - --grpc_max_threads=8
        image: kit-pyserving:0.1.0
        lifecycle:
          preStop:
            sleep:
              seconds: 5
        livenessProbe:
          grpc:
            port: 8500
        name: server
        ports:
        - containerPort: 8500
          name: grpc
        - containerPort: 8501
          name: rest
        readinessProbe:
          httpGet:
            path: /monitoring/prometheus/metrics
            port: rest
        resources:
          limits:
            cpu: "2"
          requests:
            cpu: "1"
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            drop:
            - ALL
          readOnlyRootFilesystem: true
        startupProbe:
          tcpSocket:
            port: rest
        volumeMounts:
        - mountPath: /models
          name: models
          readOnly: true
        - mountPath: /etc/kit-serving
          name: config
          readOnly: true
      initContainers:
      - args: [s3, sync, --no-progress, $(MODELS_URI), /models]
        env:
        - name: MODELS_URI
          valueFrom:
            configMapKeyRef:
              key: MODELS_URI
              name: kit-models-source
        image: amazon/aws-cli:2.15.0
        name: sync-models
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            drop:
            - ALL
          readOnlyRootFilesystem: true
        volumeMounts:
        - mountPath: /models
          name: models
      securityContext:
        runAsGroup: 10001
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile:
          type: RuntimeDefault
      serviceAccountName: kit-serving
      terminationGracePeriodSeconds: 30
      topologySpreadConstraints:
      - labelSelector:
          matchLabels:
            app.kubernetes.io/name: kit-serving
        maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
      volumes:
      - emptyDir:
          sizeLimit: 2Gi
        name: models
      - configMap:
          name: kit-serving-config
        name: config
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: kit-serving
  namespace: kit-serving
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: kit-serving
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: kit-serving
  namespace: kit-serving
spec:
  maxReplicas: 6
  metrics:
  - resource:
      name: cpu
      target:
        averageUtilization: 70
        type: Utilization
    type: Resource
  minReplicas: 2
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: kit-serving
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: kit-serving
  namespace: kit-serving
spec:
  egress:
  - ports:
    - port: 53
      protocol: UDP
    to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
  - ports:
    - port: 443
      protocol: TCP
    to:
    - ipBlock:
        cidr: 0.0.0.0/0
  ingress:
  - from:
    - podSelector: {}
    ports:
    - port: 8500
      protocol: TCP
    - port: 8501
      protocol: TCP
  podSelector:
    matchLabels:
      app.kubernetes.io/name: kit-serving
  policyTypes:
  - Ingress
  - Egress
"""
D = "Deployment/kit-serving"
SERVER = f"{D} container server"
SYNC = f"{D} container sync-models"
CHECKS = ["selectors", "ports", "args", "config", "config-mount", "images", "non-root", "shutdown", "probes",
          "scrape", "scaling", "network-policy", "service-account", "pod-security"]


def good() -> list[dict]:
    return list(yaml.safe_load_all(GOOD))


def find(docs: list[dict], kind: str, name: str = "") -> dict:
    [obj] = [d for d in docs if d["kind"] == kind and (not name or d["metadata"]["name"] == name)]
    return obj


def pod(docs: list[dict]) -> dict:
    return find(docs, "Deployment")["spec"]["template"]["spec"]


def server(docs: list[dict]) -> dict:
    return pod(docs)["containers"][0]


def config(docs: list[dict]) -> dict:
    return find(docs, "ConfigMap", "kit-serving-config")["data"]


def bare(kind: str = "Deployment", **fields) -> dict:
    """An object with a name and nothing else the checks look for."""
    return {"kind": kind, "metadata": {"name": "bare"}, **fields}


# ---- all together ---------------------------------------------------------------------------------
def test_the_good_manifests_pass_every_check():
    docs = good()
    assert list(mc.SEMANTIC_CHECKS) == CHECKS
    for name, check in mc.SEMANTIC_CHECKS.items():
        assert (check(docs, ["svm", "mnist"]) if name == "config" else check(docs)) == [], name
    assert mc.semantic_problems(docs, ["mnist", "svm"]) == []
    assert mc.semantic_problems(docs) == []


def test_semantic_problems_name_their_check_and_pass_the_models_to_the_config_check():
    docs = good()
    del server(docs)["livenessProbe"]
    assert mc.semantic_problems(docs, ["svm"]) == [
        "[config] ConfigMap/kit-serving-config: models.config serves ['mnist', 'svm'], expected ['svm']",
        f"[probes] {SERVER}: no livenessProbe.grpc (grpc.health.v1 on the gRPC port 8500)"]


# ---- label selectors ------------------------------------------------------------------------------
@pytest.mark.parametrize("selector,labels,matches", [
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchLabels": {"a": "1", "b": "2"}}, {"a": "1"}, False),
    ({}, {"a": "1"}, False),  # empty selects everything: never meant here
    ({"matchLabels": {}}, {"a": "1"}, False),
    ({"matchLabels": {}, "matchExpressions": []}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "3"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, {"a": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    ({"matchLabels": {"b": "1"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": "1"}, False),
    ({"matchLabels": {"b": "1"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": "1", "b": "1"},
     True),
    ({"matchLabels": None, "matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}, "matchExpressions": None}, {"a": "1"}, True),
])
def test_label_selectors_match_as_kubernetes_does(selector, labels, matches):
    assert mc._matches(selector, labels) is matches


def test_selector_check():
    docs = good()
    find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    assert mc.check_selectors(docs) == [
        f"{D}: spec.selector does not match its pod template labels {{'app': 'other'}}",
        f"{D}: topologySpreadConstraints (kubernetes.io/hostname) labelSelector matches none of its pods",
        "Service/kit-serving-grpc: selector {'matchLabels': {'app.kubernetes.io/name': 'kit-serving'}} matches no "
        "pod template",
        "Service/kit-serving-rest: selector {'matchLabels': {'app.kubernetes.io/name': 'kit-serving'}} matches no "
        "pod template",
        "PodDisruptionBudget/kit-serving: selector {'matchLabels': {'app.kubernetes.io/name': 'kit-serving'}} "
        "matches no pod template"]
    docs = good()
    find(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "tfs"
    del find(docs, "Service", "kit-serving-grpc")["spec"]["selector"]
    pod(docs)["topologySpreadConstraints"][0]["labelSelector"] = {"matchLabels": {"app": "x"}}
    assert mc.check_selectors(docs) == [
        f"{D}: topologySpreadConstraints (kubernetes.io/hostname) labelSelector matches none of its pods",
        "Service/kit-serving-grpc: selector {'matchLabels': {}} matches no pod template",
        "HorizontalPodAutoscaler/kit-serving: scaleTargetRef Deployment/tfs is no Deployment here"]
    docs.insert(0, docs.pop(docs.index(find(docs, "HorizontalPodAutoscaler"))))  # each object on its own
    assert mc.check_selectors(docs) == [
        f"{D}: topologySpreadConstraints (kubernetes.io/hostname) labelSelector matches none of its pods",
        "HorizontalPodAutoscaler/kit-serving: scaleTargetRef Deployment/tfs is no Deployment here",
        "Service/kit-serving-grpc: selector {'matchLabels': {}} matches no pod template"]
    docs = good()
    find(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
    del find(docs, "PodDisruptionBudget")["spec"]["selector"]
    del pod(docs)["topologySpreadConstraints"][0]["labelSelector"]
    assert mc.check_selectors(docs) == [
        f"{D}: topologySpreadConstraints (kubernetes.io/hostname) labelSelector matches none of its pods",
        "PodDisruptionBudget/kit-serving: selector {} matches no pod template",
        "HorizontalPodAutoscaler/kit-serving: scaleTargetRef StatefulSet/kit-serving is no Deployment here"]


def test_selector_check_on_objects_with_nothing_set():
    """A Deployment with an empty spec (no template), a Service and a PDB without spec."""
    assert mc.check_selectors([bare(spec={}), bare("ConfigMap"), bare("Service"), bare("PodDisruptionBudget")]) == [
        "Deployment/bare: spec.selector does not match its pod template labels {}",
        "Service/bare: selector {'matchLabels': {}} matches no pod template",
        "PodDisruptionBudget/bare: selector {} matches no pod template"]
    # a template without metadata or spec
    assert mc.check_selectors([bare(spec={"selector": {"matchLabels": {"a": "1"}}, "template": {}})]) == [
        "Deployment/bare: spec.selector does not match its pod template labels {}"]


# ---- ports ----------------------------------------------------------------------------------------
def test_port_check():
    docs = good()
    container = server(docs)
    container["readinessProbe"]["httpGet"]["port"] = "http"
    container["livenessProbe"]["grpc"]["port"] = "grpc"
    container["startupProbe"]["tcpSocket"]["port"] = 9000
    find(docs, "Service", "kit-serving-grpc")["spec"]["ports"][0]["targetPort"] = 9000
    assert mc.check_ports(docs) == [
        f"{SERVER}: startupProbe.tcpSocket port 9000 is not a declared container port",
        f"{SERVER}: readinessProbe.httpGet port 'http' is not a declared container port",
        f"{SERVER}: livenessProbe.grpc port 'grpc': gRPC probes take a port number, not a name",
        "Service/kit-serving-grpc: targetPort 9000 is not a container port of its pods"]
    docs = good()
    server(docs)["startupProbe"] = {"httpGet": {"port": 8501, "path": "/"}}
    server(docs)["readinessProbe"] = {"tcpSocket": {"port": "grpc"}}
    server(docs)["livenessProbe"] = {"grpc": {"port": 8501}, "tcpSocket": {"port": 1}}
    assert mc.check_ports(docs) == [f"{SERVER}: livenessProbe.tcpSocket port 1 is not a declared container port"]


def test_port_check_reads_the_ports_of_every_container():
    docs = good()
    pod(docs)["containers"] += [{"name": "exporter", "ports": [{"containerPort": 9100, "name": "metrics"}]},
                                {"name": "bare"}]
    find(docs, "Service", "kit-serving-rest")["spec"]["ports"].append({"name": "m", "port": 9100,
                                                                       "targetPort": "metrics"})
    find(docs, "Service", "kit-serving-grpc")["spec"]["ports"].append({"name": "m", "port": 9100,
                                                                       "targetPort": 9100})
    assert mc.check_ports(docs) == []


def test_port_check_resolves_service_ports_by_name_or_number_and_ignores_init_containers():
    docs = good()
    rest = find(docs, "Service", "kit-serving-rest")["spec"]["ports"]
    rest[0]["targetPort"] = 8501  # a number the server declares
    del find(docs, "Service", "kit-serving-grpc")["spec"]["ports"][0]["targetPort"]  # then the port, 8500
    assert mc.check_ports(docs) == []
    pod(docs)["initContainers"][0]["ports"] = [{"containerPort": 9100, "name": "metrics"}]
    rest.append({"name": "metrics", "port": 9100, "targetPort": "metrics"})
    rest.append({"name": "raw", "port": 9101})
    assert mc.check_ports(docs) == [
        "Service/kit-serving-rest: targetPort 'metrics' is not a container port of its pods",
        "Service/kit-serving-rest: targetPort 9101 is not a container port of its pods"]


def test_port_check_on_service_monitors():
    docs = good()
    docs.append({"kind": "ServiceMonitor", "metadata": {"name": "kit-serving"},
                 "spec": {"endpoints": [{"port": "http"}, {"port": "grpc"}, {"port": "metrics"}, {}]}})
    assert mc.check_ports(docs) == [
        "ServiceMonitor/kit-serving: endpoint port 'metrics' names no Service port",
        "ServiceMonitor/kit-serving: endpoint port None names no Service port"]
    docs[-1]["spec"] = {}
    assert mc.check_ports(docs) == []


def test_port_check_on_objects_with_nothing_set():
    service = bare("Service", spec={})
    assert mc.check_ports([bare(), service, bare("ServiceMonitor", spec={})]) == []
    service["spec"]["ports"] = [{"name": "p", "port": 80}]
    container = {"name": "c", "ports": [{"containerPort": 80}], "readinessProbe": None}
    assert mc.check_ports([bare(spec={"template": {"spec": {"containers": [container]}}}), service]) == []


# ---- the server's args and CPU --------------------------------------------------------------------
@pytest.mark.parametrize("quantity,cores", [("2", 2.0), (2, 2.0), ("500m", 0.5), ("1500m", 1.5), ("0.25", 0.25)])
def test_cpu_quantities(quantity, cores):
    assert mc.cpu_cores(quantity) == cores


def test_server_container_is_the_one_named_server():
    helper, main = {"name": "helper"}, {"name": "server", "image": "x:1"}
    assert mc.server_container({"spec": {"containers": [helper, main]}}) is main
    assert mc.server_container({"spec": {"containers": [helper]}}) is None
    assert mc.server_container({"spec": {}}) is None
    assert mc.server_container({}) is None


def test_args_check():
    docs = good()
    args = server(docs)["args"]
    args.remove("--allow_version_labels_for_unavailable_models")
    args[args.index("--model_config_file_poll_wait_seconds=1")] = "--model_config_file_poll_wait_seconds=60"
    args[args.index("--enable_batching")] = "--enable_batching=true"
    args[args.index("--max_num_load_retries=1")] = "--max_num_load_retries"
    args.append("--port=9000")
    assert mc.check_args(docs) == [
        f"{D}: args lack --allow_version_labels_for_unavailable_models (expected "
        "--allow_version_labels_for_unavailable_models)",
        f"{D}: --enable_batching=true differs from the expected --enable_batching",
        f"{D}: --max_num_load_retries differs from the expected --max_num_load_retries=1",
        f"{D}: --model_config_file_poll_wait_seconds=60 differs from the expected "
        "--model_config_file_poll_wait_seconds=1",
        f"{D}: args have --port, which neither `inv serve` nor the cluster's list (kit/k8s/cluster.py) names"]
    del server(docs)["args"]
    problems = mc.check_args(docs)
    assert len(problems) == 14 and problems[0] == (
        f"{D}: args lack --allow_version_labels_for_unavailable_models (expected "
        "--allow_version_labels_for_unavailable_models)")
    assert f"{D}: args lack --tensorflow_intra_op_parallelism (expected --tensorflow_intra_op_parallelism=2)" \
        in problems


def test_args_check_sizes_threads_from_a_whole_core_cpu_limit():
    docs = good()
    server(docs)["resources"]["limits"]["cpu"] = "4000m"
    assert mc.check_args(docs) == [
        f"{D}: --grpc_max_threads=8 differs from the expected --grpc_max_threads=16",
        f"{D}: --rest_api_num_threads=8 differs from the expected --rest_api_num_threads=16",
        f"{D}: --tensorflow_inter_op_parallelism=2 differs from the expected --tensorflow_inter_op_parallelism=4",
        f"{D}: --tensorflow_intra_op_parallelism=2 differs from the expected --tensorflow_intra_op_parallelism=4"]
    server(docs)["resources"]["limits"]["cpu"] = "1500m"
    assert mc.check_args(docs) == [
        f"{D}: the server needs a whole-core CPU limit to size its threads, got '1500m'"]
    del server(docs)["resources"]["limits"]
    assert mc.check_args(docs) == [f"{D}: the server needs a whole-core CPU limit to size its threads, got None"]
    del server(docs)["resources"]
    assert mc.check_args(docs) == [f"{D}: the server needs a whole-core CPU limit to size its threads, got None"]


def test_args_check_needs_the_server_container():
    docs = good()
    server(docs)["name"] = "tfs"
    assert mc.check_args(docs) == [f"{D}: no container named 'server'"]
    assert mc.check_args([bare(spec={})]) == ["Deployment/bare: no container named 'server'"]


def test_args_check_checks_each_deployment_on_its_own():
    uneven, unlisted = good(), good()
    server(uneven)["resources"]["limits"]["cpu"] = "1500m"
    find(unlisted, "Deployment")["metadata"]["name"] = "second"
    server(unlisted)["args"].append("--port=9000")
    docs = [bare(spec={}), find(uneven, "Deployment"), find(unlisted, "Deployment")]
    assert mc.check_args(docs) == [
        "Deployment/bare: no container named 'server'",
        f"{D}: the server needs a whole-core CPU limit to size its threads, got '1500m'",
        "Deployment/second: args have --port, which neither `inv serve` nor the cluster's list (kit/k8s/cluster.py) "
        "names"]


# ---- the ConfigMap --------------------------------------------------------------------------------
def test_config_check_reads_models_config_with_pyservings_reader():
    docs = good()
    data = config(docs)
    text = data["models.config"]
    assert mc.check_config(docs, ["svm", "mnist"]) == [] and mc.check_config(docs, ("mnist", "svm")) == []
    assert mc.check_config(docs, ["svm"]) == [
        "ConfigMap/kit-serving-config: models.config serves ['mnist', 'svm'], expected ['svm']"]
    data["models.config"] = text.replace("model_config_list", "model_config_lst")
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: models.config does not parse: Invalid protobuf file: 'models.config'"]
    data["models.config"] = text.replace('"/models/mnist"', '"/data/mnist"').replace('"/models/svm"', '"/models"')
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: model mnist's base_path /data/mnist is on no mounted volume"]
    data["models.config"] = text.replace('"/models/mnist"', '"/modelsx/mnist"')
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: model mnist's base_path /modelsx/mnist is on no mounted volume"]
    server(docs)["volumeMounts"][0]["mountPath"] = "/models/"  # a trailing slash is the same directory
    data["models.config"] = text
    assert mc.check_config(docs) == []
    data["models.config"] = "model_config_list {}"
    assert mc.check_config(docs) == ["ConfigMap/kit-serving-config: models.config names no model"]
    del data["models.config"]
    assert mc.check_config(docs, []) == ["ConfigMap/kit-serving-config: models.config names no model"]
    del find(docs, "ConfigMap", "kit-serving-config")["data"]
    assert mc.check_config(docs, []) == [
        "ConfigMap/kit-serving-config: models.config names no model",
        "ConfigMap/kit-serving-config: monitoring.config does not enable Prometheus metrics (the readiness probe "
        "and the scrape annotations ask for them)",
        f"{D}: batching.config num_batch_threads 0 differs from the CPU limit 2"]


def test_config_check_reads_the_mounts_of_every_container_but_init_containers():
    docs = good()
    pod(docs)["containers"] += [{"name": "sidecar", "volumeMounts": [{"name": "x", "mountPath": "/srv/MX"}]},
                                {"name": "bare"}]
    config(docs)["models.config"] = config(docs)["models.config"].replace('"/models/mnist"', '"/srv/MX/mnist"')
    assert mc.check_config(docs) == []
    assert mc.check_config([bare(spec={}), find(good(), "ConfigMap", "kit-serving-config")]) == [
        "ConfigMap/kit-serving-config: model svm's base_path /models/svm is on no mounted volume",
        "ConfigMap/kit-serving-config: model mnist's base_path /models/mnist is on no mounted volume"]


def test_config_check_reads_only_the_servers_mounts_and_the_named_configmap():
    docs = good()
    pod(docs)["initContainers"][0]["volumeMounts"].append({"name": "x", "mountPath": "/data"})
    config(docs)["models.config"] = config(docs)["models.config"].replace('"/models/mnist"', '"/data/mnist"')
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: model mnist's base_path /data/mnist is on no mounted volume"]
    docs = [d for d in good() if d["metadata"]["name"] != "kit-serving-config"]
    assert mc.check_config(docs) == ["no ConfigMap named kit-serving-config"]
    find(docs, "ConfigMap")["metadata"]["name"] = "kit-serving-config-5g2mh7f8kc"
    assert mc.check_config(docs) == ["no ConfigMap named kit-serving-config"]


def test_config_check_reads_gs_base_paths_as_tf_serving_does():
    docs = good()
    config(docs)["models.config"] = config(docs)["models.config"].replace('"/models/', '"gs://bucket/models/')
    assert mc.check_config(docs, ["svm", "mnist"]) == []
    assert mc._read_models(config(docs)["models.config"])[0].base_path == "gs://bucket/models/svm"
    # only the gs:// one is kept as it is; the other is read as usual
    config(docs)["models.config"] = config(docs)["models.config"].replace('"gs://bucket/models/mnist"', '"/x/mnist"')
    assert [m.base_path for m in mc._read_models(config(docs)["models.config"])] == [
        "gs://bucket/models/svm", "/x/mnist"]
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: model mnist's base_path /x/mnist is on no mounted volume"]


def test_config_check_reads_monitoring_and_batching():
    docs = good()
    data = config(docs)
    data["monitoring.config"] = data["monitoring.config"].replace("enable: true", "enable: false")
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: monitoring.config does not enable Prometheus metrics (the readiness probe "
        "and the scrape annotations ask for them)"]
    del data["monitoring.config"]
    assert mc.check_config(docs) == [
        "ConfigMap/kit-serving-config: monitoring.config does not enable Prometheus metrics (the readiness probe "
        "and the scrape annotations ask for them)"]
    data["monitoring.config"] = "prometheus_config { enable: yes please }"
    data["models.config"] = data["models.config"].replace('"/models/mnist"', '"/data/mnist"')
    assert mc.check_config(docs) == [  # pyserving's reader says it so (TF Serving's words)
        "ConfigMap/kit-serving-config: model mnist's base_path /data/mnist is on no mounted volume",
        "ConfigMap/kit-serving-config: Invalid protobuf file: 'monitoring.config'"]
    docs = good()
    config(docs)["batching.config"] = "num_batch_threads { value: 3 }"
    assert mc.check_config(docs) == [f"{D}: batching.config num_batch_threads 3 differs from the CPU limit 2"]
    config(docs)["batching.config"] = "num_batch_threads { value: x }"
    assert mc.check_config(docs) == ["ConfigMap/kit-serving-config: Invalid protobuf file: 'batching.config'"]
    config(docs)["batching.config"] = "num_batch_threads { value: 2 }"
    server(docs)["resources"]["limits"]["cpu"] = "2000m"
    assert mc.check_config(docs) == []
    del server(docs)["resources"]["limits"]  # no limit: check_args says so
    assert mc.check_config(docs) == []
    del server(docs)["resources"]
    assert mc.check_config(docs) == []
    server(docs)["name"] = "tfs"
    assert mc.check_config(docs) == []


# ---- the ConfigMap's mount ------------------------------------------------------------------------
def test_config_mount_check():
    docs = good()
    mount = server(docs)["volumeMounts"][1]
    mount["subPath"] = "models.config"
    mount["mountPath"] = "/etc/kit-serving/models.config"
    assert mc.check_config_mount(docs) == [
        f"{SERVER}: ConfigMap mounted with subPath 'models.config', which never receives updates",
        f"{D}: --model_config_file=/etc/kit-serving/models.config is not in the mounted ConfigMap directory",
        f"{D}: --monitoring_config_file=/etc/kit-serving/monitoring.config is not in the mounted ConfigMap "
        "directory",
        f"{D}: --batching_parameters_file=/etc/kit-serving/batching.config is not in the mounted ConfigMap "
        "directory"]
    docs = good()  # a subPath mount is a file, not the directory the flags name
    server(docs)["volumeMounts"].append({"name": "config", "mountPath": "/etc/sub", "subPath": "monitoring.config"})
    server(docs)["args"][5] = "--monitoring_config_file=/etc/sub/monitoring.config"
    pod(docs)["containers"].append({"name": "bare"})
    assert mc.check_config_mount(docs) == [
        f"{SERVER}: ConfigMap mounted with subPath 'monitoring.config', which never receives updates",
        f"{D}: --monitoring_config_file=/etc/sub/monitoring.config is not in the mounted ConfigMap directory"]
    docs = good()
    pod(docs)["initContainers"][0]["volumeMounts"].append(
        {"name": "config", "mountPath": "/etc/kit-serving/models.config", "subPath": "models.config"})
    assert mc.check_config_mount(docs) == [
        f"{SYNC}: ConfigMap mounted with subPath 'models.config', which never receives updates"]
    docs = good()
    server(docs)["volumeMounts"][1]["mountPath"] = "/etc/config"
    server(docs)["args"].append("--ssl_config_file=")  # an empty *_file flag names no file
    assert mc.check_config_mount(docs) == [
        f"{D}: --model_config_file=/etc/kit-serving/models.config is not in the mounted ConfigMap directory",
        f"{D}: --monitoring_config_file=/etc/kit-serving/monitoring.config is not in the mounted ConfigMap "
        "directory",
        f"{D}: --batching_parameters_file=/etc/kit-serving/batching.config is not in the mounted ConfigMap "
        "directory"]


def test_config_mount_check_wants_the_fixed_name_mounted():
    docs = good()
    find(docs, "ConfigMap", "kit-serving-config")["metadata"]["name"] = "kit-serving-config-5g2mh7f8kc"
    assert mc.check_config_mount(docs) == [
        "no ConfigMap named kit-serving-config (found kit-serving-config-5g2mh7f8kc: a name suffix hash turns every "
        "models.config edit into a rollout)"]
    find(docs, "ConfigMap", "kit-serving-config-5g2mh7f8kc")["metadata"]["name"] = "kit-serving-config-5g2mh7"
    assert mc.check_config_mount(docs) == ["no ConfigMap named kit-serving-config"]
    find(docs, "ConfigMap", "kit-serving-config-5g2mh7")["metadata"]["name"] = "x-kit-serving-config-5g2mh7f8kc"
    assert mc.check_config_mount(docs) == ["no ConfigMap named kit-serving-config"]
    docs = good()
    pod(docs)["volumes"][1]["configMap"]["name"] = "other"
    assert mc.check_config_mount(docs) == [
        f"{D}: no volume mounts ConfigMap kit-serving-config",
        f"{D}: --model_config_file=/etc/kit-serving/models.config is not in the mounted ConfigMap directory",
        f"{D}: --monitoring_config_file=/etc/kit-serving/monitoring.config is not in the mounted ConfigMap "
        "directory",
        f"{D}: --batching_parameters_file=/etc/kit-serving/batching.config is not in the mounted ConfigMap "
        "directory"]
    assert mc.check_config_mount([bare(spec={}), find(good(), "ConfigMap", "kit-serving-config")]) == [
        "Deployment/bare: no volume mounts ConfigMap kit-serving-config"]


# ---- images ---------------------------------------------------------------------------------------
DIGEST = "@sha256:" + "a" * 64


@pytest.mark.parametrize("image,name,tag,digest,pinned", [
    ("tensorflow/serving:2.21.0", "tensorflow/serving", "2.21.0", None, True),
    ("tensorflow/serving" + DIGEST, "tensorflow/serving", None, DIGEST, True),
    ("tensorflow/serving:2.21.0" + DIGEST, "tensorflow/serving", "2.21.0", DIGEST, True),
    ("registry:5000/kit-pyserving:0.1.0", "registry:5000/kit-pyserving", "0.1.0", None, True),
    ("registry:5000/kit-pyserving", "registry:5000/kit-pyserving", None, None, False),
    ("tensorflow/serving", "tensorflow/serving", None, None, False),
    ("tensorflow/serving:latest", "tensorflow/serving", "latest", None, False),
    ("tensorflow/serving:latest" + DIGEST, "tensorflow/serving", "latest", DIGEST, False),
    ("x:" + "a" * 128, "x", "a" * 128, None, True),
    ("x:" + "a" * 129, "x:" + "a" * 129, None, None, False),  # no tag is that long: a name with a colon
    ("x:.1", "x:.1", None, None, False),  # a tag starts with a word character
    ("x:_1", "x", "_1", None, True),
    ("x:1_.-b", "x", "1_.-b", None, True),
])
def test_image_references(image, name, tag, digest, pinned):
    assert mc.IMAGE.match(image).group("name", "tag", "digest") == (name, tag, digest)
    assert mc.image_pinned(image) is pinned


@pytest.mark.parametrize("image", ["", "x@sha256:abc", "x@latest", "x" + DIGEST + "y"])
def test_no_image_reference(image):
    assert mc.IMAGE.match(image) is None and mc.image_pinned(image) is False


def test_image_check_in_every_kind_of_workload():
    docs = good()
    pod(docs)["initContainers"][0]["image"] = "amazon/aws-cli:latest"
    server(docs)["image"] = "kit-pyserving"
    assert mc.check_images(docs) == [
        f"{SYNC}: image 'amazon/aws-cli:latest' is not pinned (no tag, or :latest)",
        f"{SERVER}: image 'kit-pyserving' is not pinned (no tag, or :latest)"]
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    workloads = [bare(kind, spec={"template": {"spec": spec}}) for kind in ("StatefulSet", "DaemonSet", "Job")]
    assert mc.check_images([*workloads, bare("Pod", spec=spec), bare("ReplicaSet", spec={"template": {"spec": spec}}),
                            bare("Pod")]) == [
        f"{kind}/bare container c: image 'busybox' is not pinned (no tag, or :latest)"
        for kind in ("StatefulSet", "DaemonSet", "Job", "Pod")]
    spec["containers"] = [{"name": "c"}, {"name": "d", "image": "x@latest"}]
    assert mc.check_images([bare("Pod", spec=spec), bare("Job", spec={}), bare()]) == [
        "Pod/bare container c: no valid image ''", "Pod/bare container d: no valid image 'x@latest'"]


# ---- non-root -------------------------------------------------------------------------------------
def test_non_root_check():
    docs = good()
    spec = pod(docs)
    del spec["securityContext"]["runAsUser"]
    del spec["initContainers"][0]["securityContext"]["readOnlyRootFilesystem"]
    server(docs)["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    assert mc.check_non_root(docs) == [
        f"{SYNC}: runAsUser is None (the TF Serving image has no USER: give a numeric non-zero uid)",
        f"{SYNC}: readOnlyRootFilesystem is not true",
        f"{SERVER}: runAsUser is None (the TF Serving image has no USER: give a numeric non-zero uid)",
        f"{SERVER}: capabilities do not drop ALL"]
    spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 0}
    server(docs)["securityContext"] = {"runAsUser": 10001, "runAsNonRoot": False, "capabilities": None}
    assert mc.check_non_root(docs) == [
        f"{SYNC}: runAsUser is 0 (the TF Serving image has no USER: give a numeric non-zero uid)",
        f"{SYNC}: readOnlyRootFilesystem is not true",
        f"{SERVER}: runAsNonRoot is not true",
        f"{SERVER}: allowPrivilegeEscalation is not false",
        f"{SERVER}: readOnlyRootFilesystem is not true",
        f"{SERVER}: capabilities do not drop ALL"]
    assert mc.check_non_root([bare("Pod", spec={"containers": [{"name": "c"}]})]) == [
        "Pod/bare container c: runAsNonRoot is not true",
        "Pod/bare container c: runAsUser is None (the TF Serving image has no USER: give a numeric non-zero uid)",
        "Pod/bare container c: allowPrivilegeEscalation is not false",
        "Pod/bare container c: readOnlyRootFilesystem is not true",
        "Pod/bare container c: capabilities do not drop ALL"]


# ---- shutdown -------------------------------------------------------------------------------------
def test_shutdown_check():
    docs = good()
    deployment = find(docs, "Deployment")
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1
    pod(docs)["terminationGracePeriodSeconds"] = 5
    assert mc.check_shutdown(docs) == [
        f"{D}: strategy must be RollingUpdate with maxUnavailable 0",
        f"{SERVER}: preStop sleep 5 s is not shorter than terminationGracePeriodSeconds 5"]
    deployment["spec"]["strategy"] = {"type": "Recreate", "rollingUpdate": {"maxUnavailable": 0}}
    pod(docs)["terminationGracePeriodSeconds"] = 6
    pod(docs)["initContainers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 60}}}  # no preStop runs there
    assert mc.check_shutdown(docs) == [f"{D}: strategy must be RollingUpdate with maxUnavailable 0"]
    del deployment["spec"]["strategy"]
    del pod(docs)["terminationGracePeriodSeconds"]  # Kubernetes' default: 30 s
    server(docs)["lifecycle"]["preStop"]["sleep"]["seconds"] = 30
    assert mc.check_shutdown(docs) == [
        f"{D}: strategy must be RollingUpdate with maxUnavailable 0",
        f"{SERVER}: preStop sleep 30 s is not shorter than terminationGracePeriodSeconds 30"]
    server(docs)["lifecycle"]["preStop"]["sleep"]["seconds"] = 29
    deployment["spec"]["strategy"] = {"type": "RollingUpdate"}
    assert mc.check_shutdown(docs) == [f"{D}: strategy must be RollingUpdate with maxUnavailable 0"]


def test_shutdown_check_without_a_prestop():
    docs = good()
    pod(docs)["terminationGracePeriodSeconds"] = 0
    del server(docs)["lifecycle"]
    assert mc.check_shutdown(docs) == [
        f"{SERVER}: preStop sleep 0 s is not shorter than terminationGracePeriodSeconds 0"]
    server(docs)["lifecycle"] = None
    pod(docs)["terminationGracePeriodSeconds"] = 1
    assert mc.check_shutdown(docs) == []
    server(docs)["lifecycle"] = {"preStop": {"exec": {"command": ["true"]}}}
    assert mc.check_shutdown(docs) == []
    assert mc.check_shutdown([bare(spec={"strategy": {"type": "RollingUpdate", "rollingUpdate": {
        "maxUnavailable": 0}}})]) == []


# ---- probes ---------------------------------------------------------------------------------------
def test_probe_check():
    docs = good()
    container = server(docs)
    del container["startupProbe"], container["readinessProbe"], container["livenessProbe"]
    assert mc.check_probes(docs) == [
        f"{SERVER}: no startupProbe.tcpSocket (the ports open once the models are loaded; without it a slow load "
        "is killed by the liveness probe)",
        f"{SERVER}: no readinessProbe.httpGet (on the metrics path of the REST port)",
        f"{SERVER}: no livenessProbe.grpc (grpc.health.v1 on the gRPC port 8500)"]
    container["startupProbe"] = {"httpGet": {"port": "rest"}}
    container["readinessProbe"] = {"tcpSocket": {"port": "rest"}}
    container["livenessProbe"] = {"httpGet": {"port": "rest"}}
    assert len(mc.check_probes(docs)) == 3
    docs = good()
    container = server(docs)
    container["startupProbe"]["tcpSocket"]["port"] = 9000
    container["readinessProbe"]["httpGet"] = {"path": "/v1/models/svm", "port": "grpc"}
    container["livenessProbe"]["grpc"]["port"] = 8501
    container["args"].remove("--enable_grpc_healthcheck_service")
    assert mc.check_probes(docs) == [
        f"{SERVER}: startupProbe.tcpSocket port 9000 is neither the gRPC port 8500 nor the REST port 8501",
        f"{SERVER}: readinessProbe.httpGet port 'grpc' is not the REST port 8501",
        f"{D}: readinessProbe asks for /v1/models/svm, but monitoring.config serves metrics at "
        "/monitoring/prometheus/metrics",
        f"{SERVER}: livenessProbe.grpc port 8501 is not the gRPC port 8500",
        f"{SERVER}: livenessProbe.grpc needs --enable_grpc_healthcheck_service in the args"]


def test_probe_check_resolves_port_names_through_the_container():
    docs = good()
    container = server(docs)
    for port in ("grpc", 8500, "rest", 8501):
        container["startupProbe"]["tcpSocket"]["port"] = port
        assert mc.check_probes(docs) == []
    container["startupProbe"]["tcpSocket"]["port"] = "admin"
    container["readinessProbe"]["httpGet"]["port"] = 8501
    container["livenessProbe"]["grpc"]["port"] = "grpc"  # a name: check_ports says gRPC probes take numbers
    assert mc.check_probes(docs) == [
        f"{SERVER}: startupProbe.tcpSocket port 'admin' is neither the gRPC port 8500 nor the REST port 8501"]
    container["ports"] = [{"containerPort": 8501, "name": "admin"}, {"containerPort": 8500, "name": "rest"}]
    container["readinessProbe"]["httpGet"]["port"] = "rest"
    assert mc.check_probes(docs) == [f"{SERVER}: readinessProbe.httpGet port 'rest' is not the REST port 8501"]
    del container["ports"]
    container["startupProbe"]["tcpSocket"]["port"] = 8500
    assert mc.check_probes(docs) == [f"{SERVER}: readinessProbe.httpGet port 'rest' is not the REST port 8501"]
    container["readinessProbe"]["httpGet"]["port"] = 8501
    del container["startupProbe"]["tcpSocket"]["port"]
    assert mc.check_probes(docs) == [
        f"{SERVER}: startupProbe.tcpSocket port None is neither the gRPC port 8500 nor the REST port 8501"]


def test_probe_check_reads_the_metrics_path_from_monitoring_config():
    docs = good()
    monitoring = config(docs)["monitoring.config"]
    config(docs)["monitoring.config"] = monitoring.replace("enable: true", "enable: false")
    expected = [f"{D}: readinessProbe asks for /monitoring/prometheus/metrics, but monitoring.config serves metrics "
                "at None"]
    assert mc.check_probes(docs) == expected
    config(docs)["monitoring.config"] = "prometheus_config { enable: maybe }"
    assert mc.check_probes(docs) == expected
    config(docs)["monitoring.config"] = monitoring.replace("/monitoring/prometheus/metrics", "/m")
    assert mc.check_probes(docs) == [
        f"{D}: readinessProbe asks for /monitoring/prometheus/metrics, but monitoring.config serves metrics at /m"]
    assert mc.check_probes([d for d in docs if d["kind"] != "ConfigMap"]) == expected
    find(docs, "ConfigMap", "kit-serving-config")["data"] = None
    assert mc.check_probes(docs) == expected
    del find(docs, "ConfigMap", "kit-serving-config")["data"]
    assert mc.check_probes(docs) == expected
    assert mc.metrics_path(good()) == "/monitoring/prometheus/metrics"


def test_probe_check_skips_a_deployment_without_the_server():
    docs = good()
    server(docs)["name"] = "tfs"
    del server(docs)["livenessProbe"]
    assert mc.check_probes(docs) == []
    docs = good()
    del server(docs)["args"]
    assert mc.check_probes([bare(spec={}), *docs]) == [
        f"{SERVER}: livenessProbe.grpc needs --enable_grpc_healthcheck_service in the args"]
    docs = good()
    server(docs)["livenessProbe"] = None
    server(docs)["startupProbe"] = None
    server(docs)["readinessProbe"] = None
    assert len(mc.check_probes(docs)) == 3


# ---- Prometheus scrape annotations ----------------------------------------------------------------
def test_scrape_check():
    docs = good()
    template = find(docs, "Deployment")["spec"]["template"]
    del template["metadata"]["annotations"]
    assert mc.check_scrape(docs) == [
        f"{D}: pod annotation prometheus.io/scrape is None, expected 'true'",
        f"{D}: pod annotation prometheus.io/port is None, expected '8501'",
        f"{D}: pod annotation prometheus.io/path is None, expected '/monitoring/prometheus/metrics'"]
    template["metadata"]["annotations"] = None
    assert len(mc.check_scrape(docs)) == 3
    template["metadata"]["annotations"] = {"prometheus.io/scrape": "false", "prometheus.io/port": "8500",
                                           "prometheus.io/path": "/monitoring/prometheus/metrics"}
    config(docs)["monitoring.config"] = config(docs)["monitoring.config"].replace("/monitoring/prometheus/metrics",
                                                                                  "/m")
    assert mc.check_scrape(docs) == [
        f"{D}: pod annotation prometheus.io/scrape is 'false', expected 'true'",
        f"{D}: pod annotation prometheus.io/port is '8500', expected '8501'",
        f"{D}: pod annotation prometheus.io/path is '/monitoring/prometheus/metrics', expected '/m'"]
    del template["metadata"]
    assert len(mc.check_scrape(docs)) == 3


# ---- scaling --------------------------------------------------------------------------------------
def test_scaling_check():
    docs = good()
    hpa = find(docs, "HorizontalPodAutoscaler")
    hpa["spec"]["metrics"][0]["resource"]["name"] = "memory"
    del server(docs)["resources"]["requests"]["cpu"]
    docs.remove(find(docs, "PodDisruptionBudget"))
    assert mc.check_scaling(docs) == [
        "HorizontalPodAutoscaler/kit-serving: scales on Resource memory Utilization; expected CPU utilization alone",
        f"{D}: the server has no CPU request, which CPU utilization is measured against",
        f"{D}: no PodDisruptionBudget selects its pods"]
    hpa["spec"]["metrics"] = [{"type": "Pods", "pods": {
        "metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "100"}}}]
    assert mc.check_scaling(docs)[0] == (
        "HorizontalPodAutoscaler/kit-serving: scales on Pods requests_per_second AverageValue; expected CPU "
        "utilization alone")
    hpa["spec"]["metrics"] = [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "server",
                                                            "target": {"type": "AverageValue"}}}]
    assert mc.check_scaling(docs)[0] == (
        "HorizontalPodAutoscaler/kit-serving: scales on Resource cpu Utilization, ContainerResource cpu "
        "AverageValue; expected CPU utilization alone")
    hpa["spec"]["metrics"] = [{"type": "External"}, {}]
    assert mc.check_scaling(docs)[0] == (
        "HorizontalPodAutoscaler/kit-serving: scales on External None None,  None None; expected CPU utilization "
        "alone")


def test_scaling_check_finds_the_hpa_of_each_deployment():
    docs = good()
    hpa = find(docs, "HorizontalPodAutoscaler")
    del hpa["spec"]["metrics"]  # autoscaling/v2's default: CPU utilization
    assert mc.check_scaling(docs) == []
    hpa["spec"]["metrics"] = None
    assert mc.check_scaling(docs) == []
    hpa["spec"]["metrics"] = []
    assert mc.check_scaling(docs) == []
    hpa["spec"]["scaleTargetRef"]["name"] = "other"
    assert mc.check_scaling(docs) == [f"{D}: no HorizontalPodAutoscaler scales it"]
    hpa["spec"]["scaleTargetRef"] = {"kind": "StatefulSet", "name": "kit-serving"}
    assert mc.check_scaling(docs) == [f"{D}: no HorizontalPodAutoscaler scales it"]
    hpa["spec"]["scaleTargetRef"] = {"name": "kit-serving"}
    assert mc.check_scaling(docs) == [f"{D}: no HorizontalPodAutoscaler scales it"]
    hpa["kind"] = "Deployment"  # no longer an HPA
    hpa["spec"] = {"scaleTargetRef": {"kind": "Deployment", "name": "kit-serving"}}
    docs = [d for d in docs if d is not hpa]
    assert mc.check_scaling(docs) == [f"{D}: no HorizontalPodAutoscaler scales it"]
    docs.append({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"}})
    assert mc.check_scaling(docs) == [f"{D}: no HorizontalPodAutoscaler scales it"]


def test_scaling_check_on_a_deployment_with_nothing_set():
    docs = [bare(spec={}), {"kind": "PodDisruptionBudget", "metadata": {"name": "p"}},
            {"kind": "PodDisruptionBudget", "metadata": {"name": "q"},
             "spec": {"selector": {"matchLabels": {"a": "1"}}}}]
    assert mc.check_scaling(docs) == [
        "Deployment/bare: no HorizontalPodAutoscaler scales it",
        "Deployment/bare: the server has no CPU request, which CPU utilization is measured against",
        "Deployment/bare: no PodDisruptionBudget selects its pods"]
    docs = good()
    server(docs)["resources"]["requests"] = None
    find(docs, "PodDisruptionBudget")["kind"] = "Service"
    assert mc.check_scaling(docs) == [
        f"{D}: the server has no CPU request, which CPU utilization is measured against",
        f"{D}: no PodDisruptionBudget selects its pods"]


# ---- network policy -------------------------------------------------------------------------------
def policy(docs: list[dict]) -> dict:
    return find(docs, "NetworkPolicy")["spec"]


def test_network_policy_check():
    docs = good()
    spec = policy(docs)
    spec["ingress"][0]["ports"].append({"port": 9090})
    spec["ingress"].append({"from": [{"ipBlock": {"cidr": "::/0"}}], "ports": [{"port": "grpc"}]})
    spec["ingress"].append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": "rest"}]})
    spec["ingress"].append({"ports": [{"port": 8500}]})
    spec["ingress"].append({"from": [{"podSelector": {}}]})
    spec["egress"].append({"to": [{"podSelector": {}}]})
    assert mc.check_network_policy(docs) == [
        "NetworkPolicy/kit-serving ingress[0]: opens [8500, 8501, 9090]; only 8500 and 8501 are served",
        "NetworkPolicy/kit-serving ingress[1]: an ipBlock of every address may connect",
        "NetworkPolicy/kit-serving ingress[2]: an ipBlock of every address may connect",
        "NetworkPolicy/kit-serving ingress[3]: no `from`: every source in and outside the cluster may connect",
        "NetworkPolicy/kit-serving ingress[4]: opens every port; only 8500 and 8501 are served",
        "NetworkPolicy/kit-serving egress[2]: every port is open"]
    spec["ingress"] = [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "metrics"}, {}]}]
    spec["egress"] = [{"ports": []}]
    assert mc.check_network_policy(docs) == [
        "NetworkPolicy/kit-serving ingress[0]: opens [None, 'metrics']; only 8500 and 8501 are served",
        "NetworkPolicy/kit-serving egress[0]: every port is open"]
    spec["ingress"] = None
    spec["egress"] = None
    assert mc.check_network_policy(docs) == []


def test_network_policy_check_opens_https_only_for_bucket_storage():
    docs = good()
    find(docs, "Deployment")["metadata"]["annotations"]["kit-serving/storage"] = "gcs"
    assert mc.check_network_policy(docs) == []
    for storage in ("pvc", "azure"):
        find(docs, "Deployment")["metadata"]["annotations"]["kit-serving/storage"] = storage
        assert mc.check_network_policy(docs) == [
            f"NetworkPolicy/kit-serving egress[1]: ports [443] opened, but {storage} storage needs no egress "
            "beyond DNS"]
    del find(docs, "Deployment")["metadata"]["annotations"]
    policy(docs)["egress"][1]["ports"].append({"port": "https"})
    assert mc.check_network_policy(docs) == [
        "NetworkPolicy/kit-serving egress[1]: ports [443, 'https'] opened, but pvc storage needs no egress beyond DNS"]
    find(docs, "Deployment")["metadata"]["annotations"] = None
    assert len(mc.check_network_policy(docs)) == 1
    del find(docs, "Deployment")["metadata"]  # no storage annotation either: pvc
    assert mc.check_network_policy(docs) == [
        "NetworkPolicy/kit-serving egress[1]: ports [443, 'https'] opened, but pvc storage needs no egress beyond DNS"]
    policy(docs)["egress"] = [policy(docs)["egress"][0]]
    assert mc.check_network_policy(docs) == []
    policy(docs)["egress"][0]["ports"].append({"port": 443})  # DNS is no problem, HTTPS is
    assert mc.check_network_policy(docs) == [
        "NetworkPolicy/kit-serving egress[0]: ports [443] opened, but pvc storage needs no egress beyond DNS"]


def test_network_policy_check_wants_a_policy_both_ways():
    docs = good()
    policy(docs)["podSelector"] = {"matchLabels": {"app": "other"}}
    assert mc.check_network_policy(docs) == [
        f"{D}: no NetworkPolicy selects its pods (any pod in the cluster can reach ports 8500 and 8501)"]
    docs = [d for d in good() if d["kind"] != "NetworkPolicy"]
    assert mc.check_network_policy(docs) == [
        f"{D}: no NetworkPolicy selects its pods (any pod in the cluster can reach ports 8500 and 8501)"]
    docs = good()
    policy(docs)["policyTypes"] = ["Ingress"]
    assert mc.check_network_policy(docs) == [f"{D}: no NetworkPolicy restricts its egress (policyTypes)"]
    extra = {"kind": "NetworkPolicy", "metadata": {"name": "egress"}, "spec": {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kit-serving"}}, "policyTypes": ["Egress"]}}
    assert mc.check_network_policy([*docs, extra]) == []
    del policy(docs)["policyTypes"]
    assert mc.check_network_policy(docs) == [
        f"{D}: no NetworkPolicy restricts its ingress (policyTypes)",
        f"{D}: no NetworkPolicy restricts its egress (policyTypes)"]
    unselected = "no NetworkPolicy selects its pods (any pod in the cluster can reach ports 8500 and 8501)"
    assert mc.check_network_policy([bare(spec={}), {"kind": "NetworkPolicy", "metadata": {"name": "n"}}]) == [
        f"Deployment/bare: {unselected}"]
    assert mc.check_network_policy([bare(spec={}), find(good(), "NetworkPolicy")]) == [f"Deployment/bare: {unselected}"]
    # each Deployment on its own
    other = bare(spec={"template": {"metadata": {"labels": {"app": "x"}}}})
    docs = good()
    policy(docs)["policyTypes"] = ["Ingress"]
    assert mc.check_network_policy([other, *docs]) == [
        f"Deployment/bare: {unselected}", f"{D}: no NetworkPolicy restricts its egress (policyTypes)"]


# ---- service account and secrets -----------------------------------------------------------------
def test_service_account_check():
    docs = good()
    del pod(docs)["automountServiceAccountToken"]
    find(docs, "ServiceAccount")["automountServiceAccountToken"] = True
    assert mc.check_service_account(docs) == [
        f"{D}: automountServiceAccountToken is not false (the pods get a Kubernetes API token they never use)",
        "ServiceAccount/kit-serving: automountServiceAccountToken is not false"]
    docs = good()
    del find(docs, "ServiceAccount")["automountServiceAccountToken"]
    assert mc.check_service_account(docs) == ["ServiceAccount/kit-serving: automountServiceAccountToken is not false"]
    docs = good()
    del pod(docs)["serviceAccountName"]
    assert mc.check_service_account(docs) == [
        f"{D}: runs under the namespace's default ServiceAccount; give it its own"]
    pod(docs)["serviceAccountName"] = "default"
    assert mc.check_service_account(docs) == [
        f"{D}: runs under the namespace's default ServiceAccount; give it its own"]
    pod(docs)["serviceAccountName"] = "reader"
    assert mc.check_service_account(docs) == [f"{D}: its ServiceAccount 'reader' is not among the manifests"]
    # a Pod (not a Deployment) may use an account made elsewhere
    spec = {"serviceAccountName": "reader", "automountServiceAccountToken": False, "containers": []}
    assert mc.check_service_account([bare("Pod", spec=spec)]) == []
    spec["serviceAccountName"] = "kit-serving"
    assert mc.check_service_account([bare("Pod", spec=spec), find(good(), "ServiceAccount")]) == []
    spec["automountServiceAccountToken"] = None
    assert mc.check_service_account([bare("Pod", spec=spec)]) == [
        "Pod/bare: automountServiceAccountToken is not false (the pods get a Kubernetes API token they never use)"]


def test_service_account_check_keeps_secrets_out_of_env_args_and_configmaps():
    docs = good()
    sync = pod(docs)["initContainers"][0]
    sync["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}})
    sync["env"].append({"name": "PLAIN", "value": "x"})
    sync["envFrom"] = [{"secretRef": {"name": "kit-models-s3"}}, {"configMapRef": {"name": "c"}}]
    server(docs)["args"] += ["--api_token=a=b", "--ssl_config_file", "--password", "--private-key=1",
                             "--grpc_channel_arguments=token_limit=5", "--label=token x"]  # the name is what counts
    server(docs)["command"] = ["serve", "--Credential=x", "--passwd_file=/etc/p", "--tokenize=1"]
    data = config(docs)
    data["access_key"] = "AKIA"
    find(docs, "ConfigMap", "kit-models-source")["binaryData"] = {"privatekey.pem": "eA==", "cert.pem": "eA=="}
    assert mc.check_service_account(docs) == [
        f"{SYNC}: env AWS_SECRET_ACCESS_KEY comes from a Secret (mount it as a file)",
        f"{SYNC}: envFrom Secret 'kit-models-s3' (mount it as files)",
        f"{SERVER}: a credential on the command line (--Credential=...)",
        f"{SERVER}: a credential on the command line (--passwd_file=...)",
        f"{SERVER}: a credential on the command line (--tokenize=...)",
        f"{SERVER}: a credential on the command line (--api_token=...)",
        "ConfigMap/kit-models-source: key 'privatekey.pem' looks like a credential; put it in a Secret",
        "ConfigMap/kit-serving-config: key 'access_key' looks like a credential; put it in a Secret"]
    for key in ("secret", "PASSWORD", "token", "private_key", "accesskey", "credentials"):
        assert mc.SECRET_KEY.search(key), key
    for key in ("models.config", "MODELS_URI", "private-key", "access-key"):
        assert not mc.SECRET_KEY.search(key), key


def test_service_account_check_on_objects_with_nothing_set():
    spec = {"automountServiceAccountToken": False, "serviceAccountName": "a", "containers": [
        {"name": "c", "env": None, "envFrom": None, "command": None, "args": None}]}
    docs = [bare("Pod", spec=spec), {"kind": "ConfigMap", "metadata": {"name": "m"}},
            {"kind": "ConfigMap", "metadata": {"name": "n"}, "data": None, "binaryData": None}]
    assert mc.check_service_account(docs) == []
    spec["containers"][0]["env"] = [{"name": "A", "valueFrom": None}, {"name": "B"}]
    assert mc.check_service_account(docs) == []


# ---- Pod Security "restricted" ---------------------------------------------------------------------
def test_pod_security_check_on_the_namespace():
    docs = good()
    namespace = find(docs, "Namespace")
    namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
    assert mc.check_pod_security(docs) == [
        "Namespace/kit-serving: label pod-security.kubernetes.io/enforce is 'baseline', expected 'restricted'"]
    namespace["metadata"]["labels"] = None
    assert mc.check_pod_security(docs) == [
        "Namespace/kit-serving: label pod-security.kubernetes.io/enforce is None, expected 'restricted'"]
    assert mc.check_pod_security([{"kind": "Namespace"}]) == [
        "Namespace/None: label pod-security.kubernetes.io/enforce is None, expected 'restricted'"]


def test_pod_security_check_on_the_pod():
    docs = good()
    spec = pod(docs)
    spec.update(hostNetwork=True, hostPID=True, hostIPC=True)
    spec["volumes"] += [{"name": "host", "hostPath": {"path": "/"}}, {"name": "nfs", "nfs": {}, "csi": {}},
                        *({"name": kind, kind: {}} for kind in ("csi", "downwardAPI", "ephemeral", "projected",
                                                               "secret", "persistentVolumeClaim"))]
    assert mc.check_pod_security(docs) == [
        f"{D}: hostNetwork is true", f"{D}: hostPID is true", f"{D}: hostIPC is true",
        f"{D}: volume 'host' is of type hostPath, which restricted forbids",
        f"{D}: volume 'nfs' is of type nfs, which restricted forbids"]
    spec.update(hostNetwork=False, hostPID=False, hostIPC=False)
    spec["volumes"] = [{"name": "two", "hostPath": {}, "nfs": {}}, {"name": "all", **{kind: {} for kind in (
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret")}}]
    assert mc.check_pod_security(docs) == [f"{D}: volume 'two' is of type hostPath, nfs, which restricted forbids"]


def test_pod_security_check_on_each_container():
    docs = good()
    pod(docs)["securityContext"] = {"runAsUser": 9999, "runAsGroup": "10001", "runAsNonRoot": True,
                                    "seccompProfile": {"type": "Unconfined"}}
    sync = pod(docs)["initContainers"][0]
    sync["securityContext"] = {"runAsNonRoot": False, "privileged": True, "allowPrivilegeEscalation": True,
                               "capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE", "SYS_ADMIN", "BPF"]},
                               "readOnlyRootFilesystem": False, "runAsUser": 10000, "runAsGroup": 10000,
                               "seccompProfile": {"type": "Localhost"}}
    server(docs)["ports"][0]["hostPort"] = 8500
    assert mc.check_pod_security(docs) == [
        f"{SYNC}: runAsNonRoot is not true",
        f"{SYNC}: privileged",
        f"{SYNC}: allowPrivilegeEscalation is not false",
        f"{SYNC}: capabilities do not drop ALL",
        f"{SYNC}: adds capabilities ['BPF', 'SYS_ADMIN']",
        f"{SYNC}: readOnlyRootFilesystem is not true",
        f"{SERVER}: runAsUser is 9999, expected a high id (>= 10000) that no node user has",
        f"{SERVER}: runAsGroup is '10001', expected a high id (>= 10000) that no node user has",
        f"{SERVER}: seccompProfile is not RuntimeDefault",
        f"{SERVER}: uses a hostPort"]
    assert mc.check_pod_security([bare("Pod", spec={"containers": [{"name": "c"}], "securityContext": None})]) == [
        "Pod/bare container c: runAsNonRoot is not true",
        "Pod/bare container c: runAsUser is None, expected a high id (>= 10000) that no node user has",
        "Pod/bare container c: runAsGroup is None, expected a high id (>= 10000) that no node user has",
        "Pod/bare container c: seccompProfile is not RuntimeDefault",
        "Pod/bare container c: allowPrivilegeEscalation is not false",
        "Pod/bare container c: capabilities do not drop ALL",
        "Pod/bare container c: readOnlyRootFilesystem is not true"]
    sc = {"runAsNonRoot": True, "runAsUser": 10000, "runAsGroup": 10000, "seccompProfile": None,
          "allowPrivilegeEscalation": False, "capabilities": None, "readOnlyRootFilesystem": True}
    container = {"name": "c", "securityContext": sc, "ports": [{"containerPort": 1, "hostPort": 0}]}
    assert mc.check_pod_security([bare("Pod", spec={"containers": [container]})]) == [
        "Pod/bare container c: seccompProfile is not RuntimeDefault",
        "Pod/bare container c: capabilities do not drop ALL"]
    sc.update(seccompProfile={"type": "RuntimeDefault"}, capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})
    assert mc.check_pod_security([bare("Pod", spec={"containers": [container]})]) == []


# ---- schemas --------------------------------------------------------------------------------------
def test_schema_check():
    docs = good()
    find(docs, "Deployment")["spec"]["replicas"] = "two"
    find(docs, "Service", "kit-serving-rest")["spec"]["ports"][0]["protocl"] = "TCP"
    docs.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "sm"}})
    docs.append({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "is"}})
    checked, skipped, errors = mc.schema_errors(docs, "1.37")
    assert checked == 10 and skipped == ["ServiceMonitor/sm", "InferenceService/is"]
    assert errors == [
        "Service/kit-serving-rest against 1.37: spec.ports.0: Additional properties are not allowed ('protocl' was "
        "unexpected)",
        "Deployment/kit-serving against 1.37: spec.replicas: 'two' is not of type 'integer', 'null'"]
    assert mc.schema_errors(good(), "1.30") == (10, [], [])
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    checked, skipped, errors = mc.schema_errors([widget], "1.30")
    assert (checked, skipped) == (1, []) and len(errors) == 1
    assert errors[0].startswith("Widget/w: no schema for Kubernetes 1.30: ")


def test_inferenceservice_schema_errors(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}, "name": {"type": "string"}}},
        "kind": {"type": "string"}}}))
    obj = {"kind": "InferenceService", "metadata": {"name": "svm"}, "spec": {"replicas": "two", "name": 3}}
    assert mc.inferenceservice_errors(obj, schema) == [
        "InferenceService/svm: spec.name: 3 is not of type 'string'",
        "InferenceService/svm: spec.replicas: 'two' is not of type 'integer'"]
    assert mc.inferenceservice_errors({"kind": 1, "metadata": {"name": "x"}}, schema) == [
        "1/x: kind: 1 is not of type 'string'"]
    schema.write_text(json.dumps({"type": "array"}))
    assert mc.inferenceservice_errors(obj, schema) == ["InferenceService/svm: <root>: " + repr(obj).replace(
        "'", "'") + " is not of type 'array'"]
