"""Predict, Classify, Regress, MultiInference and metadata on numpy values, as TF Serving runs them.

The protocol edges decode their wire format, call these functions, and encode the result.
Error texts follow tensorflow_serving/servables/tensorflow/{predict_util,classifier,regressor}.cc.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

from pyserving import dtypes
from pyserving.core.manager import ServableManager
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.types import (
    CLASSIFY_METHOD, DEFAULT_SIGNATURE, PREDICT_METHOD, REGRESS_METHOD, ModelSpec, Servable, SignatureInfo,
)

Inputs = Mapping[str, np.ndarray]
# REST decodes JSON against the signature's dtypes, so it passes a decoder instead of arrays.
InputSource = Union[Inputs, Callable[[SignatureInfo], Inputs]]


class SignatureNotFound(ServingError):
    def __init__(self, signature_name: str):
        super().__init__(Code.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
        self.signature_name = signature_name


@dataclass(frozen=True)
class Result:
    model_name: str
    version: int
    signature_name: str
    value: object  # outputs dict, classifications, or regression values


@dataclass(frozen=True)
class Submitted:
    """A predict handed to the runner: outputs arrive in `future` (a concurrent.futures.Future)."""
    model_name: str
    version: int
    signature_name: str
    future: Future

    def result(self, outputs) -> Result:
        return Result(self.model_name, self.version, self.signature_name, outputs)


def _signature(servable: Servable, name: str) -> tuple[str, SignatureInfo]:
    key = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(key)
    if sig is None:
        raise SignatureNotFound(key)
    return key, sig


def _fmt(names) -> str:
    return "{" + ", ".join(sorted(names)) + "}"


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
        if dtypes.from_numpy(value.dtype) != spec.dtype:
            raise invalid_argument(
                f"Expects arg[{i}] to be {dtypes.short_name(spec.dtype)} but "
                f"{dtypes.short_name(dtypes.from_numpy(value.dtype))} is provided"
            )
        # Shapes are the graph's business, as in TF Serving: its own docs send [1.0, 2.0]
        # to half_plus_two, whose signature says [-1, 1], and the graph broadcasts.


def _output_keys(sig: SignatureInfo, output_filter: Sequence[str]) -> list[str]:
    if not output_filter:
        return list(sig.outputs)
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
    return list(output_filter)


def run_direct(servable: Servable, signature_name: str, inputs: Inputs, output_keys: Sequence[str],
               timeout_s: Optional[float]) -> dict:
    """The runner without batching: one servable call per request."""
    return servable.run(signature_name, inputs, output_keys, timeout_s)


def pool_submitter(pool, runner=run_direct):
    """The submitter without batching: each servable call runs in `pool`, one call per request."""
    def submit(servable, signature_name, inputs, output_keys, timeout_s) -> Future:
        return pool.submit(runner, servable, signature_name, inputs, output_keys, timeout_s)
    return submit


class Inference:
    def __init__(self, manager: ServableManager, runner=None, check_method_name: bool = False, submitter=None):
        self._manager = manager
        self._check_method_name = check_method_name
        # runner(servable, signature_name, inputs, output_keys, timeout_s) -> outputs, for callers
        # that may block; submitter(...same...) -> Future of outputs, for event-loop callers.
        # The batcher plugs into both.
        self._run = runner or run_direct
        self._submit = submitter

    def predict(
        self, spec: ModelSpec, inputs: InputSource, output_filter: Sequence[str] = (),
        timeout_s: Optional[float] = None,
    ) -> Result:
        with self._manager.servable(spec) as (version, servable):
            key, outputs = self.predict_on(servable, spec.signature_name, inputs, output_filter, timeout_s)
            return Result(spec.name, version, key, outputs)

    def predict_on(self, servable: Servable, signature_name: str, inputs: InputSource,
                   output_filter: Sequence[str] = (), timeout_s: Optional[float] = None):
        """Predict on one servable (requests and warmup replays alike); returns (signature key, outputs)."""
        key, values, keys = self._prepare_predict(servable, signature_name, inputs, output_filter)
        return key, self._run(servable, key, values, keys, timeout_s)

    def submit_predict(
        self, spec: ModelSpec, inputs: InputSource, output_filter: Sequence[str] = (),
        timeout_s: Optional[float] = None,
    ) -> "Submitted":
        """Predict without blocking: validation errors raise here; the run's outputs land in the
        returned Submitted.future. The version stays leased until the run ends; cancelling the
        future drops a run that has not started."""
        if self._submit is None:
            raise RuntimeError("Inference was built without a submitter")
        version, servable, release = self._manager.lease(spec)
        try:
            key, values, keys = self._prepare_predict(servable, spec.signature_name, inputs, output_filter)
            run = self._submit(servable, key, values, keys, timeout_s)
        except BaseException:
            release()
            raise
        run.add_done_callback(lambda _: release())
        return Submitted(spec.name, version, key, run)

    def _prepare_predict(self, servable: Servable, signature_name: str, inputs: InputSource,
                         output_filter: Sequence[str]):
        """(signature key, checked inputs, output keys) for one predict call."""
        key, sig = _signature(servable, signature_name)
        if self._check_method_name and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid_argument(
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}"
            )
        values = inputs(sig) if callable(inputs) else inputs
        check_inputs(sig, values)
        return key, values, _output_keys(sig, output_filter)

    def classify(self, spec: ModelSpec, examples: Sequence[bytes], timeout_s: Optional[float] = None) -> Result:
        with self._manager.servable(spec) as (version, servable):
            key, classes = self.classify_on(servable, spec.signature_name, examples, timeout_s)
            return Result(spec.name, version, key, classes)

    def regress(self, spec: ModelSpec, examples: Sequence[bytes], timeout_s: Optional[float] = None) -> Result:
        with self._manager.servable(spec) as (version, servable):
            key, values = self.regress_on(servable, spec.signature_name, examples, timeout_s)
            return Result(spec.name, version, key, values)

    def multi_inference(
        self, tasks: Sequence[tuple[ModelSpec, str]], examples: Sequence[bytes],
        timeout_s: Optional[float] = None,
    ) -> list[Result]:
        """All tasks run on one servable version against the same examples (TF Serving's rule)."""
        if not tasks:
            raise invalid_argument("Expected at least one task")
        first = tasks[0][0]
        if any(t[0].name != first.name for t in tasks):
            raise invalid_argument("All tasks should have the same model name")
        seen: set[str] = set()
        for spec, _method in tasks:
            key = spec.signature_name or DEFAULT_SIGNATURE
            if key in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {key}")
            seen.add(key)
        results = []
        with self._manager.servable(first) as (version, servable):
            for spec, method in tasks:
                if method == CLASSIFY_METHOD:
                    key, value = self.classify_on(servable, spec.signature_name, examples, timeout_s)
                elif method == REGRESS_METHOD:
                    key, value = self.regress_on(servable, spec.signature_name, examples, timeout_s)
                else:
                    raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")
                results.append(Result(spec.name, version, key, value))
        return results

    def metadata(self, spec: ModelSpec) -> Result:
        with self._manager.servable(spec) as (version, servable):
            return Result(spec.name, version, "", servable.signature_def_map())

    # ---- classify / regress on one servable --------------------------------------------
    def _examples_signature(self, servable: Servable, name: str, method: str, what: str):
        key = name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(key)
        if sig is None:
            raise invalid_argument(f"No signature was found with the name: {key}")
        if sig.method_name != method:
            raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
        if "inputs" not in sig.inputs or len(sig.inputs) != 1:
            raise ServingError(Code.FAILED_PRECONDITION, f"No {what} inputs found in SignatureDef")
        return key, sig

    def _run_examples(self, servable, key, examples, keys, timeout_s):
        if len(examples) == 0:
            raise invalid_argument("Input is empty.")
        tensor = np.empty(len(examples), dtype=object)
        tensor[:] = list(examples)
        return self._run(servable, key, {"inputs": tensor}, keys, timeout_s)

    def classify_on(self, servable, name, examples, timeout_s=None):
        key, sig = self._examples_signature(servable, name, CLASSIFY_METHOD, "classification")
        keys = [k for k in ("classes", "scores") if k in sig.outputs]
        if not keys:
            raise ServingError(
                Code.FAILED_PRECONDITION,
                'Expected classification signature outputs to contain at least one of "classes" or "scores".',
            )
        out = self._run_examples(servable, key, examples, keys, timeout_s)
        n = len(examples)
        classes, scores = out.get("classes"), out.get("scores")
        for label, tensor, want in (("classes", classes, dtypes.DT_STRING), ("scores", scores, dtypes.DT_FLOAT)):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}")
            if dtypes.from_numpy(tensor.dtype) != want:
                raise invalid_argument(f"Expected {label} Tensor of {dtypes.ENUM_NAMES[want]}.")
            if tensor.shape[0] != n:
                raise invalid_argument(f"Expected {label} output batch size of {n}. Got: {tensor.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid_argument(
                f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
            )
        width = (classes if classes is not None else scores).shape[1]
        return key, [
            [
                (classes[i, c] if classes is not None else None, float(scores[i, c]) if scores is not None else None)
                for c in range(width)
            ]
            for i in range(n)
        ]

    def regress_on(self, servable, name, examples, timeout_s=None):
        key, sig = self._examples_signature(servable, name, REGRESS_METHOD, "regression")
        if "outputs" not in sig.outputs:
            raise ServingError(Code.FAILED_PRECONDITION, "No regression outputs found in SignatureDef")
        out = self._run_examples(servable, key, examples, ["outputs"], timeout_s)["outputs"]
        if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            raise invalid_argument(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(out.shape)}"
            )
        if out.dtype != np.float32:
            raise invalid_argument("Expected output Tensor of DT_FLOAT.")
        if out.shape[0] != len(examples):
            raise invalid_argument(f"Input batch size did not match output batch size: {len(examples)} vs. {out.shape[0]}")
        return key, [float(v) for v in out.reshape(-1)]
