"""TF Serving's text-proto side files -> typed values: batching parameters, monitoring, SSL, and
the TensorFlow session config. `google.protobuf.text_format` parses; a missing or malformed
file is INVALID_ARGUMENT naming the file, as TF Serving's ParseProtoTextFile reports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from google.protobuf import text_format

from pyserving.config_protos import BatchingParameters, MonitoringConfig, SSLConfig, parse_file
from pyserving.core.batching import BatchingParams

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class SslConfig:
    server_key: bytes
    server_cert: bytes
    custom_ca: Optional[bytes]
    client_verify: bool


def session_config_text(path: str) -> str:
    """--tensorflow_session_config_file: a TF ConfigProto in text form, checked at start-up as
    server.cc's ParseProtoTextFile checks it (a malformed file stops start-up rather than failing
    every model load); '' when no path is given. Each session parses the text it returns."""
    if not path:
        return ""
    from tensorflow.core.protobuf import config_pb2  # TensorFlow's own proto: only when a file is given

    return text_format.MessageToString(parse_file(path, config_pb2.ConfigProto, "TensorFlow session config"))


def batching(path: str, num_batch_threads: Optional[int] = None) -> BatchingParams:
    """A BatchingParameters file; unset fields keep TF's defaults. `num_batch_threads`
    overrides the file's (per-model files: the threads are the server's)."""
    proto = parse_file(path, BatchingParameters, "batching parameters")
    values = {name: getattr(proto, name).value for name in
              ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
              if proto.HasField(name)}
    if num_batch_threads is not None:
        values["num_batch_threads"] = num_batch_threads
    if proto.HasField("max_execution_batch_size"):
        values["max_execution_batch_size"] = proto.max_execution_batch_size.value
    return BatchingParams(allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
                          pad_variable_length_inputs=proto.pad_variable_length_inputs,
                          enable_large_batch_splitting=proto.enable_large_batch_splitting.value, **values)


def prometheus_path(path: str) -> Optional[str]:
    """A MonitoringConfig file -> the path Prometheus scrapes, or None when it is not enabled."""
    config = parse_file(path, MonitoringConfig, "monitoring config")
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


def ssl(path: str) -> SslConfig:
    proto = parse_file(path, SSLConfig, "SSL config")
    return SslConfig(proto.server_key.encode(), proto.server_cert.encode(), proto.custom_ca.encode() or None,
                     proto.client_verify)
