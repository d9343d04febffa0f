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
    return "{" + ", ".join(sorted(names)) + "}"


# ---- predict ---------------------------------------------------------------------------------
def predict_signature(servable: Servable, name: str, check_method_name: bool = False) -> tuple[str, SignatureInfo]:
    """(signature key, signature) a Predict names; '' means serving_default."""
    key = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(key)
    if sig is None:
        raise SignatureNotFound(key)
    if check_method_name and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
        raise invalid_argument(
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
def _examples_signature(servable: Servable, name: str, method: str, what: str) -> tuple[str, SignatureInfo]:
    key = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(key)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    if sig.method_name != method:
        raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
    if "inputs" not in sig.inputs or len(sig.inputs) != 1:
        raise ServingError(Code.FAILED_PRECONDITION, f"No {what} inputs found in SignatureDef")
    return key, sig


def _examples_tensor(examples: Sequence[bytes]) -> np.ndarray:
    if len(examples) == 0:
        raise invalid_argument("Input is empty.")
    tensor = np.empty(len(examples), dtype=object)
    tensor[:] = list(examples)
    return tensor


def classify_request(servable: Servable, name: str, examples: Sequence[bytes], timeout_s=None) -> RunRequest:
    key, sig = _examples_signature(servable, name, CLASSIFY_METHOD, "classification")
    keys = tuple(k for k in ("classes", "scores") if k in sig.outputs)
    if not keys:
        raise ServingError(
            Code.FAILED_PRECONDITION,
            'Expected classification signature outputs to contain at least one of "classes" or "scores".',
        )
    return RunRequest(servable, key, {"inputs": _examples_tensor(examples)}, keys, timeout_s)


def classifications(outputs: Mapping[str, np.ndarray], n: int) -> list[Classification]:
    """A classify run's outputs -> per example, its (label, score) pairs; checked as TF Serving does."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for label, tensor, want in (("classes", classes, dtypes.DT_STRING), ("scores", scores, dtypes.DT_FLOAT)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}")
        if dtypes.data_type(tensor.dtype) != want:
            raise invalid_argument(f"Expected {label} Tensor of {dtypes.ENUM_NAMES[want]}.")
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


def regress_request(servable: Servable, name: str, examples: Sequence[bytes], timeout_s=None) -> RunRequest:
    key, sig = _examples_signature(servable, name, REGRESS_METHOD, "regression")
    if "outputs" not in sig.outputs:
        raise ServingError(Code.FAILED_PRECONDITION, "No regression outputs found in SignatureDef")
    return RunRequest(servable, key, {"inputs": _examples_tensor(examples)}, ("outputs",), timeout_s)


def regressions(outputs: Mapping[str, np.ndarray], n: int) -> list[float]:
    out = outputs["outputs"]
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(out.shape)}"
        )
    if out.dtype != np.float32:
        raise invalid_argument("Expected output Tensor of DT_FLOAT.")
    if out.shape[0] != n:
        raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. {out.shape[0]}")
    return [float(v) for v in out.reshape(-1)]


# What a classify or regress task runs and how its outputs are read, by method name.
EXAMPLE_METHODS = {
    CLASSIFY_METHOD: (classify_request, classifications),
    REGRESS_METHOD: (regress_request, regressions),
}


def multi_inference_tasks(tasks: Sequence[tuple[str, str, str]]) -> None:
    """MultiInference's rules on (model name, signature name, method) tasks: at least one, one
    model, no signature twice, and only classify or regress methods."""
    if not tasks:
        raise invalid_argument("Expected at least one task")
    seen: set[str] = set()
    for name, signature, method in tasks:  # in TF Serving's order: each task checked in turn
        if name != tasks[0][0]:
            raise invalid_argument("All tasks should have the same model name")
        key = signature or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if method not in EXAMPLE_METHODS:
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")
