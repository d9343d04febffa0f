"""ModelServerConfig (text proto) -> validated ModelConfig list.

The proto classes and google.protobuf.text_format do the parsing; this module is where the
proto world ends: the manager and the source only see plain ModelConfig values.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

from tensorflow_serving.config import model_server_config_pb2

from pyserving import config_protos, storage
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.types import ModelConfig, VersionPolicy

LABEL_RE = re.compile(r"^[a-zA-Z0-9_]+$")
SUPPORTED_PLATFORMS = ("tensorflow",)


def parse_text(text: str, origin: str = "<config>") -> model_server_config_pb2.ModelServerConfig:
    return config_protos.parse_text(text, model_server_config_pb2.ModelServerConfig(), origin)


def read_text(path: str) -> str:
    """The model config file's text (kept by the poller, to tell a change)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ServingError(Code.NOT_FOUND, f"Could not read model config file {path}: {exc.strerror}") from None


def models_from_text(text: str, origin: str) -> list[ModelConfig]:
    return from_proto(parse_text(text, origin))


def read_file(path: str) -> list[ModelConfig]:
    return models_from_text(read_text(path), path)


def _policy(proto) -> VersionPolicy:
    which = proto.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        if not proto.specific.versions:
            raise invalid_argument("Specific version policy lists no versions")
        return VersionPolicy("specific", versions=tuple(proto.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=proto.latest.num_versions or 1)
    return VersionPolicy("latest", num_versions=1)


def from_proto(config: model_server_config_pb2.ModelServerConfig) -> list[ModelConfig]:
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise ServingError(Code.UNIMPLEMENTED, "custom_model_config is not supported (TF Serving's OSS build has none)")
    models: list[ModelConfig] = []
    for proto in config.model_config_list.config:
        models.append(_model(proto))
    _check_unique(m.name for m in models)
    return models


def _model(proto) -> ModelConfig:
    if not proto.name:
        raise invalid_argument("A model config has an empty name")
    platform = proto.model_platform
    if not platform:
        if proto.model_type == model_server_config_pb2.TENSORFLOW:
            platform = "tensorflow"
        else:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform. (model {proto.name})"
            )
    if platform not in SUPPORTED_PLATFORMS:
        raise invalid_argument(f"Model {proto.name} requests unsupported platform {platform}")
    if not proto.base_path or not (os.path.isabs(proto.base_path) or "://" in proto.base_path):
        raise invalid_argument(
            f"Expected model {proto.name} to have an absolute path or URI; got base_path()={proto.base_path}"
        )
    scheme = storage.scheme(proto.base_path)
    if scheme and scheme not in storage.BUCKET_SCHEMES:
        raise ServingError(Code.UNIMPLEMENTED, f"Model {proto.name}: base path {proto.base_path} has a scheme "
                                               f"pyserving does not read ({scheme}://); use a local path, gs:// or s3://")
    if proto.HasField("logging_config"):
        # The OSS tensorflow_model_server has no request logger either (#408); same answer.
        raise ServingError(Code.FAILED_PRECONDITION, "No request-logger-creator provided.")
    for label in proto.version_labels:
        if not LABEL_RE.match(label):
            raise invalid_argument(f"Invalid version label: '{label}' (allowed: [a-zA-Z0-9_]+)")
    return ModelConfig(
        name=proto.name,
        base_path=proto.base_path,
        platform=platform,
        policy=_policy(proto.model_version_policy),
        labels=dict(proto.version_labels),
    )


def _check_unique(names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise invalid_argument(f"Illegal to list model {name} multiple times in config list")
        seen.add(name)


def single_model(name: str, base_path: str) -> list[ModelConfig]:
    """--model_name/--model_base_path mode: one model, latest version."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = name, base_path, "tensorflow"
    return from_proto(config)
