"""The Open Inference Protocol's gRPC service, inference.GRPCInferenceService, on the gRPC port
beside TF Serving's services: the same data plane, runner, timeouts and metrics.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer. Inputs come as
raw_input_contents (one entry per input, all or none) or as each input's typed contents; outputs
always go back as raw_output_contents, as Triton answers (every client reads them). The stubs are
generated from the spec's own .proto (oip_pb/README.md); the mapping is codecs/oip.py's.
"""
from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Optional

from pyserving.codecs import oip
from pyserving.core.dataplane import DataPlane, Prepared
from pyserving.core.runners import wait
from pyserving.errors import invalid_argument
from pyserving.protocols.completions import Completions
from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb
from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc as pb_grpc
from pyserving.protocols.grpc.servicers import INLINE_REQUEST_BYTES, guarded, time_left

SERVICE = "inference.GRPCInferenceService"


def parameters(params) -> dict:
    """A map<string, InferParameter> as plain values."""
    out = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, which) if which else None
    return out


def decode_inputs(request, signature_inputs) -> dict:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid_argument(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs: "
                               "give every input's data there, or none")
    if not request.inputs:
        raise invalid_argument("The request has no inputs")
    inputs = {}
    for i, item in enumerate(request.inputs):
        name, datatype = item.name, item.datatype
        count = oip.check_input(name, datatype, list(item.shape), signature_inputs)
        if name in inputs:
            raise invalid_argument(f"Input '{name}' is given twice")
        given = [field.name for field, _value in item.contents.ListFields()]
        if raw:
            if given:
                raise invalid_argument(f"Input '{name}' has typed contents as well as raw_input_contents")
            inputs[name] = oip.from_raw(name, datatype, item.shape, count, raw[i])
            continue
        field = oip.CONTENTS_FIELD.get(datatype)
        if field is None:
            raise invalid_argument(f"Input '{name}': {datatype} has no typed contents; send it in raw_input_contents")
        if any(g != field for g in given):
            raise invalid_argument(f"Input '{name}': {datatype} data goes in contents.{field}, "
                                   f"not {', '.join(g for g in given if g != field)}")
        inputs[name] = oip.from_contents(name, datatype, item.shape, count, getattr(item.contents, field))
    return inputs


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer awaits its run on the loop (use with batching); BlockingOipServicer runs it on
    a pool thread, as the TF Serving API's servicers choose."""

    def __init__(self, data_plane: DataPlane, completions: Completions, executor: futures.Executor, metrics):
        self._data = data_plane
        self._completions = completions
        self._executor = executor
        self._metrics = metrics
        self._version = oip.server_version()

    @guarded
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @guarded
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._data.server_ready())

    @guarded
    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self._data.model_ready(oip.model_spec(request.name, request.version)))

    @guarded
    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=oip.SERVER_NAME, version=self._version, extensions=oip.EXTENSIONS)

    @guarded
    def ModelMetadata(self, request, context):
        described = self._data.describe(oip.model_spec(request.name, request.version))
        response = pb.ModelMetadataResponse(name=described.model_name, platform=described.platform,
                                            versions=[str(v) for v in described.versions])
        for target, tensors in ((response.inputs, described.signature.inputs),
                                (response.outputs, described.signature.outputs)):
            for item in oip.tensor_metadata(tensors):
                target.add(**item)
        return response

    @guarded
    async def ModelInfer(self, request, context):
        timeout_s = time_left(context)
        if request.ByteSize() > INLINE_REQUEST_BYTES:
            prepared, future = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._start, request, timeout_s, True)
        else:
            prepared, future = self._start(request, timeout_s, False)
        return self._response(request, prepared, await self._completions.result(future, timeout_s))

    def _start(self, request, timeout_s: Optional[float], inline: bool) -> tuple[Prepared, futures.Future]:
        spec = oip.model_spec(request.model_name, request.model_version, parameters(request.parameters))
        with self._data.prepare(spec) as prepared:
            inputs = decode_inputs(request, prepared.signature.inputs)
            names = [output.name for output in request.outputs]
            return prepared, prepared.submit(inputs, names, timeout_s, inline)

    def _response(self, request, prepared: Prepared, outputs) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(model_name=prepared.model_name, model_version=str(prepared.version),
                                         id=request.id)
        for name, array in outputs.items():
            response.outputs.add(name=name, datatype=oip.datatype_of(array), shape=oip.output_shape(array))
            response.raw_output_contents.append(oip.to_raw(array))
        return response


class BlockingOipServicer(OipServicer):
    """ModelInfer on a pool thread from start to end (grpc.aio runs sync handlers in its pool)."""

    @guarded
    def ModelInfer(self, request, context):
        timeout_s = time_left(context)
        prepared, future = self._start(request, timeout_s, True)
        return self._response(request, prepared, wait(future, timeout_s))
