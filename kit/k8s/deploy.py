"""`inv deploy`: render build/deploy/<overlay>.yaml for the kit's models, check it, apply it.

The models.config comes from the writer `inv serve` uses (kit/model_config.py served(), host
paths), mapped to container paths by kit/model_config.py container_text (or to gs:// URIs).
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


class DeployError(RuntimeError):
    """A deploy that cannot go on; the message is one line (or one line per problem)."""


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
    if overlay == "pyserving" and storage == "gcs":
        raise DeployError("--storage=gcs needs --overlay=tfserving: only TF Serving reads gs:// itself "
                          "(pyserving: --storage=pvc or s3)")
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


def container_config(host_text: str, storage: str, models_uri: str) -> str:
    """models.config as the pods read it: /models paths (the volume), or with gcs storage
    <models_uri>/<name> (TF Serving reads gs:// itself)."""
    return model_config.container_text(host_text, paths.MODELS, k8s.MODELS_MOUNT,
                                       models_uri if storage == "gcs" else "")


def kustomization(overlay: str, storage: str, workdir: Path, image: str, replicas: int, namespace: str,
                  models_uri: str) -> dict:
    """The kustomization that renders one overlay with one storage component and the kit's settings."""
    def rel(path: Path) -> str:
        return os.path.relpath(path, workdir)  # kustomize refuses absolute paths for resources

    name, tag, digest = manifest_checks.IMAGE.match(image).group("name", "tag", "digest")
    image_entry = {"name": manifest_checks.IMAGE.match(DEFAULT_IMAGES[overlay]).group("name"), "newName": name}
    if digest:
        image_entry["digest"] = digest.removeprefix("@")
    else:
        image_entry["newTag"] = tag
    # Patches, not generators: this kustomization's generators run before the components', whose
    # ConfigMaps (gcs: models.config, s3: MODELS_URI) must be overridden too.
    config_maps = {k8s.CONFIGMAP_NAME: {k8s.MODELS_CONFIG_KEY: (workdir / k8s.MODELS_CONFIG_KEY).read_text()}}
    if storage == "s3":
        config_maps["kit-models-source"] = {"MODELS_URI": models_uri}
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["namespace.yaml", rel(k8s.DEPLOY / "overlays" / overlay)],
        "components": [rel(k8s.DEPLOY / "components" / f"storage-{storage}")],
        "images": [image_entry],
        "replicas": [{"name": k8s.DEPLOYMENT, "count": replicas}],
        "patches": [*({"patch": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                                 "data": data})} for name, data in config_maps.items()), {
            "target": {"kind": "HorizontalPodAutoscaler", "name": k8s.DEPLOYMENT},
            "patch": yaml.safe_dump([
                {"op": "replace", "path": "/spec/minReplicas", "value": replicas},
                {"op": "replace", "path": "/spec/maxReplicas", "value": max(DEFAULT_MAX_REPLICAS, replicas)},
            ]),
        }],
    }


def render(overlay: str = "tfserving", storage: str = "pvc", image: str = "", replicas: int = DEFAULT_REPLICAS,
           namespace: str = k8s.DEFAULT_NAMESPACE, models_uri: str = "", say: Callable[[str], None] = print,
           out: Optional[Path] = None) -> Rendered:
    """Render, check and write build/deploy/<overlay>.yaml (or `out`); DeployError on any problem."""
    check_options(overlay, storage, image, replicas, namespace, models_uri)
    image = image or DEFAULT_IMAGES[overlay]
    models_uri = models_uri or DEFAULT_MODELS_URI.get(storage, "")
    workdir = paths.BUILD / "deploy" / f"{overlay}-{storage}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    host_text, models = served_config(workdir, say)
    (workdir / k8s.MODELS_CONFIG_KEY).write_text(container_config(host_text, storage, models_uri))
    (workdir / "namespace.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(k8s.LABELS)}}))
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(
        kustomization(overlay, storage, workdir, image, replicas, namespace, models_uri), sort_keys=False))
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
           say: Callable[[str], None] = print, run: Callable[[list[str]], object] = None) -> Rendered:
    """Render and check (always: offline), then with `apply` run kubectl apply and wait for the
    rollout; a dry run prints the cluster commands and runs none of them."""
    rendered = render(overlay, storage, image, replicas, namespace, models_uri, say)
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
