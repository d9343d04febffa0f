"""`inv deploy`: render build/deploy/<overlay>.yaml for the kit's models, check it, apply it.

The models.config comes from the writer `inv serve` uses (kit/model_config.py served(), host
paths), mapped to container paths by kit/model_config.py container_text (or to gs:// / s3:// URIs
where the server reads the bucket itself: TF Serving gs://, pyserving gs:// and s3://).
Rendering is kustomize's: a small kustomization under build/deploy/<overlay>-<storage>/ takes
the overlay, adds the storage component, the generated models.config, the image, the replica
count and the namespace, and `kubectl kustomize` (offline, KUBECONFIG=/dev/null) builds it. The
result must pass kit/k8s/manifest_checks.py before it is written.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from kit import model_config, paths
from kit.errors import KitError
from kit.images import pyserving_image
from kit.k8s import cluster as k8s
from kit.k8s import manifest_checks
from kit.serve import docker as docker_backend

MIN_K8S_VERSION = "1.30"  # lifecycle.preStop.sleep: beta and on by default from 1.30 (alpha, gated, in 1.29)
# pyserving: the tag `inv image --target=pyserving` builds, kit-pyserving:<pyproject version>
DEFAULT_IMAGES = {"tfserving": docker_backend.SERVING_IMAGE, "pyserving": pyserving_image.DEFAULT_TAG}
DEFAULT_MODELS_URI = {"gcs": "gs://kit-models/models", "s3": "s3://kit-models/models"}
DEFAULT_REPLICAS, DEFAULT_MAX_REPLICAS = 2, 6
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# The namespace `inv deploy` renders admits only pods that meet Pod Security "restricted".
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
# The annotation on the ServiceAccount that names the cloud identity the pods act as.
WORKLOAD_IDENTITY = {"gcs": "iam.gke.io/gcp-service-account", "s3": "eks.amazonaws.com/role-arn"}
# Images a storage component adds (the s3 copy's), pinned by digest too with --pin-digests.
STORAGE_IMAGES = {"s3": "amazon/aws-cli:2.15.0"}
# deploy/base's checkov skips that only images by tag need (dropped when every image has a digest).
TAG_SKIPS = ("checkov.io/skip1", "checkov.io/skip2")


class DeployError(RuntimeError):
    """A deploy that cannot go on; the message is one line (or one line per problem)."""


@dataclass(frozen=True)
class Access:
    """Who may reach the pods beyond their own namespace, and the cloud identity they act as.

    allow_namespace / allow_pods: one more ingress source for the gRPC and REST ports, pods
    matching `key=value[,key=value]` (all pods when empty) in namespace `allow_namespace` (this
    one when empty), e.g. an ingress controller. workload_identity: the Google service account
    (gcs) or IAM role ARN (s3) the ServiceAccount is annotated with."""
    allow_namespace: str = ""
    allow_pods: str = ""
    workload_identity: str = ""

    def pod_labels(self) -> dict[str, str]:
        pairs = [p.strip() for p in self.allow_pods.split(",") if p.strip()]
        return dict(p.split("=", 1) for p in pairs)


def k8s_versions() -> tuple[str, str]:
    """The oldest Kubernetes the manifests support and the newest kubernetes-validate bundles."""
    import kubernetes_validate

    latest = kubernetes_validate.latest_version()
    return MIN_K8S_VERSION, ".".join(latest.split(".")[:2])


@dataclass
class Rendered:
    overlay: str
    storage: str
    path: Path
    docs: list[dict]
    models: list[str]
    commands: list[list[str]]


def check_options(overlay: str, storage: str, image: str, replicas: int, namespace: str, models_uri: str) -> None:
    if overlay not in k8s.OVERLAYS:
        raise DeployError(f"--overlay must be one of {', '.join(k8s.OVERLAYS)}, got {overlay!r}")
    if storage not in k8s.STORAGES:
        raise DeployError(f"--storage must be one of {', '.join(k8s.STORAGES)}, got {storage!r}")
    if image and not manifest_checks.image_pinned(image):
        raise DeployError(f"--image {image!r} must be pinned: name:tag (not latest) or name@sha256:...")
    if replicas < 1:
        raise DeployError(f"--replicas must be at least 1, got {replicas}")
    if not NAMESPACE_RE.match(namespace):
        raise DeployError(f"--namespace {namespace!r} is not a valid namespace name (lowercase letters, digits, '-')")
    scheme = {"gcs": "gs://", "s3": "s3://"}.get(storage)
    if models_uri and (scheme is None or not models_uri.startswith(scheme)):
        raise DeployError(f"--models-uri goes with --storage=gcs (gs://...) or s3 (s3://...), got {models_uri!r} "
                          f"with --storage={storage}")


def check_access(access: Access, storage: str) -> None:
    if access.allow_namespace and not NAMESPACE_RE.match(access.allow_namespace):
        raise DeployError(f"--allow-namespace {access.allow_namespace!r} is not a valid namespace name")
    for pair in [p.strip() for p in access.allow_pods.split(",") if p.strip()]:
        key, sep, value = pair.partition("=")
        if not sep or not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
            raise DeployError(f"--allow-pods takes key=value[,key=value] label pairs, got {pair!r}")
    if access.workload_identity:
        if storage not in WORKLOAD_IDENTITY:
            raise DeployError("--workload-identity goes with --storage=gcs (a Google service account) or s3 (an IAM "
                              f"role ARN); --storage={storage} needs no cloud identity")
        if storage == "gcs" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com",
                                                 access.workload_identity):
            raise DeployError(f"--workload-identity for gcs is a Google service account email "
                              f"(NAME@PROJECT.iam.gserviceaccount.com), got {access.workload_identity!r}")
        if storage == "s3" and not re.fullmatch(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+",
                                                access.workload_identity):
            raise DeployError(f"--workload-identity for s3 is an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got "
                              f"{access.workload_identity!r}")


def pin_digests(images: list[str], say: Callable[[str], None] = print,
                resolve: Callable[[str], tuple[str, Optional[str]]] = None) -> dict[str, str]:
    """Each image by digest where its registry answers; one line for each that stays by tag."""
    from kit.k8s import digests

    pinned = {}
    for image in images:
        result, why_not = (resolve or digests.pin)(image)
        pinned[image] = result
        if why_not:
            say(f"[deploy] --pin-digests: {image} stays by tag: {why_not}")
        elif result != image:
            say(f"[deploy] --pin-digests: {image} -> {result}")
    return pinned


def served_config(workdir: Path, say: Callable[[str], None] = print) -> tuple[str, list[str]]:
    """The models.config `inv serve` would serve (host paths) and its model names. With no trained
    model here it names the kit's models at their base paths, latest version each: the volume or
    bucket holds them."""
    try:
        host_config = model_config.served()
    except KitError:  # no trained model here
        host_config = model_config.write({m: paths.MODELS / m for m in k8s.DEFAULT_MODELS},
                                         workdir / "models.host.config")
        say(f"[deploy] no trained models under {paths.MODELS}: models.config names "
            f"{', '.join(k8s.DEFAULT_MODELS)}, latest version each, which the storage must hold")
    text = host_config.read_text()
    from pyserving.core.config import models_from_text

    return text, [m.name for m in models_from_text(text, str(host_config))]


def reads_bucket(overlay: Optional[str], storage: str) -> bool:
    """Whether the server reads the bucket itself: TF Serving and pyserving read gs://; only
    pyserving reads s3:// (TF Serving lost it in 2.7: storage-s3 copies into a volume instead)."""
    return storage == "gcs" or (storage == "s3" and overlay == "pyserving")


def storage_components(overlay: str, storage: str) -> list[str]:
    """deploy/components/ used for one overlay x storage: pyserving reading a bucket reads s3://
    directly (storage-s3-direct) and keeps its local version cache on a volume of its own (bucket-cache)."""
    if overlay == "pyserving" and storage == "s3":
        return ["storage-s3-direct", "bucket-cache"]
    if overlay == "pyserving" and storage == "gcs":
        return ["storage-gcs", "bucket-cache"]
    return [f"storage-{storage}"]


def storage_images_for(overlay: str, storage: str) -> list[str]:
    """Images a storage component adds: the aws-cli copy of storage-s3 only."""
    return [STORAGE_IMAGES[storage]] if storage in STORAGE_IMAGES and not reads_bucket(overlay, storage) else []


def container_config(host_text: str, storage: str, models_uri: str, overlay: Optional[str] = None) -> str:
    """models.config as the pods read it: /models paths (the volume), or <models_uri>/<name> where
    the server reads the bucket itself (reads_bucket)."""
    return model_config.container_text(host_text, paths.MODELS, k8s.MODELS_MOUNT,
                                       models_uri if reads_bucket(overlay, storage) else "")


def _image_entry(placeholder: str, image: str) -> dict:
    """A kustomize `images:` entry replacing `placeholder` (a name) with `image`."""
    name, tag, digest = manifest_checks.IMAGE.match(image).group("name", "tag", "digest")
    entry = {"name": placeholder, "newName": name}
    if digest:
        entry["digest"] = digest.removeprefix("@")
    else:
        entry["newTag"] = tag
    return entry


def _name_of(image: str) -> str:
    return manifest_checks.IMAGE.match(image).group("name")


def kustomization(overlay: str, storage: str, workdir: Path, image: str, replicas: int, namespace: str,
                  models_uri: str, access: Access = Access(), storage_images: Optional[dict[str, str]] = None) -> dict:
    """The kustomization that renders one overlay with one storage component and the kit's settings."""
    def rel(path: Path) -> str:
        return os.path.relpath(path, workdir)  # kustomize refuses absolute paths for resources

    images = [_image_entry(_name_of(DEFAULT_IMAGES[overlay]), image)]
    extra = dict(storage_images or {})  # a storage component's own images, as given (pinned or not)
    images += [_image_entry(_name_of(default), extra[default]) for default in extra if extra[default] != default]
    everything = [image, *(extra.get(i, i) for i in storage_images_for(overlay, storage))]
    by_digest = all(manifest_checks.IMAGE.match(i).group("digest") for i in everything)
    # Patches, not generators: this kustomization's generators run before the components', whose
    # ConfigMaps (gcs: models.config, s3: MODELS_URI) must be overridden too.
    config_maps = {k8s.CONFIGMAP_NAME: {k8s.MODELS_CONFIG_KEY: (workdir / k8s.MODELS_CONFIG_KEY).read_text()}}
    if storage == "s3" and not reads_bucket(overlay, storage):
        config_maps["kit-models-source"] = {"MODELS_URI": models_uri}
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["namespace.yaml", rel(k8s.DEPLOY / "overlays" / overlay)],
        "components": [rel(k8s.DEPLOY / "components" / name) for name in storage_components(overlay, storage)],
        "images": images,
        "replicas": [{"name": k8s.DEPLOYMENT, "count": replicas}],
        "patches": [*({"patch": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                                 "data": data})} for name, data in config_maps.items()), {
            "target": {"kind": "HorizontalPodAutoscaler", "name": k8s.DEPLOYMENT},
            "patch": yaml.safe_dump([
                {"op": "replace", "path": "/spec/minReplicas", "value": replicas},
                {"op": "replace", "path": "/spec/maxReplicas", "value": max(DEFAULT_MAX_REPLICAS, replicas)},
            ]),
        }, *_access_patches(access, storage), *([{
            # every image by digest: the skips that only tags need go (checkov then checks them)
            "target": {"kind": "Deployment", "name": k8s.DEPLOYMENT},
            "patch": yaml.safe_dump([{"op": "remove", "path": "/metadata/annotations/" + key.replace("/", "~1")}
                                     for key in TAG_SKIPS]),
        }] if by_digest else [])],
    }


def _access_patches(access: Access, storage: str) -> list[dict]:
    patches = []
    if access.allow_namespace or access.allow_pods:
        peer = {"podSelector": {"matchLabels": access.pod_labels()} if access.allow_pods else {}}
        if access.allow_namespace:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": access.allow_namespace}}
        rule = {"from": [peer], "ports": [{"protocol": "TCP", "port": k8s.GRPC_PORT},
                                          {"protocol": "TCP", "port": k8s.REST_PORT}]}
        patches.append({"target": {"kind": "NetworkPolicy", "name": k8s.DEPLOYMENT},
                        "patch": yaml.safe_dump([{"op": "add", "path": "/spec/ingress/-", "value": rule}])})
    if access.workload_identity:
        patches.append({"patch": yaml.safe_dump({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
                "name": k8s.DEPLOYMENT, "annotations": {WORKLOAD_IDENTITY[storage]: access.workload_identity}}})})
    return patches


def render(overlay: str = "tfserving", storage: str = "pvc", image: str = "", replicas: int = DEFAULT_REPLICAS,
           namespace: str = k8s.DEFAULT_NAMESPACE, models_uri: str = "", say: Callable[[str], None] = print,
           out: Optional[Path] = None, access: Access = Access(), pin: bool = False,
           resolve: Callable[[str], tuple[str, Optional[str]]] = None) -> Rendered:
    """Render, check and write build/deploy/<overlay>.yaml (or `out`); DeployError on any problem.
    With `pin`, every image is given by the digest its registry resolves its tag to, where the
    registry answers (`resolve`: kit/k8s/digests.py pin)."""
    check_options(overlay, storage, image, replicas, namespace, models_uri)
    check_access(access, storage)
    image = image or DEFAULT_IMAGES[overlay]
    storage_images = {i: i for i in storage_images_for(overlay, storage)}
    if pin:
        pinned = pin_digests([image, *storage_images], say, resolve)
        image, storage_images = pinned[image], {i: pinned[i] for i in storage_images}
    models_uri = models_uri or DEFAULT_MODELS_URI.get(storage, "")
    workdir = paths.BUILD / "deploy" / f"{overlay}-{storage}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    host_text, models = served_config(workdir, say)
    (workdir / k8s.MODELS_CONFIG_KEY).write_text(container_config(host_text, storage, models_uri, overlay))
    (workdir / "namespace.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {**k8s.LABELS, **POD_SECURITY_LABELS}}}))
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(
        kustomization(overlay, storage, workdir, image, replicas, namespace, models_uri, access, storage_images),
        sort_keys=False))
    command = [k8s.render_kubectl(), "kustomize", str(workdir)]
    say(f"$ KUBECONFIG={os.devnull} {shlex.join(command)}")
    proc = subprocess.run(command, capture_output=True, text=True, env=k8s.offline_env(), check=False)
    if proc.returncode != 0:
        raise DeployError(f"kubectl kustomize failed: {proc.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    problems = manifest_checks.semantic_problems(docs, models)
    checked = 0
    for version in k8s_versions():
        checked, _, errors = manifest_checks.schema_errors(docs, version)
        problems += [f"[schema] {e}" for e in errors]
    if problems:
        raise DeployError(f"{overlay}/{storage}: the rendered manifests fail {len(problems)} check(s):\n  "
                          + "\n  ".join(problems))
    path = out or paths.BUILD / "deploy" / f"{overlay}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(proc.stdout)
    kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    say(f"[deploy] wrote {_shown(path)}: {len(docs)} objects ({kinds}); image {image}, models "
        f"{', '.join(models)}, namespace {namespace}; checked: Kubernetes {' and '.join(k8s_versions())} schemas "
        f"(strict, {checked} objects) and {len(manifest_checks.SEMANTIC_CHECKS)} kinds of semantic check, 0 problems")
    return Rendered(overlay, storage, path, docs, models, [command])


def _record_path(namespace: str) -> Path:
    return paths.BUILD / "deploy" / f"applied-{namespace}.json"


def record(namespace: str, overlay: str, storage: str, models_uri: str) -> Path:
    """What `--apply` applied to `namespace`: rollouts with --target=k8s map paths the same way."""
    path = _record_path(namespace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"overlay": overlay, "storage": storage, "models_uri": models_uri}))
    return path


def applied(namespace: str) -> dict:
    """The record of the last `--apply` to `namespace`, else the defaults (pvc)."""
    path = _record_path(namespace)
    if path.exists():
        return json.loads(path.read_text())
    return {"overlay": None, "storage": "pvc", "models_uri": ""}


def apply_commands(path: Path, namespace: str) -> list[list[str]]:
    return [[k8s.kubectl(), "apply", "-f", str(path)],
            [k8s.kubectl(), "rollout", "status", f"deployment/{k8s.DEPLOYMENT}", "--namespace", namespace,
             "--timeout=10m"]]


def deploy(overlay: str = "tfserving", storage: str = "pvc", image: str = "", replicas: int = DEFAULT_REPLICAS,
           namespace: str = k8s.DEFAULT_NAMESPACE, models_uri: str = "", apply: bool = False, dry_run: bool = False,
           say: Callable[[str], None] = print, run: Callable[[list[str]], object] = None,
           access: Access = Access(), pin: bool = False) -> Rendered:
    """Render and check (always: offline), then with `apply` run kubectl apply and wait for the
    rollout; a dry run prints the cluster commands and runs none of them."""
    rendered = render(overlay, storage, image, replicas, namespace, models_uri, say, access=access, pin=pin)
    if not apply:
        return rendered
    commands = apply_commands(rendered.path, namespace)
    if dry_run:
        for command in commands:
            say(f"$ {shlex.join(command)}")
        return rendered
    reason = k8s.cluster_unavailable()
    if reason:
        raise DeployError(f"--apply: {reason}; the manifests are in {_shown(rendered.path)}")
    for command in commands:
        say(f"$ {shlex.join(command)}")
        (run or _run)(command)
    record(namespace, overlay, storage, models_uri or DEFAULT_MODELS_URI.get(storage, ""))
    return rendered


def _run(command: list[str]) -> None:
    if subprocess.run(command, check=False).returncode != 0:
        raise DeployError(f"command failed: {shlex.join(command)}")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(paths.ROOT))
    except ValueError:
        return str(path)
