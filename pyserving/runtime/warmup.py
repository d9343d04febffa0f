"""SavedModel warmup: replay assets.extra/tf_serving_warmup_requests before a version serves.

The file is a TFRecord of tensorflow.serving.PredictionLog (TF Serving's format): at most 1000
records, each replayed `iterations` times. A malformed file or a failing request fails the
version's load, as in TF Serving. `write_requests` makes such a file for a model.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterable

from tensorflow_serving.apis import prediction_log_pb2

from pyserving.codecs import example as example_codec
from pyserving.codecs import tensor_proto
from pyserving.core import signatures
from pyserving.errors import Code, ServingError
from pyserving.types import CLASSIFY_METHOD, REGRESS_METHOD

logger = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000


def warmup_path(version_dir: str) -> str:
    return os.path.join(version_dir, WARMUP_FILE)


def _run_examples(servable, method: str, signature_name: str, examples) -> None:
    if method not in signatures.READERS:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")
    key, sig = signatures.examples_signature(servable, signature_name, method)
    signatures.READERS[method](signatures.examples_request(servable, key, sig, examples).run(), len(examples))


def _replay_one(servable, log: prediction_log_pb2.PredictionLog) -> None:
    """One record, run on the servable directly (it is still loading: no lease, no runner)."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        key, sig = signatures.predict_signature(servable, request.model_spec.signature_name)
        inputs = {k: tensor_proto.to_numpy(v) for k, v in request.inputs.items()}
        signatures.predict_request(servable, key, sig, inputs, list(request.output_filter)).run()
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        method = CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD
        _run_examples(servable, method, request.model_spec.signature_name,
                      example_codec.examples_from_input(request.input))
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        examples = example_codec.examples_from_input(request.input)
        for task in request.tasks:
            _run_examples(servable, task.method_name, task.model_spec.signature_name, examples)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")


def replay(servable, version_dir: str, records: Iterable[bytes], iterations: int = 1) -> int:
    """Replay each record `iterations` times against `servable`; returns the number of records."""
    path = warmup_path(version_dir)
    started, count = time.monotonic(), 0
    for record in records:
        count += 1
        if count > MAX_RECORDS:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record)
        except Exception as exc:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Failed to parse warmup record {count} of {path}: {exc}") from None
        for _ in range(max(iterations, 1)):
            try:
                _replay_one(servable, log)
            except ServingError as exc:
                raise ServingError(exc.code, f"Warmup request {count} of {path} failed: {exc.message}") from None
    logger.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
                "Elapsed time (microseconds): %d.", path, count, (time.monotonic() - started) * 1e6)
    return count


def write_requests(version_dir: str, logs: Iterable[prediction_log_pb2.PredictionLog]) -> str:
    """Write PredictionLog records as the version's warmup file (TFRecord), for TF Serving and us."""
    import tensorflow as tf

    path = warmup_path(version_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def predict_log(signature_name: str, inputs: dict, model_name: str = "") -> prediction_log_pb2.PredictionLog:
    """A PredictionLog holding one PredictRequest built from numpy inputs."""
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tensor_proto.from_numpy(value))
    return log
