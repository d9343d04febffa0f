"""Interoperability: SavedModels and config files produced by TensorFlow Serving's own project.

Runs only where ../shared/testdata/tfserving exists (the project's own tests stand alone).
In-process server; the bad model and bad config failing start-up (exit 255) are in test_live.py.
"""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from tests.helpers import SHARED_TESTDATA, call_json, from_numpy, predict_request, prediction_stub, to_numpy

pytestmark = pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    tmp = tmp_path_factory.mktemp("tfs")
    good = (SHARED_TESTDATA / "good_model_config.txt").read_text()
    good = good.replace("${TEST_HALF_PLUS_TWO_DIR}", str(SHARED_TESTDATA / "saved_model_half_plus_two_cpu"))
    good = good.replace("${TEST_HALF_PLUS_THREE_DIR}", str(SHARED_TESTDATA / "saved_model_half_plus_three"))
    more = (
        f'config {{ name: "two_versions" base_path: "{SHARED_TESTDATA / "saved_model_half_plus_two_2_versions"}" '
        'model_platform: "tensorflow" model_version_policy { all {} } }\n'
        f'config {{ name: "tf2" base_path: "{SHARED_TESTDATA / "saved_model_half_plus_two_tf2_cpu"}" '
        'model_platform: "tensorflow" }\n'
        f'config {{ name: "counter" base_path: "{SHARED_TESTDATA / "saved_model_counter"}" '
        'model_platform: "tensorflow" }\n'
    )
    config = tmp / "models.config"
    config.write_text(good.rstrip().rstrip("}") + more + "}\n")
    return serve_module([f"--model_config_file={config}"])


def test_good_config_models_predict_classify_regress(server):
    assert call_json(server, "POST", "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})
    assert call_json(server, "POST", "/v1/models/half_plus_three:predict", {"instances": [1.0]}) == (
        200, {"predictions": [3.5]})
    assert call_json(server, "POST", "/v1/models/half_plus_two:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}) == (200, {"results": [[["", 2.5]]]})
    assert call_json(server, "POST", "/v1/models/half_plus_two:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [3.0]})
    assert call_json(server, "POST", "/v1/models/tf2:predict", {"instances": [[1.0]]})[1] == {"predictions": [[2.5]]}


def test_metadata_matches_tf_serving_reference(server):
    reference = json.loads((SHARED_TESTDATA / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
    status, body = call_json(server, "GET", "/v1/models/two_versions/versions/123/metadata")
    assert status == 200
    body["model_spec"]["name"] = reference["model_spec"]["name"]
    assert body == reference


def half_plus_two_variables(version_dir) -> dict[str, float]:
    """a, b and c of a half_plus_two export (saved_model_half_plus_two.py: y = a*x + b,
    y3 = a*x2 + c), read from its checkpoint, not through the server."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    return {name: float(reader.get_tensor(name)) for name in ("a", "b", "c")}


def test_two_versions_served_side_by_side(server):
    status, body = call_json(server, "GET", "/v1/models/two_versions")
    versions = [(s["version"], s["state"]) for s in body["model_version_status"]]
    assert versions == [("124", "AVAILABLE"), ("123", "AVAILABLE")]
    xs = [1.0, 2.0, 5.0]
    for version in (123, 124):
        v = half_plus_two_variables(SHARED_TESTDATA / "saved_model_half_plus_two_2_versions" / f"{version:08d}")
        path = f"/v1/models/two_versions/versions/{version}"
        assert call_json(server, "POST", path + ":predict", {"instances": [[x] for x in xs]}) == (
            200, {"predictions": [[v["a"] * x + v["b"]] for x in xs]})
        assert call_json(server, "POST", path + ":regress", {
            "signature_name": "regress_x_to_y2", "examples": [{"x": x} for x in xs]}) == (
            200, {"results": [v["a"] * x + v["c"] for x in xs]})
        # predict_impl_test.cc (PredictionWithNamedRegressionSignature): Predict runs a regress
        # signature too; x2 = 2 gives a * 2 + c.
        assert call_json(server, "POST", path + ":predict", {
            "signature_name": "regress_x2_to_y3", "inputs": {"inputs": [[2.0]]}}) == (
            200, {"outputs": [[v["a"] * 2.0 + v["c"]]]})
        with grpc.insecure_channel(server.grpc_target) as channel:
            reply = prediction_stub(channel).Predict(predict_request("two_versions", [[1.0]], version=version),
                                                     timeout=30)
        assert reply.model_spec.version.value == version
        assert to_numpy(reply.outputs["y"]).tolist() == [[v["a"] * 1.0 + v["b"]]]


def counter_predict(channel, signature: str, delta=None, output_filter=()) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "counter", signature
    request.model_spec.version.value = 123
    if delta is not None:
        request.inputs["delta"].CopyFrom(from_numpy(np.array(delta, np.float32)))
    request.output_filter.extend(output_filter)
    return prediction_stub(channel).Predict(request, timeout=30)


def counter_response(signature: str, value: float) -> predict_pb2.PredictResponse:
    """The answer predict_impl_test.cc (PredictionWithCustomizedSignatures) expects: the model
    spec, and "output" as a scalar float with an empty tensor_shape."""
    response = predict_pb2.PredictResponse()
    response.model_spec.name, response.model_spec.signature_name = "counter", signature
    response.model_spec.version.value = 123
    output = response.outputs["output"]
    output.dtype = types_pb2.DT_FLOAT
    output.tensor_shape.SetInParent()
    output.float_val.append(value)
    return response


def test_stateful_counter_model(server):
    # predict_impl_test.cc calls get_counter, incr_counter, reset_counter, incr_counter (with an
    # output filter) and incr_counter_by(3) in order, and expects 0, 1, 0, 1 and 4.
    with grpc.insecure_channel(server.grpc_target) as channel:
        assert counter_predict(channel, "get_counter") == counter_response("get_counter", 0)
        assert counter_predict(channel, "incr_counter") == counter_response("incr_counter", 1)
        assert counter_predict(channel, "reset_counter") == counter_response("reset_counter", 0)
        assert counter_predict(channel, "incr_counter", output_filter=["output"]) == counter_response(
            "incr_counter", 1)
        assert counter_predict(channel, "incr_counter_by", delta=3.0) == counter_response("incr_counter_by", 4)
    # The state is the version's: REST sees the same counter.
    assert call_json(server, "POST", "/v1/models/counter:predict", {
        "signature_name": "incr_counter_by", "inputs": {"delta": 2.0}}) == (200, {"outputs": 6.0})
    status, body = call_json(server, "GET", "/v1/models/counter/metadata")
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert status == 200 and sorted(signatures) == ["get_counter", "incr_counter", "incr_counter_by", "reset_counter"]
