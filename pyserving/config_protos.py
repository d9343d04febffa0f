"""Message classes for TF Serving config files that the tensorflow-serving-api wheel lacks.

One text-proto parser for every file the server reads, in TF Serving's words (parse_text).

The wheel ships the API protos and ModelServerConfig, but not BatchingParameters
(session_bundle_config.proto), MonitoringConfig (monitoring_config.proto) or SSLConfig
(ssl_config.proto). Their descriptors are declared here, field for field as in TF Serving's
.proto files, so that `google.protobuf.text_format` parses the same files TF Serving reads.
"""
from __future__ import annotations

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401  (registers google/protobuf/wrappers.proto)
)

from pyserving.errors import Code, ServingError, invalid_argument

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tensorflow.serving.pyserving_compat"
_COMPAT = "pyserving_compat."


def _field(name, number, ftype, label=_F.LABEL_OPTIONAL, type_name=None):
    f = _F(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    return f


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name="pyserving/compat_config.proto", package=_PACKAGE, syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    i64, s, b = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", ".google.protobuf.BoolValue"
    msg = _F.TYPE_MESSAGE
    fd.message_type.add(name="BatchingParameters", field=[
        _field("max_batch_size", 1, msg, type_name=i64),
        _field("batch_timeout_micros", 2, msg, type_name=i64),
        _field("max_enqueued_batches", 3, msg, type_name=i64),
        _field("num_batch_threads", 4, msg, type_name=i64),
        _field("thread_pool_name", 5, msg, type_name=s),
        _field("allowed_batch_sizes", 6, _F.TYPE_INT64, label=_F.LABEL_REPEATED),
        _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
        _field("enable_large_batch_splitting", 8, msg, type_name=b),
        _field("max_execution_batch_size", 9, msg, type_name=i64),
    ])
    fd.message_type.add(name="PrometheusConfig", field=[
        _field("enable", 1, _F.TYPE_BOOL),
        _field("path", 2, _F.TYPE_STRING),
    ])
    fd.message_type.add(name="MonitoringConfig", field=[
        _field("prometheus_config", 1, msg, type_name=f".{_PACKAGE}.PrometheusConfig"),
    ])
    fd.message_type.add(name="SSLConfig", field=[
        _field("server_key", 1, _F.TYPE_STRING),
        _field("server_cert", 2, _F.TYPE_STRING),
        _field("custom_ca", 3, _F.TYPE_STRING),
        _field("client_verify", 4, _F.TYPE_BOOL),
    ])
    return fd


_pool = descriptor_pool.Default()
try:
    _pool.FindFileByName("pyserving/compat_config.proto")
except KeyError:
    _pool.Add(_file())
BatchingParameters = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.BatchingParameters"))
MonitoringConfig = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.MonitoringConfig"))
SSLConfig = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.SSLConfig"))


class TextProtoError(ServingError):
    """INVALID_ARGUMENT `Invalid protobuf file: '<origin>'`; `parser_line` is the line TF Serving
    logs before it: `Error parsing text-format <type>: <line>:<column>: <what>`."""

    def __init__(self, origin: str, parser_line: str):
        super().__init__(Code.INVALID_ARGUMENT, f"Invalid protobuf file: '{origin}'")
        self.parser_line = parser_line


def parse_text(text: str, message, origin: str):
    """Parse a text proto into `message` as TF Serving's ParseProtoTextFile does."""
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        name = message.DESCRIPTOR.full_name.replace(_COMPAT, "")  # our stand-ins have TF Serving's names
        detail = str(exc).split(" : ", 1)[-1].replace(_COMPAT, "")
        raise TextProtoError(origin, f"Error parsing text-format {name}: {exc.GetLine()}:{exc.GetColumn()}: "
                                     f"{detail}") from None


def parse_file(path: str, message_class, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise invalid_argument(f"Could not read {what} file {path}: {exc.strerror}") from None
    return parse_text(text, message_class(), path)
