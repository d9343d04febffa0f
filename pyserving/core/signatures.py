"""TF Serving's request rules on one servable, as pure functions: which signature a request
names, whether its inputs fit, which outputs it gets, and how classify and regress outputs are
read back. The data plane and warmup both apply them; nothing here runs a model.

Error texts follow tensorflow_serving/servables/tensorflow/{predict_util,classifier,regressor}.cc.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pyserving import dtypes
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.types import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    RunRequest,
    Servable,
    SignatureInfo,
)

Inputs = Mapping[str, np.ndarray]
# One example's classes: (label or None, score or None) per class.
Classification = list[tuple[object, object]]


class SignatureNotFound(ServingError):
    def __init__(self, signature_name: str):
        super().__init__(Code.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
        self.signature_name = signature_name


def _fmt(names) -> str:
    return "{" + ",".join(sorted(names)) + "}"  # absl::StrJoin(std::set, ",")


# ---- predict ---------------------------------------------------------------------------------
def predict_signature(servable: Servable, name: str, check_method_name: bool = False) -> tuple[str, SignatureInfo]:
    """(signature key, signature) a Predict names; '' means serving_default."""
    key = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(key)
    if sig is None:
        raise SignatureNotFound(key)
    if check_method_name and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
        raise ServingError(  # INTERNAL, as predict_util.cc's VerifySignature says it
            Code.INTERNAL,
            f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
            f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}"
        )
    return key, sig


def check_inputs(sig: SignatureInfo, inputs: Inputs) -> None:
    sent, expected = set(inputs), set(sig.inputs)
    if sent != expected:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({_fmt(sent)}) != len({_fmt(expected)}). Sent extra: {_fmt(sent - expected)}. "
            f"Missing but required: {_fmt(expected - sent)}."
        )
    for i, name in enumerate(sorted(inputs)):
        spec, value = sig.inputs[name], inputs[name]
        if dtypes.data_type(value.dtype) != spec.dtype:
            raise invalid_argument(
                f"Expects arg[{i}] to be {dtypes.short_name(spec.dtype)} but "
                f"{dtypes.short_name(dtypes.data_type(value.dtype))} is provided"
            )
        # Shapes are the graph's business, as in TF Serving: its own docs send [1.0, 2.0]
        # to half_plus_two, whose signature says [-1, 1], and the graph broadcasts.


def output_keys(sig: SignatureInfo, output_filter: Sequence[str]) -> tuple[str, ...]:
    if not output_filter:
        return tuple(sig.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {_fmt(sig.outputs)}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter)


def predict_request(servable: Servable, key: str, sig: SignatureInfo, inputs: Inputs,
                    output_filter: Sequence[str] = (), timeout_s=None) -> RunRequest:
    """The run a Predict asks for, once its inputs are checked against the signature."""
    check_inputs(sig, inputs)
    return RunRequest(servable, key, inputs, output_keys(sig, output_filter), timeout_s)


# ---- classify and regress on tf.Example inputs ----------------------------------------------
# classifier.cc / regressor.cc: GetClassificationSignatureDef and PreProcessClassification (and
# the regression twins). The method_name check runs only with --enable_signature_method_name_check:
# TF2 and Keras exports write tensorflow/serving/predict on every signature.
NO_SIGNATURE = "No signature was found with the name: "
NOT_IN_GRAPH = "Requested signature not found in model graph: "  # MultiInference's wording


def examples_signature(servable: Servable, name: str, method: str,
                       check_method_name: bool = False) -> tuple[str, SignatureInfo]:
    """(signature key, signature) of a Classify or Regress (`method`), checked as TF Serving does."""
    key = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(key)
    if sig is None:
        raise invalid_argument(f"{NO_SIGNATURE}{key}")
    what = "classification" if method == CLASSIFY_METHOD else "regression"
    if check_method_name and sig.method_name != method:
        raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if method == CLASSIFY_METHOD and len(sig.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if method == REGRESS_METHOD and len(sig.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in sig.inputs:
        raise invalid_argument(f"No {what} inputs found in SignatureDef: {sig.debug_string}")
    if method == CLASSIFY_METHOD and not {"classes", "scores"} & set(sig.outputs):
        raise invalid_argument('Expected classification signature outputs to contain at least one of "classes" '
                               f'or "scores". Signature was: {sig.debug_string}')
    if method == REGRESS_METHOD and "outputs" not in sig.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {sig.debug_string}")
    return key, sig


def examples_tensor(examples: Sequence[bytes]) -> np.ndarray:
    """The serialized examples as the model's string input (util.cc InputToSerializedExampleTensor);
    no example, whatever the context, is "Input is empty." - checked after the signature, as there."""
    if len(examples) == 0:
        raise invalid_argument("Input is empty.")
    tensor = np.empty(len(examples), dtype=object)
    tensor[:] = list(examples)
    return tensor


def examples_request(servable: Servable, key: str, sig: SignatureInfo, examples: Sequence[bytes],
                     timeout_s=None) -> RunRequest:
    """The run a Classify or Regress asks for: every output its signature names of the method's."""
    outputs = tuple(k for k in ("classes", "scores", "outputs") if k in sig.outputs)
    return RunRequest(servable, key, {"inputs": examples_tensor(examples)}, outputs, timeout_s)


def _shape_text(tensor: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in tensor.shape) + "]"  # TensorShape::DebugString


def classifications(outputs: Mapping[str, np.ndarray], n: int) -> list[Classification]:
    """A classify run's outputs -> per example, its (label, score) pairs (PostProcessClassificationResult)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for label, tensor, want in (("classes", classes, dtypes.DT_STRING), ("scores", scores, dtypes.DT_FLOAT)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(tensor)}")
        if dtypes.data_type(tensor.dtype) != want:
            raise invalid_argument(f"Expected {label} Tensor of {dtypes.ENUM_NAMES[want]}. "
                                   f"Got: {dtypes.ENUM_NAMES.get(dtypes.data_type(tensor.dtype))}")
        if tensor.shape[0] != n:
            raise invalid_argument(f"Expected {label} output batch size of {n}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]
    return [
        [
            (classes[i, c] if classes is not None else None, float(scores[i, c]) if scores is not None else None)
            for c in range(width)
        ]
        for i in range(n)
    ]


def regressions(outputs: Mapping[str, np.ndarray], n: int) -> list[float]:
    """A regress run's outputs -> one value per example (PostProcessRegressionResult, in its order)."""
    out = outputs["outputs"]
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape_text(out)}"
        )
    if out.shape[0] != n:
        raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. {out.shape[0]}")
    if out.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: "
                               f"{dtypes.ENUM_NAMES.get(dtypes.data_type(out.dtype))}")
    return [float(v) for v in out.reshape(-1)]


# How a classify or regress task's outputs are read, by method name.
READERS = {CLASSIFY_METHOD: classifications, REGRESS_METHOD: regressions}


def multi_inference_tasks(servable: Servable, tasks: Sequence[tuple[str, str, str]],
                          check_method_name: bool = False) -> list[tuple[str, SignatureInfo]]:
    """MultiInference's checks on one servable, task by task in TF Serving's order (multi_inference.cc):
    a model name, the same for every task; no signature twice; each found and fit for its method.
    The tasks' input tensors may differ: TF Serving feeds the examples to the set of them (a TF2
    SavedModel gives every signature a placeholder of its own); it refused that before 2.x.
    `tasks` holds (model name, signature name, method); returns each task's (signature key, signature)."""
    model_name = ""
    seen: set[str] = set()
    found = []
    for model, name, method in tasks:
        if not model:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = model
        elif model != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        key = name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if key not in servable.signatures:
            raise invalid_argument(f"{NOT_IN_GRAPH}{key}")
        if method not in READERS:
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")
        found.append(examples_signature(servable, key, method, check_method_name))
    return found
