"""TF Serving's tensorflow_serving/servables/tensorflow/regressor_test.cc, ported case by case.

Each case's id is the TF Serving test it comes from, run without and with the signature
method-name check (TEST_P over Bool). TF Serving's FakeSession answers each tf.Example's "output"
float (output:0 of shape [batch], outputPlusOne:0 of shape [batch, 1] and + 1); here a real
SavedModel does that in its graph, served by an in-process server per setting, through gRPC
Regress. Edits of serving_default and MockSession outputs become named signatures of that shape
(see test_tfs_classifier.py); signatures carry method names only when the check is on.
"""
from __future__ import annotations

import grpc
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import regression_pb2

from tests.helpers import fill_input, prediction_stub, serve_with_method_check

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def build_regressor(check: bool):
    import tensorflow as tf

    v1 = tf.compat.v1

    def method(name):
        return name if check else None

    def build():
        serialized = v1.placeholder(tf.string, [None], name="input")
        column = v1.parse_example(serialized, {"output": v1.FixedLenFeature([1], tf.float32)})["output"]
        output = tf.reshape(column, [-1], name="output")  # [batch]
        plus_one = tf.identity(column + 1, name="outputPlusOne")  # [batch, 1]
        rank3 = tf.zeros(tf.concat([tf.shape(column), [10]], 0), name="ImproperlySizedOutput")
        with tf.control_dependencies([tf.debugging.Assert(False, ["Run totally failed"])]):
            failing = tf.identity(output)
        inputs = {"inputs": serialized}

        def regress(outputs, name=REGRESS):
            return inputs, outputs, method(name)

        return {
            "serving_default": regress({"outputs": output}),
            "output_plus_one": regress({"outputs": plus_one}),
            "invalid_classification_signature": regress({"classes": plus_one}, CLASSIFY),
            "ImproperlySizedOutputSignature": regress({"outputs": rank3}),
            "empty": ({}, {}, None),  # MissingRegressionSignature: a default SignatureDef
            # the MockSession's outputs, whatever the example (one is sent):
            "run_fails": regress({"outputs": failing}),
            "two_outputs": regress({"outputs": tf.zeros([2])}),
            "string_output": regress({"outputs": tf.fill([1], "s")}),
            # MethodNameCheck: method names set whatever the setting.
            "regress_method": (inputs, {"outputs": output}, REGRESS),
            "unsupported_method": (inputs, {"outputs": output}, "not/supported/method"),
            "no_method": (inputs, {"outputs": output}, None),
        }

    return build


@pytest.fixture(scope="module", params=[False, True], ids=["method_name_check=false", "method_name_check=true"])
def server(request, tmp_path_factory, serve_module):
    return serve_with_method_check(request.param, tmp_path_factory.mktemp("regressor"), build_regressor, serve_module)


def example_with_output(value: float) -> example_pb2.Example:
    proto = example_pb2.Example()
    proto.features.feature["output"].float_list.value.append(value)
    return proto


def regress(server, signature: str = "", examples=(), context=None, kind=None):
    """RegressionRequest over gRPC: (the values, None) or (None, RpcError)."""
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "m", signature
    fill_input(request.input, examples, context, kind)
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            response = prediction_stub(channel).Regress(request, timeout=30)
            return [r.value for r in response.result.regressions], None
        except grpc.RpcError as err:
            return None, err


TWO = [example_with_output(2.0), example_with_output(3.0)]


@pytest.mark.parametrize("signature,examples,context,want", [
    pytest.param("", TWO, None, [2.0, 3.0], id="BasicExampleList"),
    # Two empty examples; the context holds the outputs.
    pytest.param("", [example_pb2.Example()] * 2, example_with_output(3.0), [3.0, 3.0],
                 id="BasicExampleListWithContext"),
    pytest.param("output_plus_one", TWO, None, [3.0, 4.0], id="ValidNamedSignature"),
])
def test_regress(server, signature, examples, context, want):
    assert regress(server, signature, examples, context) == (want, None)


def uno() -> example_pb2.Example:
    proto = example_pb2.Example()
    proto.features.feature["class"].bytes_list.value.append(b"uno")
    return proto


@pytest.mark.parametrize("signature,examples,kind,substring", [
    pytest.param("invalid_classification_signature", TWO, None, "", id="InvalidNamedSignature"),
    pytest.param("ImproperlySizedOutputSignature", TWO, None, "", id="MalformedOutputs"),
    pytest.param("", (), "input", "Input is empty", id="EmptyInput"),
    pytest.param("", (), "example_list", "Input is empty", id="EmptyExampleList"),
    pytest.param("", (), "with_context", "Input is empty", id="EmptyExampleListWithContext"),
    pytest.param("empty", [uno()], None, "", id="MissingRegressionSignature"),
])
def test_regress_invalid_argument(server, signature, examples, kind, substring):
    context = example_with_output(3) if kind == "with_context" else None
    got, error = regress(server, signature, examples, context, kind)
    assert got is None and error.code() == grpc.StatusCode.INVALID_ARGUMENT and substring in error.details()


@pytest.mark.parametrize("signature,substring", [
    pytest.param("run_fails", "Run totally failed", id="RunsFails"),
    pytest.param("two_outputs", "output batch size", id="UnexpectedOutputTensorSize"),
    pytest.param("string_output", "Expected output Tensor of DT_FLOAT", id="UnexpectedOutputTensorType"),
])
def test_regress_fails_with_the_model_s_outputs(server, signature, substring):
    got, error = regress(server, signature, [example_with_output(2.0)])
    assert got is None and substring in error.details()


@pytest.mark.parametrize("signature,ok_with_check", [
    pytest.param("regress_method", True, id="MethodNameCheck-1"),  # legit method name: always works
    pytest.param("unsupported_method", False, id="MethodNameCheck-2"),  # fails when the check is on
    pytest.param("no_method", False, id="MethodNameCheck-3"),  # empty method name: fails when the check is on
])
def test_method_name_check(server, signature, ok_with_check):
    _got, error = regress(server, signature, [example_with_output(2.0)])
    assert (error is None) == (ok_with_check or not server.check)
