"""The Open Inference Protocol's REST API (protocols/oip_rest.py) on the in-process server's REST
port, beside TF Serving's /v1: health, metadata, inference in JSON and with the binary tensor data
extension, and every client mistake answered 4xx with {"error": ...}."""
from __future__ import annotations

import json
import struct
import urllib.request

import numpy as np
import pytest

from tests.helpers import call, call_json, scrape, write_config

X = [[1.0], [2.0], [5.0]]


@pytest.fixture(scope="module")
def server(models_server):
    return models_server


def infer(server, model: str, doc, version: str = "", raw: bytes = b"", headers=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = json.dumps(doc).encode()
    if raw:
        headers = {"Inference-Header-Content-Length": str(len(body)), **(headers or {})}
    return call(server, "POST", path, raw=body + raw, headers=headers)


def fp32_input(data, shape=(3, 1), name="x", **extra) -> dict:
    return {"name": name, "datatype": "FP32", "shape": list(shape), "data": data, **extra}


def v1_predict(server, model: str, instances) -> list:
    status, doc = call_json(server, "POST", f"/v1/models/{model}:predict", {"instances": instances})
    assert status == 200, doc
    return doc["predictions"]


def test_server_live_ready_and_metadata(server):
    assert call_json(server, "GET", "/v2/health/live") == (200, {"live": True})
    assert call_json(server, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, doc = call_json(server, "GET", "/v2")
    assert status == 200 and doc["name"] == "pyserving" and doc["extensions"] == ["binary_tensor_data"]


def test_model_metadata_is_the_serving_default_signature(server):
    assert call_json(server, "GET", "/v2/models/hp2tf2") == (200, {
        "name": "hp2tf2", "versions": ["1"], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]})
    assert call_json(server, "GET", "/v2/models/hp2tf2/versions/1")[1]["versions"] == ["1"]
    # hp2 is a TF1 graph whose x has no static shape: V2 cannot say "unknown rank", so []
    assert call_json(server, "GET", "/v2/models/hp2/versions/stable")[1]["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": []}]


def test_model_ready_by_latest_version_and_label(server):
    assert call_json(server, "GET", "/v2/models/hp2/ready") == (200, {"name": "hp2", "ready": True})
    assert call_json(server, "GET", "/v2/models/hp2/versions/1/ready") == (200, {"name": "hp2", "ready": True})
    assert call_json(server, "GET", "/v2/models/hp2/versions/stable/ready") == (200, {"name": "hp2", "ready": True})
    assert call_json(server, "GET", "/v2/models/hp2/versions/2/ready") == (503, {"name": "hp2", "ready": False})
    assert call_json(server, "GET", "/v2/models/nope/ready") == (404, {"error": "Model nope is not configured"})


@pytest.mark.parametrize("model", ["hp2", "hp2tf2"])
def test_infer_json_answers_as_the_tf_serving_api(server, model):
    status, headers, text = infer(server, model, {"id": "r-1", "inputs": [fp32_input(X)]})
    assert status == 200 and headers["Content-Type"] == "application/json", text
    assert json.loads(text) == {"model_name": model, "model_version": "1", "id": "r-1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [3, 1], "data": np.ravel(v1_predict(server, model, X)).tolist()}]}


def test_infer_by_version_and_by_label_and_without_an_id(server):
    for version in ("1", "stable"):
        status, _h, text = infer(server, "hp2", {"inputs": [fp32_input([1.0, 2.0, 3.0])]}, version=version)
        assert status == 200 and "id" not in json.loads(text) and json.loads(text)["model_version"] == "1"


def post_bytes(server, path: str, body: bytes, headers) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(server.rest + path, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers, response.read()


def test_binary_inputs_and_outputs(server):
    raw = np.array(X, dtype="<f4").tobytes()
    doc = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1],
                                  "parameters": {"binary_data_size": 12}}],
                      "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    status, headers, content = post_bytes(server, "/v2/models/hp2tf2/infer", doc + raw,
                                          {"Inference-Header-Content-Length": str(len(doc))})
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    assert json.loads(content[:length])["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [3, 1],
                                                        "parameters": {"binary_data_size": 12}}]
    assert np.frombuffer(content[length:], "<f4").tolist() == np.ravel(v1_predict(server, "hp2tf2", X)).tolist()


def test_binary_data_output_for_all_outputs_and_a_json_one_by_name(server):
    doc = {"parameters": {"binary_data_output": True}, "inputs": [fp32_input([1.0], shape=(1, 1))],
           "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    status, headers, text = infer(server, "hp2tf2", doc)
    assert status == 200 and json.loads(text)["outputs"][0]["data"] == [2.5]
    doc.pop("outputs")
    status, headers, _text = infer(server, "hp2tf2", doc)
    assert status == 200 and headers["Inference-Header-Content-Length"]


def test_a_signature_named_by_parameter_with_bytes_int64_and_bool(server):
    doc = {"parameters": {"signature_name": "echo"}, "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "\u00e9"]},
        {"name": "count", "datatype": "INT64", "shape": [2], "data": [1, 2]}],
        "outputs": [{"name": "count"}, {"name": "flag"}, {"name": "text"}]}
    status, _h, text = infer(server, "hp2tf2", doc)
    assert status == 200, text
    assert json.loads(text)["outputs"] == [
        {"name": "count", "datatype": "INT64", "shape": [2], "data": [2, 4]},
        {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [False, True]},
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "\u00e9"]}]


def test_binary_bytes_input(server):
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"\xff"))
    doc = {"parameters": {"signature_name": "echo"}, "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}},
        {"name": "count", "datatype": "INT64", "shape": [2], "data": [1, 1]}], "outputs": [{"name": "count"}]}
    status, _h, text = infer(server, "hp2tf2", doc, raw=raw)
    assert status == 200 and json.loads(text)["outputs"][0]["data"] == [2, 2], text


BAD = [  # (path, body or raw bytes, extra headers, status, error message)
    ("/v2/models/nope/infer", {"inputs": [fp32_input(X)]}, None, 404, "Servable not found for request: Latest(nope)"),
    ("/v2/models/hp2/versions/9/infer", {"inputs": [fp32_input(X)]}, None, 404,
     "Servable not found for request: Specific(hp2, 9)"),
    ("/v2/models/hp2/versions/beta/infer", {"inputs": [fp32_input(X)]}, None, 400,
     "Unrecognized servable version label: beta"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(X) | {"datatype": "FP64"}]}, None, 400,
     "Input 'x': datatype FP64 does not match the model's FP32"),
    ("/v2/models/hp2/infer", {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, None, 400,
     "Input 'x': datatype BYTES does not match the model's FP32"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input([1.0, 2.0])]}, None, 400,
     "Input 'x': shape [3, 1] holds 3 elements but 2 were given"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(["a", "b", "c"])]}, None, 400,
     "Input 'x': FP32 data cannot hold strings"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(X, name="z")]}, None, 400,
     "Unexpected input 'z': the model's inputs are ['x']"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(X), fp32_input(X)]}, None, 400, "Input 'x' is given twice"),
    ("/v2/models/hp2/infer", {"inputs": []}, None, 400, "'inputs' must be a non-empty list of tensors"),
    ("/v2/models/hp2/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, None, 400,
     "Input 'x' has neither 'data' nor a binary_data_size parameter"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(X)], "outputs": [{"name": "nope"}]}, None, 400,
     "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(X)], "id": 7}, None, 400, "'id' must be a string"),
    ("/v2/models/hp2/infer", {"inputs": [fp32_input(X)], "parameters": {"signature_name": "nope"}}, None, 400,
     'Serving signature key "nope" not found.'),
    ("/v2/models/hp2/infer", b'{"inputs": [', None, 400, "Malformed JSON in the request: "),
    ("/v2/models/hp2/infer", b"[1]", None, 400, "The request must be a JSON object"),
    ("/v2/models/hp2/infer", b"", None, 400, "The request body holds no JSON object"),
    ("/v2/models/hp2/infer", b"{}", {"Inference-Header-Content-Length": "99"}, 400,
     "Inference-Header-Content-Length is 99 but the body holds only 2 bytes"),
    ("/v2/models/hp2/infer", b"{}", {"Inference-Header-Content-Length": "-1"}, 400,
     "Inference-Header-Content-Length must be a non-negative integer, got '-1'"),
    ("/v2/models/hp2/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                          "parameters": {"binary_data_size": 4}}]}, None, 400,
     "Input 'x': binary_data_size 4 runs past the binary data (0 bytes left)"),
    ("/v2/models/hp2/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                          "parameters": {"binary_data_size": -4}}]}, None, 400,
     "Input 'x': binary_data_size must be a non-negative integer"),
    ("/v2/models/hp2tf2/infer", {"parameters": {"signature_name": "dot"}, "inputs": [
        {"name": "pair", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}, None, 400, None),
    ("/v2/models/hp2/versions/99999999999999999999/infer", {"inputs": [fp32_input(X)]}, None, 400,
     "Model version 99999999999999999999 is out of range (int64)"),
    ("/v2/models/hp2/versions/99999999999999999999", None, None, 400,
     "Model version 99999999999999999999 is out of range (int64)"),
    ("/v2/models/nope", None, None, 404, "Servable not found for request: Latest(nope)"),
    ("/v2/models/hp2tf2/versions/2", None, None, 404, "Servable not found for request: Specific(hp2tf2, 2)"),
    ("/v2/nope", None, None, 404, "No Open Inference Protocol endpoint at GET /v2/nope"),
    ("/v2/models/hp2/infer", None, None, 405, "Method GET is not allowed on /v2/models/hp2/infer; use POST"),
]


@pytest.mark.parametrize("path, body, headers, status, message", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_client_mistakes_are_4xx_with_an_error_message(server, path, body, headers, status, message):
    method = "POST" if body is not None else "GET"
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    got, response_headers, text = call(server, method, path, raw=raw, headers=headers)
    doc = json.loads(text)
    assert (got, list(doc)) == (status, ["error"]), text
    assert response_headers["Content-Type"] == "application/json"
    if message is not None:
        assert doc["error"].startswith(message), doc
    print(f"{method} {path} -> {got} {doc['error']!r}")


def test_the_binary_part_must_be_used_up(server):
    doc = {"inputs": [fp32_input(X)]}
    status, _h, text = infer(server, "hp2", doc, raw=b"\x00" * 5)
    assert (status, json.loads(text)) == (400, {"error": "5 bytes of binary data follow the inputs' "
                                                         "binary_data_size"})


def test_v2_requests_are_counted_in_tf_servings_metrics_by_api_and_the_body_limit_holds(tmp_path, exported, serve):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    config = write_config(tmp_path / "models.config", {"hp2": exported / "hp2"})
    server = serve([f"--model_config_file={config}", f"--monitoring_config_file={monitoring}",
                    "--max_request_size_bytes=4096"])
    assert infer(server, "hp2", {"inputs": [fp32_input(X)]})[0] == 200
    assert infer(server, "hp2", {"inputs": []})[0] == 400
    text = scrape(server, "/metrics")
    assert ':tensorflow:serving:request_count{model_name="hp2",status="OK"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="hp2",status="INVALID_ARGUMENT"} 1' in text
    assert 'API="ModelInfer",entrypoint="REST"' in text
    large = {"inputs": [fp32_input([1.0] * 2000, shape=(2000, 1))]}
    status, _h, body = infer(server, "hp2", large)
    size = len(json.dumps(large).encode())
    message = f"Request body of {size} bytes exceeds the limit of 4096 bytes"
    assert (status, json.loads(body)) == (429, {"error": message})
