"""TF Serving's tensorflow_serving/servables/tensorflow/multi_inference_test.cc and
multi_inference_helper_test.cc (tag 2.20.0), ported case by case into one module.

Both C++ files are typed tests over a TF1 and a TF2 half_plus_two (tensorflow's
cc/saved_model/testdata/half_plus_two and TF Serving's saved_model_half_plus_two_tf2_cpu), with
the signature method-name check on for TF1 and off for TF2 (SetSignatureMethodNameCheckFeature).
So are these: the `server` fixture exports each model itself (pyserving.examples.half_plus_two's
TF1 graph, and below the TF2 HalfPlusTwoModel of TF Serving's saved_model_half_plus_two.py, whose
signatures each have an input placeholder of their own) as version 123 of "test_model" and
serves it on an in-process server with that check setting; a third setting serves TF Serving's
own saved_model_half_plus_two_tf2_cpu from ../shared/testdata and is skipped without it.

multi_inference_test.cc drives TensorFlowMultiInferenceRunner::Infer and RunMultiInference on a
bundle it holds; multi_inference_helper_test.cc drives RunMultiInferenceWithServerCore, which
first looks the servable up by the first task's ModelSpec. pyserving has one path for all three,
the data plane's multi_inference, and the requests here go to it over gRPC MultiInference, the
RPC that calls RunMultiInferenceWithServerCore in TF Serving. The requests, status codes and
message substrings are the C++ tests'; answers are compared as whole protos (EqualsProto).
Where the two files differ, a case runs once per file: multi_inference_test.cc's tasks name no
version (its runner is handed version 1; here the served version, 123, answers), the helper
test's name version 123.

Not ported: ThreadPoolOptions (both files). It hands the run caller-owned inter- and intra-op
thread pools (thread::ThreadPoolOptions, which the gRPC server fills from its ThreadPoolFactory)
and counts what TensorFlow schedules on them. pyserving has no such hook - a session's pools are
fixed when it loads (--tensorflow_{inter,intra}_op_parallelism) - and a Python caller cannot
count TensorFlow's scheduling; the answer it checks is ValidSingleSignatureTest's.
"""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import inference_pb2

from pyserving.examples import half_plus_two
from pyserving.version_dir import publish_version
from tests.helpers import SHARED_TESTDATA, call_json, grpc_signature_defs, prediction_stub

MODEL = "test_model"  # kTestModelName
VERSION = 123  # kTestModelVersion; TF Serving's saved_model_half_plus_two_tf2_cpu is 00000123
CLASSIFY, REGRESS, PREDICT = ("tensorflow/serving/classify", "tensorflow/serving/regress",
                              "tensorflow/serving/predict")
TF_SERVING_TF2 = SHARED_TESTDATA / "saved_model_half_plus_two_tf2_cpu"


def write_half_plus_two_tf2(base_path: str, version: int) -> str:
    """saved_model_half_plus_two_tf2_cpu as TF Serving's testdata/saved_model_half_plus_two.py
    writes it (HalfPlusTwoModel, tf2=True; its asset file left out): a = 0.5, b = 2, c = 3, each
    signature a tf.function with an input placeholder of its own, every method_name
    tensorflow/serving/predict (a TF2 export writes no other)."""
    import tensorflow as tf

    def feature_spec():
        return {"x": tf.io.FixedLenFeature([1], tf.float32),
                "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}

    def serialized(name):
        return tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=name)])

    def scalar(name):
        return tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name=name)])

    class HalfPlusTwoModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        def compute(self, x, inc):
            return tf.add(tf.multiply(self.a, x), inc)

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x):
            return {"y": self.compute(x, self.b)}

        @serialized("inputs")
        def regress_xy(self, serialized_proto):
            return {"outputs": self.compute(tf.io.parse_example(serialized_proto, feature_spec())["x"], self.b)}

        @serialized("inputs")
        def regress_xy2(self, serialized_proto):
            return {"outputs": self.compute(tf.io.parse_example(serialized_proto, feature_spec())["x"], self.c)}

        @scalar("inputs")
        def regress_x2y3(self, x2):
            return {"outputs": self.compute(x2, self.c)}

        @serialized("inputs")
        def classify_xy(self, serialized_proto):
            return {"scores": self.compute(tf.io.parse_example(serialized_proto, feature_spec())["x"], self.b)}

        @scalar("inputs")
        def classify_x2y3(self, x2):
            return {"scores": self.compute(x2, self.c)}

    def write(path: str) -> None:
        hp = HalfPlusTwoModel()
        tf.saved_model.save(hp, path, signatures={
            "regress_x_to_y": hp.regress_xy, "regress_x_to_y2": hp.regress_xy2,
            "regress_x2_to_y3": hp.regress_x2y3, "classify_x_to_y": hp.classify_xy,
            "classify_x2_to_y3": hp.classify_x2y3, "serving_default": hp.predict})

    return publish_version(base_path, version, write)


@pytest.fixture(scope="module", params=["tf1", "tf2", "tf2_tfserving_testdata"])
def server(request, tmp_path_factory, serve_module):
    """test_model served with the method-name check on for TF1, off for TF2 (SetUpTestSuite)."""
    kind = request.param
    if kind == "tf2_tfserving_testdata":
        if not TF_SERVING_TF2.is_dir():
            pytest.skip(f"{TF_SERVING_TF2} not present")
        base = TF_SERVING_TF2
    else:
        base = tmp_path_factory.mktemp(kind) / MODEL
        (half_plus_two.write_tf1 if kind == "tf1" else write_half_plus_two_tf2)(str(base), VERSION)
    server = serve_module([f"--model_base_path={base}", f"--model_name={MODEL}",
                           f"--enable_signature_method_name_check={str(kind == 'tf1').lower()}"])
    server.kind = kind
    return server


# Per ported file: the version its PopulateTask puts in a valid task's ModelSpec.
SOURCES = [pytest.param(None, id="multi_inference_test"), pytest.param(VERSION, id="multi_inference_helper_test")]


def populate_task(request, signature: str, method: str, version=None, model: str = MODEL) -> None:
    """PopulateTask: a task on `model` (kTestModelName unless given), with a version if given."""
    task = request.tasks.add()
    task.model_spec.name, task.model_spec.signature_name, task.method_name = model, signature, method
    if version is not None:
        task.model_spec.version.value = version


def request_of(tasks, xs=()) -> inference_pb2.MultiInferenceRequest:
    """AddInput({{"x", x}}) per x, then PopulateTask per (signature, method[, version[, model]])."""
    request = inference_pb2.MultiInferenceRequest()
    for x in xs:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    for task in tasks:
        populate_task(request, *task)
    return request


def multi_inference(server, request):
    """(response, None) or (None, RpcError)."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            return prediction_stub(channel).MultiInference(request, timeout=30), None
        except grpc.RpcError as err:
            return None, err


def expect_error(server, request, code, substring):
    """ExpectStatusError: the code, and the message HasSubstr."""
    response, error = multi_inference(server, request)
    assert response is None, response
    assert error.code() == code and substring in error.details(), (error.code(), error.details())


def expected(*results: str) -> inference_pb2.MultiInferenceResponse:
    """A MultiInferenceResponse of results, each `model_spec {...} <result>` text for one task."""
    return text_format.Parse("".join(f"results {{ {r} }}" for r in results), inference_pb2.MultiInferenceResponse())


def spec(signature: str) -> str:
    """The task's ModelSpec with the servable's version set (MakeModelSpec)."""
    return f'model_spec {{ name: "{MODEL}" signature_name: "{signature}" version {{ value: {VERSION} }} }}'


def test_missing_input(server):
    """MissingInputTest (both files): a task, no input at all."""
    expect_error(server, request_of([("regress_x_to_y", REGRESS)]), grpc.StatusCode.INVALID_ARGUMENT,
                 "Input is empty")


def test_undefined_signature(server):
    """UndefinedSignatureTest (both files)."""
    expect_error(server, request_of([("ThisSignatureDoesNotExist", REGRESS)], [2]),
                 grpc.StatusCode.INVALID_ARGUMENT, "signature not found")


def test_inconsistent_model_specs_in_request(server):
    """InconsistentModelSpecsInRequestTest (both files): two ModelSpecs, accessing different models;
    the first is valid, and the servable it names is found first."""
    request = request_of([("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS, None, "ModelDoesNotExist")], [2])
    expect_error(server, request, grpc.StatusCode.INVALID_ARGUMENT, "must access the same model name")


def test_evaluate_duplicate_signatures(server):
    """EvaluateDuplicateSignaturesTest (both files): the same task again."""
    expect_error(server, request_of([("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS)], [2]),
                 grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y")


def test_unsupported_signature_type(server):
    """UsupportedSignatureTypeTest (both files; sic): a predict task."""
    expect_error(server, request_of([("serving_default", PREDICT)], [2]), grpc.StatusCode.UNIMPLEMENTED,
                 "Unsupported signature")


@pytest.mark.parametrize("version", SOURCES)
def test_valid_single_signature(server, version):
    """ValidSingleSignatureTest (each file): regress_x_to_y is y = 0.5x + 2."""
    response, error = multi_inference(server, request_of([("regress_x_to_y", REGRESS, version)], [2]))
    assert error is None and response == expected(
        spec("regress_x_to_y") + " regression_result { regressions { value: 3.0 } }")


@pytest.mark.parametrize("version", SOURCES)
def test_multiple_valid_regress_signatures(server, version):
    """MultipleValidRegressSignaturesTest (each file): regress_x_to_y is y = 0.5x + 2,
    regress_x_to_y2 is y2 = 0.5x + 3."""
    request = request_of([("regress_x_to_y", REGRESS, version), ("regress_x_to_y2", REGRESS, version)], [2])
    response, error = multi_inference(server, request)
    assert error is None and response == expected(
        spec("regress_x_to_y") + " regression_result { regressions { value: 3.0 } }",
        spec("regress_x_to_y2") + " regression_result { regressions { value: 4.0 } }")


@pytest.mark.parametrize("version", SOURCES)
def test_regress_and_classify_signatures(server, version):
    """RegressAndClassifySignaturesTest (each file). On the TF2 models the two signatures have
    input placeholders of their own, to which the examples are both fed."""
    request = request_of([("regress_x_to_y", REGRESS, version), ("classify_x_to_y", CLASSIFY, version)], [2])
    response, error = multi_inference(server, request)
    assert error is None and response == expected(
        spec("regress_x_to_y") + " regression_result { regressions { value: 3.0 } }",
        spec("classify_x_to_y") + " classification_result { classifications { classes { score: 3.0 } } }")


def test_model_spec_override(server):
    """ModelSpecOverride (multi_inference_helper_test.cc): RunMultiInferenceWithServerCore looks
    the servable up by one ModelSpec - the first task's (GetModelSpecFromRequest) - and the
    WithModelSpec variant by the one it is given. pyserving has no entry point taking another
    ModelSpec (nothing in TF Serving 2.20's open source calls that variant: REST has no
    MultiInference), so what is ported is the lookup by that one ModelSpec: the valid request is
    not NOT_FOUND; with nonexistent_model as the first task's model it is NOT_FOUND, before the
    second task's other model name could be refused."""
    _response, error = multi_inference(server, request_of([("regress_x_to_y", REGRESS, VERSION)], [2]))
    assert error is None
    request = request_of([("regress_x_to_y", REGRESS, None, "nonexistent_model"),
                          ("regress_x_to_y", REGRESS, VERSION)], [2])
    expect_error(server, request, grpc.StatusCode.NOT_FOUND, "nonexistent_model")


def test_no_multi_inference_over_rest(server):
    """Not in the C++ tests: TF Serving's REST API has no MultiInference (http_rest_api_handler.cc
    dispatches classify, regress and predict only), so the path is a malformed request there."""
    assert call_json(server, "POST", f"/v1/models/{MODEL}:multi_inference", {"examples": [{"x": 2.0}]}) == (
        400, {"error": f"Malformed request: POST /v1/models/{MODEL}:multi_inference"})


# ---- TF2: classify and regress signatures with input placeholders of their own ----------------
def test_classify_and_regress_each_with_its_own_input(server):
    """classify_x_to_y + regress_x_to_y in one MultiInference, several examples: each answers
    y = 0.5x + 2 per example. On a TF2 SavedModel (the test's export and TF Serving's own
    saved_model_half_plus_two_tf2_cpu) the two signatures read different input tensors; on the
    TF1 graph the same tf_example placeholder."""
    defs = grpc_signature_defs(server, MODEL)
    inputs = {defs[key].inputs["inputs"].name for key in ("classify_x_to_y", "regress_x_to_y")}
    assert len(inputs) == (1 if server.kind == "tf1" else 2), inputs
    xs = [-4.0, 0.0, 1.0, 2.5]
    response, error = multi_inference(server, request_of([("classify_x_to_y", CLASSIFY), ("regress_x_to_y", REGRESS)],
                                                         xs))
    assert error is None
    classified, regressed = response.results
    assert (classified.model_spec.signature_name, regressed.model_spec.signature_name) == (
        "classify_x_to_y", "regress_x_to_y")
    assert classified.model_spec.version.value == regressed.model_spec.version.value == VERSION
    want = [0.5 * x + 2 for x in xs]
    assert [[c.score for c in classes.classes] for classes in classified.classification_result.classifications] == [
        [y] for y in want]
    assert [r.value for r in regressed.regression_result.regressions] == want
