"""The Open Inference Protocol's gRPC service (protocols/grpc/oip.py), inference.GRPCInferenceService,
on the in-process server's gRPC port beside TF Serving's services: health, metadata, inference
with raw and typed contents, the same answers as TF Serving's Predict, and every client mistake a
client status (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION) with a clear message."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb
from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc as pb_grpc
from tests.helpers import call_json, concurrently, grpc_predict

X = [[1.0], [2.0], [5.0]]


@pytest.fixture(scope="module")
def stub(models_server):
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def request(model: str = "hp2", version: str = "", raw: bool = False, values=X, datatype: str = "FP32", **kwargs):
    req = pb.ModelInferRequest(model_name=model, model_version=version, **kwargs)
    array = np.asarray(values, dtype=np.float32)
    tensor = req.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    if raw:
        req.raw_input_contents.append(array.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    return req


def outputs(response) -> dict:
    return {o.name: (o.datatype, list(o.shape), np.frombuffer(raw, dtype="<f4").tolist())
            for o, raw in zip(response.outputs, response.raw_output_contents)}


def test_server_live_ready_metadata_and_health(stub, models_server):
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert (metadata.name, list(metadata.extensions)) == ("pyserving", ["binary_tensor_data"])
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=10)
    assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_model_metadata_and_readiness(stub):
    got = stub.ModelMetadata(pb.ModelMetadataRequest(name="hp2tf2"), timeout=10)
    assert (got.name, list(got.versions), got.platform) == ("hp2tf2", ["1"], "tensorflow_savedmodel")
    assert [(t.name, t.datatype, list(t.shape)) for t in got.inputs] == [("x", "FP32", [-1, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in got.outputs] == [("y", "FP32", [-1, 1])]
    assert stub.ModelReady(pb.ModelReadyRequest(name="hp2"), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="hp2", version="stable"), timeout=10).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="hp2", version="3"), timeout=10).ready


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("model", ["hp2", "hp2tf2"])
def test_model_infer_answers_as_predict(stub, models_server, model, raw):
    response = stub.ModelInfer(request(model, raw=raw, id="q-7"), timeout=30)
    assert (response.model_name, response.model_version, response.id) == (model, "1", "q-7")
    expected = np.ravel(grpc_predict(models_server, X, model=model)).tolist()
    assert outputs(response) == {"y": ("FP32", [3, 1], expected)}


def test_requested_outputs_and_a_signature_by_parameter(stub):
    req = pb.ModelInferRequest(model_name="hp2")
    req.parameters["signature_name"].string_param = "predict_x_y_y2"
    req.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(2.0)
    req.outputs.add(name="y2")
    response = stub.ModelInfer(req, timeout=30)
    assert [o.name for o in response.outputs] == ["y2"] and len(response.raw_output_contents) == 1


def test_bytes_int64_and_bool_through_typed_contents(stub):
    req = pb.ModelInferRequest(model_name="hp2tf2")
    req.parameters["signature_name"].string_param = "echo"
    req.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b"\xff"])
    req.inputs.add(name="count", datatype="INT64", shape=[2]).contents.int64_contents.extend([1, 3])
    response = stub.ModelInfer(req, timeout=30)
    got = {o.name: (o.datatype, raw) for o, raw in zip(response.outputs, response.raw_output_contents)}
    assert got["count"] == ("INT64", np.array([2, 6], "<i8").tobytes())
    assert got["flag"] == ("BOOL", b"\x00\x01")
    assert got["text"] == ("BYTES", b"\x02\x00\x00\x00ab\x01\x00\x00\x00\xff")


def _two_raw(req):
    req.raw_input_contents.append(b"")
    return req


def _typed_and_raw(req):
    req.raw_input_contents.append(np.zeros(3, "<f4").tobytes())
    return req


def _wrong_field(req):
    req.inputs[0].contents.Clear()
    req.inputs[0].contents.int_contents.extend([1, 2, 3])
    return req


def _fp16_typed(req):
    req.inputs[0].datatype = "FP16"
    return req


BAD = [  # (request, code, message prefix)
    (request("nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    (request("hp2", version="4"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(hp2, 4)"),
    (request("hp2", version="beta"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
    (request(""), grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request."),
    (request(datatype="FP64"), grpc.StatusCode.INVALID_ARGUMENT,
     "Input 'x': datatype FP64 does not match the model's FP32"),
    (request(datatype="BYTES"), grpc.StatusCode.INVALID_ARGUMENT,
     "Input 'x': datatype BYTES does not match the model's FP32"),
    (_two_raw(request(raw=True)), grpc.StatusCode.INVALID_ARGUMENT,
     "raw_input_contents holds 2 entries for 1 inputs"),
    (_typed_and_raw(request()), grpc.StatusCode.INVALID_ARGUMENT,
     "Input 'x' has typed contents as well as raw_input_contents"),
    (_wrong_field(request()), grpc.StatusCode.INVALID_ARGUMENT,
     "Input 'x': FP32 data goes in contents.fp32_contents, not int_contents"),
    (_fp16_typed(request()), grpc.StatusCode.INVALID_ARGUMENT, "Input 'x': datatype FP16 does not match"),
    (pb.ModelInferRequest(model_name="hp2"), grpc.StatusCode.INVALID_ARGUMENT, "The request has no inputs"),
    (pb.ModelInferRequest(model_name="hp2", inputs=[{"name": "x", "datatype": "FP32", "shape": [2],
                                                       "contents": {"fp32_contents": [1.0]}}]),
     grpc.StatusCode.INVALID_ARGUMENT, "Input 'x': shape [2] holds 2 elements but 1 were given"),
    (pb.ModelInferRequest(model_name="hp2", inputs=[{"name": "x", "datatype": "FP32", "shape": [-2]}]),
     grpc.StatusCode.INVALID_ARGUMENT, "Input 'x': shape must be a list of non-negative integers"),
    (pb.ModelInferRequest(model_name="hp2", inputs=[{"name": "x", "datatype": "FP32", "shape": [2]}],
                          raw_input_contents=[b"\x00" * 7]),
     grpc.StatusCode.INVALID_ARGUMENT, "Input 'x': 7 bytes of data, but shape [2] of FP32 needs 8"),
    (request(outputs=[{"name": "nope"}]), grpc.StatusCode.INVALID_ARGUMENT,
     "output tensor alias not found in signature: nope"),
    (request(parameters={"signature_name": {"string_param": "nope"}}), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    (request(parameters={"signature_name": {"int64_param": 1}}), grpc.StatusCode.INVALID_ARGUMENT,
     "Parameter 'signature_name' must be a string"),
]


@pytest.mark.parametrize("req, code, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_client_mistakes_are_client_statuses_with_a_message(stub, req, code, message):
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req, timeout=30)
    assert info.value.code() == code and info.value.details().startswith(message), info.value.details()
    print(f"{code.name}: {info.value.details()!r}")


def test_metadata_and_ready_mistakes(stub):
    for call, req, code, message in [
        (stub.ModelReady, pb.ModelReadyRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "Model nope is not configured"),
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="nope"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="hp2", version=str(2**64)),
         grpc.StatusCode.INVALID_ARGUMENT, f"Model version {2**64} is out of range (int64)"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(req, timeout=10)
        assert (info.value.code(), info.value.details()) == (code, message)


def test_with_batching_v2_and_tf_serving_requests_share_the_batcher(exported, tmp_path, serve):
    """--enable_batching: ModelInfer awaits its run on the loop (REST's infer always does); V2 and
    TF Serving requests of 1-3 rows, and > 64 KiB ones decoded in the pool, all answered right."""
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 3000 } "
                      "max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }")
    server = serve([f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2", "--enable_batching",
                    f"--batching_parameters_file={params}"])
    channel = grpc.insecure_channel(server.grpc_target)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    def v2_grpc(rows, wide=False):  # wide: one row of them all (a batch of one)
        values = [rows] if wide else [[x] for x in rows]
        response = stub.ModelInfer(request("hp2tf2", raw=True, values=values), timeout=60)
        return np.frombuffer(response.raw_output_contents[0], "<f4").tolist()

    def v2_rest(rows, wide=False):
        shape = [1, len(rows)] if wide else [len(rows), 1]
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": rows}]}
        status, answer = call_json(server, "POST", "/v2/models/hp2tf2/infer", doc, timeout=60)
        assert status == 200, answer
        return answer["outputs"][0]["data"]

    def v1_rest(rows):
        status, answer = call_json(server, "POST", "/v1/models/hp2tf2:predict", {"instances": [[x] for x in rows]})
        return [p[0] for p in answer["predictions"]]

    work = []
    for i in range(16):
        rows = [float(i) + r / 4 for r in range(1 + i % 3)]
        for fn in (v2_grpc, v2_rest, v1_rest):
            work.append((lambda fn=fn, rows=rows: fn(rows), [0.5 * x + 2 for x in rows]))
    big = [float(r) for r in range(20000)]  # > 64 KiB either way
    work += [(lambda: v2_grpc(big, wide=True), [0.5 * x + 2 for x in big]),
             (lambda: v2_rest(big, wide=True), [0.5 * x + 2 for x in big])]
    try:
        got = concurrently([call for call, _want in work])
    finally:
        channel.close()
    assert got == [want for _call, want in work]
