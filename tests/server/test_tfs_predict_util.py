"""TF Serving's tensorflow_serving/servables/tensorflow/predict_util_test.cc, ported case by case.

Each case's id is the TF Serving test it comes from. TF Serving's fixture serves TensorFlow's
half_plus_two test model and the stateful saved_model_counter as "test_model" version 123; so
does this one, from TF Serving's test SavedModels, on in-process servers taking gRPC Predict.
Requests and expected responses are TF Serving's, as text protos, compared whole (EqualsProto).
Not ported: ModelMissingSignatures (TF Serving skips it in its open-source build: bad_half_plus_two
is a SessionBundle, which no open-source server loads) and ThreadPoolOptions (a caller's thread
pools for one Session::Run; no API of the server takes them).
"""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2

from tests.helpers import SHARED_TESTDATA, export_tf1, prediction_stub, write_config

pytestmark = pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")

SPEC = 'model_spec { name: "test_model" version { value: 123 } }'
X_2 = 'inputs { key: "x" value { dtype: DT_FLOAT float_val: 2.0 } }'


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    # TensorFlow's half_plus_two (cc/saved_model/testdata), as TF Serving's testdata holds it at version 123.
    config = write_config(tmp_path_factory.mktemp("predict_util") / "models.config", {
        "test_model": (SHARED_TESTDATA / "saved_model_half_plus_two_2_versions",
                       "model_version_policy { specific { versions: 123 } }")})
    return serve_module([f"--model_config_file={config}"], rest=False)


def predict(server, request_text: str):
    """PredictRequest (text proto) over gRPC: (response, None) or (None, RpcError)."""
    request = text_format.Merge(request_text, predict_pb2.PredictRequest())
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            return prediction_stub(channel).Predict(request, timeout=30), None
        except grpc.RpcError as err:
            return None, err


def response(text: str) -> predict_pb2.PredictResponse:
    return text_format.Parse(text, predict_pb2.PredictResponse())


@pytest.mark.parametrize("request_text,code,substrings", [
    # Empty request is invalid.
    pytest.param("", grpc.StatusCode.INVALID_ARGUMENT, [], id="MissingOrEmptyModelSpec-1"),
    # Model name is not specified.
    pytest.param("model_spec { }", grpc.StatusCode.INVALID_ARGUMENT, [], id="MissingOrEmptyModelSpec-2"),
    # Model name is wrong. TF Serving's unit test runs RunPredict on the servable it looked up by
    # "test_model" whatever the request says, and fails there; a server looks the name up first,
    # so the answer to a request naming no served model is NOT_FOUND (as PredictModelNameVersionErrors
    # in http_rest_api_handler_test.cc asserts for the same request over REST).
    pytest.param('model_spec { name: "test" }', grpc.StatusCode.NOT_FOUND, [], id="MissingOrEmptyModelSpec-3"),
    # The input is empty.
    pytest.param(SPEC, grpc.StatusCode.INVALID_ARGUMENT, [], id="EmptyInputList"),
    pytest.param(f"""{SPEC}
        inputs {{ key: "unknown_key1" value {{ dtype: DT_STRING tensor_shape {{ dim {{ size: 1 }} }}
                                             string_val: "any_value" }} }}
        inputs {{ key: "unknown_key2" value {{ dtype: DT_FLOAT tensor_shape {{ dim {{ size: 1 }} }}
                                             float_val: 1.0 }} }}""", grpc.StatusCode.INVALID_ARGUMENT,
                 ["Sent extra: {unknown_key1,unknown_key2}", "Missing but required: {x}"],
                 id="InputTensorsDontMatchModelSpecInputs"),
    pytest.param(f'{SPEC} inputs {{ key: "x" value {{ dtype: DT_BOOL bool_val: true }} }}',
                 grpc.StatusCode.INVALID_ARGUMENT, ["Expects arg[0] to be float but bool is provided"],
                 id="PredictionInvalidTensor"),
    # Output filter like this doesn't exist.
    pytest.param(f'{SPEC} {X_2} output_filter: "output_filter"', grpc.StatusCode.INVALID_ARGUMENT,
                 ["output tensor alias not found in signature: output_filter"],
                 id="OutputFiltersDontMatchModelSpecOutputs-1"),
    # Duplicate output filter specified.
    pytest.param(f'{SPEC} {X_2} output_filter: "y" output_filter: "y"', grpc.StatusCode.INVALID_ARGUMENT,
                 ["duplicate output tensor alias: y"], id="OutputFiltersDontMatchModelSpecOutputs-3"),
    pytest.param(f"""{SPEC} output_filter: "y"
        inputs {{ key: "x" value {{ dtype: DT_STRING tensor_shape {{ dim {{ size: 1 }} }}
                                  string_val: "any_value" }} }}""",
                 grpc.StatusCode.INVALID_ARGUMENT, ["to be float but string is provided"],
                 id="InputTensorsHaveWrongType"),
])
def test_predict_refused(server, request_text, code, substrings):
    got, error = predict(server, request_text)
    assert got is None and error.code() == code
    assert all(s in error.details() for s in substrings), error.details()


Y_3 = 'outputs { key: "y" value { dtype: DT_FLOAT tensor_shape { } float_val: 3 } }'
DEFAULT_SPEC = 'model_spec { name: "test_model" version { value: 123 } signature_name: "serving_default" }'


@pytest.mark.parametrize("request_text,want", [
    pytest.param(f'{SPEC} {X_2} output_filter: "y"',
                 f"{DEFAULT_SPEC} {Y_3}",
                 id="OutputFiltersDontMatchModelSpecOutputs-2"),
    pytest.param(f"{SPEC} {X_2}",
                 f"{DEFAULT_SPEC} {Y_3}",
                 id="PredictionSuccess"),
    # A regress signature answers Predict too, under its own input and output keys.
    pytest.param("""model_spec { name: "test_model" version { value: 123 } signature_name: "regress_x2_to_y3" }
                    inputs { key: "inputs" value { dtype: DT_FLOAT float_val: 2.0 } }""",
                 """model_spec { name: "test_model" version { value: 123 } signature_name: "regress_x2_to_y3" }
                    outputs { key: "outputs" value { dtype: DT_FLOAT tensor_shape { } float_val: 4 } }""",
                 id="PredictionWithNamedRegressionSignature"),
    # ... and so does a classify signature.
    pytest.param("""model_spec { name: "test_model" version { value: 123 } signature_name: "classify_x2_to_y3" }
                    inputs { key: "inputs" value { dtype: DT_FLOAT float_val: 2.0 } }""",
                 """model_spec { name: "test_model" version { value: 123 } signature_name: "classify_x2_to_y3" }
                    outputs { key: "scores" value { dtype: DT_FLOAT tensor_shape { } float_val: 4 } }""",
                 id="PredictionWithNamedClassificationSignature"),
])
def test_predict(server, request_text, want):
    got, error = predict(server, request_text)
    assert error is None and got == response(want)


def test_prediction_with_customized_signatures(tmp_path, serve):
    """PredictionWithCustomizedSignatures: the stateful counter, called in TF Serving's order on a
    fresh server: get_counter, incr_counter, reset_counter, incr_counter (with an output filter),
    incr_counter_by(3)."""
    config = write_config(tmp_path / "models.config", {"test_model": SHARED_TESTDATA / "saved_model_counter"})
    server = serve([f"--model_config_file={config}"], rest=False)
    calls = [("get_counter", "", 0), ("incr_counter", "", 1), ("reset_counter", "", 0),
             ("incr_counter", 'output_filter: "output"', 1),
             ("incr_counter_by", 'inputs { key: "delta" value { dtype: DT_FLOAT float_val: 3 } }', 4)]
    for signature, extra, value in calls:
        spec = f'model_spec {{ name: "test_model" version {{ value: 123 }} signature_name: "{signature}" }}'
        got, error = predict(server, f"{spec} {extra}")
        assert error is None, (signature, error)
        assert got == response(f'{spec} outputs {{ key: "output" value {{ dtype: DT_FLOAT tensor_shape {{ }} '
                               f'float_val: {value} }} }}'), signature


def build_half_plus_two_with_method_names():
    """half_plus_two (y = 0.5 x + 2) under a predict method name and an unsupported one."""
    import tensorflow as tf

    x = tf.compat.v1.placeholder(tf.float32, name="x")
    y = tf.identity(0.5 * x + 2.0, name="y")
    return {"serving_default": ({"x": x}, {"y": y}, "tensorflow/serving/predict"),
            "unsupported_method": ({"x": x}, {"y": y}, "not/supported/method")}


@pytest.fixture(scope="module")
def method_servers(tmp_path_factory, serve_module):
    """{check: server} for the model above, without and with the method-name check."""
    base = tmp_path_factory.mktemp("method_names") / "m"
    export_tf1(base, 123, build_half_plus_two_with_method_names)
    return {check: serve_module([f"--model_base_path={base}", "--model_name=test_model",
                                 f"--enable_signature_method_name_check={str(check).lower()}"], rest=False)
            for check in (False, True)}


@pytest.mark.parametrize("check", [False, True], ids=["method_name_check=false", "method_name_check=true"])
@pytest.mark.parametrize("signature,ok_with_check", [
    pytest.param("serving_default", True, id="MethodNameCheck-legit"),
    pytest.param("unsupported_method", False, id="MethodNameCheck-unsupported"),
])
def test_method_name_check(method_servers, check, signature, ok_with_check):
    """MethodNameCheck: with the check on only a legit method name is served; off, any is."""
    got, error = predict(method_servers[check], f'{SPEC} {X_2} model_spec {{ signature_name: "{signature}" }}')
    assert (error is None) == (ok_with_check or not check)
    if error is None:
        assert got.outputs["y"].float_val == [3.0]
