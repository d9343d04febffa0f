"""Request limits: body size, REST timeout, and tensors that would expand without bound."""
from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from tests.helpers import call, call_json, from_numpy, prediction_stub


@pytest.fixture(scope="module")
def server(exported, serve_module):
    return serve_module([f"--model_base_path={exported / 'hp2tf2'}", "--model_name=m",
                         "--max_request_size_bytes=100000", "--rest_api_timeout_in_ms=300"])


@pytest.mark.flags("max_request_size_bytes")
def test_oversized_body_is_refused_and_server_keeps_serving(server):
    status, body = call_json(server, "POST", "/v1/models/m:predict", {"instances": [[1.0]] * 30000})
    assert status == 429
    assert "exceeds the limit of 100000 bytes" in body["error"]
    assert call_json(server, "POST", "/v1/models/m:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})


@pytest.mark.flags("max_request_size_bytes")
@pytest.mark.parametrize("path", ["/v1/models/m:predict", "/v2/models/m/infer"])
def test_oversized_chunked_body_is_refused_as_it_is_read(server, path):
    """No Content-Length (chunked): the limit is found while reading, on both REST APIs alike. (It
    was a 500: aiohttp's HTTPRequestEntityTooLarge carries no actual_size, which the handlers read.)"""
    body = json.dumps({"instances": [[1.0]] * 30000}).encode()
    status, _headers, text = call(server, "POST", path, raw=iter([body[:50000], body[50000:]]))
    assert status == 429
    assert json.loads(text) == {"error": "Request body exceeds the limit of 100000 bytes"}
    assert call_json(server, "POST", "/v1/models/m:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})


@pytest.mark.flags("rest_api_timeout_in_ms")
def test_rest_timeout_answers_504(server):
    started = time.monotonic()
    status, body = call_json(server, "POST", "/v1/models/m:predict",
                             {"signature_name": "slow", "instances": [5_000_000]})  # ~25 s of graph loop
    assert status == 504, body
    assert time.monotonic() - started < 10
    assert call_json(server, "POST", "/v1/models/m:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})


def test_tiny_grpc_request_cannot_ask_for_a_huge_tensor(server):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    proto = from_numpy(np.array([1.0], np.float32))
    proto.tensor_shape.dim[0].size = 1 << 40  # one value, padded to 2^40 elements by TF's rules
    req.inputs["x"].CopyFrom(proto)
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = prediction_stub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "exceeds the limit" in err.value.details()
        big = predict_pb2.PredictRequest()
        big.model_spec.name = "m"
        big.inputs["x"].CopyFrom(from_numpy(np.ones((50000, 1), np.float32), as_tensor_content=True))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(big, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = predict_pb2.PredictRequest()
        ok.model_spec.name = "m"
        ok.inputs["x"].CopyFrom(from_numpy(np.array([[2.0]], np.float32)))
        assert stub.Predict(ok, timeout=10).outputs["y"].float_val == [3.0]
