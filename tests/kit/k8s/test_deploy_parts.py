"""kit/k8s/deploy.py part by part, in-process: the options it refuses (each with its one line), the
kustomization it writes, the digests it pins, the models.config it maps, what `--apply` runs and
records; and a few whole renders (`kubectl kustomize`, offline), each saying exactly what it
wrote, or why it stopped. Every overlay x storage rendered and checked is test_deploy.py's; this
module is what `make mutate` runs against deploy.py.
"""
from __future__ import annotations

import os
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from kit import model_config, paths
from kit.k8s import cluster as k8s
from kit.k8s import deploy
from kit.paths import ROOT

DIGEST_A, DIGEST_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PSS = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/audit": "restricted",
       "pod-security.kubernetes.io/warn": "restricted"}
NO_CONTEXT = ("no Kubernetes cluster: kubectl has no current context (set KUBECONFIG or `kubectl config "
              "use-context`)")


def quiet(line: str) -> None:
    pass


def find(docs: list[dict], kind: str, name: str = "") -> dict:
    [obj] = [d for d in docs if d["kind"] == kind and (not name or d["metadata"]["name"] == name)]
    return obj


# ---- options --------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,message", [
    (("kserve", "pvc", "", 2, "kit-serving", ""), "--overlay must be one of tfserving, pyserving, got 'kserve'"),
    (("tfserving", "nfs", "", 2, "kit-serving", ""), "--storage must be one of pvc, gcs, s3, got 'nfs'"),
    (("tfserving", "pvc", "tensorflow/serving", 2, "kit-serving", ""),
     "--image 'tensorflow/serving' must be pinned: name:tag (not latest) or name@sha256:..."),
    (("tfserving", "pvc", "tensorflow/serving:latest", 2, "kit-serving", ""),
     "--image 'tensorflow/serving:latest' must be pinned: name:tag (not latest) or name@sha256:..."),
    (("tfserving", "pvc", "", 0, "kit-serving", ""), "--replicas must be at least 1, got 0"),
    (("tfserving", "pvc", "", 2, "Kit", ""),
     "--namespace 'Kit' is not a valid namespace name (lowercase letters, digits, '-')"),
    (("tfserving", "pvc", "", 2, "a" * 64, ""),
     f"--namespace {'a' * 64!r} is not a valid namespace name (lowercase letters, digits, '-')"),
    (("tfserving", "pvc", "", 2, "ml-", ""),
     "--namespace 'ml-' is not a valid namespace name (lowercase letters, digits, '-')"),
    (("tfserving", "pvc", "", 2, "kit-serving", "gs://b/m"),
     "--models-uri goes with --storage=gcs (gs://...) or s3 (s3://...), got 'gs://b/m' with --storage=pvc"),
    (("tfserving", "s3", "", 2, "kit-serving", "gs://b/m"),
     "--models-uri goes with --storage=gcs (gs://...) or s3 (s3://...), got 'gs://b/m' with --storage=s3"),
    (("tfserving", "gcs", "", 2, "kit-serving", "s3://b/m"),
     "--models-uri goes with --storage=gcs (gs://...) or s3 (s3://...), got 's3://b/m' with --storage=gcs"),
])
def test_bad_options(options, message):
    with pytest.raises(deploy.DeployError) as info:
        deploy.check_options(*options)
    assert str(info.value) == message


@pytest.mark.parametrize("options", [
    ("tfserving", "pvc", "", 1, "kit-serving", ""),
    ("tfserving", "gcs", "registry:5000/tfs:2.21.0", 1, "a" * 63, "gs://b/m"),
    ("pyserving", "s3", "kit@" + DIGEST_A, 9, "m1", "s3://b/m"),
    ("pyserving", "pvc", "", 2, "a", ""),
])
def test_good_options(options):
    deploy.check_options(*options)


@pytest.mark.parametrize("access,storage,message", [
    (deploy.Access(allow_namespace="Ingress_NS"), "pvc",
     "--allow-namespace 'Ingress_NS' is not a valid namespace name"),
    (deploy.Access(allow_pods="app"), "pvc", "--allow-pods takes key=value[,key=value] label pairs, got 'app'"),
    (deploy.Access(allow_pods="app=nginx,=x"), "pvc", "--allow-pods takes key=value[,key=value] label pairs, got '=x'"),
    (deploy.Access(allow_pods="app=a b"), "pvc", "--allow-pods takes key=value[,key=value] label pairs, got 'app=a b'"),
    (deploy.Access(allow_pods="a/b/c=x"), "pvc", "--allow-pods takes key=value[,key=value] label pairs, got 'a/b/c=x'"),
    (deploy.Access(workload_identity="r@p.iam.gserviceaccount.com"), "pvc",
     "--workload-identity goes with --storage=gcs (a Google service account) or s3 (an IAM role ARN); "
     "--storage=pvc needs no cloud identity"),
    (deploy.Access(workload_identity="reader"), "gcs", "--workload-identity for gcs is a Google service account "
     "email (NAME@PROJECT.iam.gserviceaccount.com), got 'reader'"),
    (deploy.Access(workload_identity="r@p.iam.gserviceaccount.com.evil"), "gcs", "--workload-identity for gcs is a "
     "Google service account email (NAME@PROJECT.iam.gserviceaccount.com), got 'r@p.iam.gserviceaccount.com.evil'"),
    (deploy.Access(workload_identity="r@p.iam.gserviceaccount.com"), "s3", "--workload-identity for s3 is an IAM "
     "role ARN (arn:aws:iam::ACCOUNT:role/NAME), got 'r@p.iam.gserviceaccount.com'"),
    (deploy.Access(workload_identity="arn:aws:iam::123:role/r"), "s3", "--workload-identity for s3 is an IAM role "
     "ARN (arn:aws:iam::ACCOUNT:role/NAME), got 'arn:aws:iam::123:role/r'"),
    (deploy.Access(workload_identity="arn:aws:iam::123456789012:role/r x"), "s3", "--workload-identity for s3 is an "
     "IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got 'arn:aws:iam::123456789012:role/r x'"),
])
def test_bad_access(access, storage, message):
    with pytest.raises(deploy.DeployError) as info:
        deploy.check_access(access, storage)
    assert str(info.value) == message


@pytest.mark.parametrize("access,storage", [
    (deploy.Access(), "pvc"),
    (deploy.Access(allow_namespace="ingress-nginx", allow_pods=" app=nginx, example.com/tier=web ,, empty="), "pvc"),
    (deploy.Access(workload_identity="kit-reader@my-project.iam.gserviceaccount.com"), "gcs"),
    (deploy.Access(workload_identity="arn:aws:iam::123456789012:role/kit-reader"), "s3"),
    (deploy.Access(workload_identity="arn:aws-cn:iam::123456789012:role/path/kit+reader"), "s3"),
])
def test_good_access(access, storage):
    deploy.check_access(access, storage)


def test_allowed_pods_as_labels():
    assert deploy.Access(allow_pods=" app=nginx, tier=web=1 ,,").pod_labels() == {"app": "nginx", "tier": "web=1"}
    assert deploy.Access().pod_labels() == {}


def test_the_kubernetes_versions_checked():
    assert deploy.k8s_versions() == ("1.30", "1.37")


# ---- digests --------------------------------------------------------------------------------------
def test_pin_digests_says_what_it_pinned_and_what_stays_by_tag():
    answers = {"a:1": ("a@" + DIGEST_A, None), "b:1": ("b:1", "registry b unreachable"), "c@" + DIGEST_B: (
        "c@" + DIGEST_B, None)}
    said = []
    assert deploy.pin_digests(list(answers), said.append, answers.get) == {
        "a:1": "a@" + DIGEST_A, "b:1": "b:1", "c@" + DIGEST_B: "c@" + DIGEST_B}
    assert said == ["[deploy] --pin-digests: a:1 -> a@" + DIGEST_A,
                    "[deploy] --pin-digests: b:1 stays by tag: registry b unreachable"]


def test_pin_digests_asks_the_registry_by_default():
    """kit/k8s/digests.py pin: an image without a tag or with a digest needs no registry."""
    said = []
    assert deploy.pin_digests(["local", "c@" + DIGEST_B], said.append) == {"local": "local", "c@" + DIGEST_B:
                                                                          "c@" + DIGEST_B}
    assert said == ["[deploy] --pin-digests: local stays by tag: local has no tag to resolve"]


# ---- models.config --------------------------------------------------------------------------------
def test_served_config_without_trained_models_names_the_kits(build):
    said = []
    text, models = deploy.served_config(build, said.append)
    assert models == ["svm", "mnist"]
    assert said == [f"[deploy] no trained models under {paths.MODELS}: models.config names svm, mnist, latest "
                    "version each, which the storage must hold"]
    assert f'base_path: "{paths.MODELS}/svm"' in text and f'base_path: "{paths.MODELS}/mnist"' in text
    assert (build / "models.host.config").read_text() == text


def test_served_config_serves_the_trained_models(build):
    (paths.MODELS / "svm" / "1").mkdir(parents=True)
    said = []
    text, models = deploy.served_config(build, said.append)
    assert (models, said) == (["svm"], [])
    assert f'base_path: "{paths.MODELS}/svm"' in text and "mnist" not in text


@pytest.mark.parametrize("storage,uri,base_path", [
    ("pvc", "", "/models/svm"), ("pvc", "gs://b/m", "/models/svm"), ("gcs", "gs://b/m", "gs://b/m/svm"),
    ("s3", "s3://b/m", "/models/svm"),  # the init container copies the bucket to the volume
])
def test_container_config_maps_the_base_paths(build, storage, uri, base_path):
    host = model_config.write({"svm": paths.MODELS / "svm"}, build / "host.config").read_text()
    assert deploy.container_config(host, storage, uri) == host.replace(f'"{paths.MODELS}/svm"', f'"{base_path}"')


# ---- the kustomization ----------------------------------------------------------------------------
def kustomization(workdir: Path, overlay: str, storage: str, image: str, replicas: int = 2, uri: str = "",
                  access: deploy.Access | None = None, storage_images=None) -> dict:
    access = access or deploy.Access()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "models.config").write_text("the models.config\n")
    spec = deploy.kustomization(overlay, storage, workdir, image, replicas, "ml", uri, access, storage_images)
    for patch in spec["patches"]:
        patch["patch"] = yaml.safe_load(patch["patch"])
    return spec


def cm_patch(name: str, data: dict) -> dict:
    return {"patch": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}}


def hpa_patch(low: int, high: int) -> dict:
    return {"target": {"kind": "HorizontalPodAutoscaler", "name": "kit-serving"}, "patch": [
        {"op": "replace", "path": "/spec/minReplicas", "value": low},
        {"op": "replace", "path": "/spec/maxReplicas", "value": high}]}


NO_TAG_SKIPS = {"target": {"kind": "Deployment", "name": "kit-serving"}, "patch": [
    {"op": "remove", "path": "/metadata/annotations/checkov.io~1skip1"},
    {"op": "remove", "path": "/metadata/annotations/checkov.io~1skip2"}]}


def test_the_kustomization_of_pyserving_on_s3(tmp_path):
    work = tmp_path / "build" / "deploy" / "pyserving-s3"
    rel = os.path.relpath(k8s.DEPLOY, work)
    spec = kustomization(work, "pyserving", "s3", "registry.example/kit:1.2", 3, "s3://b/m")
    assert spec == {  # pyserving reads s3:// itself: no copy, no MODELS_URI, a local version cache
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "ml",
        "resources": ["namespace.yaml", f"{rel}/overlays/pyserving"],
        "components": [f"{rel}/components/storage-s3-direct", f"{rel}/components/bucket-cache"],
        "images": [{"name": "kit-pyserving", "newName": "registry.example/kit", "newTag": "1.2"}],
        "replicas": [{"name": "kit-serving", "count": 3}],
        "patches": [cm_patch("kit-serving-config", {"models.config": "the models.config\n"}), hpa_patch(3, 6)]}
    assert kustomization(work, "pyserving", "gcs", "k:1")["components"] == [
        f"{rel}/components/storage-gcs", f"{rel}/components/bucket-cache"]
    tfserving = kustomization(work, "tfserving", "s3", "t:1", 3, "s3://b/m",
                              storage_images={"amazon/aws-cli:2.15.0": "amazon/aws-cli:2.15.0"})
    assert tfserving["components"] == [f"{rel}/components/storage-s3"]  # TF Serving: the init container's copy
    assert cm_patch("kit-models-source", {"MODELS_URI": "s3://b/m"}) in tfserving["patches"]
    assert (deploy.storage_images_for("tfserving", "s3"), deploy.storage_images_for("pyserving", "s3")) == (
        ["amazon/aws-cli:2.15.0"], [])


def test_the_kustomization_by_digest_drops_the_tag_skips(tmp_path):
    spec = kustomization(tmp_path / "w", "tfserving", "pvc", "tensorflow/serving:2.21.0@" + DIGEST_A, replicas=8)
    assert spec["images"] == [{"name": "tensorflow/serving", "newName": "tensorflow/serving", "digest": DIGEST_A}]
    assert spec["patches"] == [cm_patch("kit-serving-config", {"models.config": "the models.config\n"}),
                               hpa_patch(8, 8), NO_TAG_SKIPS]
    # s3: its sync image too, or the skips stay
    spec = kustomization(tmp_path / "w", "tfserving", "s3", "tensorflow/serving@" + DIGEST_A,
                         storage_images={"amazon/aws-cli:2.15.0": "amazon/aws-cli@" + DIGEST_B})
    assert spec["images"] == [{"name": "tensorflow/serving", "newName": "tensorflow/serving", "digest": DIGEST_A},
                              {"name": "amazon/aws-cli", "newName": "amazon/aws-cli", "digest": DIGEST_B}]
    assert spec["patches"][-1] == NO_TAG_SKIPS
    for storage_images in ({"amazon/aws-cli:2.15.0": "amazon/aws-cli:2.15.0"}, None):
        spec = kustomization(tmp_path / "w", "tfserving", "s3", "tensorflow/serving@" + DIGEST_A,
                             storage_images=storage_images)
        assert spec["images"] == [{"name": "tensorflow/serving", "newName": "tensorflow/serving", "digest": DIGEST_A}]
        assert spec["patches"][-1] == hpa_patch(2, 6)


def test_the_kustomization_opens_ingress_to_the_allowed_pods(tmp_path):
    ports = [{"protocol": "TCP", "port": 8500}, {"protocol": "TCP", "port": 8501}]

    def ingress(access: deploy.Access) -> list:
        spec = kustomization(tmp_path / "w", "tfserving", "gcs", "t:1", access=access)
        assert spec["patches"][:2] == [cm_patch("kit-serving-config", {"models.config": "the models.config\n"}),
                                       hpa_patch(2, 6)]
        return spec["patches"][2:]

    assert ingress(deploy.Access()) == []
    namespace = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    rule = {"target": {"kind": "NetworkPolicy", "name": "kit-serving"}, "patch": [
        {"op": "add", "path": "/spec/ingress/-",
         "value": {"from": [{"podSelector": {}, **namespace}], "ports": ports}}]}
    assert ingress(deploy.Access(allow_namespace="ingress-nginx")) == [rule]
    rule["patch"][0]["value"]["from"] = [{"podSelector": {"matchLabels": {"app": "nginx", "tier": "web"}}}]
    assert ingress(deploy.Access(allow_pods="app=nginx,tier=web")) == [rule]
    rule["patch"][0]["value"]["from"] = [{"podSelector": {"matchLabels": {"app": "nginx"}}, **namespace}]
    identity = {"patch": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
        "name": "kit-serving", "annotations": {"iam.gke.io/gcp-service-account": "r@p.iam.gserviceaccount.com"}}}}
    assert ingress(deploy.Access("ingress-nginx", "app=nginx", "r@p.iam.gserviceaccount.com")) == [rule, identity]
    assert ingress(deploy.Access(workload_identity="r@p.iam.gserviceaccount.com")) == [identity]
    spec = kustomization(tmp_path / "w", "tfserving", "s3", "t:1", access=deploy.Access(workload_identity="arn:x"))
    assert spec["patches"][-1]["patch"]["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:x"}


# ---- what --apply ran, per namespace --------------------------------------------------------------
def test_the_apply_record_per_namespace(build):
    assert deploy.applied("ml") == {"overlay": None, "storage": "pvc", "models_uri": ""}
    path = deploy.record("ml", "tfserving", "gcs", "gs://b/m")
    assert path == build / "deploy" / "applied-ml.json"
    assert deploy.applied("ml") == {"overlay": "tfserving", "storage": "gcs", "models_uri": "gs://b/m"}
    assert deploy.applied("other") == {"overlay": None, "storage": "pvc", "models_uri": ""}


def test_apply_commands(monkeypatch):
    monkeypatch.setenv("KUBECTL", "/opt/kubectl")
    assert deploy.apply_commands(Path("/b/tfserving.yaml"), "ml") == [
        ["/opt/kubectl", "apply", "-f", "/b/tfserving.yaml"],
        ["/opt/kubectl", "rollout", "status", "deployment/kit-serving", "--namespace", "ml", "--timeout=10m"]]


def test_paths_are_shown_from_the_project_root():
    assert deploy._shown(paths.ROOT / "build" / "deploy" / "tfserving.yaml") == "build/deploy/tfserving.yaml"
    assert deploy._shown(Path("/elsewhere/tfserving.yaml")) == "/elsewhere/tfserving.yaml"


# ---- whole renders --------------------------------------------------------------------------------
@pytest.mark.renders
def test_render_says_what_it_wrote(build):
    work = build / "deploy" / "pyserving-s3"
    work.mkdir(parents=True)
    (work / "stale.yaml").write_text("left from an earlier render")
    said = []
    result = deploy.render("pyserving", "s3", say=said.append)
    path = build / "deploy" / "pyserving.yaml"
    kinds = ("Namespace/kit-serving, ServiceAccount/kit-serving, ConfigMap/kit-serving-config, "
             "Service/kit-serving-grpc, Service/kit-serving-rest, Deployment/kit-serving, "
             "PodDisruptionBudget/kit-serving, HorizontalPodAutoscaler/kit-serving, NetworkPolicy/kit-serving")
    assert said == [
        f"[deploy] no trained models under {paths.MODELS}: models.config names svm, mnist, latest version each, "
        "which the storage must hold",
        f"$ KUBECONFIG=/dev/null {shlex.quote(k8s.render_kubectl())} kustomize {work}",
        f"[deploy] wrote {path}: 9 objects ({kinds}); image kit-pyserving:{VERSION}, models svm, mnist, namespace "
        "kit-serving; checked: Kubernetes 1.30 and 1.37 schemas (strict, 9 objects) and 14 kinds of semantic "
        "check, 0 problems"]
    assert (result.overlay, result.storage, result.path, result.models) == ("pyserving", "s3", path, ["svm", "mnist"])
    assert result.commands == [[k8s.render_kubectl(), "kustomize", str(work)]]
    assert result.docs == list(yaml.safe_load_all(path.read_text()))
    assert sorted(p.name for p in work.iterdir()) == ["kustomization.yaml", "models.config", "models.host.config",
                                                      "namespace.yaml"]
    namespace = yaml.safe_load((work / "namespace.yaml").read_text())
    assert namespace == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "kit-serving", "labels": {"app.kubernetes.io/name": "kit-serving",
                                          "app.kubernetes.io/part-of": "tf-serving-kit", **PSS}}}
    assert list(yaml.safe_load((work / "kustomization.yaml").read_text())) == [
        "apiVersion", "kind", "namespace", "resources", "components", "images", "replicas", "patches"]
    assert 'base_path: "s3://kit-models/models/svm"' in (work / "models.config").read_text()  # pyserving reads s3://
    deployment = find(result.docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["namespace"] == "kit-serving"
    assert "checkov.io/skip1" in deployment["metadata"]["annotations"]


@pytest.mark.renders
def test_render_pins_digests_and_writes_where_it_is_told(build, tmp_path):
    resolved = {"registry.example/tfs:2.21.0": "registry.example/tfs@" + DIGEST_A,
                "amazon/aws-cli:2.15.0": "amazon/aws-cli@" + DIGEST_B}
    said = []
    out = tmp_path / "out" / "deploy" / "manifests.yaml"
    result = deploy.render("tfserving", "s3", image="registry.example/tfs:2.21.0", replicas=3, namespace="ml",
                           models_uri="s3://b/m", say=said.append, out=out, pin=True,
                           resolve=lambda image: (resolved[image], None))
    assert said[:2] == [f"[deploy] --pin-digests: {image} -> {pinned}" for image, pinned in resolved.items()]
    assert said[-1].startswith(f"[deploy] wrote {out}: 10 objects (") and said[-1].endswith(
        "; image registry.example/tfs@" + DIGEST_A + ", models svm, mnist, namespace ml; checked: Kubernetes 1.30 and "
        "1.37 schemas (strict, 10 objects) and 14 kinds of semantic check, 0 problems")
    assert result.path == out and out.exists() and not (build / "deploy" / "tfserving.yaml").exists()
    deployment = find(result.docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert [spec["containers"][0]["image"], spec["initContainers"][0]["image"]] == list(resolved.values())
    assert "checkov.io/skip1" not in deployment["metadata"]["annotations"]
    assert deployment["spec"]["replicas"] == 3 and deployment["metadata"]["namespace"] == "ml"
    assert find(result.docs, "ConfigMap", "kit-models-source")["data"] == {"MODELS_URI": "s3://b/m"}


@pytest.mark.renders
def test_render_maps_models_to_the_bucket_for_gcs(build):
    result = deploy.render("tfserving", "gcs", models_uri="gs://b/m", say=quiet)
    text = find(result.docs, "ConfigMap", "kit-serving-config")["data"]["models.config"]
    assert 'base_path: "gs://b/m/svm"' in text and 'base_path: "gs://b/m/mnist"' in text
    assert result.path == build / "deploy" / "tfserving.yaml"


@pytest.mark.renders
def test_render_stops_on_a_kustomize_error_and_writes_nothing(build, tmp_path, monkeypatch):
    copy_dir = tmp_path / "deploy"
    shutil.copytree(k8s.DEPLOY, copy_dir)
    (copy_dir / "overlays" / "tfserving" / "kustomization.yaml").write_text("resources: [../../nowhere]\n")
    monkeypatch.setattr(k8s, "DEPLOY", copy_dir)
    with pytest.raises(deploy.DeployError) as info:
        deploy.render(say=quiet)  # tfserving, pvc
    message = str(info.value)
    assert message.startswith("kubectl kustomize failed: error: accumulating resources") and "nowhere" in message
    assert message == message.strip() and not (build / "deploy" / "tfserving.yaml").exists()


@pytest.mark.renders
def test_render_stops_on_failed_checks_with_every_problem(build, tmp_path, monkeypatch):
    copy_dir = tmp_path / "deploy"
    shutil.copytree(k8s.DEPLOY, copy_dir)
    manifest = copy_dir / "base" / "deployment.yaml"
    text = manifest.read_text()
    assert "      serviceAccountName: kit-serving\n" in text
    account = "      serviceAccountName: kit-serving\n"
    manifest.write_text(text.replace(account, account + "      terminationGraceSeconds: 1\n", 1).replace(
        "              mountPath: /etc/kit-serving\n",
        "              mountPath: /etc/kit-serving/models.config\n              subPath: models.config\n"))
    monkeypatch.setattr(k8s, "DEPLOY", copy_dir)
    with pytest.raises(deploy.DeployError) as info:
        deploy.render("tfserving", say=quiet)
    lines = str(info.value).splitlines()
    assert lines[0] == "tfserving/pvc: the rendered manifests fail 6 check(s):"
    assert lines[1] == ("  [config-mount] Deployment/kit-serving container server: ConfigMap mounted with subPath "
                        "'models.config', which never receives updates")
    assert lines[-2:] == [
        f"  [schema] Deployment/kit-serving against {version}: spec.template.spec: Additional properties are not "
        "allowed ('terminationGraceSeconds' was unexpected)" for version in ("1.30", "1.37")]
    assert not (build / "deploy" / "tfserving.yaml").exists()


@pytest.mark.parametrize("kwargs,message", [
    ({"image": "tensorflow/serving:latest"}, "--image 'tensorflow/serving:latest' must be pinned: name:tag (not "
     "latest) or name@sha256:..."),
    ({"storage": "s3", "models_uri": "gs://b/m"}, "--models-uri goes with --storage=gcs (gs://...) or s3 (s3://...), "
     "got 'gs://b/m' with --storage=s3"),
    ({"storage": "gcs", "access": deploy.Access(workload_identity="arn:aws:iam::123456789012:role/r")},
     "--workload-identity for gcs is a Google service account email (NAME@PROJECT.iam.gserviceaccount.com), got "
     "'arn:aws:iam::123456789012:role/r'"),
])
def test_render_checks_its_options_first(build, kwargs, message):
    with pytest.raises(deploy.DeployError) as info:
        deploy.render(say=quiet, **kwargs)
    assert str(info.value) == message and not (build / "deploy").exists()


# ---- inv deploy -----------------------------------------------------------------------------------
@pytest.mark.renders
def test_deploy_without_apply_only_renders(build):
    """By default: tfserving, pvc, its own image, no digests pinned (no registry asked)."""
    ran, said = [], []
    result = deploy.deploy(run=ran.append, say=said.append)
    assert ran == [] and result.path == build / "deploy" / "tfserving.yaml" and result.path.exists()
    assert (result.overlay, result.storage) == ("tfserving", "pvc")
    assert len(said) == 3 and said[0].startswith("[deploy] no trained models under ")
    assert said[2].startswith(f"[deploy] wrote {result.path}: 10 objects (") and "; image tensorflow/serving:2.21.0, " \
        in said[2]
    assert not (build / "deploy" / "applied-kit-serving.json").exists()


@pytest.mark.renders
def test_deploy_dry_run_prints_the_cluster_commands(build, monkeypatch):
    monkeypatch.setenv("KUBECTL", "/opt/kubectl")
    ran, said = [], []
    image = "127.0.0.1:1/kit/server:1.0"  # --pin-digests: nothing listens on port 1 (pvc: no other image)
    deploy.deploy("pyserving", "pvc", image=image, namespace="kit-py", apply=True, dry_run=True, run=ran.append,
                  say=said.append, pin=True)
    assert ran == []
    assert said[0].startswith(f"[deploy] --pin-digests: {image} stays by tag: registry 127.0.0.1:1 unreachable (")
    assert said[-2:] == [f"$ /opt/kubectl apply -f {build / 'deploy' / 'pyserving.yaml'}",
                         "$ /opt/kubectl rollout status deployment/kit-serving --namespace kit-py --timeout=10m"]
    assert deploy.applied("kit-py")["overlay"] is None


@pytest.mark.renders
def test_deploy_apply_without_a_cluster_says_what_is_missing(build, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    monkeypatch.delenv("KUBECTL", raising=False)
    ran = []
    with pytest.raises(deploy.DeployError) as info:
        deploy.deploy("tfserving", apply=True, run=ran.append, say=quiet)
    assert str(info.value) == f"--apply: {NO_CONTEXT}; the manifests are in {build / 'deploy' / 'tfserving.yaml'}"
    assert ran == [] and deploy.applied("kit-serving")["overlay"] is None


@pytest.mark.renders
def test_deploy_apply_runs_both_commands_and_records_the_storage(build, fake_kubectl):
    ran, said = [], []
    deploy.deploy("tfserving", "gcs", namespace="ml", apply=True, run=ran.append, say=said.append)
    path = build / "deploy" / "tfserving.yaml"
    assert ran == deploy.apply_commands(path, "ml")
    assert said[-2:] == [f"$ {shlex.join(command)}" for command in ran]
    assert deploy.applied("ml") == {"overlay": "tfserving", "storage": "gcs", "models_uri": "gs://kit-models/models"}
    result = deploy.deploy("pyserving", "s3", image="registry.example/kit:1.2", replicas=3, namespace="ml",
                           models_uri="s3://b/m", apply=True, run=ran.append, say=quiet,
                           access=deploy.Access(workload_identity="arn:aws:iam::123456789012:role/r"))
    assert find(result.docs, "ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/r"}
    assert deploy.applied("ml") == {"overlay": "pyserving", "storage": "s3", "models_uri": "s3://b/m"}
    assert 'base_path: "s3://b/m/svm"' in find(result.docs, "ConfigMap", "kit-serving-config")["data"][
        "models.config"]  # pyserving reads the bucket itself
    deployment = find(result.docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/kit:1.2"
    assert deployment["spec"]["replicas"] == 3
    deploy.deploy("pyserving", "pvc", namespace="ml", apply=True, run=ran.append, say=quiet)
    assert deploy.applied("ml") == {"overlay": "pyserving", "storage": "pvc", "models_uri": ""}


@pytest.mark.renders
def test_deploy_apply_stops_at_a_failing_command(build, fake_kubectl):
    """The stand-in applies the manifests; its rollout status gives up at once on a halted cluster."""
    (fake_kubectl / "halted").write_text("")
    with pytest.raises(deploy.DeployError) as info:
        deploy.deploy("tfserving", namespace="ml", apply=True, say=quiet)
    path = build / "deploy" / "tfserving.yaml"
    assert str(info.value) == f"command failed: {shlex.join(deploy.apply_commands(path, 'ml')[1])}"
    calls = (fake_kubectl / "calls.log").read_text().splitlines()
    assert calls[-2:] == [f"apply -f {path}", "rollout status deployment/kit-serving --namespace ml --timeout=10m"]
    assert deploy.applied("ml")["overlay"] is None
