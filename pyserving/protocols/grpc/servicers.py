"""tensorflow.serving.PredictionService and ModelService servicers, from tensorflow-serving-api stubs.

Servicers only translate protos <-> numpy and call the data plane; ServingError codes map 1:1
onto gRPC status codes (GRPC_STATUS). Predict is one path (decode, prepare, submit, respond)
with one choice of where it waits: with batching it awaits the run's Future on the server's
loop, so no thread sits parked until its batch runs (large requests decode on a pool thread
first); without, the whole Predict runs on a pool thread and the model runs right there, which
saves a hand-off when every request is its own run. The other handlers run on a pool thread.
The server they are added to is server.py's.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent import futures
from typing import Callable, Optional

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pyserving.codecs import example as example_codec
from pyserving.codecs import tensor_proto
from pyserving.core import config as config_mod
from pyserving.core.dataplane import DataPlane, Prepared
from pyserving.core.runners import wait
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.protocols import messages
from pyserving.protocols.completions import Completions
from pyserving.types import CLASSIFY_METHOD

logger = logging.getLogger(__name__)

GRPC_STATUS = {code: getattr(grpc.StatusCode, code.name) for code in Code}
# Predict requests larger than this decode in the thread pool, so the loop never stalls on one.
INLINE_REQUEST_BYTES = 64 * 1024
_ABORTS = ("_AbortionError", "AbortError")


def _model_name(request) -> str:
    if hasattr(request, "model_spec"):
        return request.model_spec.name
    for field in ("model_name", "name"):  # the Open Inference Protocol's requests (grpc/oip.py)
        if hasattr(request, field):
            return getattr(request, field)
    tasks = getattr(request, "tasks", None)
    return tasks[0].model_spec.name if tasks else ""


def _answer(exc: Exception, api: str) -> tuple[Code, "grpc.StatusCode", str]:
    """The status a handler's exception is answered with; one already a gRPC status re-raises."""
    if isinstance(exc, ServingError):
        return exc.code, GRPC_STATUS[exc.code], messages.truncate(exc.message)
    if isinstance(exc, grpc.RpcError) or type(exc).__name__ in _ABORTS:
        raise exc
    logger.exception("gRPC handler %s failed", api)  # a bug must cost one request, not the server
    return Code.INTERNAL, grpc.StatusCode.INTERNAL, messages.truncate(f"Internal error: {exc}")


def _observe(servicer, request, api: str, code: Code, started: float) -> None:
    servicer._metrics.observe_request(_model_name(request), api, "GRPC", code.name, time.perf_counter() - started)


def guarded(method: Callable) -> Callable:
    """Turn ServingError (and bugs) into gRPC statuses and observe every call; the server keeps
    serving. One guard for both kinds of handler: a coroutine handler (awaited on the loop, its
    abort awaited) gets a coroutine wrapper, as grpc.aio tells the two apart by that."""
    api = method.__name__

    if inspect.iscoroutinefunction(method):
        async def wrapper(self, request, context):
            started, code = time.perf_counter(), Code.OK
            try:
                return await method(self, request, context)
            except Exception as exc:
                code, status, message = _answer(exc, api)
                await context.abort(status, message)
            finally:
                _observe(self, request, api, code, started)
    else:
        def wrapper(self, request, context):
            started, code = time.perf_counter(), Code.OK
            try:
                return method(self, request, context)
            except Exception as exc:
                code, status, message = _answer(exc, api)
                context.abort(status, message)
            finally:
                _observe(self, request, api, code, started)

    wrapper.__name__ = api
    return wrapper


def time_left(context) -> Optional[float]:
    """The call's deadline as seconds left, None without one."""
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict awaits its run on the loop (use with batching); BlockingPredictionServicer below
    runs it on a pool thread. Both take the same path through _start_predict and _predict_response."""

    def __init__(self, data_plane: DataPlane, completions: Completions, executor: futures.Executor, metrics,
                 tensor_content_outputs: bool = False, max_elements: int = 1 << 31):
        self._data = data_plane
        self._completions = completions  # hands finished runs back to the server's loop
        self._executor = executor  # where Predicts too large to decode on the loop run
        self._max_elements = max_elements  # a short value list may not expand into gigabytes
        self._metrics = metrics
        self._tensor_content = tensor_content_outputs

    @guarded
    async def Predict(self, request, context):
        timeout_s = time_left(context)
        if request.ByteSize() > INLINE_REQUEST_BYTES:
            prepared, future = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._start_predict, request, timeout_s, True)
        else:
            prepared, future = self._start_predict(request, timeout_s, False)
        return self._predict_response(prepared, await self._completions.result(future, timeout_s))

    def _start_predict(self, request, timeout_s: Optional[float], inline: bool) -> tuple[Prepared, futures.Future]:
        """Lease the version and find its signature, decode, submit the run. The model is
        resolved first, as in TF Serving: an unknown one is NOT_FOUND whatever its inputs hold."""
        with self._data.prepare(messages.spec_from_proto(request.model_spec)) as prepared:
            inputs = {k: tensor_proto.to_numpy(v, self._max_elements) for k, v in request.inputs.items()}
            return prepared, prepared.submit(inputs, list(request.output_filter), timeout_s, inline)

    def _predict_response(self, prepared: Prepared, outputs) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        messages.fill_spec(response.model_spec, prepared.model_name, prepared.version, prepared.signature_name)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tensor_proto.from_numpy(value, self._tensor_content))
        return response

    @guarded
    def Classify(self, request, context):
        return self._examples(request, context, self._data.classify, classification_pb2.ClassificationResponse(),
                              _fill_classifications)

    @guarded
    def Regress(self, request, context):
        return self._examples(request, context, self._data.regress, regression_pb2.RegressionResponse(),
                              _fill_regressions)

    def _examples(self, request, context, run, response, fill):
        """Classify or Regress: tf.Example input -> the data plane -> `response`, filled by `fill`."""
        spec = messages.spec_from_proto(request.model_spec)
        result = run(spec, example_codec.examples_from_input(request.input), time_left(context))
        messages.fill_spec(response.model_spec, result.model_name, result.version, result.signature_name)
        fill(response.result, result.value)
        return response

    @guarded
    def MultiInference(self, request, context):
        tasks = [(messages.spec_from_proto(t.model_spec), t.method_name) for t in request.tasks]
        examples = example_codec.examples_from_input(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for result, (_spec, method) in zip(self._data.multi_inference(tasks, examples, time_left(context)), tasks):
            entry = response.results.add()
            messages.fill_spec(entry.model_spec, result.model_name, result.version, result.signature_name)
            if method == CLASSIFY_METHOD:
                _fill_classifications(entry.classification_result, result.value)
            else:
                _fill_regressions(entry.regression_result, result.value)
        return response

    @guarded
    def GetModelMetadata(self, request, context):
        spec = messages.spec_from_proto(request.model_spec)
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        result = self._data.metadata(spec)
        return messages.metadata_response(result.model_name, result.version, result.value)


class BlockingPredictionServicer(PredictionServicer):
    """Predict on a pool thread from start to end (grpc.aio runs sync handlers in its pool)."""

    @guarded
    def Predict(self, request, context):
        timeout_s = time_left(context)
        prepared, future = self._start_predict(request, timeout_s, True)
        return self._predict_response(prepared, wait(future, timeout_s))


def _fill_regressions(target: regression_pb2.RegressionResult, values) -> None:
    for value in values:
        target.regressions.add().value = value


def _fill_classifications(target: classification_pb2.ClassificationResult, classifications) -> None:
    for classes in classifications:
        entry = target.classifications.add()
        for label, score in classes:
            cls = entry.classes.add()
            if label is not None:
                cls.label = label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)
            if score is not None:
                cls.score = score


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, data_plane: DataPlane, metrics):
        self._data = data_plane
        self._metrics = metrics

    @guarded
    def GetModelStatus(self, request, context):
        spec = messages.spec_from_proto(request.model_spec)
        statuses = self._data.status(spec.name, spec.version)
        return messages.status_response(statuses)

    @guarded
    def HandleReloadConfigRequest(self, request, context):
        if request.config.WhichOneof("config") != "model_config_list":
            raise ServingError(Code.FAILED_PRECONDITION, "ServerCore is configured with a ModelConfigList; "
                                                         "only a ModelConfigList can replace it")
        self._data.reload(config_mod.from_proto(request.config))
        logger.info("Model config reloaded over gRPC")
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response
