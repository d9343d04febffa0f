"""Issue 28: the rendered deployments let no one in that they do not name, and the scanners say so.

checkov (pinned, its own venv that `make test` makes) runs once over every overlay x storage
render, a render by digest and a deliberately weakened manifest: zero failures for the renders,
each skip with its reason and listed in the README; the weakened one fails. The kit's own offline
checks (kit/k8s/manifest_checks.py: network-policy, service-account, pod-security) are fed broken
manifests. `--pin-digests` resolves tags against a registry on loopback (the registry HTTP API,
token challenge included) and says in one line when no registry answers. zizmor (pinned) is
clean over .github/workflows and fails a weakened copy.
"""
from __future__ import annotations

import copy
import hashlib
import http.server
import re
import shutil
import threading

import pytest
import yaml

from kit.k8s import cluster as k8s
from kit.k8s import deploy, digests, manifest_checks, scanners
from kit.paths import ROOT

COMBOS = [("tfserving", "pvc"), ("tfserving", "gcs"), ("tfserving", "s3"), ("pyserving", "pvc"), ("pyserving", "gcs"),
          ("pyserving", "s3")]
SKIPS = {"CKV_K8S_43", "CKV_K8S_15"}  # deploy/base/deployment.yaml's, for images by tag
MANIFEST = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class FakeRegistry(http.server.ThreadingHTTPServer):
    """A registry on loopback speaking the part of the distribution API a digest lookup uses: a
    401 Bearer challenge, an anonymous token, then HEAD /v2/<repo>/manifests/<tag> with the digest."""

    def __init__(self, repos: dict[str, str]):
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/token?"):
                    body = b'{"token": "anonymous"}'
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def do_HEAD(self):
                match = re.fullmatch(r"/v2/(.+)/manifests/([\w.-]+)", self.path)
                if self.headers.get("Authorization") != "Bearer anonymous":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{registry.port}/token",'
                                                         'service="fake-registry"')
                    self.end_headers()
                elif match and repos.get(match.group(1)) == match.group(2):
                    self.send_response(200)
                    self.send_header("Docker-Content-Digest", DIGEST)
                    self.send_header("Content-Length", str(len(MANIFEST)))
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def registry():
    server = FakeRegistry({"kit/server": "1.0"})
    yield server
    server.stop()


def quiet(line: str) -> None:
    pass


def weaken(docs: list[dict]) -> list[dict]:
    """The issue's weakened manifest: NetworkPolicy removed, API token mounted."""
    docs = [copy.deepcopy(d) for d in docs if d["kind"] != "NetworkPolicy"]
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
        if doc["kind"] == "ServiceAccount":
            doc["automountServiceAccountToken"] = True
    return docs


@pytest.fixture(scope="module")
def renders(tmp_path_factory, registry):
    """name -> rendered objects, every file written to one folder (checkov scans it once)."""
    folder = tmp_path_factory.mktemp("manifests")
    out, lines = {}, []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_BUILD_DIR", str(tmp_path_factory.mktemp("build")))
        for overlay, storage in COMBOS:
            out[f"{overlay}-{storage}"] = deploy.render(overlay, storage, namespace=f"{overlay}-{storage}", say=quiet,
                                                        out=folder / f"{overlay}-{storage}.yaml").docs
        image = f"127.0.0.1:{registry.port}/kit/server:1.0"
        out["pyserving-pvc-digest"] = deploy.render("pyserving", image=image, pin=True, say=lines.append,
                                                    namespace="digest", out=folder / "pyserving-pvc-digest.yaml").docs
    out["weakened"] = weaken(out["tfserving-pvc"])
    # Scanned on its own: checkov's graph check CKV2_K8S_6 pairs a pod with a NetworkPolicy from any
    # file of the scan (namespaces aside), so beside the renders it would borrow theirs.
    alone = tmp_path_factory.mktemp("weakened")
    (alone / "weakened.yaml").write_text(yaml.safe_dump_all(out["weakened"]))
    return folder, out, lines, alone


@pytest.fixture(scope="module")
def checkov_results(renders):
    if scanners.checkov_path() is None:
        pytest.skip("checkov is not installed: `make test` installs it into build/tools/checkov-venv")
    return {**scanners.checkov(renders[0]), **scanners.checkov(renders[3])}


def find(docs: list[dict], kind: str, name: str = "") -> dict:
    [obj] = [d for d in docs if d["kind"] == kind and (not name or d["metadata"]["name"] == name)]
    return obj


def pod_spec(docs: list[dict]) -> dict:
    return find(docs, "Deployment")["spec"]["template"]["spec"]


# ---- checkov ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("combo", [f"{o}-{s}" for o, s in COMBOS])
def test_checkov_finds_nothing_in_any_overlay_and_storage(checkov_results, combo):
    result = checkov_results[f"{combo}.yaml"]
    print(f"checkov {scanners.CHECKOV_VERSION} {combo}: {result.summary()}; skipped: "
          + "; ".join(f"{check} ({reason})" for check, _, reason in result.skipped))
    assert result.failed == [] and result.passed >= 90
    assert {check for check, _, _ in result.skipped} == SKIPS
    assert all(reason for _, _, reason in result.skipped)  # each skip says why


def test_checkov_needs_no_skip_for_images_by_digest(checkov_results, renders):
    result = checkov_results["pyserving-pvc-digest.yaml"]
    assert (result.failed, result.skipped) == ([], []) and result.passed >= 90
    deployment = find(renders[1]["pyserving-pvc-digest"], "Deployment")
    assert not [k for k in deployment["metadata"].get("annotations", {}) if k.startswith("checkov.io/")]


def test_checkov_fails_the_weakened_manifest(checkov_results, renders):
    failed = {check for check, _, _ in checkov_results["weakened.yaml"].failed}
    assert failed == {"CKV2_K8S_6", "CKV_K8S_38"}  # no NetworkPolicy; the API token mounted
    # ... and so do the kit's own checks, before any file is written
    problems = manifest_checks.semantic_problems(renders[1]["weakened"])
    assert "[network-policy] Deployment/kit-serving: no NetworkPolicy selects its pods (any pod in the cluster can " \
           "reach ports 8500 and 8501)" in problems
    assert "[service-account] Deployment/kit-serving: automountServiceAccountToken is not false (the pods get a " \
           "Kubernetes API token they never use)" in problems


def test_every_skip_is_in_the_manifests_with_its_reason_and_in_the_readme():
    deployment = yaml.safe_load((k8s.DEPLOY / "base" / "deployment.yaml").read_text())
    skips = {k: v for k, v in deployment["metadata"]["annotations"].items() if k.startswith("checkov.io/skip")}
    assert set(skips) == set(deploy.TAG_SKIPS)
    readme = (ROOT / "README.md").read_text()
    for value in skips.values():
        check, reason = value.split("=", 1)
        assert check in SKIPS and len(reason) > 40
        assert check in readme, f"README does not list the checkov skip {check}"
    assert not list((k8s.DEPLOY).rglob(".checkov*"))  # no file-level skips elsewhere


# ---- NetworkPolicy ----------------------------------------------------------------------------------
def test_the_network_policy_as_rendered(renders):
    docs = renders[1]
    policy = find(docs["tfserving-pvc"], "NetworkPolicy")
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kit-serving"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}}],
                     "ports": [{"protocol": "TCP", "port": 8500}, {"protocol": "TCP", "port": 8501}]}],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
    }
    assert find(docs["pyserving-pvc"], "NetworkPolicy")["spec"] == policy["spec"]
    https = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    for combo in ("tfserving-s3", "pyserving-s3"):
        assert find(docs[combo], "NetworkPolicy")["spec"]["egress"] == [*policy["spec"]["egress"], https]
    gcs = find(docs["tfserving-gcs"], "NetworkPolicy")["spec"]["egress"]
    assert gcs[:2] == [*policy["spec"]["egress"], https] and {p["port"] for p in gcs[2]["ports"]} == {80, 988}


def test_allow_options_add_one_ingress_source(build):
    access = deploy.Access(allow_namespace="ingress-nginx", allow_pods="app.kubernetes.io/name=ingress-nginx")
    docs = deploy.render("tfserving", access=access, say=quiet).docs
    ingress = find(docs, "NetworkPolicy")["spec"]["ingress"]
    assert ingress[1] == {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
                                    "namespaceSelector": {"matchLabels": {
                                        "kubernetes.io/metadata.name": "ingress-nginx"}}}],
                          "ports": [{"protocol": "TCP", "port": 8500}, {"protocol": "TCP", "port": 8501}]}
    docs = deploy.render("tfserving", access=deploy.Access(allow_namespace="clients"), say=quiet).docs
    assert find(docs, "NetworkPolicy")["spec"]["ingress"][1]["from"] == [
        {"podSelector": {}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clients"}}}]


@pytest.mark.parametrize("kwargs, storage, message", [
    ({"allow_namespace": "Not_A_Namespace"}, "pvc", "--allow-namespace 'Not_A_Namespace' is not a valid namespace"),
    ({"allow_pods": "app"}, "pvc", "--allow-pods takes key=value[,key=value] label pairs, got 'app'"),
    ({"workload_identity": "reader@p.iam.gserviceaccount.com"}, "pvc", "--workload-identity goes with --storage=gcs"),
    ({"workload_identity": "arn:aws:iam::123456789012:role/r"}, "gcs", "a Google service account email"),
    ({"workload_identity": "reader@p.iam.gserviceaccount.com"}, "s3", "an IAM role ARN"),
])
def test_bad_access_options_stop_with_one_line(build, kwargs, storage, message):
    with pytest.raises(deploy.DeployError, match=re.escape(message)) as info:
        deploy.render("tfserving", storage, access=deploy.Access(**kwargs), say=quiet)
    assert "\n" not in str(info.value)


def test_the_servicemonitor_component_opens_the_rest_port_to_the_monitoring_namespace():
    [policy] = list(yaml.safe_load_all((k8s.DEPLOY / "components" / "servicemonitor" / "networkpolicy.yaml")
                                       .read_text()))
    assert policy["spec"]["podSelector"]["matchLabels"] == dict([k8s.APP_LABEL])
    assert policy["spec"]["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": k8s.REST_PORT}]}]


def test_network_policy_check(renders):
    docs = copy.deepcopy(renders[1]["tfserving-pvc"])
    spec = find(docs, "NetworkPolicy")["spec"]
    spec["policyTypes"] = ["Ingress"]
    spec["ingress"].append({"ports": [{"port": 8501}]})
    spec["ingress"].append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 22}]})
    spec["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]})
    spec["egress"].append({"to": [{"podSelector": {}}]})
    assert manifest_checks.check_network_policy(docs) == [
        "Deployment/kit-serving: no NetworkPolicy restricts its egress (policyTypes)",
        "NetworkPolicy/kit-serving ingress[1]: no `from`: every source in and outside the cluster may connect",
        "NetworkPolicy/kit-serving ingress[2]: opens [22]; only 8500 and 8501 are served",
        "NetworkPolicy/kit-serving ingress[2]: an ipBlock of every address may connect",
        "NetworkPolicy/kit-serving egress[1]: ports [443] opened, but pvc storage needs no egress beyond DNS",
        "NetworkPolicy/kit-serving egress[2]: every port is open"]
    find(docs, "NetworkPolicy")["spec"]["podSelector"] = {"matchLabels": {"app": "other"}}
    assert manifest_checks.check_network_policy(docs) == [
        "Deployment/kit-serving: no NetworkPolicy selects its pods (any pod in the cluster can reach ports 8500 and "
        "8501)"]


# ---- credentials ------------------------------------------------------------------------------------
def test_no_api_token_and_a_dedicated_service_account(renders):
    for combo, docs in renders[1].items():
        if combo == "weakened":
            continue
        spec = pod_spec(docs)
        assert spec["serviceAccountName"] == "kit-serving" and spec["automountServiceAccountToken"] is False
        assert find(docs, "ServiceAccount", "kit-serving")["automountServiceAccountToken"] is False
    annotations = {combo: find(renders[1][combo], "ServiceAccount")["metadata"].get("annotations", {})
                   for combo in ("tfserving-pvc", "tfserving-gcs", "pyserving-s3")}
    assert annotations["tfserving-pvc"] == {}
    assert set(annotations["tfserving-gcs"]) == {"iam.gke.io/gcp-service-account"}
    assert set(annotations["pyserving-s3"]) == {"eks.amazonaws.com/role-arn"}
    gcs = pod_spec(renders[1]["tfserving-gcs"])
    assert not [v for v in gcs["volumes"] if "secret" in v]  # no key file: Workload Identity
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in {e["name"] for e in gcs["containers"][0].get("env", [])}


def test_workload_identity_option_annotates_the_service_account(build):
    role = "arn:aws:iam::123456789012:role/kit-models-reader"
    docs = deploy.render("pyserving", "s3", access=deploy.Access(workload_identity=role), say=quiet).docs
    assert find(docs, "ServiceAccount")["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    email = "reader@my-project.iam.gserviceaccount.com"
    docs = deploy.render("tfserving", "gcs", access=deploy.Access(workload_identity=email), say=quiet).docs
    assert find(docs, "ServiceAccount")["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": email}


def test_service_account_check(renders):
    docs = copy.deepcopy(renders[1]["tfserving-s3"])
    spec = pod_spec(docs)
    del spec["automountServiceAccountToken"]
    spec["serviceAccountName"] = "default"
    sync = spec["initContainers"][0]
    sync["envFrom"] = [{"secretRef": {"name": "kit-models-s3"}}]
    sync["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    sync["args"].append("--aws-secret-access-key=abc")
    find(docs, "ConfigMap", "kit-models-source")["data"]["AWS_SECRET_ACCESS_KEY"] = "abc"
    assert manifest_checks.check_service_account(docs) == [
        "Deployment/kit-serving: automountServiceAccountToken is not false (the pods get a Kubernetes API token they "
        "never use)",
        "Deployment/kit-serving: runs under the namespace's default ServiceAccount; give it its own",
        "Deployment/kit-serving container sync-models: env AWS_SECRET_ACCESS_KEY comes from a Secret (mount it as a "
        "file)",
        "Deployment/kit-serving container sync-models: envFrom Secret 'kit-models-s3' (mount it as files)",
        "Deployment/kit-serving container sync-models: a credential on the command line (--aws-secret-access-key=...)",
        "ConfigMap/kit-models-source: key 'AWS_SECRET_ACCESS_KEY' looks like a credential; put it in a Secret"]


# ---- Pod Security "restricted" ----------------------------------------------------------------------
def test_the_namespace_enforces_restricted_and_every_render_meets_it(renders):
    for combo, docs in renders[1].items():
        labels = find(docs, "Namespace")["metadata"]["labels"]
        assert {k: v for k, v in labels.items() if k.startswith("pod-security")} == {
            "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted"}
        assert manifest_checks.check_pod_security(docs) == [], combo
        assert pod_spec(docs)["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                                     "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}


def test_pod_security_check(renders):
    docs = copy.deepcopy(renders[1]["tfserving-s3"])
    find(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
    spec = pod_spec(docs)
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    spec["securityContext"]["runAsUser"] = 1000
    del spec["securityContext"]["seccompProfile"]
    server = spec["containers"][0]["securityContext"]
    server["capabilities"]["add"] = ["NET_ADMIN"]
    server["allowPrivilegeEscalation"] = True
    del spec["initContainers"][0]["securityContext"]["readOnlyRootFilesystem"]
    assert manifest_checks.check_pod_security(docs) == [
        "Namespace/tfserving-s3: label pod-security.kubernetes.io/enforce is 'baseline', expected 'restricted'",
        "Deployment/kit-serving: hostNetwork is true",
        "Deployment/kit-serving: volume 'host' is of type hostPath, which restricted forbids",
        "Deployment/kit-serving container sync-models: runAsUser is 1000, expected a high id (>= 10000) that no node "
        "user has",
        "Deployment/kit-serving container sync-models: seccompProfile is not RuntimeDefault",
        "Deployment/kit-serving container sync-models: readOnlyRootFilesystem is not true",
        "Deployment/kit-serving container server: runAsUser is 1000, expected a high id (>= 10000) that no node user "
        "has",
        "Deployment/kit-serving container server: seccompProfile is not RuntimeDefault",
        "Deployment/kit-serving container server: allowPrivilegeEscalation is not false",
        "Deployment/kit-serving container server: adds capabilities ['NET_ADMIN']"]


# ---- images by digest -------------------------------------------------------------------------------
def test_pin_digests_resolves_the_tag_through_the_registry_api(renders, registry):
    docs, lines = renders[1]["pyserving-pvc-digest"], renders[2]
    image = f"127.0.0.1:{registry.port}/kit/server"
    assert pod_spec(docs)["containers"][0]["image"] == f"{image}@{DIGEST}"
    assert pod_spec(docs)["containers"][0]["imagePullPolicy"] == "IfNotPresent"  # a digest never moves
    assert f"[deploy] --pin-digests: {image}:1.0 -> {image}@{DIGEST}" in lines
    assert digests.resolve(image, "1.0") == DIGEST
    with pytest.raises(digests.Unresolved, match=f"127.0.0.1:{registry.port} answered HTTP 404 for "):
        digests.resolve(image, "2.0")


def test_pin_digests_without_a_registry_says_so_in_one_line_and_keeps_the_tag(build):
    lines = []
    image = "127.0.0.1:1/kit/server:1.0"  # nothing listens on port 1
    docs = deploy.render("pyserving", image=image, pin=True, say=lines.append).docs
    [line] = [line for line in lines if "--pin-digests" in line]
    assert re.fullmatch(r"\[deploy\] --pin-digests: 127\.0\.0\.1:1/kit/server:1\.0 stays by tag: registry "
                        r"127\.0\.0\.1:1 unreachable \(.*refused.*\)", line), line
    assert pod_spec(docs)["containers"][0]["image"] == image
    assert set(find(docs, "Deployment")["metadata"]["annotations"]) >= set(deploy.TAG_SKIPS)


def test_an_image_given_by_digest_drops_the_tag_skips(build):
    digest = "@sha256:" + "b" * 64
    docs = deploy.render("tfserving", image="tensorflow/serving" + digest, say=quiet).docs
    assert pod_spec(docs)["containers"][0]["image"] == "tensorflow/serving" + digest
    assert not set(find(docs, "Deployment")["metadata"].get("annotations", {})) & set(deploy.TAG_SKIPS)
    # the s3 copy's image is by tag: the skips stay until it is pinned too
    docs = deploy.render("tfserving", "s3", image="tensorflow/serving" + digest, say=quiet).docs
    assert set(find(docs, "Deployment")["metadata"]["annotations"]) >= set(deploy.TAG_SKIPS)


@pytest.mark.parametrize("name, registry_host, repository", [
    ("tensorflow/serving", "registry-1.docker.io", "tensorflow/serving"),
    ("python", "registry-1.docker.io", "library/python"),
    ("ghcr.io/org/kit", "ghcr.io", "org/kit"),
    ("localhost:5000/kit", "localhost:5000", "kit"),
])
def test_registry_and_repository_follow_dockers_rule(name, registry_host, repository):
    assert digests.registry_and_repository(name) == (registry_host, repository)


# ---- zizmor over the CI workflows -------------------------------------------------------------------
WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.fixture(scope="module")
def zizmor_exe():
    exe = scanners.zizmor_path()
    if exe is None:
        pytest.skip("zizmor is not installed (requirements.txt pins it)")
    return exe


def test_zizmor_finds_nothing_in_the_workflows(zizmor_exe):
    count, report = scanners.zizmor(ROOT, zizmor_exe)
    print(report.strip().splitlines()[-1])
    assert count == 0, report


def test_zizmor_fails_a_weakened_workflow(zizmor_exe, tmp_path):
    weakened = tmp_path / ".github" / "workflows"  # zizmor collects a folder's .github/workflows
    shutil.copytree(WORKFLOWS, weakened)
    native = weakened / "native.yml"
    text = native.read_text()
    text = re.sub(r"actions/checkout@[0-9a-f]{40}  # (v[\d.]+)", r"actions/checkout@v4", text)
    text = text.replace("          persist-credentials: false  # no token left in .git/config for later steps\n", "")
    native.write_text(text.replace("        with:\n      - uses", "      - uses"))
    count, report = scanners.zizmor(tmp_path, zizmor_exe)
    assert count == 2, report
    assert "unpinned-uses" in report and "artipacked" in report


def test_every_action_is_pinned_to_a_commit_with_its_tag_and_no_checkout_keeps_credentials():
    for workflow in sorted(WORKFLOWS.glob("*.yml")):
        text = workflow.read_text()
        uses = re.findall(r"uses: (\S+)(.*)", text)
        assert uses, workflow
        for ref, comment in uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{workflow.name}: {ref}"
            assert re.fullmatch(r"  # v\d+\.\d+\.\d+", comment), f"{workflow.name}: {ref}{comment}"
        doc = yaml.safe_load(text)
        assert doc["permissions"] == {}, workflow.name
        for name, job in doc["jobs"].items():
            assert job["permissions"] == {"contents": "read"}, f"{workflow.name} {name}"
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{workflow.name} {name}"
