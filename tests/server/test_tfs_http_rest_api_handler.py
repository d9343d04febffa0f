"""TF Serving's tensorflow_serving/model_servers/http_rest_api_handler_test.cc, ported case by case.

Each case's id is the TF Serving test it comes from. TF Serving's fixture serves half_plus_two
as model "saved_model_half_plus_two_2_versions", version policy `specific {123}`, with the label
"Version_Label" -> 123; so does this one, from TF Serving's own test SavedModel, on an in-process
server whose REST port takes the requests HttpRestApiHandler::ProcessRequest gets there. A
status is checked by its HTTP code (http_server.cc ToHTTPStatusCode: INVALID_ARGUMENT 400,
NOT_FOUND 404) and its message by HasSubstr, as there; answers by JSON equality (CompareJson).
"""
from __future__ import annotations

import json

import pytest

from pyserving.protocols import routes
from tests.helpers import SHARED_TESTDATA, call, wait_for, write_config

pytestmark = pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")

MODEL = "saved_model_half_plus_two_2_versions"
VERSION = 123
LABEL = "Version_Label"
UINT64_MAX = 2**64 - 1
AVAILABLE_123 = {"model_version_status": [
    {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    # As the C++ test: serve the model, then reload the config with the version label map (a label
    # at start-up would name a version not loaded yet, which TF Serving refuses without a flag).
    policy = f'model_version_policy {{ specific {{ versions: {VERSION} }} }} '
    config = write_config(tmp_path_factory.mktemp("handler") / "models.config",
                          {MODEL: (SHARED_TESTDATA / MODEL, policy)})
    server = serve_module([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    labelled = policy + f'version_labels {{ key: "{LABEL}" value: {VERSION} }}'
    write_config(config, {MODEL: (SHARED_TESTDATA / MODEL, labelled)})
    wait_for(lambda: call(server, "GET", f"/v1/models/{MODEL}/labels/{LABEL}/metadata")[0] == 200,
             what="the label map reloaded", timeout=30)
    return server


def process_request(server, method: str, path: str, body: str = ""):
    """ProcessRequest over HTTP: (HTTP status, headers, parsed JSON answer)."""
    status, headers, text = call(server, method, path, raw=body.encode() if method == "POST" else None)
    return status, headers, json.loads(text)


@pytest.mark.parametrize("path,matches", [
    pytest.param("/v1/models", True, id="kPathRegex-1"),
    pytest.param("/statuspage", False, id="kPathRegex-2"),
    pytest.param("/index", False, id="kPathRegex-3"),
])
def test_path_regex(server, path, matches):
    assert bool(routes.V1_RE.fullmatch(path)) == matches
    # What the regex decides on the wire: /v1 paths reach the handler (JSON), others get libevent's 404 page.
    status, headers, text = call(server, "GET", path)
    assert (headers["Content-Type"] == "application/json") == matches
    if not matches:
        assert status == 404 and "<TITLE>404 Not Found</TITLE>" in text


@pytest.mark.parametrize("method,path,substring", [
    pytest.param("GET", "/v1/foo", "Malformed request", id="UnsupportedApiCalls-1"),
    pytest.param("POST", "/v1/foo", "Malformed request", id="UnsupportedApiCalls-2"),
    pytest.param("GET", "/v1/models", "Missing model name", id="UnsupportedApiCalls-3"),
    pytest.param("GET", "/v1/models/debug/model_name", "Malformed request", id="UnsupportedApiCalls-4"),
    pytest.param("POST", "/v1/models", "Malformed request", id="UnsupportedApiCalls-5"),
    pytest.param("GET", "/v1/models/foo:predict", "Malformed request", id="UnsupportedApiCalls-6"),
    pytest.param("GET", "/v1/models/foo/version/50:predict", "Malformed request", id="UnsupportedApiCalls-7"),
    pytest.param("POST", "/v1/models/foo/version/50:regress", "Malformed request", id="UnsupportedApiCalls-8"),
    pytest.param("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request", id="UnsupportedApiCalls-9"),
    pytest.param("POST", f"/v1/models/foo/versions/{UINT64_MAX}:regress", "Failed to convert version",
                 id="UnsupportedApiCalls-10"),
    pytest.param("POST", "/v1/models/foo/metadata", "Malformed request", id="UnsupportedApiCalls-11"),
    pytest.param("POST", "/v1/models/foo/label/some_label:regress", "Malformed request", id="UnsupportedApiCalls-12"),
    pytest.param("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request",
                 id="UnsupportedApiCalls-13"),
    pytest.param("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request",
                 id="UnsupportedApiCalls-14"),
])
def test_unsupported_api_calls(server, method, path, substring):
    status, _headers, body = process_request(server, method, path)
    assert status == 400 and substring in body["error"]


@pytest.mark.parametrize("path", [
    pytest.param("/v1/models/foo:predict", id="PredictModelNameVersionErrors-1"),  # 'foo' is no model
    pytest.param("/v1/models/foo/versions/50:predict", id="PredictModelNameVersionErrors-2"),
    # A valid model name with 99 stuck to it: no such model either.
    pytest.param(f"/v1/models/{MODEL}99:predict", id="PredictModelNameVersionErrors-3"),
])
def test_predict_model_name_version_errors(server, path):
    status, _headers, body = process_request(server, "POST", path, '{ "instances": [1] }')
    assert status == 404 and "error" in body


@pytest.mark.parametrize("path,body,substring", [
    pytest.param(f"/v1/models/{MODEL}:predict", "", "JSON Parse error: The document is empty",
                 id="PredictRequestErrors-1"),
    pytest.param(f"/v1/models/{MODEL}:predict", "instances = [1, 2]", "JSON Parse error: Invalid value",
                 id="PredictRequestErrors-2"),
    pytest.param(f"/v1/models/{MODEL}:predict", '{ "instances": ["x", "y"] }', "not of expected type: float",
                 id="PredictRequestErrors-3"),
    pytest.param(f"/v1/models/{MODEL}/labels/Version_Nonexistent:predict", '{ "instances": ["x", "y"] }',
                 "Unrecognized servable version label", id="PredictRequestErrors-4"),
    pytest.param(f"/v1/models/{MODEL}:predict", '{ "signature_name": 100 }',
                 "'signature_name' key must be a string value.", id="PredictRequestErrors-5"),
])
def test_predict_request_errors(server, path, body, substring):
    status, _headers, answer = process_request(server, "POST", path, body)
    assert status == 400 and substring in answer["error"]


@pytest.mark.parametrize("method,path,body,want", [
    # Query latest version.
    pytest.param("POST", f"/v1/models/{MODEL}:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
                 {"predictions": [[2.5, 3.0], [3.5, 4.0]]}, id="Predict-1"),
    # Query specific versions.
    pytest.param("POST", f"/v1/models/{MODEL}/versions/{VERSION}:predict", '{"instances": [1.0, 2.0]}',
                 {"predictions": [2.5, 3.0]}, id="Predict-2"),
    # Query specific versions using a version label.
    pytest.param("POST", f"/v1/models/{MODEL}/labels/{LABEL}:predict", '{"instances": [1.0, 2.0]}',
                 {"predictions": [2.5, 3.0]}, id="Predict-3"),
    # Query specific versions with explicit signature_name.
    pytest.param("POST", f"/v1/models/{MODEL}/versions/{VERSION}:predict",
                 '{"signature_name": "serving_default", "instances": [3.0, 4.0]}', {"predictions": [3.5, 4.0]},
                 id="Predict-4"),
    # ... and columnar inputs.
    pytest.param("POST", f"/v1/models/{MODEL}/versions/{VERSION}:predict",
                 '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', {"outputs": [3.5, 4.0]},
                 id="Predict-5"),
    pytest.param("POST", f"/v1/models/{MODEL}:regress",
                 '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }', {"results": [42]},
                 id="Regress-1"),
    pytest.param("POST", f"/v1/models/{MODEL}/versions/{VERSION}:regress",
                 '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }', {"results": [42]},
                 id="Regress-2"),
    pytest.param("POST", f"/v1/models/{MODEL}/labels/{LABEL}:regress",
                 '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }', {"results": [42]},
                 id="Regress-3"),
    pytest.param("POST", f"/v1/models/{MODEL}:classify",
                 '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }', {"results": [[["", 12]]]},
                 id="Classify-1"),
    pytest.param("POST", f"/v1/models/{MODEL}/labels/{LABEL}:classify",
                 '{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }', {"results": [[["", 7]]]},
                 id="Classify-2"),
    # Status of all versions, of one version, and with a label (which status ignores).
    pytest.param("GET", f"/v1/models/{MODEL}", "", AVAILABLE_123, id="GetStatus-1"),
    pytest.param("GET", f"/v1/models/{MODEL}/versions/{VERSION}", "", AVAILABLE_123, id="GetStatus-2"),
    pytest.param("GET", f"/v1/models/{MODEL}/labels/{LABEL}", "", AVAILABLE_123, id="GetStatus-3"),
    # TF Serving's reference answer, servables/tensorflow/testdata/saved_model_half_plus_two_2_versions_metadata.json.
    pytest.param("GET", f"/v1/models/{MODEL}/metadata", "",
                 json.loads((SHARED_TESTDATA / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
                 if SHARED_TESTDATA.is_dir() else None, id="GetModelMetadata"),
])
def test_answers(server, method, path, body, want):
    status, headers, answer = process_request(server, method, path, body)
    assert (status, answer) == (200, want)
    assert headers["Content-Type"] == "application/json"  # the one header ProcessRequest adds
