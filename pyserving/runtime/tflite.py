"""A version folder's model.tflite served through tf.lite.Interpreter (--prefer_tflite_model).

Signatures come from the model's own TF Lite signature defs when it has them; otherwise one
`serving_default` predict signature is made from its input and output tensor names, as TF
Serving's TfLiteSession does. Inputs are resized to each request's shape; interpreters are not
thread-safe, so a small pool of them serves concurrent requests.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import warnings
from typing import Mapping, Optional, Sequence

import numpy as np
from google.protobuf import text_format

from pyserving import dtypes
from pyserving.errors import Code, ServingError
from pyserving.types import PREDICT_METHOD, SignatureInfo, TensorSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: E402

MODEL_FILE = "model.tflite"


def _spec(detail) -> TensorSpec:
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    return TensorSpec(tensor_name=detail["name"], dtype=dtypes.data_type(np.dtype(detail["dtype"])), shape=shape)


class TfLiteServable:
    def __init__(self, path: str, num_interpreters: int = 1):
        model = os.path.join(path, MODEL_FILE)
        if not os.path.isfile(model):
            raise ServingError(Code.NOT_FOUND, f"Could not find {MODEL_FILE} at {path}")
        self._pool: queue.Queue = queue.Queue()
        with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT replaces it
            warnings.simplefilter("ignore")
            try:
                for _ in range(max(1, num_interpreters)):
                    self._pool.put(tf.lite.Interpreter(model_path=model))
            except ValueError as exc:
                raise ServingError(Code.INVALID_ARGUMENT, f"Invalid TF Lite model {model}: {exc}") from None
        first = self._pool.queue[0]
        self._native = first.get_signature_list()
        self.signatures: Mapping[str, SignatureInfo] = self._signatures(first)
        as_protos = get_model_metadata_pb2.SignatureDefMap.FromString(self.signature_def_map()).signature_def
        self.signatures = {k: dataclasses.replace(v, debug_string=text_format.MessageToString(as_protos[k]))
                           for k, v in self.signatures.items()}
        self.path = path

    def _signatures(self, interp) -> dict[str, SignatureInfo]:
        if self._native:
            out = {}
            for key in self._native:
                runner = interp.get_signature_runner(key)
                out[key] = SignatureInfo(
                    PREDICT_METHOD,
                    {n: _spec(d) for n, d in runner.get_input_details().items()},
                    {n: _spec(d) for n, d in runner.get_output_details().items()},
                )
            return out
        return {"serving_default": SignatureInfo(
            PREDICT_METHOD,
            {d["name"]: _spec(d) for d in interp.get_input_details()},
            {d["name"]: _spec(d) for d in interp.get_output_details()},
        )}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str],
            timeout_s: Optional[float] = None) -> dict[str, np.ndarray]:
        interp = self._pool.get()
        try:
            if self._native:
                outputs = interp.get_signature_runner(signature_name)(**inputs)
                return {k: np.asarray(outputs[k]) for k in output_keys}
            details = {d["name"]: d for d in interp.get_input_details()}
            for name, value in inputs.items():
                if tuple(details[name]["shape"]) != value.shape:
                    interp.resize_tensor_input(details[name]["index"], value.shape)
            interp.allocate_tensors()
            for name, value in inputs.items():
                interp.set_tensor(details[name]["index"], value)
            interp.invoke()
            outs = {d["name"]: d for d in interp.get_output_details()}
            return {k: interp.get_tensor(outs[k]["index"]).copy() for k in output_keys}
        except (ValueError, RuntimeError) as exc:
            raise ServingError(Code.INVALID_ARGUMENT, f"TF Lite run failed: {exc}") from None
        finally:
            self._pool.put(interp)

    def signature_def_map(self) -> bytes:
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, info in self.signatures.items():
            sig = sig_map.signature_def[key]
            sig.method_name = info.method_name
            for target, specs in ((sig.inputs, info.inputs), (sig.outputs, info.outputs)):
                for name, spec in specs.items():
                    target[name].name = spec.tensor_name
                    target[name].dtype = spec.dtype
                    for d in spec.shape or ():
                        target[name].tensor_shape.dim.add().size = d
        return sig_map.SerializeToString()

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait()


def load(path: str, num_interpreters: int = 1) -> TfLiteServable:
    return TfLiteServable(path, num_interpreters)
