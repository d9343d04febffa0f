"""TF Serving's tensorflow_serving/servables/tensorflow/classifier_test.cc, ported case by case.

Each case's id is the TF Serving test it comes from, run as TF Serving runs it: once without and
once with the signature method-name check (TEST_P over Bool). TF Serving's FakeSession reads the
"class" bytes and "score" floats of each tf.Example and answers them as classes and scores; here
a real SavedModel does that in its graph, served by an in-process server per setting, and
requests go through gRPC Classify. Where TF Serving's test edits serving_default (ClassesOnly,
ScoresOnly, MissingClassificationSignature, MethodNameCheck) or plants a MockSession's outputs
(RunsFails, *IncorrectTensor*, MismatchedNumberOfTensorClasses), the model has a named signature
of that shape, and the request names it. As there, signatures carry method names only when the
check is on.
"""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2

from tests.helpers import fill_input, prediction_stub, serve_with_method_check

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def build_classifier(check: bool):
    """The FakeSession as a graph: input:0 holds serialized Examples; output:0 their "class"
    features, score:0 their "score" features (outputPlusOne:0 those + 1)."""
    import tensorflow as tf

    v1 = tf.compat.v1

    def method(name):
        return name if check else None

    def build():
        serialized = v1.placeholder(tf.string, [None], name="input")
        parsed = v1.parse_example(serialized, {"class": v1.VarLenFeature(tf.string),
                                               "score": v1.VarLenFeature(tf.float32)})
        classes = tf.identity(tf.sparse.to_dense(parsed["class"], default_value=""), name="output")
        scores = tf.identity(tf.sparse.to_dense(parsed["score"]), name="score")
        plus_one = tf.identity(scores + 1, name="outputPlusOne")
        rank3 = tf.zeros(tf.concat([tf.shape(scores), [10]], 0), name="ImproperlySizedScores")
        with tf.control_dependencies([tf.debugging.Assert(False, ["Run totally failed"])]):
            failing = tf.identity(classes)
        inputs = {"inputs": serialized}

        def classify(outputs, name=CLASSIFY):
            return inputs, outputs, method(name)

        return {
            "serving_default": classify({"classes": classes, "scores": scores}),
            "output_plus_one": classify({"scores": plus_one, "classes": classes}),
            "invalid_regression_signature": classify({"outputs": plus_one}, REGRESS),
            "ImproperlySizedScoresSignature": classify({"scores": rank3, "classes": classes}),
            # serving_default as TF Serving's tests edit it, one signature per edit:
            "classes_only": classify({"classes": classes}),
            "scores_only": classify({"scores": scores}),
            "empty": ({}, {}, None),  # a default SignatureDef: no inputs, outputs or method
            # the MockSession's outputs, whatever the examples (two examples are sent):
            "run_fails": classify({"classes": failing, "scores": scores}),
            "classes_batch_1": classify({"classes": tf.fill([1, 2], "c"), "scores": tf.zeros([2, 2])}),
            "classes_float": classify({"classes": tf.zeros([2, 2]), "scores": tf.zeros([2, 2])}),
            "scores_batch_1": classify({"classes": tf.fill([2, 2], "c"), "scores": tf.zeros([1, 2])}),
            "scores_string": classify({"classes": tf.fill([2, 2], "c"), "scores": tf.fill([2, 2], "s")}),
            "scores_3_classes": classify({"classes": tf.fill([2, 2], "c"), "scores": tf.zeros([2, 3])}),
            # MethodNameCheck: method names set whatever the setting.
            "classify_method": (inputs, {"classes": classes, "scores": scores}, CLASSIFY),
            "unsupported_method": (inputs, {"classes": classes, "scores": scores}, "not/supported/method"),
            "no_method": (inputs, {"classes": classes, "scores": scores}, None),
        }

    return build


@pytest.fixture(scope="module", params=[False, True], ids=["method_name_check=false", "method_name_check=true"])
def server(request, tmp_path_factory, serve_module):
    return serve_with_method_check(request.param, tmp_path_factory.mktemp("classifier"), build_classifier, serve_module)


def example(*class_scores) -> example_pb2.Example:
    """An Example whose "class" feature holds the labels and "score" the scores."""
    proto = example_pb2.Example()
    proto.features.feature["class"].bytes_list.value.extend(label.encode() for label, _ in class_scores)
    proto.features.feature["score"].float_list.value.extend(score for _, score in class_scores)
    return proto


TWO = [example(("dos", 2), ("uno", 1)), example(("cuatro", 4), ("tres", 3))]


def classify(server, signature: str = "", examples=(), context=None, kind=None):
    """ClassificationRequest over gRPC: (result, None) or (None, RpcError)."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "m", signature
    fill_input(request.input, examples, context, kind)
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            return prediction_stub(channel).Classify(request, timeout=30).result, None
        except grpc.RpcError as err:
            return None, err


def result(text: str) -> classification_pb2.ClassificationResult:
    return text_format.Parse(text, classification_pb2.ClassificationResult())


DOS_UNO_CUATRO_TRES = result("""
    classifications { classes { label: 'dos' score: 2 } classes { label: 'uno' score: 1 } }
    classifications { classes { label: 'cuatro' score: 4 } classes { label: 'tres' score: 3 } }""")


@pytest.mark.parametrize("signature,examples,context,want", [
    pytest.param("", TWO, None, DOS_UNO_CUATRO_TRES, id="ExampleList"),
    # Context gets copied to each example (two empty ones here).
    pytest.param("", [example_pb2.Example()] * 2, example(("dos", 2), ("uno", 1)), result("""
        classifications { classes { label: 'dos' score: 2 } classes { label: 'uno' score: 1 } }
        classifications { classes { label: 'dos' score: 2 } classes { label: 'uno' score: 1 } }"""),
                 id="ExampleListWithContext"),
    # An example's own feature wins over the context's of the same name.
    pytest.param("", [example_pb2.Example(), example(("tres", 3), ("cuatro", 4))],
                 example(("uno", 1), ("dos", 2)), result("""
        classifications { classes { label: 'uno' score: 1 } classes { label: 'dos' score: 2 } }
        classifications { classes { label: 'tres' score: 3 } classes { label: 'cuatro' score: 4 } }"""),
                 id="ExampleListWithContext_DuplicateFeatures"),
    pytest.param("classes_only", TWO, None, result("""
        classifications { classes { label: 'dos' } classes { label: 'uno' } }
        classifications { classes { label: 'cuatro' } classes { label: 'tres' } }"""), id="ClassesOnly"),
    pytest.param("scores_only", TWO, None, result("""
        classifications { classes { score: 2 } classes { score: 1 } }
        classifications { classes { score: 4 } classes { score: 3 } }"""), id="ScoresOnly"),
    pytest.param("output_plus_one", TWO, None, result("""
        classifications { classes { label: 'dos' score: 3 } classes { label: 'uno' score: 2 } }
        classifications { classes { label: 'cuatro' score: 5 } classes { label: 'tres' score: 4 } }"""),
                 id="ValidNamedSignature"),
])
def test_classify(server, signature, examples, context, want):
    got, error = classify(server, signature, examples, context)
    assert error is None and got == want


def test_zero_scores_are_present(server):
    """ZeroScoresArePresent"""
    got, error = classify(server, "scores_only", [example(("minus", -1), ("zero", 0), ("one", 1))])
    assert error is None and len(got.classifications) == 1
    assert [c.score for c in got.classifications[0].classes] == pytest.approx([-1, 0, 1], abs=1e-7)


@pytest.mark.parametrize("signature,examples,kind,substring", [
    pytest.param("invalid_regression_signature", TWO, None, "", id="InvalidNamedSignature"),
    pytest.param("ImproperlySizedScoresSignature", TWO, None, "", id="MalformedScores"),
    pytest.param("empty", [example(("dos", 2))], None, "", id="MissingClassificationSignature"),
    pytest.param("", (), "input", "Input is empty", id="EmptyInput"),
    pytest.param("", (), "example_list", "Input is empty", id="EmptyExampleList"),
    pytest.param("", (), "with_context", "Input is empty", id="EmptyExampleListWithContext"),
])
def test_classify_invalid_argument(server, signature, examples, kind, substring):
    context = example(("dos", 2)) if kind == "with_context" else None
    got, error = classify(server, signature, examples, context, kind)
    assert got is None and error.code() == grpc.StatusCode.INVALID_ARGUMENT and substring in error.details()


@pytest.mark.parametrize("signature,examples,substring", [
    pytest.param("run_fails", [example(("dos", 2))], "Run totally failed", id="RunsFails"),
    pytest.param("classes_batch_1", TWO, "batch size", id="ClassesIncorrectTensorBatchSize"),
    pytest.param("classes_float", TWO, "Expected classes Tensor of DT_STRING", id="ClassesIncorrectTensorType"),
    pytest.param("scores_batch_1", TWO, "batch size", id="ScoresIncorrectTensorBatchSize"),
    pytest.param("scores_string", TWO, "Expected scores Tensor of DT_FLOAT", id="ScoresIncorrectTensorType"),
    pytest.param("scores_3_classes", TWO, "Tensors class and score should match in dim_size(1). Got 2 vs. 3",
                 id="MismatchedNumberOfTensorClasses"),
])
def test_classify_fails_with_the_model_s_outputs(server, signature, examples, substring):
    got, error = classify(server, signature, examples)
    assert got is None and substring in error.details()


@pytest.mark.parametrize("signature,ok_with_check", [
    pytest.param("classify_method", True, id="MethodNameCheck-1"),  # legit method name: always works
    pytest.param("unsupported_method", False, id="MethodNameCheck-2"),  # fails when the check is on
    pytest.param("no_method", False, id="MethodNameCheck-3"),  # empty method name: fails when the check is on
])
def test_method_name_check(server, signature, ok_with_check):
    _got, error = classify(server, signature, [example(("dos", 2), ("uno", 1))])
    assert (error is None) == (ok_with_check or not server.check)
