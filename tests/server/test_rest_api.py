"""REST API against the in-process server: every endpoint, and bad input answered as TF Serving does."""
from __future__ import annotations

import base64
import json

import pytest

from tests.helpers import call, call_json


@pytest.fixture
def server(models_server):
    """The session's in-process server: hp2 (label "stable") and hp2tf2, CORS on."""
    return models_server


def test_status_lists_versions_with_tf_serving_shape(server):
    status, body = call_json(server, "GET", "/v1/models/hp2")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}
    assert call_json(server, "GET", "/v1/models/hp2/versions/1")[1] == body
    assert call_json(server, "GET", "/v1/models/hp2/labels/stable")[1] == body


def test_status_errors(server):
    assert call_json(server, "GET", "/v1/models/hp2/versions/7") == (
        404, {"error": "Could not find version 7 of model hp2"})
    assert call_json(server, "GET", "/v1/models/nope") == (
        404, {"error": "Could not find any versions of model nope"})
    assert call_json(server, "GET", "/v1/models") == (400, {"error": "Missing model name in request."})
    assert call_json(server, "GET", "/v1/models/hp2/versions/x1") == (
        400, {"error": "Malformed request: GET /v1/models/hp2/versions/x1"})
    assert call_json(server, "DELETE", "/v1/models/hp2")[0] == 400


def test_metadata_has_signature_defs(server):
    status, body = call_json(server, "GET", "/v1/models/hp2/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "hp2", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(sigs)
    assert sigs["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sigs["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"
    tf2 = call_json(server, "GET", "/v1/models/hp2tf2/versions/1/metadata")[1]
    x = tf2["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
    assert x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}


@pytest.mark.parametrize("model", ["hp2", "hp2tf2"])
def test_predict_row_and_columnar(server, model):
    assert call_json(server, "POST", f"/v1/models/{model}:predict", {"instances": [[1.0], [2.0], [5]]}) == (
        200, {"predictions": [[2.5], [3.0], [4.5]]})
    assert call_json(server, "POST", f"/v1/models/{model}/versions/1:predict", {"inputs": [[1.0], [2.0]]}) == (
        200, {"outputs": [[2.5], [3.0]]})
    assert call_json(server, "POST", f"/v1/models/{model}:predict",
                     {"signature_name": "serving_default", "inputs": {"x": [[4.0]]}}) == (200, {"outputs": [[4.0]]})


def test_large_bodies_and_outputs_are_coded_off_the_event_loop_with_the_same_answers(server):
    from pyserving.protocols import rest

    rows = [[float(i)] for i in range(20000)]
    body = json.dumps({"instances": rows}).encode()
    assert len(body) > rest.INLINE_BODY_BYTES  # decoded in the thread pool
    status, answer = call_json(server, "POST", "/v1/models/hp2tf2:predict", raw=body)
    assert status == 200 and answer["predictions"] == [[0.5 * i + 2.0] for i in range(20000)]
    # a small body with an output large enough to be encoded in the pool: [-1, 1] broadcast
    small = {"inputs": [[float(i) for i in range(rest.INLINE_OUTPUT_ELEMENTS + 1)]]}
    status, answer = call_json(server, "POST", "/v1/models/hp2tf2:predict", small)
    assert status == 200 and len(answer["outputs"][0]) == rest.INLINE_OUTPUT_ELEMENTS + 1


def test_predict_by_label_and_named_row_objects(server):
    assert call_json(server, "POST", "/v1/models/hp2/labels/stable:predict", {"instances": [{"x": [1.0]}]}) == (
        200, {"predictions": [[2.5]]})


def test_predict_multiple_outputs(server):
    status, body = call_json(server, "POST", "/v1/models/hp2:predict",
                             {"signature_name": "predict_x_y_y2", "instances": [[1.0], [3.0]]})
    assert status == 200
    assert body == {"predictions": [{"y": [2.5], "y2": [3.5]}, {"y": [3.5], "y2": [4.5]}]}
    status, body = call_json(server, "POST", "/v1/models/hp2:predict",
                             {"signature_name": "predict_x_y_y2", "inputs": [[1.0]]})
    assert body == {"outputs": {"y": [[2.5]], "y2": [[3.5]]}}


def test_strings_ints_bools_and_b64_round_trip(server):
    raw = bytes([0, 1, 255])
    status, text = call(server, "POST", "/v1/models/hp2tf2:predict", {
        "signature_name": "echo",
        "instances": [{"text": "héllo", "count": 1}, {"text": {"b64": base64.b64encode(raw).decode()}, "count": 3}],
    })[0::2]
    assert status == 200
    rows = json.loads(text)["predictions"]
    b64 = base64.b64encode("héllo".encode()).decode()
    assert rows[0] == {"text": "héllo", "count": 2, "flag": False, "raw_bytes": {"b64": b64}}
    assert rows[1]["raw_bytes"] == {"b64": base64.b64encode(raw).decode()}
    assert rows[1]["count"] == 6 and rows[1]["flag"] is True


def test_floats_print_as_tf_serving_prints_them(server):
    _status, _h, text = call(server, "POST", "/v1/models/hp2:predict",
                             {"instances": [[2.0], [0.2], [float("nan")], [float("inf")]]})
    # whole numbers keep ".0", 0.5*0.2+2 prints shortest, NaN/Infinity are bare tokens
    assert text.replace(" ", "") == '{"predictions":[[3.0],[2.1],[NaN],[Infinity]]}'


def test_classify_and_regress(server):
    assert call_json(server, "POST", "/v1/models/hp2:classify", {
        "signature_name": "classify_x_to_y_with_classes", "examples": [{"x": 1.0}, {"x": [3.0]}]}) == (
        200, {"results": [[["half_plus_two", 2.5]], [["half_plus_two", 3.5]]]})
    assert call_json(server, "POST", "/v1/models/hp2:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}) == (200, {"results": [[["", 2.5]]]})
    assert call_json(server, "POST", "/v1/models/hp2:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}) == (200, {"results": [2.5, 3.0]})
    # context features merge into every example
    assert call_json(server, "POST", "/v1/models/hp2/versions/1:regress", {
        "signature_name": "regress_x_to_y2",
        "context": {"x": 1.0}, "examples": [{}, {"x": 4.0}]}) == (200, {"results": [3.5, 5.0]})


@pytest.mark.parametrize("path,body,status,message", [
    ("/v1/models/hp2:predict", {"instances": [["a"]]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String "
     "is not of expected type: float"),
    ("/v1/models/hp2tf2:predict", {"instances": [[1.0], [2.0, 3.0]]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 1 but got: 2"),
    ("/v1/models/hp2tf2:predict", {"signature_name": "dot", "instances": [[1.0, 2.0, 3.0]]}, 400,
     "Matrix size-incompatible"),
    ("/v1/models/hp2:predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("/v1/models/hp2:predict", {"signature_name": "nope", "instances": [[1.0]]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/v1/models/hp2:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/hp2:predict", {"instances": [[1.0]], "inputs": [[1.0]]}, 400,
     "expecting only one of 'inputs' or 'instances'"),
    ("/v1/models/nope:predict", {"instances": [[1.0]]}, 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/hp2/versions/9:predict", {"instances": [[1.0]]}, 404,
     "Servable not found for request: Specific(hp2, 9)"),
    ("/v1/models/hp2/labels/canary:predict", {"instances": [[1.0]]}, 400,
     "Unrecognized servable version label: canary"),
    ("/v1/models/hp2tf2:predict", {"signature_name": "echo", "instances": [{"text": "a"}]}, 400,
     "must only have keys: count,text"),
    ("/v1/models/hp2tf2:predict", {"signature_name": "echo", "inputs": {"text": [{"b64": "%%%"}], "count": [1]}}, 400,
     "Unable to base64 decode"),
    # classifier.cc PreProcessClassification: without --enable_signature_method_name_check the
    # predict signature is judged by its inputs and outputs.
    ("/v1/models/hp2:classify", {"examples": [{"x": 1.0}]}, 400, "No classification inputs found in SignatureDef: "),
    ("/v1/models/hp2:regress", {"signature_name": "regress_x_to_y", "examples": []}, 400,
     "'examples' value is an empty array"),
    ("/v1/models/hp2:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [None]}]}, 400,
     "unexpected JSON type: Null"),
])
def test_bad_requests_get_tf_serving_errors_and_server_keeps_serving(server, path, body, status, message):
    got_status, headers, text = call(server, "POST", path, body)
    assert got_status == status, text
    assert headers["Content-Type"].startswith("application/json")
    assert message in json.loads(text)["error"]
    assert call_json(server, "POST", "/v1/models/hp2:predict", {"instances": [[1.0]]}) == (
        200, {"predictions": [[2.5]]})


def test_shapes_are_left_to_the_graph_as_tf_serving_does(server):
    # TF Serving's own docs send a flat list to half_plus_two ([-1, 1]); the graph broadcasts.
    assert call_json(server, "POST", "/v1/models/hp2tf2:predict", {"instances": [1.0, 2.0]}) == (
        200, {"predictions": [2.5, 3.0]})
    dot = {"signature_name": "dot", "instances": [[1.0, 2.0]]}
    assert call_json(server, "POST", "/v1/models/hp2tf2:predict", dot) == (200, {"predictions": [[3.0]]})


def test_malformed_json_and_non_v1_paths(server):
    status, body = call_json(server, "POST", "/v1/models/hp2:predict", raw=b'{"instances": [1.0')
    assert status == 400 and body["error"].startswith("JSON Parse error:") and "at offset: " in body["error"]
    status, body = call_json(server, "POST", "/v1/models/hp2:predict", raw=b"")
    assert (status, body) == (400, {"error": "JSON Parse error: The document is empty"})
    status, headers, text = call(server, "GET", "/healthz")
    assert status == 404 and "Not Found" in text and not headers["Content-Type"].startswith("application/json")


@pytest.mark.flags("rest_api_enable_cors_support")
def test_cors_headers_and_preflight(server):
    status, headers, _ = call(server, "GET", "/v1/models/hp2")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "POST, GET"
    status, _h, text = call(server, "OPTIONS", "/v1/models/hp2:predict", headers={"Origin": "http://example.test"})
    assert status == 200 and text == ""
    status, _h, text = call(server, "OPTIONS", "/v1/models/hp2:predict")
    assert status == 400 and json.loads(text) == {"error": "Origin header is missing in CORS preflight"}


@pytest.mark.flags("monitoring_config_file")
def test_an_added_route_answers_beside_v1_and_monitoring_whose_answers_stay(exported, tmp_path, serve):
    """Another API registers a route on the live REST port (a /v3 readiness, say; the Open
    Inference Protocol's /v2 is registered so, at start-up): it answers, and every answer the
    port gave before stays byte for byte, with the monitoring path under /v1, where it takes GET
    before /v1's routes do."""
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/v1/models/prometheus" }')
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=hp2",
                    f"--monitoring_config_file={monitoring}", "--rest_api_enable_cors_support=true"])
    requests = [
        ("POST", "/v1/models/hp2:predict", b'{"instances": [[1.0]]}'),
        ("GET", "/v1/models/hp2", None),
        ("GET", "/v1/models/hp2/versions/1/metadata", None),
        ("POST", "/v1/models/prometheus", b"{}"),  # the monitoring path takes GET only
        ("DELETE", "/v1/models/hp2", None),
        ("GET", "/v1/foo", None),
        ("OPTIONS", "/v1/models/hp2:predict", None),
        ("GET", "/healthz", None),
        ("POST", "/v3/models/hp2/ready", b"{}"),
    ]

    def answers():
        return [(status, dict(headers, Date=None), text)
                for status, headers, text in (call(server, m, p, raw=b) for m, p, b in requests)]

    before = answers()
    assert call(server, "GET", "/v3/models/hp2/ready")[0] == 404
    api = server.model_server.rest

    async def ready(request, match):
        return api.json_response(200, json.dumps({"name": match["name"], "ready": True}))

    api.add_route("GET", r"/v3/models/(?P<name>[^/:]+)/ready", ready)
    status, headers, text = call(server, "GET", "/v3/models/hp2/ready")
    assert (status, json.loads(text)) == (200, {"name": "hp2", "ready": True})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert answers() == before
    assert [status for status, _h, _t in before] == [200, 200, 200, 400, 400, 400, 400, 404, 404]
    status, headers, text = call(server, "GET", "/v1/models/prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain") and ":tensorflow:serving:" in text
