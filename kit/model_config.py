"""models.config, written in one place: the ModelServerConfig the kit serves, its container twin,
and the rollout roles it is written from.

Every server the kit runs reads build/models/models.config (host paths); the TF Serving image
reads models.docker.config (the same text with /models paths), and a cluster's ConfigMap holds
that text with the pods' paths. Each model's rollout roles (stable, canary, previous) are kept
beside the config as <model>.rollout.json, so that whoever rewrites the config (serve, a
rollout step, deploy) writes the same text for the same roles.
"""
from __future__ import annotations

import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping, Optional, Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kit import paths
from kit.errors import KitError
from pyserving import storage

CONFIG_NAME = "models.config"
URI_NAME = "models.uri"  # beside models.config: the bucket `inv serve --models-uri` serves from (absent: build/models)
CONTAINER_CONFIG_NAME = "models.docker.config"  # beside models.config: the Docker backend's twin
CONTAINER_MODELS_ROOT = "/models"  # where the TF Serving image (and a pod) sees build/models
STATE_SUFFIX = ".rollout.json"
KIT_MODELS = ("svm", "mnist")


class ModelConfigError(ValueError):
    """A models.config cannot be mapped into the container."""


def atomic_write(path: Path, text: str) -> None:
    """Write a file whole or not at all: a polling server never reads half a file, and a task
    killed half-way leaves the previous one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def base_path_text(base: Path | str) -> str:
    """A base path as models.config holds it: a bucket URL as given, a local folder absolute."""
    text = os.fspath(base)
    return text.rstrip("/") if storage.is_remote(text) else str(Path(text).resolve())


def write(models: Mapping[str, Path | str], path: Optional[Path] = None,
          labels: Optional[Mapping[str, Mapping[str, int]]] = None,
          specific: Optional[Mapping[str, Sequence[int]]] = None) -> Path:
    """A ModelServerConfig text file serving each model's versions from its base path.

    `specific` pins a model to those versions (policy `specific`), else its latest one serves;
    `path` defaults to build/models/models.config, whose container twin, once it exists, is kept
    in step."""
    path = path or paths.MODEL_CONFIG
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in models.items():
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, base_path_text(base), "tensorflow"
        for label, version in (labels or {}).get(name, {}).items():
            entry.version_labels[label] = version
        if specific and specific.get(name):
            entry.model_version_policy.specific.versions.extend(sorted(specific[name]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text_format.MessageToString(config))
    if path == paths.MODEL_CONFIG and container_twin_path().exists():
        write_container_twin()  # a Docker server reads the twin: labels and rollouts reach it too
    return path


def container_text(config_text: str, host_root: Path | str, container_root: str = CONTAINER_MODELS_ROOT,
                   models_uri: str = "") -> str:
    """`config_text` with every base_path moved from host_root to container_root (or, with
    `models_uri`, to <models_uri>/<relative path>: a bucket TF Serving reads itself).

    ``/abs/build/models/half/`` with host_root ``/abs/build/models`` becomes ``/models/half``. A
    base_path that is relative or outside host_root cannot exist in the container, so it is an
    error rather than a guess."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(config_text, config)
    except text_format.ParseError as err:
        raise ModelConfigError(f"not a ModelServerConfig text proto: {err}") from err
    if config.HasField("custom_model_config"):
        raise ModelConfigError("custom_model_config is not supported; use model_config_list")
    root = PurePosixPath(posixpath.normpath(os.fspath(host_root)))
    if not root.is_absolute():
        raise ModelConfigError(f"host_root must be absolute, got {os.fspath(host_root)!r}")
    for model in config.model_config_list.config:
        base = model.base_path
        if storage.is_remote(base):  # a bucket reads the same from a container
            continue
        if not base.startswith("/"):
            raise ModelConfigError(f"model {model.name!r}: base_path {base!r} is not an absolute host path")
        try:
            relative = PurePosixPath(posixpath.normpath(base)).relative_to(root)
        except ValueError:
            raise ModelConfigError(f"model {model.name!r}: base_path {base!r} lies outside {root}, "
                                   f"which is the only folder mounted at {container_root}") from None
        if models_uri:
            model.base_path = f"{models_uri.rstrip('/')}/{relative}"
        else:
            model.base_path = str(PurePosixPath(container_root) / relative)
    return text_format.MessageToString(config)


def container_twin_path() -> Path:
    return paths.MODELS / CONTAINER_CONFIG_NAME


def write_container_twin() -> Path:
    """build/models/models.docker.config: models.config as the TF Serving image sees it (/models)."""
    path = container_twin_path()
    atomic_write(path, container_text(paths.MODEL_CONFIG.read_text(), paths.MODELS))
    return path


# ---- the roles a rollout gives each model's versions ----------------------------------------
@dataclass
class Rollout:
    """Which versions of one model serve which role."""

    model: str
    base_path: str
    stable: Optional[int]  # None: no rollout yet, the latest version serves
    canary: Optional[int] = None
    previous: Optional[int] = None
    history: list = field(default_factory=list)

    def versions(self) -> list[int]:
        return sorted({v for v in (self.stable, self.canary, self.previous) if v is not None})

    def labels(self) -> dict[str, int]:
        if self.stable is None:
            return {}
        labels = {"stable": self.stable}
        if self.canary is not None:
            labels["canary"] = self.canary
        if self.previous is not None:
            labels["previous"] = self.previous
        return labels


def state_path(config_file: Path, model: str) -> Path:
    return config_file.parent / f"{model}{STATE_SUFFIX}"


def load_state(config_file: Path, model: str) -> Optional[Rollout]:
    path = state_path(config_file, model)
    return Rollout(**json.loads(path.read_text())) if path.exists() else None


def save_state(config_file: Path, rollout: Rollout) -> None:
    # Atomic: a task killed while it writes leaves the previous state, which `inv serve` reads.
    atomic_write(state_path(config_file, rollout.model), json.dumps(asdict(rollout), indent=1))


def plain(model: str, base: Path) -> Rollout:
    """A model served the ordinary way (latest version, no labels)."""
    return Rollout(model, str(base), stable=None)


def rollouts_for(config_file: Path, models: Mapping[str, Path]) -> list[Rollout]:
    """Each model's rollout state, or the ordinary latest-version serving when it has none."""
    return [load_state(config_file, name) or plain(name, base) for name, base in models.items()]


def write_rollouts(config_file: Path, others: list[Rollout], model: Optional[Rollout] = None,
                   versions: Optional[list[int]] = None, labels: Optional[dict] = None) -> Path:
    """The model config: `others` as their roles say, and `model` with the given versions and
    labels (default: its own roles)."""
    rollouts = others + ([model] if model else [])
    all_labels = {r.model: r.labels() for r in others}
    specific = {r.model: r.versions() for r in others}
    if model:
        all_labels[model.model] = model.labels() if labels is None else labels
        specific[model.model] = versions or model.versions()
    return write({r.model: r.base_path for r in rollouts}, config_file, labels=all_labels, specific=specific)


def kit_models() -> dict[str, Path]:
    """The kit's trained models under build/models (KitError naming the training tasks when none is)."""
    root = paths.MODELS
    models = {name: root / name for name in KIT_MODELS if (root / name).is_dir()}
    if not models:
        raise KitError(f"no trained models under {root}: run `inv train-svm` / `inv train-mnist` first "
                       "(or `make reproduce`)")
    return models


# ---- where the served models live: build/models, or a bucket (`inv serve --models-uri`) ------
def uri_path() -> Path:
    return paths.MODELS / URI_NAME


def models_uri() -> str:
    """The bucket URL the kit serves from (gs://bucket/prefix or s3://...), or "" for build/models."""
    path = uri_path()
    return path.read_text().strip() if path.exists() else ""


def set_models_uri(uri: str) -> None:
    """Remember (or, with "", forget) the bucket every later task serves and rolls out from."""
    path = uri_path()
    if not uri:
        path.unlink(missing_ok=True)
        return
    if storage.scheme(uri) not in storage.BUCKET_SCHEMES:
        raise KitError(f"--models-uri must be a gs:// or s3:// URL holding svm/<N>/ and mnist/<N>/, got {uri!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, uri.rstrip("/") + "\n")


def bucket_models(uri: str) -> dict[str, str]:
    """The kit's models with at least one version under `uri` (<uri>/<model>/<N>/), listed through
    pyserving's storage; KitError with the storage's own line when the bucket cannot be read."""
    found = {}
    for name in KIT_MODELS:
        base = f"{uri.rstrip('/')}/{name}"
        try:
            if storage.for_path(base).list_versions(base):
                found[name] = base
        except Exception as exc:  # a StorageError or a ServingError: one secret-free line either way
            raise KitError(getattr(exc, "message", None) or str(exc)) from None
    if not found:
        raise KitError(f"no model versions under {uri}: publish one with "
                       f"`inv publish --model=svm --to={uri.rstrip('/')}/svm`")
    return found


def served_models(uri: Optional[str] = None) -> dict[str, Path | str]:
    """The models the kit serves and rolls out: their bucket URLs when `inv serve --models-uri`
    chose a bucket (or `uri` says one), else the trained ones under build/models."""
    uri = models_uri() if uri is None else uri
    return bucket_models(uri) if uri else kit_models()


def served(say=print, uri: Optional[str] = None) -> Path:
    """build/models/models.config for the served models: each model's rollout (labels, pinned
    versions) or its latest version; `uri`: serve that bucket ("": build/models) instead of the one
    remembered. A rollout state kept for another base path (the kit served
    from build/models then, from a bucket now, or the other way) names versions of other folders:
    it is dropped, and said."""
    config = paths.MODEL_CONFIG
    models = served_models(uri)
    for name, base in models.items():
        state = load_state(config, name)
        if state is not None and base_path_text(state.base_path) != base_path_text(base):
            state_path(config, name).unlink()
            say(f"{name}: the rollout kept for {state.base_path} does not apply to {base}: dropped "
                "(the latest version serves)")
    return write_rollouts(config, rollouts_for(config, models))
