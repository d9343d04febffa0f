"""pyserving/core/signatures.py: TF Serving's request rules on one servable, as pure functions.

Messages and codes are those of tensorflow_serving/servables/tensorflow/predict_util.cc,
classifier.cc, regressor.cc and multi_inference.cc; signatures are plain SignatureInfo values.
"""
from __future__ import annotations

import numpy as np
import pytest

from pyserving import dtypes
from pyserving.core import signatures as s
from pyserving.errors import Code, ServingError
from pyserving.types import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, SignatureInfo, TensorSpec

F, D, STR = dtypes.DT_FLOAT, dtypes.DT_DOUBLE, dtypes.DT_STRING


def tensors(**specs):
    """name=dtype or name=(tensor name, dtype) -> {name: TensorSpec}."""
    return {n: TensorSpec(*(v if isinstance(v, tuple) else (f"{n}:0", v)), None) for n, v in specs.items()}


def signature(method=PREDICT_METHOD, inputs=None, outputs=None, debug="<sigdef>"):
    return SignatureInfo(method, tensors(**(inputs or {"x": F})), tensors(**(outputs or {"y": F})), debug)


class Model:
    """A servable as far as these rules look: its signatures."""

    def __init__(self, **sigs):
        self.signatures = sigs


def error(call, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as err:
        call(*args, **kwargs)
    return err.value


# ---- predict ---------------------------------------------------------------------------------
def test_predict_names_a_signature_or_serving_default():
    default, other = signature(), signature(outputs={"z": F})
    model = Model(serving_default=default, other=other)
    assert s.predict_signature(model, "") == ("serving_default", default)
    assert s.predict_signature(model, "other") == ("other", other)
    err = error(s.predict_signature, model, "absent")
    assert isinstance(err, s.SignatureNotFound) and err.signature_name == "absent"
    assert (err.code, err.message) == (Code.FAILED_PRECONDITION, 'Serving signature key "absent" not found.')


def test_the_method_name_is_checked_only_when_asked():
    model = Model(serving_default=signature(method="custom/method"), c=signature(CLASSIFY_METHOD),
                  r=signature(REGRESS_METHOD))
    assert s.predict_signature(model, "")[0] == "serving_default"  # unchecked by default
    for name in ("c", "r"):
        assert s.predict_signature(model, name, check_method_name=True)[0] == name
    err = error(s.predict_signature, model, "", check_method_name=True)
    assert (err.code, err.message) == (Code.INTERNAL, (  # VerifySignature says errors::Internal
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method"))


def test_inputs_must_be_exactly_the_signature_s():
    sig = signature(inputs={"a": F, "b": F})
    x = np.zeros(1, np.float32)
    err = error(s.check_inputs, sig, {"a": x, "c": x, "d": x})
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, (  # VerifyRequestInputsSize: StrJoin(set, ",")
        "input size does not match signature: 3!=2 len({a,c,d}) != len({a,b}). Sent extra: {c,d}. "
        "Missing but required: {b}."))
    s.check_inputs(sig, {"b": x, "a": x})


def test_an_input_of_another_dtype_is_named_by_its_position_in_sorted_order():
    sig = signature(inputs={"a": F, "b": F})
    err = error(s.check_inputs, sig, {"b": np.zeros(1, np.float64), "a": np.zeros(1, np.float32)})
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "Expects arg[1] to be float but double is provided")


def test_the_output_filter_picks_outputs_in_its_own_order():
    sig = signature(outputs={"a": F, "b": F, "c": F})
    assert s.output_keys(sig, ()) == ("a", "b", "c")
    assert s.output_keys(sig, ["c", "a"]) == ("c", "a")
    err = error(s.output_keys, sig, ["a", "w"])
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, (
        "output tensor alias not found in signature: w Outputs expected to be in the set {a,b,c}."))
    err = error(s.output_keys, sig, ["b", "a", "b"])
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "duplicate output tensor alias: b")


def test_a_predict_request_carries_the_checked_inputs_outputs_and_deadline():
    sig = signature(outputs={"y": F, "z": F})
    model = Model(serving_default=sig)
    inputs = {"x": np.ones((2, 1), np.float32)}
    request = s.predict_request(model, "serving_default", sig, inputs, ["z"], 1.5)
    assert (request.servable, request.signature_name, request.inputs, request.output_keys, request.timeout_s) == (
        model, "serving_default", inputs, ("z",), 1.5)
    assert s.predict_request(model, "serving_default", sig, inputs).output_keys == ("y", "z")
    with pytest.raises(ServingError):
        s.predict_request(model, "serving_default", sig, {"w": inputs["x"]})


# ---- classify and regress ----------------------------------------------------------------------
def classify_sig(method=CLASSIFY_METHOD, inputs=None, outputs=None):
    return signature(method, inputs or {"inputs": STR}, outputs or {"classes": STR, "scores": F})


def regress_sig(method=REGRESS_METHOD, inputs=None, outputs=None):
    return signature(method, inputs or {"inputs": STR}, outputs or {"outputs": F})


@pytest.mark.parametrize("sig,method,check,message", [
    (classify_sig(PREDICT_METHOD), CLASSIFY_METHOD, True, "Expected classification signature method_name to be "
     "tensorflow/serving/classify. Was: tensorflow/serving/predict"),
    (regress_sig(PREDICT_METHOD), REGRESS_METHOD, True, "Expected regression signature method_name to be "
     "tensorflow/serving/regress. Was: tensorflow/serving/predict"),
    (classify_sig(inputs={"inputs": STR, "more": STR}), CLASSIFY_METHOD, False, "Expected one input Tensor."),
    (classify_sig(outputs={"classes": STR, "scores": F, "extra": F}), CLASSIFY_METHOD, False,
     "Expected one or two output Tensors, found 3"),
    (regress_sig(outputs={"outputs": F, "extra": F}), REGRESS_METHOD, False, "Expected one output Tensor."),
    (classify_sig(inputs={"examples": STR}), CLASSIFY_METHOD, False,
     "No classification inputs found in SignatureDef: <sigdef>"),
    (regress_sig(inputs={"examples": STR}), REGRESS_METHOD, False,
     "No regression inputs found in SignatureDef: <sigdef>"),
    (classify_sig(outputs={"probabilities": F}), CLASSIFY_METHOD, False,
     'Expected classification signature outputs to contain at least one of "classes" or "scores". '
     "Signature was: <sigdef>"),
    (regress_sig(outputs={"y": F}), REGRESS_METHOD, False, "No regression outputs found in SignatureDef: <sigdef>"),
])
def test_examples_signatures_are_checked_as_classifier_cc_and_regressor_cc_do(sig, method, check, message):
    err = error(s.examples_signature, Model(serving_default=sig), "", method, check)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_examples_signatures_fit_for_their_method_are_found_by_name_or_default():
    classify, regress = classify_sig(PREDICT_METHOD, outputs={"scores": F}), regress_sig()
    model = Model(serving_default=classify, r=regress)
    assert s.examples_signature(model, "", CLASSIFY_METHOD) == ("serving_default", classify)  # TF2: predict method
    assert s.examples_signature(model, "r", REGRESS_METHOD, check_method_name=True) == ("r", regress)
    classes_only = Model(serving_default=classify_sig(outputs={"classes": STR}))
    assert s.examples_signature(classes_only, "", CLASSIFY_METHOD)[1] is classes_only.signatures["serving_default"]
    err = error(s.examples_signature, model, "absent", REGRESS_METHOD)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "No signature was found with the name: absent")


def test_an_examples_request_asks_for_the_method_s_outputs_of_serialized_examples():
    model = Model()
    request = s.examples_request(model, "k", classify_sig(outputs={"scores": F, "classes": STR}), [b"e1", b"e2"], 2.0)
    assert (request.signature_name, request.output_keys, request.timeout_s) == ("k", ("classes", "scores"), 2.0)
    assert request.inputs["inputs"].dtype == object and request.inputs["inputs"].tolist() == [b"e1", b"e2"]
    assert s.examples_request(model, "r", regress_sig(), [b"e"]).output_keys == ("outputs",)
    err = error(s.examples_request, model, "r", regress_sig(), [])
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "Input is empty.")


def test_classifications_pair_labels_and_scores_per_example():
    classes = np.array([[b"cat", b"dog"], [b"cow", b"pig"]], object)
    scores = np.array([[0.75, 0.25], [0.5, 0.5]], np.float32)
    assert s.classifications({"classes": classes, "scores": scores}, 2) == [
        [(b"cat", 0.75), (b"dog", 0.25)], [(b"cow", 0.5), (b"pig", 0.5)]]
    assert s.classifications({"scores": scores[:1]}, 1) == [[(None, 0.75), (None, 0.25)]]
    assert s.classifications({"classes": classes[:1, :1]}, 1) == [[(b"cat", None)]]


@pytest.mark.parametrize("outputs,n,message", [
    ({"classes": np.array([b"a"], object)}, 1, "Expected Tensor shape: [batch_size num_classes] but got [1]"),
    ({"scores": np.zeros((1, 2, 1), np.float32)}, 1,
     "Expected Tensor shape: [batch_size num_classes] but got [1,2,1]"),
    ({"classes": np.zeros((1, 2), np.int32)}, 1, "Expected classes Tensor of DT_STRING. Got: DT_INT32"),
    ({"scores": np.zeros((1, 2), np.float64)}, 1, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
    ({"classes": np.array([[b"a"]], object)}, 2, "Expected classes output batch size of 2. Got: 1"),
    ({"scores": np.zeros((3, 1), np.float32)}, 2, "Expected scores output batch size of 2. Got: 3"),
    ({"classes": np.array([[b"a", b"b"]], object), "scores": np.zeros((1, 3), np.float32)}, 1,
     "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
])
def test_classify_outputs_are_checked_as_post_process_classification_result_does(outputs, n, message):
    err = error(s.classifications, outputs, n)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_regressions_take_one_float_per_example():
    assert s.regressions({"outputs": np.array([1.5, -2.0], np.float32)}, 2) == [1.5, -2.0]
    assert s.regressions({"outputs": np.array([[0.25], [4.0]], np.float32)}, 2) == [0.25, 4.0]


@pytest.mark.parametrize("out,n,message", [
    (np.zeros((2, 2), np.float32), 2,
     "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]"),
    (np.zeros((2, 1, 1), np.float32), 2,
     "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,1,1]"),
    (np.zeros(3, np.float32), 2, "Input batch size did not match output batch size: 2 vs. 3"),
    (np.zeros(2, np.float64), 2, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
])
def test_regress_outputs_are_checked_as_post_process_regression_result_does(out, n, message):
    err = error(s.regressions, {"outputs": out}, n)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_the_readers_by_method():
    assert s.READERS == {CLASSIFY_METHOD: s.classifications, REGRESS_METHOD: s.regressions}


# ---- multi-inference ---------------------------------------------------------------------------
def test_multi_inference_tasks_are_found_in_order():
    classify, regress = classify_sig(), regress_sig()
    model = Model(serving_default=classify, r=regress)
    assert s.multi_inference_tasks(model, [("m", "", CLASSIFY_METHOD), ("m", "r", REGRESS_METHOD)]) == [
        ("serving_default", classify), ("r", regress)]


def test_multi_inference_checks_the_method_name_only_when_asked():
    model = Model(serving_default=classify_sig(PREDICT_METHOD))
    assert s.multi_inference_tasks(model, [("m", "", CLASSIFY_METHOD)])[0][0] == "serving_default"
    err = error(s.multi_inference_tasks, model, [("m", "", CLASSIFY_METHOD)], True)
    assert err.message.startswith("Expected classification signature method_name to be tensorflow/serving/classify")


@pytest.mark.parametrize("tasks,code,message", [
    ([("n", "c", CLASSIFY_METHOD), ("", "c", REGRESS_METHOD)], Code.INVALID_ARGUMENT,
     "Found ModelSpec with an empty model name."),
    ([("n", "c", CLASSIFY_METHOD), ("o", "absent", REGRESS_METHOD)], Code.INVALID_ARGUMENT,
     "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
    # task by task: the second task's duplicate is found before the third task's other model
    ([("n", "c", CLASSIFY_METHOD), ("n", "c", REGRESS_METHOD), ("o", "c", REGRESS_METHOD)], Code.INVALID_ARGUMENT,
     "Duplicate evaluation of signature: c"),
    ([("c", CLASSIFY_METHOD), ("c", REGRESS_METHOD)], Code.INVALID_ARGUMENT, "Duplicate evaluation of signature: c"),
    ([("", CLASSIFY_METHOD), ("serving_default", CLASSIFY_METHOD)], Code.INVALID_ARGUMENT,
     "Duplicate evaluation of signature: serving_default"),
    ([("c", CLASSIFY_METHOD), ("absent", REGRESS_METHOD)], Code.INVALID_ARGUMENT,
     "Requested signature not found in model graph: absent"),
    ([("c", PREDICT_METHOD)], Code.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"),
    ([("c", REGRESS_METHOD)], Code.INVALID_ARGUMENT, "Expected one output Tensor."),
])
def test_multi_inference_tasks_are_checked_in_tf_servings_order(tasks, code, message):
    model = Model(serving_default=classify_sig(), c=classify_sig(),
                  other_input=regress_sig(inputs={"inputs": ("serialized_other:0", STR)}))
    err = error(s.multi_inference_tasks, model, [task if len(task) == 3 else ("n", *task) for task in tasks])
    assert (err.code, err.message) == (code, message)
