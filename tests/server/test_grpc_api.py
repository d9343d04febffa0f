"""gRPC API against the in-process server through the tensorflow-serving-api stubs; REST and gRPC agree."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    regression_pb2,
)

from tests.helpers import call_json, predict_request, prediction_stub, to_numpy


@pytest.fixture
def server(models_server):
    """The session's in-process server: hp2 (label "stable") and hp2tf2, a UNIX socket, health on."""
    return models_server


@pytest.fixture(scope="module")
def channel(models_server):
    with grpc.insecure_channel(models_server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_stub(channel)


def examples_input(target, *xs, context=None):
    lst = target.example_list_with_context if context else target.example_list
    if context:
        for k, v in context.items():
            lst.context.features.feature[k].float_list.value.append(v)
    for x in xs:
        lst.examples.add().features.feature["x"].float_list.value.append(x)


@pytest.mark.parametrize("model", ["hp2", "hp2tf2"])
def test_predict(stub, model):
    resp = stub.Predict(predict_request(model, [[1.0], [3.0]]), timeout=10)
    np.testing.assert_allclose(to_numpy(resp.outputs["y"]), [[2.5], [3.5]])
    assert resp.model_spec.name == model
    assert resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"


def test_request_options_and_their_2_21_handshake_are_accepted_and_change_nothing(stub):
    """tensorflow-serving-api 2.21 adds PredictRequest.RequestOptions.handshake; nothing in TF Serving's
    open source reads request_options (they steer its internal streaming servables), so a Predict
    carrying them answers as one without them."""
    plain = stub.Predict(predict_request("hp2tf2", [[1.0], [3.0]]), timeout=10)
    req = predict_request("hp2tf2", [[1.0], [3.0]])
    req.request_options.handshake.estimated_payload_bytes = 4096
    req.request_options.client_id = b"client-7"
    assert req.request_options.HasField("handshake")
    with_options = stub.Predict(req, timeout=10)
    assert with_options == plain
    np.testing.assert_allclose(to_numpy(with_options.outputs["y"]), [[2.5], [3.5]])


def test_large_requests_are_decoded_in_the_pool_with_the_same_answers(stub):
    from pyserving.protocols.grpc import servicers

    x = np.arange(30000, dtype=np.float32).reshape(-1, 1)
    req = predict_request("hp2tf2", x)
    assert req.ByteSize() > servicers.INLINE_REQUEST_BYTES
    np.testing.assert_allclose(to_numpy(stub.Predict(req, timeout=30).outputs["y"]), x * 0.5 + 2)


def test_predict_by_version_label_and_output_filter(stub):
    req = predict_request("hp2", [[1.0]], signature="predict_x_y_y2", label="stable")
    req.output_filter.append("y2")
    resp = stub.Predict(req, timeout=10)
    assert list(resp.outputs) == ["y2"]
    np.testing.assert_allclose(to_numpy(resp.outputs["y2"]), [[3.5]])


def test_rest_and_grpc_answer_alike(server, stub):
    x = [[0.1], [7.0], [-3.5]]
    grpc_out = to_numpy(stub.Predict(predict_request("hp2tf2", x), timeout=10).outputs["y"])
    rest_out = call_json(server, "POST", "/v1/models/hp2tf2:predict", {"instances": x}, timeout=10)[1]["predictions"]
    np.testing.assert_array_equal(grpc_out, np.array(rest_out, dtype=np.float32))


def test_classify_regress_multi_inference(stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "hp2", "classify_x_to_y_with_classes"
    examples_input(req.input, 1.0, 3.0)
    resp = stub.Classify(req, timeout=10)
    got = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
    assert got == [[("half_plus_two", 2.5)], [("half_plus_two", 3.5)]]
    assert resp.model_spec.signature_name == "classify_x_to_y_with_classes"

    req = regression_pb2.RegressionRequest()
    req.model_spec.name, req.model_spec.signature_name = "hp2", "regress_x_to_y2"
    examples_input(req.input, 1.0, 4.0)
    assert [r.value for r in stub.Regress(req, timeout=10).result.regressions] == [3.5, 5.0]

    req = regression_pb2.RegressionRequest()
    req.model_spec.name, req.model_spec.signature_name = "hp2", "regress_x_to_y"
    examples_input(req.input, 4.0, context={"x": 1.0})  # the example's x wins over the context's
    assert [r.value for r in stub.Regress(req, timeout=10).result.regressions] == [4.0]

    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                        ("regress_x_to_y2", "tensorflow/serving/regress")):
        task = req.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "hp2", sig, method
    examples_input(req.input, 2.0)
    resp = stub.MultiInference(req, timeout=10)
    assert resp.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert resp.results[1].regression_result.regressions[0].value == 4.0


def test_metadata(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "hp2"
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, timeout=10)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sig_map)
    assert sig_map.signature_def["serving_default"].inputs["x"].name == "x:0"
    assert resp.model_spec.version.value == 1


def test_model_status(channel):
    ms = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "hp2"
    resp = ms.GetModelStatus(req, timeout=10)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in resp.model_version_status] == [(1, available)]
    req.model_spec.name = "missing"
    with pytest.raises(grpc.RpcError) as err:
        ms.GetModelStatus(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "Could not find any versions of model missing"


@pytest.mark.parametrize("request_fn,code,message", [
    (lambda: predict_request("nope", [[1.0]]), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    (lambda: predict_request("hp2", [[1.0]], version=5), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(hp2, 5)"),
    (lambda: predict_request("hp2", [[1.0]], label="zzz"), grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: zzz"),
    (lambda: predict_request("hp2", [[1.0]], signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    (lambda: predict_request("hp2tf2", [[1.0]], dtype=np.float64), grpc.StatusCode.INVALID_ARGUMENT,
     "Expects arg[0] to be float but double is provided"),
    (lambda: predict_request("hp2tf2", [[1.0, 2.0, 3.0]], signature="dot"), grpc.StatusCode.INVALID_ARGUMENT,
     "Matrix size-incompatible"),
    (lambda: predict_request("", [[1.0]]), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec name"),
])
def test_predict_errors_have_tf_serving_codes(stub, request_fn, code, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request_fn(), timeout=10)
    assert err.value.code() == code
    assert message in err.value.details()
    assert stub.Predict(predict_request("hp2", [[1.0]]), timeout=10).outputs["y"].float_val == [2.5]


def test_wrong_input_name_and_bad_tensor(stub):
    req = predict_request("hp2", [[1.0]])
    req.inputs["z"].CopyFrom(req.inputs["x"])
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature: 2!=1" in err.value.details()
    assert "Sent extra: {z}" in err.value.details()
    req = predict_request("hp2", [[1.0]])
    req.inputs["x"].tensor_content = b"\x00\x01\x02"
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.flags("grpc_socket_path", "enable_grpc_healthcheck_service")
def test_unix_socket_and_health(server):
    with grpc.insecure_channel(f"unix:{server.socket}") as ch:
        resp = prediction_stub(ch).Predict(predict_request("hp2", [[2.0]]), timeout=10)
        assert resp.outputs["y"].float_val == [3.0]
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = health_pb2_grpc.HealthStub(ch)
        got = health.Check(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"), timeout=10)
        assert got.status == health_pb2.HealthCheckResponse.SERVING


def test_reload_config_over_grpc(exported, serve):
    srv = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=hp2"], rest=False)
    with grpc.insecure_channel(srv.grpc_target) as ch:
        ms = model_service_pb2_grpc.ModelServiceStub(ch)
        req = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(f'''model_config_list {{
            config {{ name: "other" base_path: "{exported / 'hp2tf2'}" model_platform: "tensorflow" }}
        }}''', req.config)
        resp = ms.HandleReloadConfigRequest(req, timeout=60)
        assert resp.status.error_code == 0
        stub = prediction_stub(ch)
        assert stub.Predict(predict_request("other", [[2.0]]), timeout=10).outputs["y"].float_val == [3.0]
        # hp2 left the config: it is unloaded
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(predict_request("hp2", [[2.0]]), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        bad = model_management_pb2.ReloadConfigRequest()
        text_format.Parse('model_config_list { config { name: "x" base_path: "relative/path" '
                          'model_platform: "tensorflow" } }', bad.config)
        with pytest.raises(grpc.RpcError) as err:
            ms.HandleReloadConfigRequest(bad, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.Predict(predict_request("other", [[2.0]]), timeout=10).outputs["y"].float_val == [3.0]


@pytest.mark.parametrize("model,code", [("nope", grpc.StatusCode.NOT_FOUND), ("hp2", grpc.StatusCode.INVALID_ARGUMENT)])
def test_the_model_is_resolved_before_a_malformed_tensor_is_read(stub, model, code):
    # predict_util.cc: the servable is found first, so an unknown model is NOT_FOUND whatever its
    # inputs hold; a known one answers INVALID_ARGUMENT for dims past int64 (never INTERNAL).
    request = predict_request(model, [[1.0]])
    del request.inputs["x"].tensor_shape.dim[:]
    for size in (2**40, 2**40, 0, 1):
        request.inputs["x"].tensor_shape.dim.add().size = size
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=10)
    assert err.value.code() == code


@pytest.mark.parametrize("model,code", [
    ("nope", grpc.StatusCode.NOT_FOUND),  # the model is looked up before the input is read
    ("hp2", grpc.StatusCode.INVALID_ARGUMENT),  # then the signature, then "Input is empty."
])
def test_classify_with_no_input_is_judged_after_the_model(stub, model, code):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = model, "classify_x_to_y"
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(request, timeout=10)
    assert err.value.code() == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert err.value.details() == "Input is empty."
