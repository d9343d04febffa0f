"""Classify, Regress and MultiInference on a TF2 SavedModel, whose every signature says
tensorflow/serving/predict: TF Serving (classifier.cc, regressor.cc, multi_inference.cc) judges
them by their inputs and outputs unless --enable_signature_method_name_check is set, in which
case it refuses them. Both settings, over REST and gRPC, against in-process servers."""
from __future__ import annotations

import grpc
import pytest
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

from tests.helpers import call_json, prediction_stub

PREDICT, CLASSIFY, REGRESS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                              "tensorflow/serving/regress")


@pytest.fixture(scope="module")
def checked(serve_module, exported):
    """hp2tf2 with --enable_signature_method_name_check."""
    return serve_module([f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2",
                         "--enable_signature_method_name_check=true"])


def _input(target, *xs):
    for x in xs:
        target.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def test_rest_classify_and_regress_on_a_tf2_model(models_server):
    examples = [{"x": 1.0}, {"x": [3.0]}]
    assert call_json(models_server, "POST", "/v1/models/hp2tf2:classify", {
        "signature_name": "classify_x_to_y", "examples": examples}) == (200, {"results": [[["", 2.5]], [["", 3.5]]]})
    assert call_json(models_server, "POST", "/v1/models/hp2tf2:regress", {
        "signature_name": "regress_x_to_y", "examples": examples}) == (200, {"results": [2.5, 3.5]})


def test_grpc_classify_regress_and_multi_inference_on_a_tf2_model(models_server):
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        stub = prediction_stub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name, request.model_spec.signature_name = "hp2tf2", "classify_x_to_y"
        _input(request.input, 1.0, 5.0)
        response = stub.Classify(request, timeout=10)
        assert [c.classes[0].score for c in response.result.classifications] == [2.5, 4.5]
        assert response.model_spec.signature_name == "classify_x_to_y" and response.model_spec.version.value == 1

        request = regression_pb2.RegressionRequest()
        request.model_spec.name, request.model_spec.signature_name = "hp2tf2", "regress_x_to_y"
        _input(request.input, 2.0)
        assert [r.value for r in stub.Regress(request, timeout=10).result.regressions] == [3.0]

        request = inference_pb2.MultiInferenceRequest()
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "hp2tf2", "regress_x_to_y", REGRESS
        _input(request.input, 4.0)
        assert stub.MultiInference(request, timeout=10).results[0].regression_result.regressions[0].value == 4.0
        # Each TF2 signature function has an input placeholder of its own: MultiInference feeds the
        # examples to every task's input tensor (multi_inference.cc at 2.20: a set of input names).
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "hp2tf2", "classify_x_to_y", CLASSIFY
        response = stub.MultiInference(request, timeout=10)
        assert [r.model_spec.signature_name for r in response.results] == ["regress_x_to_y", "classify_x_to_y"]
        assert response.results[0].regression_result.regressions[0].value == 4.0
        assert response.results[1].classification_result.classifications[0].classes[0].score == 4.0


@pytest.mark.parametrize("path,body,message", [
    # A predict-shaped signature is no classifier: its input is not "inputs" (PreProcessClassification).
    ("/v1/models/hp2tf2:classify", {"examples": [{"x": 1.0}]}, "No classification inputs found in SignatureDef: "),
    ("/v1/models/hp2tf2:regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
     "No regression outputs found in SignatureDef: "),
    ("/v1/models/hp2tf2:regress", {"signature_name": "echo", "examples": [{"x": 1.0}]}, "Expected one input Tensor."),
    ("/v1/models/hp2tf2:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]},
     "No signature was found with the name: nope"),
])
def test_signatures_that_do_not_fit_are_refused_by_their_shape(models_server, path, body, message):
    status, answer = call_json(models_server, "POST", path, body)
    assert status == 400 and answer["error"].startswith(message)


@pytest.mark.flags("enable_signature_method_name_check")
def test_with_the_method_name_check_tf2_signatures_are_refused(checked):
    status, answer = call_json(checked, "POST", "/v1/models/hp2tf2:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]})
    assert (status, answer["error"]) == (
        400, f"Expected classification signature method_name to be {CLASSIFY}. Was: {PREDICT}")
    status, answer = call_json(checked, "POST", "/v1/models/hp2tf2:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})
    assert (status, answer["error"]) == (
        400, f"Expected regression signature method_name to be {REGRESS}. Was: {PREDICT}")
    with grpc.insecure_channel(checked.grpc_target) as channel:
        request = inference_pb2.MultiInferenceRequest()
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "hp2tf2", "regress_x_to_y", REGRESS
        _input(request.input, 1.0)
        with pytest.raises(grpc.RpcError) as err:
            prediction_stub(channel).MultiInference(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == f"Expected regression signature method_name to be {REGRESS}. Was: {PREDICT}"
    # Predict accepts the predict method name either way.
    assert call_json(checked, "POST", "/v1/models/hp2tf2:predict", {"instances": [[1.0]]}) == (
        200, {"predictions": [[2.5]]})


@pytest.mark.parametrize("tasks,code,message", [
    ([("classify_x_to_y", CLASSIFY), ("classify_x_to_y", CLASSIFY)], "INVALID_ARGUMENT",
     "Duplicate evaluation of signature: classify_x_to_y"),
    ([("nope", CLASSIFY)], "INVALID_ARGUMENT", "Requested signature not found in model graph: nope"),
    ([("classify_x_to_y", PREDICT)], "UNIMPLEMENTED", f"Unsupported signature method_name: {PREDICT}"),
])
def test_multi_inference_checks_each_task_in_tf_servings_order(models_server, tasks, code, message):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "hp2tf2", signature, method
    _input(request.input, 1.0)
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            prediction_stub(channel).MultiInference(request, timeout=10)
    assert err.value.code().name == code and err.value.details() == message
