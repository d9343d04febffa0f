"""Core results -> tensorflow_serving.apis messages; shared by the gRPC servicers and REST.

REST answers status and metadata with the JSON of the same messages gRPC returns, as TF
Serving's REST handler does.
"""
from __future__ import annotations

from typing import Sequence

from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

from pyserving.errors import Code, ServingError
from pyserving.types import DEFAULT_SIGNATURE, ModelSpec, VersionStatus

MAX_MESSAGE = 1024


def truncate(message: str) -> str:
    # TF Serving's grpc_status_util.cc cuts long error messages.
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "...TRUNCATED"


def spec_from_proto(proto: model_pb2.ModelSpec) -> ModelSpec:
    if not proto.name:
        raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec name")
    which = proto.WhichOneof("version_choice")
    return ModelSpec(
        name=proto.name,
        version=proto.version.value if which == "version" else None,
        label=proto.version_label if which == "version_label" else None,
        signature_name=proto.signature_name,
    )


def fill_spec(target: model_pb2.ModelSpec, name: str, version: int | None, signature_name: str | None) -> None:
    """util.cc MakeModelSpec: a signature name given as "" is serving_default; None leaves it unset,
    as a version of None leaves the version unset."""
    target.name = name
    if signature_name is not None:
        target.signature_name = signature_name or DEFAULT_SIGNATURE
    if version is not None:
        target.version.value = version


def status_response(statuses: Sequence[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in statuses:
        entry = response.model_version_status.add()
        entry.version = s.version
        entry.state = int(s.state)
        entry.status.SetInParent()  # TF Serving always sets it: {"error_code": "OK", ...}
        if s.error is not None:
            entry.status.error_code = int(s.error.code)
            entry.status.error_message = s.error.message
    return response


def metadata_response(name: str, version: int,
                      signature_def_map: bytes) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_spec(response.model_spec, name, version, None)
    sig_map = get_model_metadata_pb2.SignatureDefMap.FromString(signature_def_map)
    response.metadata["signature_def"].Pack(sig_map)
    return response


def to_json_dict(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def metadata_json_dict(name: str, version: int, signature_def_map: bytes) -> dict:
    """REST's metadata body: the Any is unpacked (no "@type"), as TF Serving prints it."""
    spec = model_pb2.ModelSpec()
    fill_spec(spec, name, version, None)
    sig_map = get_model_metadata_pb2.SignatureDefMap.FromString(signature_def_map)
    return {"model_spec": to_json_dict(spec), "metadata": {"signature_def": to_json_dict(sig_map)}}
